"""Candidate sources of the ranking stage: item-item neighbours, first-order transitions, popularity.

Each source is a sparse (n_items, n_items) matrix scored from a shopper's current history, so a
shopper's events after training change their candidates at once. The item-item source is EASE
(closed form, its weights pruned to each item's ``neighbours`` strongest), or cosine item-kNN where it ranks
the validation items clearly better (EASE's λ and item-kNN's number of neighbours chosen on them too), where
the catalogue is small enough for EASE's dense inverse (:data:`modeling.baselines.EASE_MAX_ITEMS`), and
item-kNN above.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import numpy as np

from modeling import native
from modeling.ranking import top_k
from modeling.rows import mapped

if TYPE_CHECKING:  # the fitting code (evaluation baselines, scipy) loads only when sources are fitted, never in serving
    import scipy.sparse as sp

    from modeling.baselines import EASE, ItemKNN


logger = logging.getLogger(__name__)
T = TypeVar("T")

ITEM_ITEM_NEIGHBOURS = 200
"""Strongest item-item weights kept per item (the bundle stores n_items x this many)."""
DENSE_SUM_CELLS = 65_536
"""HistoryBatch.propagate sums into every cell of its (m, n) result up to this many cells (plus 8 per entry)."""
EASE_L2_CHOICES: tuple[float, ...] = (10.0, 50.0, 200.0, 500.0, 1000.0)
KNN_NEIGHBOUR_CHOICES: tuple[int, ...] = (20, 50, 100, 200)
"""Item-kNN's neighbours per product tried first (widened past a winning edge), as for the item-kNN baseline."""
ITEM_KNN_STANDARD_ERRORS = 2.0
"""Item-kNN replaces EASE as the item-item source only when its validation gain exceeds this many standard errors
of the paired per-shopper difference (the ranking stage's own rule for leaving its reference,
:data:`modeling.reranker.CHOICE_STANDARD_ERRORS`): the better of two tuned models by a narrow lead is often the
worse on the test items (Fashion and Appliances, where item-kNN led EASE by 0.003 and 0.027 NDCG@10 on 388 and 34
validation shoppers, served 0.0047 and 0.0018 less on the test items with it)."""
SEQUENCE_WINDOWS: tuple[int, ...] = (2, 5, 10)
"""Steps the sequential rules look ahead, chosen on the validation items with :data:`SEQUENCE_HISTORIES`."""
SEQUENCE_HISTORIES: tuple[int, ...] = (1, 3, 10)
"""Most recent products a history is scored from by the sequential rules (1: the last alone)."""
SEQUENCE_DEFAULT: tuple[int, int] = (10, 10)
"""(window, history) without validation items to choose on."""


@dataclass(frozen=True)
class SparseRows:
    """Rows of a sparse matrix in CSR form (what the ranking stage reads of a product of matrices).

    Attributes:
        indptr: (m + 1,) int64: row r's entries are ``indptr[r]:indptr[r + 1]``.
        indices: (e,) int64 column positions, sorted within each row.
        data: (e,) float32 values.
    """

    indptr: np.ndarray
    indices: np.ndarray
    data: np.ndarray


@dataclass(frozen=True)
class CsrArrays:
    """A square sparse matrix as a bundle stores it: its CSR arrays, memory-mapped and shared by the workers.

    What serving reads of a candidate source are rows by position (:func:`rows_at`, :meth:`HistoryBatch.propagate`)
    and a few entries (:func:`entries_at`), from these arrays alone; a loaded stage holds this instead of a scipy
    matrix, so a web worker never imports scipy (14 MB of anonymous memory per process, and its libraries' pages).
    Bundles store each row's columns sorted (:class:`Sources` sorts them when it is fitted).

    Attributes:
        data: (nnz,) float32.
        indices: (nnz,) int32 or int64 column positions, sorted within each row.
        indptr: (n + 1,) row pointers.
        shape: (n, n).
    """

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray
    shape: tuple[int, int]

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    def sort_indices(self) -> None:
        """Nothing to do: a bundle's rows are stored sorted (``scipy.sparse.csr_matrix.sort_indices``' signature)."""

    def to_scipy(self) -> sp.csr_matrix:
        """The same matrix as scipy's (sharing these arrays): for fitting and tests, not for serving."""
        import scipy.sparse as sp

        return sp.csr_matrix((self.data, self.indices, self.indptr), shape=self.shape, copy=False)

    def toarray(self) -> np.ndarray:
        """(n, n) dense float32."""
        return self.to_scipy().toarray()

    @cached_property
    def native_view(self) -> Any:
        """:func:`modeling.native.csr` of these arrays, made once: they never change, and the ranking stage's native
        code reads the matrix on every request (three views made a request took 22.7 µs, against 0.55 µs kept)."""
        return native.csr(self)

    def __getstate__(self) -> dict[str, Any]:
        """Pickled without :attr:`native_view`: its addresses are this process's (another process makes its own)."""
        return {name: value for name, value in self.__dict__.items() if name != "native_view"}


