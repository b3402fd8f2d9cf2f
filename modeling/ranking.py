"""Exact top-k over score matrices: what serving and every evaluation rank with.

Depends on numpy only, so the serving path (recommender, index) never imports evaluation code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np


def members(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    """Which ``keys`` (any shape) occur in ``sorted_keys`` (sorted, unique), by binary search: bool, the keys' shape.

    ``np.isin`` gives the same; on a request's few hundred keys spread over ``row * n + item`` it builds a
    lookup table as long as that range (0.05 ms per one-shopper search at 100,000 products, against a few
    microseconds here)."""
    if len(sorted_keys) == 0 or len(keys) == 0:
        return np.zeros(np.shape(keys), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[at] == keys


def excluded_keys(exclude: Sequence[np.ndarray], n: int) -> np.ndarray:
    """The sorted, unique keys ``row * n + item`` of m rows' items to leave out (``exclude``: m arrays of item
    positions), for :func:`members`. Returns (e,) int64."""
    lengths = np.fromiter((len(e) for e in exclude), dtype=np.int64, count=len(exclude))
    items = np.concatenate(exclude).astype(np.int64) if len(exclude) else np.zeros(0, dtype=np.int64)
    return np.unique(np.repeat(np.arange(len(exclude), dtype=np.int64), lengths) * n + items)


def _block_size(n: int, k: int) -> int:
    """Items per block of :func:`_candidates_by_block_max`: about sqrt(n / k), a power of two within [16, 64].

    Its two partial sorts cost about n / size (the block maxima) and k * size (the candidates): the square
    root balances them. At 100,000 items, 64 suits k = 10 and 32 suits the ranking stage's k = 100 (27 ms
    for 100 rows with 64, 15-18 ms with 32 or 16)."""
    return min(64, max(16, 2 ** round(math.log2(math.sqrt(n / max(k, 1))))))


def _candidates_by_block_max(scores: np.ndarray, k: int, size: int) -> np.ndarray:
    """(m, <=k*size) positions that contain every row's exact top-k (ties aside).

    The items are cut into blocks of ``size`` (:func:`_block_size`; block b holds items b, b + s,
    b + 2s, ... for a stride s); a block holding one of the k best items has a maximum at least as
    high as the k-th best score, and at most k blocks can, so the k blocks with the highest maxima
    contain the top k. The block maxima are an element-wise maximum of ``size`` contiguous slices
    (vectorised), which replaces the partial sort of every row: about 10x faster at 100,000 items
    and k=10.
    """
    m, n = scores.shape
    stride = n // size
    full = stride * size
    maxima = scores[:, :full].reshape(m, size, stride).max(axis=1)
    best_blocks = np.argpartition(-maxima, k - 1, axis=1)[:, :k]
    positions = (best_blocks[:, :, None] + np.arange(size) * stride).reshape(m, -1)
    if full < n:  # the ragged tail is always a candidate
        positions = np.concatenate([positions, np.broadcast_to(np.arange(full, n), (m, n - full))], axis=1)
    candidate_scores = np.take_along_axis(scores, positions, axis=1)
    best = np.argpartition(-candidate_scores, k - 1, axis=1)[:, :k]
    return np.take_along_axis(positions, best, axis=1)


def top_k(scores: np.ndarray, k: int, exclude: Sequence[np.ndarray] | None = None, *,
          copy: bool = True, stable: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Top-k item positions per row of a score matrix, best first.

    Args:
        scores: (m, n_items) float scores.
        k: number of items per row (clipped to n_items).
        exclude: m arrays of item positions that must not be returned (e.g. already seen).
        copy: False lets the function overwrite ``scores`` (float32) instead of copying it,
            which saves a pass over the matrix on the serving path.
        stable: equal scores in position order, at the cut too (as ``np.argsort(-row, kind="stable")``), at the
            cost of a few passes over the matrix. Otherwise equal scores come as the partition leaves them, which
            depends on the CPU's instruction set (numpy's AVX-512 partition leaves them in another order than
            its generic one): an evaluation's baselines, whose scores tie often (popularity counts, item-kNN
            cosines of small counts), then scored differently from one machine to another.

    Returns:
        ``(indices (m, k) int64, scores (m, k) float32)``; when a row has fewer than
        k allowed items the tail holds index -1 and score -inf.
    """
    scores = np.array(scores, dtype=np.float32, copy=copy or scores.dtype != np.float32)
    m, n = scores.shape
    if exclude is not None:
        for row, items in enumerate(exclude):
            if len(items):
                scores[row, items] = -np.inf
    k = max(0, min(k, n))
    if k == 0:
        return np.zeros((m, 0), dtype=np.int64), np.zeros((m, 0), dtype=np.float32)
    size = _block_size(n, k)
    if k * size * 4 <= n:
        part = _candidates_by_block_max(scores, k, size)
    elif k < n:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    else:
        part = np.tile(np.arange(n), (m, 1))
    if stable and k < n:
        scores[np.isnan(scores)] = -np.inf  # never chosen before a score (and equal to none)
        part = _stable_cut(scores, part, k)
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    indices = np.take_along_axis(part, order, axis=1).astype(np.int64)
    top_scores = np.take_along_axis(part_scores, order, axis=1)
    indices[~np.isfinite(top_scores)] = -1
    return indices, top_scores


