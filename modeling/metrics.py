"""Full-ranking metrics as pure functions of rankings and held-out items, and the paired bootstrap.

Every metric ranks the whole catalogue (no sampled negatives); the rankings come from
:mod:`modeling.ranking` with the user's input items excluded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from modeling.ranking import ScoreFn, rank_by_shared_scores, rank_users


def user_hits_and_gains(ranked: np.ndarray, targets: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per user: 1.0 if the single held-out item is in the top k, and its NDCG@k gain 1 / log2(rank + 1).

    Args:
        ranked: (m, >=k) item positions, best first.
        targets: (m,) the held-out item position of each user.

    Returns:
        ``(hits (m,), gains (m,))`` float64; both 0 where the item is not in the top k.
    """
    found = ranked[:, :k] == np.asarray(targets)[:, None]
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    return found.any(axis=1).astype(np.float64), (found * discounts[: found.shape[1]]).sum(axis=1)


def hit_rate_at_k(ranked: np.ndarray, targets: np.ndarray, k: int) -> float:
    """Share of users whose single held-out item is in their top k (= Recall@k for one item).

    Args:
        ranked: (m, >=k) item positions, best first.
        targets: (m,) the held-out item position of each user.
    """
    if len(targets) == 0:
        return 0.0
    return float(np.mean(user_hits_and_gains(ranked, targets, k)[0]))


def ndcg_at_k(ranked: np.ndarray, targets: np.ndarray, k: int) -> float:
    """NDCG@k with one relevant item per user: 1 / log2(rank + 1) when found, else 0.

    Args:
        ranked: (m, >=k) item positions, best first.
        targets: (m,) the held-out item position of each user.
    """
    if len(targets) == 0:
        return 0.0
    return float(np.mean(user_hits_and_gains(ranked, targets, k)[1]))


def paired_bootstrap(a: np.ndarray, b: np.ndarray, *, resamples: int = 2000, level: float = 0.95,
                     seed: int = 0) -> dict[str, float]:
    """Mean per-user difference ``a - b`` with a percentile bootstrap interval.

    Users are resampled with replacement (the same users for both models: the comparison is
    paired), so the interval says how much the difference could move with another sample of
    shoppers of the same kind.

    Args:
        a, b: (t,) per-user values of two models on the same users (e.g. NDCG@10 gains).
        resamples: bootstrap samples.
        level: coverage of the interval.
        seed: seed of the resampling.

    Returns:
        ``{"difference", "low", "high"}``; all 0 when there are no users.
    """
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if len(diff) == 0:
        return {"difference": 0.0, "low": 0.0, "high": 0.0}
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, 2_000_000 // len(diff)))  # bounded memory for large test sets
    means = np.concatenate([diff[rng.integers(0, len(diff), size=(min(chunk, resamples - start), len(diff)))]
                            .mean(axis=1) for start in range(0, resamples, chunk)])
    low, high = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"difference": float(diff.mean()), "low": float(low), "high": float(high)}


def recall_at_k(ranked: np.ndarray, relevant: Sequence[np.ndarray], k: int) -> float:
    """Mean over users of |top-k ∩ relevant| / |relevant| (users without relevant items skipped).

    Args:
        ranked: (m, >=k) item positions, best first.
        relevant: m arrays of relevant item positions.
    """
    values = [np.isin(relevant_items, ranked[row, :k]).sum() / len(relevant_items)
              for row, relevant_items in enumerate(relevant) if len(relevant_items)]
    return float(np.mean(values)) if values else 0.0


def catalogue_coverage(ranked: np.ndarray, n_items: int, k: int) -> float:
    """Share of the catalogue that appears in at least one user's top k."""
    if n_items == 0:
        return 0.0
    shown = np.unique(ranked[:, :k])
    return float(len(shown[shown >= 0]) / n_items)


def leave_last_out_metrics(ranked: np.ndarray, targets: np.ndarray, n_items: int, *, k: int = 10,
                           k_recall: int = 50) -> dict[str, float]:
    """HR@k, NDCG@k, Recall@k_recall and coverage@k of rankings (t, >=max(k, k_recall)) of held-out items (t,)."""
    return {
        f"hr@{k}": hit_rate_at_k(ranked, targets, k),
        f"ndcg@{k}": ndcg_at_k(ranked, targets, k),
        f"recall@{k_recall}": hit_rate_at_k(ranked, targets, k_recall),
        f"coverage@{k}": catalogue_coverage(ranked, n_items, k),
        "users": float(len(targets)),
    }


CURVE_KS: tuple[int, ...] = (1, 5, 10, 20, 50, 100)


