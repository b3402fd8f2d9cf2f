"""Top-k retrieval over the item vectors: exact (numpy) or approximate (FAISS HNSW), one interface.

Exact search is a matrix product and a partial sort; at 100,000 items and 64 dimensions it
costs about a millisecond per query, so it is the default. Above a configurable catalogue
size, :class:`HnswIndex` (FAISS, inner-product HNSW graph) answers in a fraction of that with
a small loss of recall. Filters and exclusions stay exact: the approximate index fetches
extra candidates, drops the excluded and disallowed ones, and a row left with fewer than
``k`` candidates is answered by exact search.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from modeling.ranking import top_k

logger = logging.getLogger(__name__)


def penalty(allowed: np.ndarray) -> np.ndarray:
    """(n_items,) float32: 0 where allowed, -inf elsewhere (added to scores: cheaper than masked assignment)."""
    return np.where(allowed, np.float32(0.0), np.float32(-np.inf)).astype(np.float32)


class ItemIndex(Protocol):
    """What the recommender needs of an index over the (n_items, d) item vectors."""

    def search(self, queries: np.ndarray, k: int, exclude: Sequence[np.ndarray],
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items by dot product per query.

        Args:
            queries: (m, d) float32.
            k: items per row.
            exclude: m arrays of item positions never returned.
            allowed: optional (n_items,) bool mask of returnable items.

        Returns:
            ``(positions (m, k) int64, scores (m, k) float32)``, best first; -1 / -inf pad rows with
            fewer returnable items.
        """
        ...


class ExactIndex:
    """Brute-force inner product over all items (numpy BLAS)."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors

    def search(self, queries: np.ndarray, k: int, exclude: Sequence[np.ndarray],
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        scores = np.asarray(queries, dtype=np.float32) @ np.asarray(self.vectors, dtype=np.float32).T
        if allowed is not None:
            blocked = np.flatnonzero(~allowed)
            if len(blocked) * 8 < len(allowed):  # usually a few products out of stock
                scores[:, blocked] = -np.inf
            else:  # a narrow filter (a category, a price range)
                scores += penalty(allowed)
        return top_k(scores, k, exclude, copy=False)


class HnswIndex:
    """Approximate inner-product search with a FAISS HNSW graph, built on first use.

    Args:
        vectors: (n_items, d) float32 item vectors.
        neighbours: graph degree M (memory: about ``n_items * M * 8`` bytes on top of the vectors).
        ef_search: candidate list size at query time (recall vs. speed).
        extra: candidates fetched beyond ``k`` plus the excluded items, to survive filtering.
    """

    def __init__(self, vectors: np.ndarray, *, neighbours: int = 32, ef_search: int = 512, extra: int = 50) -> None:
        self.vectors = vectors
        self.exact = ExactIndex(vectors)
        self.neighbours = neighbours
        self.ef_search = ef_search
        self.extra = extra
        self._index = None
        self._lock = threading.Lock()

    def build(self) -> None:
        """Build the graph now (a few seconds per 100,000 items) instead of on the first query."""
        import faiss

        with self._lock:
            if self._index is not None:
                return
            data = np.ascontiguousarray(self.vectors, dtype=np.float32)
            index = faiss.IndexHNSWFlat(data.shape[1], self.neighbours, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = 80
            index.add(data)
            index.hnsw.efSearch = self.ef_search
            self._index = index
            logger.info("HNSW index built over %d items", len(data))

    def set_ef_search(self, ef_search: int) -> None:
        """Change the query-time candidate list size (higher: better recall, slower)."""
        self.ef_search = ef_search
        if self._index is not None:
            self._index.hnsw.efSearch = ef_search

    def search(self, queries: np.ndarray, k: int, exclude: Sequence[np.ndarray],
               allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.vectors)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        m = len(queries)
        blocked = 0 if allowed is None else n - int(np.count_nonzero(allowed))
        longest = max((len(e) for e in exclude), default=0)
        fetch = k + longest + self.extra
        if blocked > n // 10 or fetch * 4 > n:  # a narrow filter or a tiny catalogue: exact is as fast
            return self.exact.search(queries, k, exclude, allowed)
        if self._index is None:
            self.build()
        scores, positions = self._index.search(queries, max(fetch, self.ef_search // 2))
        out_pos = np.full((m, k), -1, dtype=np.int64)
        out_scores = np.full((m, k), -np.inf, dtype=np.float32)
        fallback = []
        for row in range(m):
            candidates, candidate_scores = positions[row], scores[row]
            keep = candidates >= 0
            if allowed is not None:
                keep &= allowed[np.maximum(candidates, 0)]
            if len(exclude[row]):
                keep &= ~np.isin(candidates, exclude[row])
            candidates, candidate_scores = candidates[keep][:k], candidate_scores[keep][:k]
            if len(candidates) < k:
                fallback.append(row)
                continue
            out_pos[row], out_scores[row] = candidates, candidate_scores
        if fallback:
            exact_pos, exact_scores = self.exact.search(queries[fallback], k, [exclude[r] for r in fallback], allowed)
            out_pos[fallback], out_scores[fallback] = exact_pos, exact_scores
        return out_pos, out_scores


def make_index(vectors: np.ndarray, ann_min_items: int | None, ef_search: int = 512) -> ItemIndex:
    """Exact search, or HNSW when the catalogue has at least ``ann_min_items`` items (None: never)."""
    if ann_min_items is not None and len(vectors) >= ann_min_items:
        return HnswIndex(vectors, ef_search=ef_search)
    return ExactIndex(vectors)


def recall_against_exact(index: ItemIndex, vectors: np.ndarray, queries: np.ndarray, k: int) -> float:
    """Mean fraction of the exact top-k that ``index`` returns, over the (m, d) ``queries``."""
    none = [np.zeros(0, dtype=np.int64)] * len(queries)
    exact, _ = ExactIndex(vectors).search(queries, k, none)
    approx, _ = index.search(queries, k, none)
    hits = [len(np.intersect1d(a, e)) / k for a, e in zip(approx, exact, strict=True)]
    return float(np.mean(hits))
