"""Row arrays that grow without copying their memory-mapped part.

Serving gives products added after publishing their vectors in each worker. Appending them to the
bundle's (n, d) arrays with ``np.concatenate`` copied every row into the worker's private memory: at
1,000,000 products the text vectors alone are 1.5 GB, so one new product cost each worker 1.5 GB and
seconds of copying. :class:`StackedRows` keeps the bundle's rows where they are (a read-only memory map,
shared by the workers) and the added rows in a small array beside them. It answers what the serving code
asks of such arrays: its shape, a slice, a gather of rows by position, and products with query vectors.
Turning it into one ndarray (``np.asarray``) still works but copies everything, so hot paths don't.

numpy has no array type made of two buffers, and the alternatives (a growing memory-mapped file per
worker, over-allocation) would still copy the shared rows once per worker; hence this small class.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BLOCK_ROWS = 8192
"""Rows of a float16 array converted to float32 at a time when it is multiplied as a whole (bounds the copy)."""

_HALF_TO_FLOAT = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
"""Each float16 bit pattern's float32 value. numpy converts float16 one value at a time; looking the values up in
this 256 KiB table takes about half as long (231 rows of 384: 85 against 160 µs), and a request converts the
text vectors of every candidate it scores."""


def as_float32(rows: np.ndarray) -> np.ndarray:
    """``rows`` (any shape) as a float32 array: float16 through :data:`_HALF_TO_FLOAT` (the same values as
    ``astype``), other types by ``np.asarray``."""
    rows = np.asarray(rows)
    if rows.dtype == np.float16:
        return np.take(_HALF_TO_FLOAT, rows.view(np.uint16))
    return np.asarray(rows, dtype=np.float32)


class StackedRows:
    """The rows of ``base`` followed by the rows of ``tail``, as one (n_base + n_tail, d) float32 array.

    Args:
        base: (n_base, d) float32 or float16 rows, usually a read-only memory map; never copied here (rows
            read from it are float32).
        tail: (n_tail, d) rows added in this process.
    """

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, base: np.ndarray, tail: np.ndarray) -> None:
        self.base = base
        self.tail = np.ascontiguousarray(tail, dtype=np.float32).reshape(-1, base.shape[1])

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.base) + len(self.tail), int(self.base.shape[1])

    def __len__(self) -> int:
        return len(self.base) + len(self.tail)

    def __getitem__(self, key: Any) -> np.ndarray:
        """A row (int), a contiguous slice of rows, or the rows at an array of non-negative positions."""
        n_base = len(self.base)
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                return np.asarray(self)[key]
            if stop <= n_base:
                return as_float32(self.base[start:stop])  # a float32 base: the mapped rows themselves
            if start >= n_base:
                return self.tail[start - n_base:stop - n_base]
            return np.concatenate([as_float32(self.base[start:]), self.tail[:stop - n_base]])
        if isinstance(key, (int, np.integer)):
            key = int(key) + (len(self) if key < 0 else 0)
            return as_float32(self.base[key]) if key < n_base else self.tail[key - n_base]
        positions = np.asarray(key)
        if positions.dtype == bool:
            positions = np.flatnonzero(positions)
        positions = positions.astype(np.int64, copy=False)
        if positions.size and (positions.min() < 0 or positions.max() >= len(self)):
            raise IndexError(f"row positions must lie in [0, {len(self)})")
        out = np.empty((*positions.shape, self.shape[1]), dtype=np.float32)
        in_base = positions < n_base
        out[in_base] = as_float32(self.base[positions[in_base]])
        out[~in_base] = self.tail[positions[~in_base] - n_base]
        return out

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """Every row in one new array (a copy of the base: not for the request path)."""
        whole = np.concatenate([as_float32(self.base), self.tail])
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def appended(self, rows: np.ndarray) -> StackedRows:
        """A new stack with ``rows`` (m, d) added after the tail (this one is left as it was)."""
        return StackedRows(self.base, np.concatenate([self.tail, np.asarray(rows, dtype=np.float32)]))

    def dot(self, queries: np.ndarray) -> np.ndarray:
        """(m, n) float32 ``queries @ rows.T`` for (m, d) queries, the base scored where it lies."""
        queries = np.asarray(queries, dtype=np.float32)
        return np.concatenate([dot_rows(queries, self.base), queries @ self.tail.T], axis=1)


def append_rows(rows: np.ndarray | StackedRows, added: np.ndarray) -> StackedRows:
    """``rows`` with ``added`` (m, d) after them, the existing rows not copied."""
    if isinstance(rows, StackedRows):
        return rows.appended(added)
    return StackedRows(rows, np.asarray(added, dtype=np.float32))


def dot_rows(queries: np.ndarray, rows: np.ndarray | StackedRows) -> np.ndarray:
    """(m, n) float32 scores of (m, d) ``queries`` against (n, d) ``rows`` (an array or a stack; float16 rows are
    converted :data:`BLOCK_ROWS` at a time, as numpy multiplies float16 without BLAS)."""
    if isinstance(rows, StackedRows):
        return rows.dot(queries)
    queries = np.asarray(queries, dtype=np.float32)
    if rows.dtype != np.float16:
        return queries @ np.asarray(rows, dtype=np.float32).T
    out = np.empty((len(queries), len(rows)), dtype=np.float32)
    for start in range(0, len(rows), BLOCK_ROWS):
        block = as_float32(rows[start:start + BLOCK_ROWS])
        np.matmul(queries, block.T, out=out[:, start:start + len(block)])
    return out