def _stable_cut(scores: np.ndarray, part: np.ndarray, k: int) -> np.ndarray:
    """(m, k) positions, increasing in each row: every score above the row's k-th best and, of those equal to it,
    the lowest positions; ``part`` (m, >=k) holds a top k of each row (its k-th best value is the row's)."""
    m = len(scores)
    part_scores = np.take_along_axis(scores, part, axis=1)
    kth = np.partition(part_scores, part.shape[1] - k, axis=1)[:, part.shape[1] - k:part.shape[1] - k + 1]
    out = np.empty((m, k), dtype=np.int64)
    for start in range(0, m, _STABLE_ROWS):  # a few (rows, n) temporaries at a time
        rows = slice(start, start + _STABLE_ROWS)
        above, tied = scores[rows] > kth[rows], scores[rows] == kth[rows]
        room = k - above.sum(axis=1, keepdims=True)
        chosen = above | (tied & (np.cumsum(tied, axis=1) <= room))
        out[rows] = np.nonzero(chosen)[1].reshape(-1, k)
    return out


_STABLE_ROWS = 256


ScoreFn = Callable[[np.ndarray], np.ndarray]
"""Maps (m,) user positions to (m, n_items) scores."""


def seen_items(user_idx: np.ndarray, item_idx: np.ndarray, n_users: int) -> list[np.ndarray]:
    """Per user position, the unique item positions in the history. Returns n_users arrays."""
    order = np.argsort(user_idx, kind="stable")
    users_sorted = np.asarray(user_idx)[order]
    items_sorted = np.asarray(item_idx)[order]
    bounds = np.searchsorted(users_sorted, np.arange(n_users + 1))
    return [np.unique(items_sorted[bounds[u]:bounds[u + 1]]) for u in range(n_users)]


def rank_users(score_fn: ScoreFn, users: np.ndarray, seen: Sequence[np.ndarray], k: int, *,
               batch_size: int = 1024) -> np.ndarray:
    """Top-k item positions of each user, best first, the user's ``seen`` items excluded.

    Args:
        score_fn: maps (m,) user positions to (m, n_items) scores.
        users: (t,) user positions.
        seen: per user position, the items to exclude.
        k: list length.

    Returns:
        (t, k) int64, -1 where fewer than k items are allowed; equal scores in position order (the same lists on
        every machine).
    """
    parts = []
    for start in range(0, len(users), batch_size):
        batch = users[start:start + batch_size]
        ranked, _ = top_k(score_fn(batch), k, [seen[u] for u in batch], stable=True)
        parts.append(ranked)
    return np.concatenate(parts) if parts else np.zeros((0, k), dtype=np.int64)


