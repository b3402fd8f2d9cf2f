"""The retraining gate: a candidate model against the active one on the newest interactions.

Both models rank for the shoppers who interacted after a cut-off, from what those shoppers did
before it; neither model has trained on anything after the cut-off. The candidate replaces the
active model only when it is not worse by more than a tolerance.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from modeling import datasets as ds
from modeling.recommender import History, Recommender

logger = logging.getLogger(__name__)

BATCH = 256  # shoppers per recommend() call


@dataclass(frozen=True)
class Holdout:
    """Interactions split at ``cutoff`` (unix seconds): ``before`` (<= cutoff) and ``after``."""

    cutoff: int
    before: pd.DataFrame
    after: pd.DataFrame


def holdout_split(interactions: pd.DataFrame, *, days: float, not_before: int | None = None) -> Holdout:
    """The last ``days`` days of ``interactions`` (before the newest one) held out, and never anything at or
    before ``not_before`` (the newest interaction the active model trained on).

    Args:
        interactions: canonical interactions (``INTERACTION_COLUMNS``).
    """
    if len(interactions) == 0:
        return Holdout(0, interactions, interactions)
    newest = int(interactions[ds.TIMESTAMP].max())
    cutoff = newest - int(days * 86400)
    if not_before is not None:
        cutoff = max(cutoff, int(not_before))
    after = interactions[ds.TIMESTAMP] > cutoff
    return Holdout(cutoff, interactions[~after].reset_index(drop=True), interactions[after].reset_index(drop=True))


def holdout_metrics(recommender: Recommender, holdout: Holdout, *, k: int = 10) -> dict[str, float]:
    """How well ``recommender`` predicts what each shopper found after the cut-off.

    Every shopper with at least one product after the cut-off that they had not interacted with before
    it is asked for the top ``k`` from their history before the cut-off (nothing for a new shopper, who
    gets the popular fallback). HR@k: the share with any of their new products in the top k; recall@k:
    the mean share of their new products (at most k) found there.

    Returns:
        ``{"shoppers", "hr@k", "recall@k"}``.
    """
    before, after = holdout.before, holdout.after
    earlier = {user: rows for user, rows in before.groupby(ds.USER_ID, sort=False)}
    targets: dict[str, set[str]] = {}
    for user, rows in after.groupby(ds.USER_ID, sort=False):
        seen = set(earlier[user][ds.ITEM_ID].astype(str)) if user in earlier else set()
        new = set(rows[ds.ITEM_ID].astype(str)) - seen
        if new:
            targets[str(user)] = new
    users = sorted(targets)
    hits, recalls = [], []
    for start in range(0, len(users), BATCH):
        chunk = users[start:start + BATCH]
        histories = {
            user: History(item_ids=earlier[user][ds.ITEM_ID].astype(str).to_numpy(dtype=object),
                          timestamps=earlier[user][ds.TIMESTAMP].to_numpy(dtype=np.int64),
                          weights=earlier[user][ds.WEIGHT].to_numpy(dtype=np.float64))
            for user in chunk if user in earlier
        }
        rankings = recommender.recommend(chunk, histories, k)
        for user in chunk:
            top = {str(recommender.item_ids[p]) for p in rankings[user].items[:k]}
            found = len(top & targets[user])
            hits.append(found > 0)
            recalls.append(found / min(len(targets[user]), k))
    return {"shoppers": len(users), f"hr@{k}": float(np.mean(hits)) if hits else 0.0,
            f"recall@{k}": float(np.mean(recalls)) if recalls else 0.0}