def metric_curves(ranked: np.ndarray, targets: np.ndarray, ks: Sequence[int] = CURVE_KS) -> dict[str, dict[str, float]]:
    """HR@k and NDCG@k for each k in ``ks`` (ranked must hold at least max(ks) columns).

    Returns:
        ``{"hr": {"1": ..., "5": ...}, "ndcg": {...}}`` (keys are strings, for JSON).
    """
    return {"hr": {str(k): hit_rate_at_k(ranked, targets, k) for k in ks},
            "ndcg": {str(k): ndcg_at_k(ranked, targets, k) for k in ks}}


SHARED_SCORES_DENSE_MAX_CELLS = 500_000_000
"""Above this many (user x item) cells a shared score row is ranked without the dense matrix."""


def evaluate_shared_scores(scores: np.ndarray, test_users: np.ndarray, test_items: np.ndarray,
                           seen: Sequence[np.ndarray], n_items: int, *, k: int = 10,
                           k_recall: int = 50) -> dict[str, float]:
    """:func:`evaluate_leave_last_out` of one score row that every user shares (popularity).

    Small problems go through the dense path, as any scorer; from
    :data:`SHARED_SCORES_DENSE_MAX_CELLS` cells on, the lists come from one shared order
    (:func:`modeling.ranking.rank_by_shared_scores`): 200,000 users x 100,000 items took minutes per
    scorer as a dense matrix, and a second or two this way. Returns the same keys.
    """
    if len(test_users) * n_items <= SHARED_SCORES_DENSE_MAX_CELLS:
        return evaluate_leave_last_out(lambda u: np.tile(scores, (len(u), 1)), test_users, test_items, seen,
                                       n_items, k=k, k_recall=k_recall)
    ranked = rank_by_shared_scores(scores, test_users, seen, max(k, k_recall))
    return leave_last_out_metrics(ranked, test_items, n_items, k=k, k_recall=k_recall)


def evaluate_leave_last_out(
    score_fn: ScoreFn,
    test_users: np.ndarray,
    test_items: np.ndarray,
    seen: Sequence[np.ndarray],
    n_items: int,
    *,
    k: int = 10,
    k_recall: int = 50,
    batch_size: int = 1024,
) -> dict[str, float]:
    """HR@k, NDCG@k, Recall@k_recall and coverage@k of a scorer on held-out items.

    Args:
        score_fn: maps (m,) user positions to (m, n_items) scores.
        test_users: (t,) user positions with one held-out item each.
        test_items: (t,) the held-out item positions.
        seen: per user position, the training items to exclude.
        n_items: catalogue size.

    Returns:
        ``{"hr@10", "ndcg@10", "recall@50", "coverage@10", "users"}`` (names follow k).
    """
    ranked = rank_users(score_fn, test_users, seen, max(k, k_recall), batch_size=batch_size)
    return leave_last_out_metrics(ranked, test_items, n_items, k=k, k_recall=k_recall)


def sparse_ndcg_at_10(scores: Any, targets: np.ndarray, seen: list[np.ndarray],
                      popular_place: np.ndarray) -> np.ndarray:
    """(m,) NDCG@10 of one held-out item per shopper, ranking every product by its sparse score (0 where the
    row has no entry), ties (the many zeros among them) by popularity, the shopper's ``seen`` items left out.

    Args:
        scores: m sparse rows over n items (``indptr`` (m + 1,), ``indices`` and ``data`` (e,): a
            :class:`modeling.candidates.SparseRows`).
        targets: (m,) held-out item positions.
        seen: m arrays of item positions left out.
        popular_place: (n,) each item's place in the popularity order (0: most popular; all distinct).

    The same as ranking the dense rows, without building (m, n) of them.
    """
    out = np.zeros(len(targets), dtype=np.float64)
    for row, target in enumerate(np.asarray(targets, dtype=np.int64)):
        lo, hi = int(scores.indptr[row]), int(scores.indptr[row + 1])
        items, values = scores.indices[lo:hi], scores.data[lo:hi].astype(np.float64)
        left_out = np.isin(items, seen[row])
        items, values = items[~left_out & (values > 0)], values[~left_out & (values > 0)]
        own = values[items == target]
        value = float(own[0]) if len(own) else 0.0
        place = popular_place[target]
        if value > 0:
            ahead = int(np.sum((values > value) | ((values == value) & (popular_place[items] < place))))
        else:  # every positive, then the zeros more popular than it that are neither seen nor positive
            before = np.union1d(items, np.asarray(seen[row], dtype=np.int64))
            ahead = len(items) + int(place) - int(np.sum(popular_place[before] < place))
        if ahead < 10:
            out[row] = 1.0 / np.log2(ahead + 2)
    return out