def stable_top(scores: np.ndarray, k: int) -> np.ndarray:
    """The first ``k`` positions of ``np.argsort(-scores, kind="stable")`` without sorting every score.

    Ties keep the lower position first, exactly as the full stable sort; only the scores at least as
    high as the k-th best are sorted (a partition finds that threshold).

    Args:
        scores: (n,) float scores (``-inf`` for excluded items).
        k: list length.

    Returns:
        (min(k, n),) int64 positions, best first.
    """
    scores = np.asarray(scores)
    n = len(scores)
    if k >= n:
        return np.argsort(-scores, kind="stable")[:k]
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    threshold = np.partition(-scores, k - 1)[k - 1]
    candidates = np.flatnonzero(-scores <= threshold)
    return candidates[np.argsort(-scores[candidates], kind="stable")][:k].astype(np.int64)


def stable_top_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`stable_top` for each row of a score matrix: the first ``k`` places of each row's stable sort by
    decreasing score, ties (at the cut too) in increasing place, whatever the row's width.

    :func:`top_k` orders ties as its partition leaves them, which depends on how wide the rows are.

    Args:
        scores: (m, C) float32 scores; ``-inf`` is never chosen before a finite score (and NaN not at all: give
            it as ``-inf``).
        k: list length.

    Returns:
        ``(places (m, k) int64, scores (m, k) float32)``; -1 / -inf where a row has fewer than ``k`` finite scores.
    """
    m, width = scores.shape
    take = min(k, width)
    places = np.full((m, k), -1, dtype=np.int64)
    values = np.full((m, k), -np.inf, dtype=np.float32)
    if take == 0:
        return places, values
    if m == 1:  # a shopper answered alone: the row's stable sort itself, in a fifth of the dozen steps below
        order = np.argsort(-scores[0], kind="stable")[:take]
        best = scores[0][order]
        places[0, :take] = np.where(np.isfinite(best), order, -1)
        values[0, :take] = best
        return places, values
    kth = np.partition(scores, width - take, axis=1)[:, width - take:width - take + 1]  # (m, 1): the take-th best
    above = scores > kth
    tied = scores == kth
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= take - above.sum(axis=1, keepdims=True)))
    columns = np.nonzero(chosen)[1].reshape(m, take)  # each row's chosen places, in increasing order
    best = np.take_along_axis(scores, columns, axis=1)
    order = np.argsort(-best, axis=1, kind="stable")
    columns, best = np.take_along_axis(columns, order, axis=1), np.take_along_axis(best, order, axis=1)
    places[:, :take] = np.where(np.isfinite(best), columns, -1)
    values[:, :take] = best
    return places, values


def rank_by_shared_scores(scores: np.ndarray, users: np.ndarray, seen: Sequence[np.ndarray], k: int) -> np.ndarray:
    """:func:`rank_users` for one score row that every user shares (e.g. popularity), without an (m, n) matrix.

    Each user's list is the shared order (:func:`stable_top`: ties keep the lower position first)
    with the user's ``seen`` items left out. :func:`rank_users` orders ties as its partition leaves
    them, so the two can differ where scores tie; otherwise the lists are the same.

    Args:
        scores: (n_items,) scores.
        users: (t,) user positions.
        seen: per user position, the items to exclude.
        k: list length.

    Returns:
        (t, k) int64, -1 where fewer than k items are allowed.
    """
    scores = np.where(np.isfinite(scores), scores, -np.inf).astype(np.float32)
    n = len(scores)
    k = max(0, min(k, n))
    out = np.full((len(users), k), -1, dtype=np.int64)
    if k == 0 or len(users) == 0:
        return out
    longest = max(len(seen[u]) for u in users)
    order = stable_top(scores, min(n, k + longest))
    order = order[np.isfinite(scores[order])]
    for row, user in enumerate(users):
        items = seen[user]
        allowed = order[~np.isin(order, items)] if len(items) else order
        out[row, :min(k, len(allowed))] = allowed[:k]
    return out
