"""Cold-start protocols: shoppers and products the model never saw in training.

Protocol 2 (cold users): a fraction of the users is removed from training. At test time
each of them is given their first 0, 1 or 3 interactions through the serving code path
(:meth:`modeling.recommender.Recommender.recommend`: "popular" with nothing, "content"
with a history) and must rank their remaining items. Baselines fold the same history in
(item-kNN, EASE) or ignore it (popularity).

Protocol 3 (cold items): a fraction of the products is removed from training (with all
their interactions). The bundle then gets them the way the service does for products added
after training (text-based candidate vectors). Measured: Recall@50 of those products for
the users who interacted with them, against what random placement would give.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from modeling import artifacts
from modeling import datasets as ds
from modeling.baselines import EASE, ImplicitALS, ItemKNN, Popularity, Transitions, TransitionsEASE, interaction_matrix
from modeling.embeddings import Embeddings
from modeling.features import item_attributes
from modeling.metrics import user_hits_and_gains
from modeling.recommender import History, Recommender
from modeling.splits import time_order

logger = logging.getLogger(__name__)

GIVEN: tuple[int, ...] = (0, 1, 3)


def _subset(data: ds.CanonicalData, interactions: pd.DataFrame,
            items: pd.DataFrame | None = None) -> ds.CanonicalData:
    users = pd.DataFrame({ds.USER_ID: pd.unique(interactions[ds.USER_ID])}).astype({ds.USER_ID: "string"})
    return ds.CanonicalData(items=data.items if items is None else items,
                            users=users.sort_values(ds.USER_ID).reset_index(drop=True),
                            interactions=interactions.reset_index(drop=True), report={},
                            fingerprint=data.fingerprint + "-subset")


def _train_and_load(data: ds.CanonicalData, embeddings: Embeddings, params: Any, directory: str) -> Recommender:
    from modeling.train import publish, train_model

    trained = train_model(data, embeddings, params)
    return Recommender(artifacts.load_bundle(publish(trained, data, embeddings, directory)))


COLD_USER_METRICS: tuple[str, ...] = ("hr@10", "recall@50", "next_hr@10", "next_ndcg@10")


def _cold_user_metrics(ranked: np.ndarray, relevant: np.ndarray, next_item: int, k: int = 10,
                       k_recall: int = 50) -> tuple[float, float, float, float]:
    """One cold user's values of :data:`COLD_USER_METRICS` from a ranking (>= k_recall,) best first.

    ``hr@10``: 1 if any relevant item is in the top k; ``recall@50``: share of the relevant items in
    the top k_recall; ``next_hr@10`` and ``next_ndcg@10``: hit and 1 / log2(rank + 1) of the one
    product that came right after the given ones (0 when it is not in the top k).
    """
    hit = float(np.isin(ranked[:k], relevant).any())
    recall = float(np.isin(relevant, ranked[:k_recall]).mean()) if len(relevant) else 0.0
    next_hit, next_gain = user_hits_and_gains(np.asarray(ranked)[None, :], np.array([next_item]), k)
    return hit, recall, float(next_hit[0]), float(next_gain[0])


def cold_users(data: ds.CanonicalData, embeddings: Embeddings, params: Any = None, *, fraction: float = 0.1,
               seed: int = 0, given: Sequence[int] = GIVEN, ease_l2: float = 200.0,
               baselines: dict[str, Any] | None = None,
               on_progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Protocol 2. Returns ``{"users": n, "given_<g>": {model: {metric: value}}}`` (:data:`COLD_USER_METRICS`).

    HR@10 is 1 when any of the user's remaining items is in the top 10; Recall@50 is the
    share of the remaining items in the top 50; next HR@10 and next NDCG@10 look only at the
    product that came right after the given ones (as leave-last-out does for known users).
    Only users with more than ``max(given)`` distinct items can be held out. Interactions with
    the same timestamp are put in a seeded random order (see
    :func:`modeling.splits.time_order`). With nothing given, every baseline falls back to
    popularity (training counts); the two-tower service answers with recent popularity. The
    sequential baselines score from the last given item.

    Args:
        baselines: the baselines' parameters chosen on leave-last-out's validation items (the
            ``"baselines"`` entry of :func:`modeling.evaluate.compare_leave_last_out`'s result:
            ``{name: {"params": {...}}}``); defaults where absent (EASE: ``ease_l2``).
    """
    say = on_progress or (lambda message: None)
    inter = time_order(data.interactions, seed=seed)
    distinct = inter.groupby(ds.USER_ID, observed=True)[ds.ITEM_ID].nunique()
    eligible = distinct.index[distinct > max(given)].astype(str)
    rng = np.random.default_rng(seed)
    n_cold = max(1, int(round(fraction * len(distinct))))
    cold = set(rng.choice(np.asarray(eligible), size=min(n_cold, len(eligible)), replace=False))
    is_cold = inter[ds.USER_ID].astype(str).isin(cold).to_numpy()
    warm = _subset(data, inter[~is_cold])
    with tempfile.TemporaryDirectory() as directory:
        recommender = _train_and_load(warm, embeddings, params, directory)
        items = pd.Index(recommender.item_ids.astype(str))
        warm_u = pd.Index(warm.users[ds.USER_ID].astype(str)).get_indexer(warm.interactions[ds.USER_ID].astype(str))
        warm_i = items.get_indexer(warm.interactions[ds.ITEM_ID].astype(str))
        matrix = interaction_matrix(warm_u, warm_i, len(warm.users), len(items))
        chosen = {name: entry.get("params", {}) for name, entry in (baselines or {}).items()}
        ease = EASE(chosen.get("ease", {}).get("l2", ease_l2)).fit(matrix)
        blend = chosen.get("transitions+ease", {})
        als = {"factors": 64, **chosen.get("ials", {})}
        models = {"popularity": Popularity().fit(matrix),
                  "item_knn": ItemKNN(int(chosen.get("item_knn", {}).get("neighbours", 100))).fit(matrix),
                  "ease": ease,
                  "ials": ImplicitALS(factors=int(als["factors"]), regularization=als.get("regularization", 0.1),
                                      alpha=als.get("alpha", 1.0), seed=seed).fit(matrix),
                  "transitions": Transitions().fit_sequences(matrix, warm_u, warm_i),
                  "transitions+ease": TransitionsEASE(ease.l2, blend.get("weight", 0.5)).fit_sequences(
                      matrix, warm_u, warm_i, ease=ease)}
        results: dict[str, Any] = {"users": len(cold)}
        cold_rows = inter[is_cold]
        for g in given:
            sums: dict[str, list[float]] = {}
            for user, rows in cold_rows.groupby(ds.USER_ID, observed=True, sort=True):
                distinct_rows = rows.drop_duplicates(ds.ITEM_ID)
                first = distinct_rows.iloc[:g]
                shown = items.get_indexer(first[ds.ITEM_ID].astype(str))
                next_item = int(items.get_indexer([str(distinct_rows[ds.ITEM_ID].iloc[g])])[0])
                relevant = np.setdiff1d(items.get_indexer(rows[ds.ITEM_ID].astype(str)), shown)
                relevant = relevant[relevant >= 0]
                if len(relevant) == 0:
                    continue
                histories = {} if g == 0 else {str(user): History(first[ds.ITEM_ID].to_numpy(dtype=object),
                                                                  first[ds.TIMESTAMP].to_numpy(),
                                                                  first[ds.WEIGHT].to_numpy())}
                ranking = recommender.recommend([str(user)], histories, 50)[str(user)]
                scores = {"two_tower": _cold_user_metrics(ranking.items, relevant, next_item)}
                row = interaction_matrix(np.zeros(len(shown), dtype=int), shown, 1, len(items))
                last = np.array([shown[-1] if g > 0 else -1])
                for name, model in models.items():
                    s = (model if g > 0 else models["popularity"]).score(row, last)[0]
                    s[shown] = -np.inf
                    scores[name] = _cold_user_metrics(np.argsort(-s, kind="stable")[:50], relevant, next_item)
                for name, values in scores.items():
                    sums.setdefault(name, []).append(values)
            results[f"given_{g}"] = {name: dict(zip(COLD_USER_METRICS, np.mean(v, axis=0).astype(float).tolist(),
                                                    strict=True))
                                     for name, v in sums.items()}
            given_g = results[f"given_{g}"]
            say(f"cold users given {g}: two_tower HR@10 {given_g['two_tower']['hr@10']:.4f}, next HR@10 "
                f"{given_g['two_tower']['next_hr@10']:.4f}; popularity {given_g['popularity']['hr@10']:.4f}, "
                f"{given_g['popularity']['next_hr@10']:.4f}")
    return results