@dataclass
class HistoryBatch:
    """Histories of m shoppers as item positions, oldest first.

    Attributes:
        items: m arrays (n_u,) int64 item positions.
        timestamps: m arrays (n_u,) int64 unix seconds.
    """

    items: list[np.ndarray]
    timestamps: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.items)

    def matrix(self, n_items: int, half_life_days: float = 0.0) -> sp.csr_matrix:
        """(m, n_items) float32 rows of the histories: 1 per product, or with ``half_life_days`` > 0 the
        product's weight halved for every half-life between its latest interaction and the history's latest."""
        import scipy.sparse as sp

        rows = np.repeat(np.arange(len(self.items)), [len(h) for h in self.items])
        cols = np.concatenate(self.items).astype(np.int64) if self.items else np.zeros(0, dtype=np.int64)
        if half_life_days > 0 and len(cols):
            stamps = np.concatenate(self.timestamps).astype(np.float64)
            latest = np.concatenate([np.full(len(t), t.max() if len(t) else 0) for t in self.timestamps])
            weights = np.power(0.5, (latest - stamps) / (half_life_days * 86_400.0)).astype(np.float32)
            matrix = sp.coo_matrix((weights, (rows, cols)), shape=(len(self.items), n_items)).tocsr()
            matrix.sum_duplicates()
            matrix.data = np.minimum(matrix.data, 1.0)  # a product counts at most once, its newest weight at most
            return sp.csr_matrix(matrix, dtype=np.float32)
        matrix = sp.csr_matrix((np.ones(len(cols), dtype=np.float32), (rows, cols)),
                               shape=(len(self.items), n_items), dtype=np.float32)
        matrix.data[:] = 1.0  # repeated items count once
        return matrix

    def entries(self, half_life_days: float = 0.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The non-zero entries of :meth:`matrix` as ``(rows (e,), item positions (e,), weights (e,) float64)``,
        ordered by row, then item (the same weights: a product once per history, capped at 1)."""
        rows, cols, weights = self.entries_each((half_life_days,))
        return rows, cols, weights[0]

    def entries_each(self, half_lives: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`entries` for several half-lives at once: ``(rows (e,), items (e,), weights (h, e) float64)``."""
        lengths = np.fromiter((len(h) for h in self.items), dtype=np.int64, count=len(self.items))
        if lengths.sum() == 0:
            return (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64),
                    np.zeros((len(half_lives), 0), dtype=np.float64))
        rows = np.repeat(np.arange(len(self.items), dtype=np.int64), lengths)
        cols = np.concatenate(self.items).astype(np.int64)
        width = int(cols.max()) + 1
        keys, inverse = np.unique(rows * width + cols, return_inverse=True)
        weights = np.ones((len(half_lives), len(keys)), dtype=np.float64)
        for at, decayed in enumerate(self.decays_each(half_lives)):
            if decayed is not None:
                weights[at] = np.minimum(np.bincount(inverse, weights=decayed, minlength=len(keys)), 1.0)
        return keys // width, keys % width, weights

    def decays_each(self, half_lives: Sequence[float]) -> list[np.ndarray | None]:
        """For each of ``half_lives``: (H,) float32 each interaction's weight, halved every that many days before its
        shopper's latest one, the histories one after the other (H interactions in all); None for a half-life of
        0 or less (weights of 1). The histories' times are read once for all of them."""
        lengths = np.fromiter((len(h) for h in self.items), dtype=np.int64, count=len(self.items))
        if not any(half_life > 0 for half_life in half_lives):
            return [None] * len(half_lives)
        if lengths.sum() == 0:
            return [np.zeros(0, dtype=np.float32) if half_life > 0 else None for half_life in half_lives]
        stamps = np.concatenate(self.timestamps).astype(np.float64)
        latest = np.repeat(np.fromiter((t.max() if len(t) else 0 for t in self.timestamps), dtype=np.float64,
                                       count=len(self.timestamps)), lengths)
        return [np.power(0.5, (latest - stamps) / (half_life * 86_400.0)).astype(np.float32) if half_life > 0
                else None for half_life in half_lives]

    def propagate(self, matrix: sp.csr_matrix, half_life_days: float = 0.0) -> SparseRows:
        """The rows of ``self.matrix(n, half_life_days) @ matrix`` (``matrix`` (n, n) csr), indices sorted.

        Gathered straight from ``matrix``'s rows of the history's items: a request's few histories cost
        tens of microseconds instead of scipy's fixed costs of building and multiplying sparse matrices
        (about 0.7 ms per product on the serving path). Sums are made in float64; an entry whose sum is
        exactly 0 may be kept (every reader treats it as absent).
        """
        return self.propagate_each(matrix, (half_life_days,))[0]

    def propagate_each(self, matrix: sp.csr_matrix, half_lives: Sequence[float]) -> list[SparseRows]:
        """:meth:`propagate` for each of ``half_lives``: the rows gathered and keyed once, summed per half-life."""
        return self._gather(matrix, *self.entries_each(half_lives))

    def propagate_recent(self, matrix: sp.csr_matrix, length: int) -> SparseRows:
        """The rows of ``W @ matrix``, W (m, n) holding each history's ``length`` most recent products (consecutive
        repeats once), the most recent weighted 1, the one before it 1/2, and so on (a product met twice sums
        both weights): how the sequential rules source scores a history."""
        return self._gather(matrix, *self.recent_entries(length))[0]

    def recent_entries(self, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The non-zero entries of :meth:`propagate_recent`'s W: ``(rows (e,), item positions (e,), weights (1, e)
        float64)``, ordered by row, then item."""
        m = len(self.items)
        lengths = np.fromiter((len(h) for h in self.items), dtype=np.int64, count=m)
        rows = np.repeat(np.arange(m, dtype=np.int64), lengths)
        cols = np.concatenate(self.items).astype(np.int64) if lengths.sum() else np.zeros(0, dtype=np.int64)
        recent = recent_items(rows, cols, m, max(1, int(length)))  # (m, length), the most recent first
        rows, back = np.nonzero(recent >= 0)
        cols = recent[rows, back]
        if len(cols) == 0:
            return rows, cols, np.zeros((1, 0), dtype=np.float64)
        width = int(cols.max()) + 1
        keys, inverse = np.unique(rows * width + cols, return_inverse=True)
        summed = np.bincount(inverse, weights=1.0 / (back + 1.0), minlength=len(keys))
        return keys // width, keys % width, summed[None, :]

    def _gather(self, matrix: sp.csr_matrix, rows: np.ndarray, cols: np.ndarray,
                weights: np.ndarray) -> list[SparseRows]:
        """For each row of ``weights`` (h, e): the rows of ``W @ matrix``, W (m, n) holding the entries ``(rows (e,),
        cols (e,))`` (sorted by row, then column; each once) with those weights."""
        m = len(self.items)
        take, lengths = row_entries(matrix.indptr, cols)
        total = len(take)
        if total == 0:
            return [SparseRows(np.zeros(m + 1, dtype=np.int64), np.zeros(0, dtype=np.int64),
                               np.zeros(0, dtype=np.float32)) for _ in weights]
        n = matrix.shape[1]
        keys = np.repeat(rows, lengths) * n + matrix.indices[take]
        data = matrix.data[take]
        dense = m * n <= 8 * total + DENSE_SUM_CELLS
        if dense:  # few cells: sum into all of them, then keep the touched ones
            touched = np.zeros(m * n, dtype=bool)
            touched[keys] = True
            kept = np.flatnonzero(touched)
        else:  # sort the entries instead
            kept, inverse = np.unique(keys, return_inverse=True)
        indptr = np.searchsorted(kept // n, np.arange(m + 1), side="left").astype(np.int64)
        indices = (kept % n).astype(np.int64)
        out = []
        for row_weights in weights:
            values = data * np.repeat(row_weights, lengths)
            if dense:
                sums = np.bincount(keys, weights=values, minlength=m * n)[kept]
            else:
                sums = np.bincount(inverse, weights=values, minlength=len(kept))
            out.append(SparseRows(indptr, indices, sums.astype(np.float32)))
        return out

    def last(self, back: int = 1) -> np.ndarray:
        """(m,) int64: each history's ``back``-th most recent distinct-in-sequence item (-1: none)."""
        out = np.full(len(self.items), -1, dtype=np.int64)
        for row, items in enumerate(self.items):
            if len(items) >= back:
                out[row] = items[-back]
        return out


