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

:class:`QuantizedRows` is the other kind of row array here: unit text vectors stored as 8-bit codes with
one scale per row (half the bytes of float16, which every worker holds resident), read as float32.
"""

from __future__ import annotations

import mmap
from pathlib import Path
from typing import Any

import numpy as np


def mapped(path: Path | str) -> np.ndarray:
    """The array of the ``.npy`` file at ``path``, mapped read-only (its pages shared by every process that maps
    it), as a plain ndarray view of the map.

    ``np.memmap``, what ``np.load(mmap_mode="r")`` returns, re-wraps every slice and gather of itself as a
    memmap in Python: a dozen such reads per request cost a one-shopper answer about 0.03 ms at 100,000
    products. The view reads the same pages and keeps the map open (:func:`is_mapped`).

    Raises:
        OSError, ValueError: as ``np.load`` (a missing, unreadable or damaged file).
    """
    return np.load(path, mmap_mode="r", allow_pickle=False).view(np.ndarray)


def _file_map(array: Any) -> mmap.mmap | None:
    """The file mapping that holds ``array``'s memory (somewhere down its chain of ``base`` arrays), or None."""
    while array is not None and not isinstance(array, mmap.mmap):
        array = getattr(array, "base", None)
    return array


def is_mapped(array: Any) -> bool:
    """Whether ``array``'s memory is a file mapping (somewhere down its chain of ``base`` arrays)."""
    return _file_map(array) is not None


def release_pages(array: Any) -> bool:
    """Drop this process's resident pages of a memory-mapped array (``madvise(MADV_DONTNEED)`` on its map).

    For arrays read once in full at load and rarely after, such as the ids an :class:`~modeling.id_index.IdIndex`
    copies: reading them made every page resident in the process, where they would stay, counted in its
    resident memory, though only a few are read again. The file's pages stay in the system's page cache; a later
    read maps them again. Returns whether ``array`` was mapped (nothing happens otherwise, or where the system
    has no ``madvise``).
    """
    file_map = _file_map(array)
    if file_map is None or not hasattr(file_map, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return False
    file_map.madvise(mmap.MADV_DONTNEED)
    return True


BLOCK_ROWS = 8192
"""Rows of a float16 array converted to float32 at a time when it is multiplied as a whole (bounds the copy)."""

_HALF_TO_FLOAT = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)
"""Each float16 bit pattern's float32 value. numpy converts float16 one value at a time; looking the values up in
this 256 KiB table takes about half as long (231 rows of 384: 85 against 160 µs), and a request converts the
text vectors of every candidate it scores."""


CODE_LEVELS = 127
"""A quantized row's largest absolute component is coded as +-127 (-128 is never used, so codes are symmetric)."""


class QuantizedRows:
    """(n, d) float32 rows stored as int8 codes and one float32 scale per row: row i reads ``codes[i] * scales[i]``.

    Text vectors are what a request reads most of (every candidate's row for the ranking stage's text
    features): as int8 they take half the memory of float16 (at 100,000 products with 384-d vectors, 37
    instead of 73 MiB resident in every worker), and reading rows takes half the time: numpy turns int8 into
    float32 about six times faster than float16 (which it converts one value at a time; :data:`_HALF_TO_FLOAT`
    only halves that), and the multiply by the scales takes about as long again (218 rows of 384: 34 to 41
    against 83 to 89 µs; callers that multiply the rows by a few vectors can scale the products instead). With a
    scale per row, a unit vector's component is off by at most half its row's largest component / 127
    (about 1e-3; cosines move by about 4e-4, float16's by 1e-4). numpy has no such array type (nor do the
    libraries the service uses: FAISS's 8-bit codes scale each dimension, not each row); hence this class.

    Args:
        codes: (n, d) int8, usually a read-only memory map; never copied here.
        scales: (n,) float32, each row's largest absolute component / :data:`CODE_LEVELS`.
    """

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, codes: np.ndarray, scales: np.ndarray) -> None:
        if codes.ndim != 2 or codes.dtype != np.int8:
            raise ValueError(f"codes must be (n, d) int8, not {codes.shape} {codes.dtype}")
        if scales.shape != (len(codes),):
            raise ValueError(f"scales must be ({len(codes)},), not {scales.shape}")
        self.codes, self.scales = codes, scales

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.codes.shape[0]), int(self.codes.shape[1])

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, key: Any) -> np.ndarray:
        """A row (int), the rows of a slice, or those at an array of positions (any shape, or a bool mask): float32."""
        if isinstance(key, (int, np.integer)):
            return self.codes[key].astype(np.float32) * self.scales[key]
        if isinstance(key, slice):
            return self.codes[key].astype(np.float32) * self.scales[key][:, None]
        positions = np.asarray(key)
        if positions.dtype == bool:
            positions = np.flatnonzero(positions)
        return take_rows(self.codes, positions).astype(np.float32) * self.scales[positions][..., None]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """Every row in one new float32 array (not for the request path)."""
        whole = np.empty(self.shape, dtype=np.float32)
        for start in range(0, len(self), BLOCK_ROWS):
            whole[start:start + BLOCK_ROWS] = self[start:start + BLOCK_ROWS]
        return whole if dtype is None else whole.astype(dtype, copy=False)

    def dot(self, queries: np.ndarray) -> np.ndarray:
        """(m, n) float32 ``queries @ rows.T`` for (m, d) queries, :data:`BLOCK_ROWS` rows converted at a time."""
        queries = np.asarray(queries, dtype=np.float32)
        out = np.empty((len(queries), len(self)), dtype=np.float32)
        for start in range(0, len(self), BLOCK_ROWS):
            block = self.codes[start:start + BLOCK_ROWS].astype(np.float32)
            np.matmul(queries, block.T, out=out[:, start:start + len(block)])
            out[:, start:start + len(block)] *= self.scales[start:start + len(block)]
        return out