def cold_items(data: ds.CanonicalData, embeddings: Embeddings, params: Any = None, *, fraction: float = 0.1,
               seed: int = 0, on_progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Protocol 3. Returns ``{"items": n, "pairs": n, "two_tower": {"recall@50"}, "random": {"recall@50"}}``."""
    say = on_progress or (lambda message: None)
    inter = data.interactions
    interacted = pd.unique(inter[ds.ITEM_ID].astype(str))
    rng = np.random.default_rng(seed)
    cold = set(rng.choice(interacted, size=max(1, int(round(fraction * len(interacted)))), replace=False))
    is_cold = inter[ds.ITEM_ID].astype(str).isin(cold).to_numpy()
    warm_items = data.items[~data.items[ds.ITEM_ID].astype(str).isin(cold)]
    warm = _subset(data, inter[~is_cold], warm_items)
    with tempfile.TemporaryDirectory() as directory:
        recommender = _train_and_load(warm, embeddings, params, directory)
        cold_ids = np.asarray(sorted(cold))
        cold_rows = data.items.set_index(data.items[ds.ITEM_ID].astype(str)).loc[cold_ids].reset_index(drop=True)
        recommender.add_items(cold_ids, embeddings.item_matrix_for(cold_ids), item_attributes(cold_rows))
        items = pd.Index(recommender.item_ids.astype(str))
        recalls, randoms = [], []
        for user, rows in inter[is_cold].groupby(ds.USER_ID, observed=True, sort=True):
            user = str(user)
            if not recommender.knows_user(user):
                continue
            seen = items.get_indexer(inter.loc[(inter[ds.USER_ID] == user) & ~is_cold, ds.ITEM_ID].astype(str))
            seen = seen[seen >= 0]
            relevant = items.get_indexer(rows[ds.ITEM_ID].astype(str).unique())
            ranked, _ = recommender.rank(recommender.known_user_vectors([user]), [seen], 50)
            recalls.append(float(np.isin(relevant, ranked[0]).mean()))
            randoms.append(min(1.0, 50 / max(1, recommender.n_items - len(seen))))
    result = {"items": len(cold), "users": len(recalls),
              "two_tower": {"recall@50": float(np.mean(recalls)) if recalls else 0.0},
              "random": {"recall@50": float(np.mean(randoms)) if randoms else 0.0}}
    say(f"cold items: two_tower Recall@50 {result['two_tower']['recall@50']:.4f}, "
        f"random {result['random']['recall@50']:.4f}")
    return result


def format_cold_table(result: dict[str, Any]) -> str:
    """Cold-start results as text: HR@10 / Recall@50 per model and number of given interactions."""
    users = result["cold_users"]
    givens = [key for key in users if key.startswith("given_")]
    models = list(users[givens[0]])
    columns = [(g, metric) for metric in ("hr@10", "next_hr@10") for g in givens]
    header = f"{'cold users':<18}" + "".join(
        f"{g.replace('given_', 'given ') + (' next HR@10' if metric == 'next_hr@10' else ' HR@10'):>21}"
        for g, metric in columns)
    lines = [f"Cold users ({users['users']} held out; HR@10 = any remaining item in the top 10, "
             "next HR@10 = the product right after the given ones):", header]
    for model in models:
        lines.append(f"{model:<18}" + "".join(f"{users[g][model].get(metric, float('nan')):>21.4f}"
                                              for g, metric in columns))
    items = result["cold_items"]
    lines.append(f"Cold items ({items['items']} held out, {items['users']} users): Recall@50 two_tower "
                 f"{items['two_tower']['recall@50']:.4f}, random placement {items['random']['recall@50']:.4f}")
    return "\n".join(lines)