def recent_items(user_idx: np.ndarray, item_idx: np.ndarray, n_users: int, length: int) -> np.ndarray:
    """(n_users, length) int64: each user's ``length`` most recent items, most recent first, a run of one item
    once (-1 pads), from arrays sorted by user and time."""
    user_idx = np.asarray(user_idx, dtype=np.int64)
    item_idx = np.asarray(item_idx, dtype=np.int64)
    out = np.full((n_users, length), -1, dtype=np.int64)
    last_of_run = np.ones(len(user_idx), dtype=bool)
    last_of_run[:-1] = (user_idx[:-1] != user_idx[1:]) | (item_idx[:-1] != item_idx[1:])
    users, items = user_idx[last_of_run], item_idx[last_of_run]
    ends = np.cumsum(np.bincount(users, minlength=n_users))
    back = ends[users] - 1 - np.arange(len(users), dtype=np.int64)  # 0: the most recent
    kept = back < length
    out[users[kept], back[kept]] = items[kept]
    return out


def row_entries(indptr: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the rows at ``positions`` (m,) of a CSR matrix with ``indptr`` lie (-1: an empty row):
    ``(entries (e,) int64, the rows' lengths (m,) int64)``, the entries of each row in turn."""
    if len(positions) == 1:  # one row (a shopper's last product): a range, without the general case's steps
        position = int(positions[0])
        start, end = (int(indptr[position]), int(indptr[position + 1])) if position >= 0 else (0, 0)
        return np.arange(start, end, dtype=np.int64), np.array([end - start], dtype=np.int64)
    safe = np.maximum(positions, 0)
    starts = indptr[safe].astype(np.int64)
    lengths = np.where(positions >= 0, indptr[safe + 1].astype(np.int64) - starts, 0)
    return np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(int(lengths.sum())), lengths


def entries_at(matrix: sp.csr_matrix | CsrArrays, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
    """(len(rows), len(columns)) float32: the entries of ``matrix`` (sorted indices) at every pair of the positions
    ``rows`` and ``columns`` (0 where it holds none), read from its CSR arrays."""
    rows, columns = np.asarray(rows, dtype=np.int64), np.asarray(columns, dtype=np.int64)
    picked = rows_at(matrix, rows)
    n = int(matrix.shape[1])
    wanted = (np.arange(len(rows), dtype=np.int64)[:, None] * n + columns[None, :]).ravel()
    return sparse_values(picked, entry_keys(picked, n), wanted).reshape(len(rows), len(columns))


def entry_keys(scores: SparseRows, n: int) -> np.ndarray:
    """(e,) int64 key ``row * n + item`` of each stored entry of ``scores``: sorted, as rows come in order and
    each row's indices are sorted."""
    if len(scores.indptr) == 2:  # one row (a shopper answered alone): its keys are its indices
        return np.asarray(scores.indices).astype(np.int64)
    rows = np.repeat(np.arange(len(scores.indptr) - 1, dtype=np.int64), np.diff(scores.indptr))
    return rows * n + scores.indices


def sparse_values(scores: SparseRows, stored: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """(e,) float32 values of ``scores`` at ``keys`` (``row * n + item``; 0 where absent); ``stored``:
    :func:`entry_keys` of ``scores``."""
    if len(stored) == 0:
        return np.zeros(len(keys), dtype=np.float32)
    at = np.minimum(np.searchsorted(stored, keys), len(stored) - 1)
    return np.where(stored[at] == keys, scores.data[at], 0.0).astype(np.float32)


def rows_at(matrix: sp.csr_matrix | CsrArrays, positions: np.ndarray) -> SparseRows:
    """The rows of ``matrix`` (sorted indices, as :class:`Sources` keeps them) at (m,) positions (-1: empty)."""
    take, lengths = row_entries(matrix.indptr, positions)
    indptr = np.concatenate([np.zeros(1, dtype=np.int64), np.cumsum(lengths)])
    return SparseRows(indptr, np.asarray(matrix.indices[take], dtype=np.int64),
                      np.asarray(matrix.data[take], dtype=np.float32))


def keep_strongest(weights: np.ndarray | sp.spmatrix, neighbours: int) -> sp.csr_matrix:
    """(n, n) float32 csr with only each row's ``neighbours`` largest positive entries (the diagonal dropped)."""
    import scipy.sparse as sp

    if sp.issparse(weights):
        from modeling.baselines import _keep_neighbours

        matrix = sp.csr_matrix(weights, dtype=np.float32)
        matrix.setdiag(0.0)
        matrix.data[matrix.data < 0] = 0.0
        matrix.eliminate_zeros()
        return _keep_neighbours(matrix, neighbours)
    dense = np.asarray(weights, dtype=np.float32)
    n = dense.shape[0]
    keep = min(neighbours, n)
    # Of equal weights at the cut, the lowest columns: a partition's choice among them depends on the CPU's
    # instruction set (numpy's AVX-512 partition and its generic one differ), and so would the served sources.
    columns = top_k(dense, keep, stable=True)[0]
    values = np.take_along_axis(dense, columns, axis=1)
    rows = np.repeat(np.arange(n), keep)
    matrix = sp.csr_matrix((values.ravel(), (rows, columns.ravel())), shape=(n, n), dtype=np.float32)
    matrix.setdiag(0.0)
    matrix.data[matrix.data < 0] = 0.0
    matrix.eliminate_zeros()
    return matrix


@dataclass
class Sources:
    """Fitted candidate sources over n items.

    Each matrix is scipy's where the sources were fitted, and :class:`CsrArrays` where they were loaded (serving).

    Attributes:
        item_item: (n, n) float32 csr; row h holds the weights from history item h to other items.
        transitions: (n, n) float32 csr; row i holds P(next item j | last item i).
        kind: "ease" or "item_knn".
        l2: EASE's λ (None for item-kNN).
        knn_neighbours: item-kNN's neighbours kept per product (None for EASE).
        sequence: (n, n) float32 csr, the sequential rules (:func:`modeling.baselines.sequential_rules`) of
            ``sequence_window`` steps, each row's strongest kept; a history is scored from its
            ``sequence_history`` most recent products (:meth:`HistoryBatch.propagate_recent`). None: the
            transitions, from the last product alone.
    """

    item_item: sp.csr_matrix | CsrArrays
    transitions: sp.csr_matrix | CsrArrays
    kind: str
    l2: float | None
    sequence: sp.csr_matrix | CsrArrays | None = None
    sequence_window: int = 1
    sequence_history: int = 1
    knn_neighbours: int | None = None

    def __post_init__(self) -> None:
        if self.sequence is None:
            self.sequence, self.sequence_window, self.sequence_history = self.transitions, 1, 1
        # Rows are looked up by binary search (modeling.reranker), which needs sorted column indices;
        # scipy's products do not promise them.
        for matrix in (self.item_item, self.transitions, self.sequence):
            matrix.sort_indices()

    @property
    def n_items(self) -> int:
        return int(self.item_item.shape[0])

    def resized(self, n_items: int) -> Sources:
        """The same sources over ``n_items`` >= n items (the new ones have no weights)."""
        def grow(matrix: sp.csr_matrix | CsrArrays) -> CsrArrays:
            # Only the row pointers grow (the new rows are empty): data and indices stay the (memory-mapped,
            # shared) arrays they are.
            extra = np.full(n_items - matrix.shape[0], matrix.indptr[-1], dtype=matrix.indptr.dtype)
            return CsrArrays(matrix.data, matrix.indices, np.concatenate([matrix.indptr, extra]), (n_items, n_items))

        return Sources(grow(self.item_item), grow(self.transitions), self.kind, self.l2, grow(self.sequence),
                       self.sequence_window, self.sequence_history, self.knn_neighbours)

    def save(self, directory: Path) -> None:
        """Write each matrix's CSR arrays into ``directory``: ``<name>.data.npy`` (nnz,) float32,
        ``<name>.indices.npy`` (nnz,) and ``<name>.indptr.npy`` (n + 1,) int32 or int64, for
        ``item_item``, ``transitions`` and ``sequence`` (plain arrays, so workers can share them memory-mapped)."""
        for name, matrix in (("item_item", self.item_item), ("transitions", self.transitions),
                             ("sequence", self.sequence)):
            for part in ("data", "indices", "indptr"):
                np.save(directory / f"{name}.{part}.npy", getattr(matrix, part), allow_pickle=False)

    @classmethod
    def load(cls, directory: Path, kind: str, l2: float | None, sequence_window: int = 1,
             sequence_history: int = 1, knn_neighbours: int | None = None) -> Sources:
        """Read what :meth:`save` wrote, memory-mapped (read-only pages shared by every process that maps them).

        Raises:
            ValueError: when the arrays are missing or do not form a square CSR matrix.
        """
        def matrix(name: str) -> CsrArrays:
            try:
                data, indices, indptr = (mapped(directory / f"{name}.{part}.npy")
                                         for part in ("data", "indices", "indptr"))
            except OSError as exc:
                raise ValueError(f"{name}: {exc}") from exc
            n = len(indptr) - 1
            if (data.dtype != np.float32 or len(data) != len(indices) or n < 0 or int(indptr[-1]) != len(data)
                    or data.ndim != 1 or indices.ndim != 1 or indptr.ndim != 1
                    or indices.dtype.kind != "i" or indptr.dtype.kind != "i"):
                raise ValueError(f"{name}: inconsistent CSR arrays")
            return CsrArrays(data, indices, indptr, (n, n))

        return cls(matrix("item_item"), matrix("transitions"), kind, l2, matrix("sequence"), int(sequence_window),
                   int(sequence_history), None if knn_neighbours is None else int(knn_neighbours))


def fit_sources(user_idx: np.ndarray, item_idx: np.ndarray, n_users: int, n_items: int, *,
                l2: float | None = None, knn_neighbours: int | None = None, neighbours: int = ITEM_ITEM_NEIGHBOURS,
                validate: Callable[[EASE | ItemKNN], np.ndarray] | None = None,
                l2_choices: Sequence[float] = EASE_L2_CHOICES, knn_choices: Sequence[int] = KNN_NEIGHBOUR_CHOICES,
                sequence: tuple[int, int] | None = None,
                choose_sequence: Callable[[sp.csr_matrix, int], float] | None = None,
                say: Callable[[str], None] = lambda message: None) -> Sources:
    """Fit the item-item and transition sources on interactions sorted by user and time.

    Args:
        user_idx, item_idx: (n,) positions, sorted by user and then time.
        n_users, n_items: table sizes.
        l2: EASE's λ; None: chosen from ``l2_choices`` by ``validate`` (widened past a winning edge), or
            500 without it.
        knn_neighbours: fit item-kNN with this many neighbours per product instead of EASE (what a refit of
            sources that chose item-kNN passes).
        neighbours: item-item weights kept per item (EASE's, and item-kNN's above ``EASE_MAX_ITEMS``).
        validate: (v,) per-shopper validation NDCG@10 of a fitted dense EASE or item-kNN. With it (and no ``l2``),
            EASE's λ is chosen by its mean, then item-kNN's neighbours from ``knn_choices`` (widened likewise), and
            item-kNN replaces EASE when its paired gain exceeds :data:`ITEM_KNN_STANDARD_ERRORS` standard errors.
        sequence: the sequential rules' (window, history); None: chosen from :data:`SEQUENCE_WINDOWS` x
            :data:`SEQUENCE_HISTORIES` by ``choose_sequence``, or :data:`SEQUENCE_DEFAULT` without it.
        choose_sequence: validation score (higher is better) of a sequential rules matrix scored from a
            history's given number of most recent products.

    Returns:
        :class:`Sources`: EASE or item-kNN when ``n_items <= EASE_MAX_ITEMS``, item-kNN (cosine) above.
    """
    from modeling.baselines import (
        EASE,
        EASE_MAX_ITEMS,
        EASEGram,
        ItemKNN,
        interaction_matrix,
        transition_probabilities,
    )
    from modeling.grid_search import widening_search

    matrix = interaction_matrix(user_idx, item_idx, n_users, n_items)
    transitions = transition_probabilities(user_idx, item_idx, n_items)
    rules, window, history = _fit_sequence(user_idx, item_idx, n_items, neighbours, sequence, choose_sequence, say)

    def sources(item_item: sp.csr_matrix, kind: str, l2: float | None, knn: int | None = None) -> Sources:
        return Sources(item_item, transitions, kind, l2, rules, window, history, knn)

    def knn_sources(knn: ItemKNN, count: int) -> Sources:
        return sources(keep_strongest(knn.similarity, count), "item_knn", None, count)

    if knn_neighbours is not None:
        return knn_sources(ItemKNN(int(knn_neighbours)).fit(matrix), int(knn_neighbours))
    if n_items > EASE_MAX_ITEMS:
        return knn_sources(ItemKNN(neighbours).fit(matrix), neighbours)
    if l2 is None and validate is not None:
        best: dict[str, Any] = {}  # per search: the best model and its per-shopper scores (one dense EASE at a time)

        def score(name: str, model: EASE | ItemKNN) -> float:
            values = np.asarray(validate(model), dtype=np.float64)
            if name not in best or values.mean() > best[name][1].mean():
                best[name] = (model, values)
            return float(values.mean())

        gram = EASEGram(matrix)
        result = widening_search(lambda value: score("ease", EASE(value).fit(matrix, gram=gram)), l2_choices,
                                 lower=1e-3, label="ranking stage: item-item EASE l2")
        gram = None
        ease, ease_scores = best.pop("ease")
        l2 = float(ease.l2)
        say(f"ranking stage: item-item EASE λ={l2:g} (validation NDCG@10 {result.score:.4f})")
        ease_weights, ease = keep_strongest(ease.weights, neighbours), None  # the dense model goes before kNN's
        full = ItemKNN(0).fit(matrix)
        most = max(1, n_items - 1)  # neighbours a product can have
        knn = widening_search(lambda n: score("knn", full.restricted(int(n))),
                              sorted({min(int(c), most) for c in knn_choices}), lower=1, upper=most, integer=True,
                              label="ranking stage: item-item kNN neighbours")
        full = None
        knn_model, knn_scores = best.pop("knn")
        gain, error = paired_gain(knn_scores, ease_scores)
        # No spread to measure (one shopper, or every difference alike): no evidence, EASE stays.
        count, clear = int(knn.best), error > 0 and gain > ITEM_KNN_STANDARD_ERRORS * error
        say(f"ranking stage: item-item kNN of {count} neighbours (validation NDCG@10 {knn.score:.4f}, "
            f"{gain:+.4f} ± {error:.4f} over EASE); the item-item source is "
            + ("item-kNN" if clear else f"EASE (item-kNN would need {ITEM_KNN_STANDARD_ERRORS:g} standard errors)"))
        if clear:
            return knn_sources(knn_model, count)
        return sources(ease_weights, "ease", l2)
    l2 = 500.0 if l2 is None else float(l2)
    return sources(keep_strongest(EASE(l2).fit(matrix).weights, neighbours), "ease", l2)


def paired_gain(trial: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """Mean of the paired per-shopper difference ``trial - reference`` (both (v,)) and its standard error."""
    difference = np.asarray(trial, dtype=np.float64) - np.asarray(reference, dtype=np.float64)
    if len(difference) < 2:
        return float(difference.mean()) if len(difference) else 0.0, 0.0
    return float(difference.mean()), float(difference.std(ddof=1) / np.sqrt(len(difference)))


def item_item_choice(sources: Sources) -> dict[str, Any]:
    """The item-item choice of ``sources`` as :func:`fit_sources`' arguments (what a refit keeps):
    ``{"knn_neighbours": n}`` for item-kNN, ``{"l2": λ}`` for EASE."""
    if sources.kind == "item_knn":
        return {"knn_neighbours": sources.knn_neighbours or ITEM_ITEM_NEIGHBOURS}
    return {"l2": sources.l2}


def refit_choices(sources: Sources) -> dict[str, Any]:
    """What a refit of ``sources`` on other interactions keeps, as :func:`fit_sources`' arguments: the item-item
    choice (:func:`item_item_choice`) and the sequential rules' ``(window, history)``."""
    return {**item_item_choice(sources), "sequence": (sources.sequence_window, sources.sequence_history)}


def _fit_sequence(user_idx: np.ndarray, item_idx: np.ndarray, n_items: int, neighbours: int,
                  sequence: tuple[int, int] | None, choose: Callable[[sp.csr_matrix, int], float] | None,
                  say: Callable[[str], None]) -> tuple[sp.csr_matrix, int, int]:
    """The sequential rules source: ``(matrix (n, n) csr, window, history)``, chosen by ``choose`` when
    ``sequence`` is None (see :func:`fit_sources`)."""
    from modeling.baselines import sequential_rules

    def fitted(window: int) -> sp.csr_matrix:
        return keep_strongest(sequential_rules(user_idx, item_idx, n_items, window), neighbours)

    if sequence is not None or choose is None:
        window, history = sequence if sequence is not None else SEQUENCE_DEFAULT
        return fitted(int(window)), int(window), int(history)
    best = choose_window_and_history(fitted, choose)
    say(f"ranking stage: sequential rules of {best.window} steps from the {best.history} most recent products "
        f"(validation NDCG@10 {best.score:.4f})")
    return best.fitted, best.window, best.history


@dataclass
class SequenceChoice(Generic[T]):
    """The best (window, history) of the sequential rules' grid: its validation score, the rules fitted with that
    window, and every pair's score (``{"window=W, history=H": score}``)."""

    score: float
    window: int
    history: int
    fitted: T
    tried: dict[str, float]


def choose_window_and_history(fit: Callable[[int], T], score: Callable[[T, int], float]) -> SequenceChoice[T]:
    """Try every window of :data:`SEQUENCE_WINDOWS` (``fit(window)`` once each) with every number of recent
    products of :data:`SEQUENCE_HISTORIES` (``score(fitted, history)``, higher is better); the first best pair
    wins a tie. The ranking stage's source and the ``sequential_rules`` baseline are chosen this way."""
    best: SequenceChoice[T] | None = None
    tried: dict[str, float] = {}
    for window in SEQUENCE_WINDOWS:
        fitted = fit(window)
        for history in SEQUENCE_HISTORIES:
            value = score(fitted, history)
            tried[f"window={window}, history={history}"] = round(value, 5)
            if best is None or value > best.score:
                best = SequenceChoice(value, window, history, fitted, tried)
    assert best is not None
    return best


def source_config(sources: Sources) -> dict[str, Any]:
    """What the manifest records of the sources."""
    return {"item_item": sources.kind, "l2": sources.l2, "knn_neighbours": sources.knn_neighbours,
            "item_item_weights": int(sources.item_item.nnz), "transitions": int(sources.transitions.nnz),
            "sequence": {"window": sources.sequence_window, "history": sources.sequence_history,
                         "weights": int(sources.sequence.nnz)}}