def quantize_rows(rows: np.ndarray) -> QuantizedRows:
    """(n, d) rows as :class:`QuantizedRows` (in memory): each row scaled so its largest absolute component is
    :data:`CODE_LEVELS`, rounded to the nearest code. A zero row has scale 0."""
    rows = np.asarray(rows, dtype=np.float32)
    if rows.ndim != 2:
        raise ValueError(f"rows must be (n, d), not {rows.shape}")
    scales = (np.abs(rows).max(axis=1, initial=0.0) / np.float32(CODE_LEVELS)).astype(np.float32)
    codes = np.empty(rows.shape, dtype=np.int8)
    for start in range(0, len(rows), BLOCK_ROWS):  # bounds the float32 temporaries at a million rows
        part = slice(start, start + BLOCK_ROWS)
        divisor = np.where(scales[part] > 0, scales[part], np.float32(1))[:, None]
        codes[part] = np.clip(np.rint(rows[part] / divisor), -CODE_LEVELS, CODE_LEVELS)
    return QuantizedRows(codes, scales)


def take_rows(rows: np.ndarray | StackedRows | QuantizedRows, positions: np.ndarray) -> np.ndarray:
    """``rows[positions]`` for (n, d) ``rows`` and integer ``positions`` of any shape: ``(*positions.shape, d)``, the
    same values (an ndarray's own dtype; :class:`StackedRows` and :class:`QuantizedRows` read float32).

    An ndarray's rows are gathered by ``np.take``, which copies each row whole where indexing by an array walks
    numpy's general index iterator: 220 rows of 384 int8 codes in 12.5 against 23 µs, of 64 float32 values in 7
    against 14 µs (the serving benchmark's bundle, measured side by side), and a request gathers such rows for
    every candidate it scores. The positions are checked as indexing checks them (out of range: IndexError); positions
    that are not integers (a bool mask) are read as indexing reads them (``np.take`` would read a mask as 0s and 1s).
    Only an ndarray goes through ``np.take``: anything else would be turned into one whole first (a
    :class:`QuantizedRows` decoded entirely), so the row arrays of this module gather their own rows."""
    positions = np.asarray(positions)
    if isinstance(rows, np.ndarray) and positions.dtype.kind in "iu":
        return np.take(rows, positions, axis=0)
    return rows[positions]


def as_float32(rows: np.ndarray | QuantizedRows) -> np.ndarray:
    """``rows`` (any shape) as a float32 array: float16 through :data:`_HALF_TO_FLOAT` (the same values as
    ``astype``), :class:`QuantizedRows` decoded, other types by ``np.asarray``."""
    if isinstance(rows, QuantizedRows):
        return np.asarray(rows)
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
        out[in_base] = as_float32(take_rows(self.base, positions[in_base]))  # a coded base gathers its own
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


def append_rows(rows: np.ndarray | StackedRows | QuantizedRows, added: np.ndarray) -> StackedRows:
    """``rows`` with ``added`` (m, d) after them, the existing rows not copied."""
    if isinstance(rows, StackedRows):
        return rows.appended(added)
    return StackedRows(rows, np.asarray(added, dtype=np.float32))


def dot_rows(queries: np.ndarray, rows: np.ndarray | StackedRows | QuantizedRows) -> np.ndarray:
    """(m, n) float32 scores of (m, d) ``queries`` against (n, d) ``rows`` (an array or a stack; float16 rows are
    converted :data:`BLOCK_ROWS` at a time, as numpy multiplies float16 without BLAS)."""
    if isinstance(rows, (StackedRows, QuantizedRows)):
        return rows.dot(queries)
    queries = np.asarray(queries, dtype=np.float32)
    if rows.dtype != np.float16:
        return queries @ np.asarray(rows, dtype=np.float32).T
    out = np.empty((len(queries), len(rows)), dtype=np.float32)
    for start in range(0, len(rows), BLOCK_ROWS):
        block = as_float32(rows[start:start + BLOCK_ROWS])
        np.matmul(queries, block.T, out=out[:, start:start + len(block)])
    return out
