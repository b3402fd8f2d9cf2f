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
from modeling.baselines import RECENT_ITEMS, fit_baselines, interaction_matrix
from modeling.candidates import recent_items
from modeling.embeddings import Embeddings
from modeling.features import item_attributes
from modeling.metrics import paired_bootstrap, user_hits_and_gains
from modeling.ranking import stable_top
from modeling.recommender import History, Recommender
from modeling.splits import Split, leave_last_out_split, time_order

logger = logging.getLogger(__name__)

GIVEN: tuple[int, ...] = (0, 1, 3)


def _subset(data: ds.CanonicalData, interactions: pd.DataFrame,
            items: pd.DataFrame | None = None) -> ds.CanonicalData:
    users = pd.DataFrame({ds.USER_ID: pd.unique(interactions[ds.USER_ID])}).astype({ds.USER_ID: "string"})
    return ds.CanonicalData(items=data.items if items is None else items,
                            users=users.sort_values(ds.USER_ID).reset_index(drop=True),
                            interactions=interactions.reset_index(drop=True), report={},
                            fingerprint=data.fingerprint + "-subset")


def _train_and_load(data: ds.CanonicalData, embeddings: Embeddings, params: Any, directory: str,
                    split: Split) -> Recommender:
    """The two-tower trained on ``split`` of ``data`` (early stopping on its validation items), loaded for serving.

    The bundle is published over ``split.train`` only, what the towers learned from and what the baselines are
    fitted on: its popularity, its ranking stage's item-item, transition and sequential rules sources and its
    shoppers' stored vectors know none of the held-out (validation and test) interactions, as none of the
    baselines does.
    """
    from modeling.train import publish, train_model

    trained = train_model(data, embeddings, params, split=split)
    return Recommender(artifacts.load_bundle(publish(trained, data, embeddings, directory, interactions=split.train,
                                                     export_text=False)))


def check_held_out(recommender: Recommender, *, users: Sequence[str] = (), items: Sequence[str] = ()) -> None:
    """Refuse a trained model that knows a held-out shopper or product (ids, and so their vectors).

    Raises:
        RuntimeError: naming up to five leaked ids.
    """
    leaked_users = sorted(set(map(str, users)) & set(np.asarray(recommender.user_ids).astype(str)))
    leaked_items = sorted(set(map(str, items)) & set(np.asarray(recommender.item_ids).astype(str)))
    if leaked_users or leaked_items:
        raise RuntimeError(f"held-out shoppers {leaked_users[:5]} / products {leaked_items[:5]} are in the trained "
                           "model: the cold-start protocol would measure what it learned, not a cold start")


def random_recall(k: int, candidates: int) -> float:
    """Expected share of a user's relevant products in a random top ``k`` of ``candidates`` products."""
    return min(1.0, k / max(1, candidates))


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


SCORE_CHUNK = 512
"""Shoppers scored at once in the cold-start protocols (bounds the (chunk, n_items) score matrices)."""


def _chunks(n: int) -> list[slice]:
    """Consecutive slices of at most :data:`SCORE_CHUNK` of ``range(n)``."""
    return [slice(start, min(n, start + SCORE_CHUNK)) for start in range(0, n, SCORE_CHUNK)]


def _first_interactions(frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """The first interaction of each (user, product) in ``frame``, grouped by user.

    Users come sorted (as ``groupby(sort=True)`` gives them); each user's rows keep their order in
    ``frame`` (time order where ``frame`` is in time order).

    Returns:
        ``(rows, users (u,) str, starts (u + 1,) int64)``: user ``users[j]``'s rows are
        ``rows.iloc[starts[j]:starts[j + 1]]``.
    """
    rows = frame.drop_duplicates([ds.USER_ID, ds.ITEM_ID]).sort_values(ds.USER_ID, kind="stable")
    user_ids = rows[ds.USER_ID].astype(str).to_numpy()
    firsts = np.flatnonzero(np.concatenate([[True], user_ids[1:] != user_ids[:-1]])) if len(rows) else np.zeros(0)
    return rows, user_ids[firsts.astype(np.int64)], np.append(firsts, len(rows)).astype(np.int64)


def _items_by_user(frame: pd.DataFrame, items: pd.Index) -> dict[str, np.ndarray]:
    """Each user's distinct products in ``frame`` as (k,) int64 positions in ``items``, in the order found."""
    rows, users, starts = _first_interactions(frame)
    positions = items.get_indexer(rows[ds.ITEM_ID].astype(str)).astype(np.int64)
    return {user: positions[starts[j]:starts[j + 1]] for j, user in enumerate(users)}


def _cold_user_values(recommender: Recommender, models: dict[str, Any],
                      found: tuple[pd.DataFrame, np.ndarray, np.ndarray], items: pd.Index,
                      g: int) -> dict[str, list[tuple[float, float, float, float]]]:
    """Every cold user's :data:`COLD_USER_METRICS` per model when given their first ``g`` products.

    The two-tower ranks through :meth:`Recommender.recommend` and each baseline scores the history
    rows of :data:`SCORE_CHUNK` users at once; users without a remaining product are left out.

    Args:
        models: fitted baselines by name (with nothing given, all but popularity take the two-tower's
            fallback values).
        found: the cold users' first interactions by user (:func:`_first_interactions`).
        items: the catalogue, in the recommender's item order.

    Returns:
        ``{model: [values per user, users sorted]}``, the two-tower first.
    """
    rows, users, starts = found
    positions = items.get_indexer(rows[ds.ITEM_ID].astype(str)).astype(np.int64)
    item_ids = rows[ds.ITEM_ID].to_numpy(dtype=object)
    timestamps, weights = rows[ds.TIMESTAMP].to_numpy(), rows[ds.WEIGHT].to_numpy()
    kept: list[str] = []
    shown, relevant, next_items = [], [], []
    histories: dict[str, History] = {}
    for j, user in enumerate(users):
        start, stop = starts[j], starts[j + 1]
        remaining = np.setdiff1d(positions[start:stop], positions[start:start + g])
        remaining = remaining[remaining >= 0]
        if len(remaining) == 0:
            continue
        kept.append(user)
        shown.append(positions[start:start + g])
        relevant.append(remaining)
        next_items.append(int(positions[start + g]))
        if g > 0:
            histories[user] = History(item_ids[start:start + g], timestamps[start:start + g], weights[start:start + g])
    per_user: dict[str, list[tuple[float, float, float, float]]] = {"two_tower": []}
    for chunk in _chunks(len(kept)):
        rankings = recommender.recommend(kept[chunk], histories, 50)
        per_user["two_tower"] += [_cold_user_metrics(rankings[user].items, r, n)
                                  for user, r, n in zip(kept[chunk], relevant[chunk], next_items[chunk], strict=True)]
    rows_of = np.repeat(np.arange(len(kept)), [len(s) for s in shown])
    given_items = np.concatenate([np.zeros(0, dtype=np.int64), *shown])
    history_rows = interaction_matrix(rows_of, given_items, len(kept), len(items))
    last = recent_items(rows_of, given_items, len(kept), RECENT_ITEMS)  # the given items, most recent first
    for name, model in models.items():
        if g == 0 and name != "popularity":
            per_user[name] = per_user["two_tower"]  # the same fallback for every model
            continue
        per_user[name] = []
        for chunk in _chunks(len(kept)):
            scores = model.score(history_rows[chunk], last[chunk])
            for row, s, r, n in zip(scores, shown[chunk], relevant[chunk], next_items[chunk], strict=True):
                row[s] = -np.inf
                per_user[name].append(_cold_user_metrics(stable_top(row, 50), r, n))
    return per_user


def cold_users(data: ds.CanonicalData, embeddings: Embeddings, params: Any = None, *, fraction: float = 0.1,
               seed: int = 0, given: Sequence[int] = GIVEN, ease_l2: float = 200.0,
               baselines: dict[str, Any] | None = None,
               on_progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Protocol 2. Returns ``{"users": n, "given_<g>": {model: {metric: value}}, "differences": {...}}``, or
    ``{"users": 0, "not_measured": reason}`` where no shopper has more than ``max(given)`` distinct products.

    Metrics are :data:`COLD_USER_METRICS`: HR@10 is 1 when any of the user's remaining items is in
    the top 10; Recall@50 is the share of the remaining items in the top 50; next HR@10 and next
    NDCG@10 look only at the product that came right after the given ones (as leave-last-out does
    for known users). Only users with more than ``max(given)`` distinct items can be held out.
    Interactions with the same timestamp are put in a seeded random order (see
    :func:`modeling.splits.time_order`); a repeated product counts from its first interaction.

    Every model learns from the same interactions: the two-tower is trained on the warm users'
    leave-last-out training part (their last two products are its early-stopping and test items),
    and the baselines are fitted on that same part. With nothing given, every model but the
    popularity baseline (training counts) answers with the service's fallback, recent popularity
    (``"fallback_given_0"`` says so); the sequential baselines score from the given items, the last first.
    ``"differences"`` holds, per number given and baseline, the two-tower's value minus the
    baseline's for every metric with a 95% paired bootstrap interval over the cold users.

    Args:
        baselines: the baselines' parameters chosen on leave-last-out's validation items (the
            ``"baselines"`` entry of :func:`modeling.evaluate.compare_leave_last_out`'s result:
            ``{name: {"params": {...}}}``); defaults where absent (EASE: ``ease_l2``).
    """
    say = on_progress or (lambda message: None)
    inter = time_order(data.interactions, seed=seed)
    distinct = inter.groupby(ds.USER_ID, observed=True)[ds.ITEM_ID].nunique()
    eligible = distinct.index[distinct > max(given)].astype(str)
    if len(eligible) == 0:  # every mean would be of nothing (NaN everywhere in the table)
        reason = (f"no shopper has more than {max(given)} distinct products: a cold shopper is given up to "
                  f"{max(given)} and must have one more to find")
        say(f"cold users: not measured ({reason})")
        return {"users": 0, "not_measured": reason}
    rng = np.random.default_rng(seed)
    n_cold = max(1, int(round(fraction * len(distinct))))
    cold = set(rng.choice(np.asarray(eligible), size=min(n_cold, len(eligible)), replace=False))
    is_cold = inter[ds.USER_ID].astype(str).isin(cold).to_numpy()
    warm = _subset(data, inter[~is_cold])
    split = leave_last_out_split(warm.interactions)
    with tempfile.TemporaryDirectory() as directory:
        recommender = _train_and_load(warm, embeddings, params, directory, split)
        check_held_out(recommender, users=sorted(cold))
        items = pd.Index(recommender.item_ids.astype(str))
        fitted_on = split.train  # what the two-tower is fitted on
        warm_u = pd.Index(warm.users[ds.USER_ID].astype(str)).get_indexer(fitted_on[ds.USER_ID].astype(str))
        warm_i = items.get_indexer(fitted_on[ds.ITEM_ID].astype(str))
        matrix = interaction_matrix(warm_u, warm_i, len(warm.users), len(items))
        chosen = {name: dict(entry.get("params", {})) for name, entry in (baselines or {}).items()}
        chosen.setdefault("ease", {}).setdefault("l2", ease_l2)
        chosen.setdefault("transitions+ease", {}).setdefault("l2", chosen["ease"]["l2"])  # the same EASE
        models = fit_baselines(chosen, matrix, (warm_u, warm_i), seed=seed)
        half_life = recommender.bundle.manifest.get("popularity_half_life_days")
        results: dict[str, Any] = {"users": len(cold), "fallback_given_0": (
            "every model but popularity answers with the service's fallback, recent popularity (half-life "
            f"{'none' if not half_life else f'{half_life:g} days'}, chosen on the validation items)")}
        differences: dict[str, Any] = {}
        found = _first_interactions(inter[is_cold])
        for g in given:
            per_user = _cold_user_values(recommender, models, found, items, g)
            values = {name: np.asarray(v, dtype=np.float64).reshape(-1, len(COLD_USER_METRICS))
                      for name, v in per_user.items()}
            results[f"given_{g}"] = {name: dict(zip(COLD_USER_METRICS, v.mean(axis=0).tolist(), strict=True))
                                     for name, v in values.items()}
            differences[f"given_{g}"] = {
                name: {metric: paired_bootstrap(values["two_tower"][:, j], v[:, j], seed=seed)
                       for j, metric in enumerate(COLD_USER_METRICS)}
                for name, v in values.items() if name != "two_tower"}
            given_g = results[f"given_{g}"]
            say(f"cold users given {g}: hybrid (served) HR@10 {given_g['two_tower']['hr@10']:.4f}, next HR@10 "
                f"{given_g['two_tower']['next_hr@10']:.4f}; popularity {given_g['popularity']['hr@10']:.4f}, "
                f"{given_g['popularity']['next_hr@10']:.4f}")
        results["differences"] = differences
    return results


COLD_ITEM_MODELS: tuple[str, ...] = ("two_tower", "text_similarity", "new_first", "random")


def cold_items(data: ds.CanonicalData, embeddings: Embeddings, params: Any = None, *, fraction: float = 0.1,
               seed: int = 0, max_promotion_users: int = 2000,
               on_progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Protocol 3: products held out of training, added back the way the service adds new products.

    For every user who had held-out products (and is known to the model), among the products they
    had not seen in training:

    - ``recall@50``: share of their held-out products in their top 50 of the whole catalogue;
    - ``cold_recall@10``: share of them in the top 10 when only the held-out products are ranked
      (personalisation among new products, which a blanket boost of new products cannot fake).

    Models: the two-tower (candidate vectors of the new products from their content), a text
    similarity baseline (cosine between the product's MiniLM text vector and the mean text vector
    of the user's training products; no learning), ``new_first`` (every new product first, in a
    seeded random order, then the rest by popularity) and ``random`` (expected values of random
    placement). ``over_promotion``: for up to ``max_promotion_users`` known users who had none of the
    held-out products, the share of their top-50 places given to new products, against the
    catalogue share of new products. ``differences``: the two-tower minus each baseline per metric
    with 95% paired bootstrap intervals over the users.

    Returns:
        ``{"items", "users", <model>: {"recall@50", "cold_recall@10"}, "over_promotion": {...},
        "differences": {...}}``.
    """
    say = on_progress or (lambda message: None)
    inter = data.interactions
    interacted = pd.unique(inter[ds.ITEM_ID].astype(str))
    rng = np.random.default_rng(seed)
    cold = set(rng.choice(interacted, size=max(1, int(round(fraction * len(interacted)))), replace=False))
    is_cold = inter[ds.ITEM_ID].astype(str).isin(cold).to_numpy()
    warm_items = data.items[~data.items[ds.ITEM_ID].astype(str).isin(cold)]
    warm = _subset(data, inter[~is_cold], warm_items)
    split = leave_last_out_split(warm.interactions)
    with tempfile.TemporaryDirectory() as directory:
        recommender = _train_and_load(warm, embeddings, params, directory, split)
        cold_ids = np.asarray(sorted(cold))
        check_held_out(recommender, items=cold_ids)
        cold_rows = data.items.set_index(data.items[ds.ITEM_ID].astype(str)).loc[cold_ids].reset_index(drop=True)
        recommender.add_items(cold_ids, embeddings.item_matrix_for(cold_ids), item_attributes(cold_rows))
        items = pd.Index(recommender.item_ids.astype(str))
        cold_positions = np.sort(items.get_indexer(cold_ids))
        text = np.asarray(recommender.item_content, dtype=np.float32)
        text = text / np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-12)
        vectors = np.asarray(recommender.item_vectors, dtype=np.float32)
        popularity = np.asarray(recommender.popularity, dtype=np.float64)
        by_popularity = popularity / (popularity.max() + 1.0)  # below 1: every new product ranks above
        seen_by_user = _items_by_user(warm.interactions, items)  # excluded from every ranking (not new products)
        learned_by_user = _items_by_user(split.train, items)  # what the two-tower learned from
        relevant_by_user = _items_by_user(inter[is_cold], items)  # users sorted
        users = [user for user in relevant_by_user if recommender.knows_user(user)]
        nothing = np.zeros(0, dtype=np.int64)
        per_user: dict[str, list[tuple[float, float]]] = {name: [] for name in COLD_ITEM_MODELS}

        def measure(scores: np.ndarray, seen: np.ndarray, relevant: np.ndarray) -> tuple[float, float]:
            scores = scores.astype(np.float64, copy=True)
            scores[seen] = -np.inf
            top50 = stable_top(scores, 50)
            among = cold_positions[stable_top(scores[cold_positions], 10)]
            return float(np.isin(relevant, top50).mean()), float(np.isin(relevant, among).mean())

        for chunk in _chunks(len(users)):
            batch = users[chunk]
            profiles = np.zeros((len(batch), text.shape[1]), dtype=np.float32)
            for row, user in enumerate(batch):
                learned = learned_by_user.get(user, nothing)
                if len(learned):
                    profiles[row] = text[learned].mean(axis=0)
            new_first = np.tile(by_popularity, (len(batch), 1))
            new_first[:, cold_positions] = 1.0 + rng.random((len(batch), len(cold_positions)))
            scores = {"two_tower": recommender.known_user_vectors(batch) @ vectors.T,  # (chunk, n_items) each
                      "text_similarity": profiles @ text.T, "new_first": new_first}
            for row, user in enumerate(batch):
                seen = seen_by_user.get(user, nothing)
                seen = seen[seen >= 0]
                for name, matrix in scores.items():
                    per_user[name].append(measure(matrix[row], seen, relevant_by_user[user]))
                per_user["random"].append((random_recall(50, recommender.n_items - len(seen)),
                                           random_recall(10, len(cold_positions))))
        values = {name: np.asarray(v, dtype=np.float64).reshape(-1, 2) for name, v in per_user.items()}
        result: dict[str, Any] = {"items": len(cold), "users": len(values["two_tower"])}
        for name, v in values.items():
            result[name] = {"recall@50": float(v[:, 0].mean()) if len(v) else 0.0,
                            "cold_recall@10": float(v[:, 1].mean()) if len(v) else 0.0}
        result["differences"] = {
            name: {metric: paired_bootstrap(values["two_tower"][:, j], v[:, j], seed=seed)
                   for j, metric in enumerate(("recall@50", "cold_recall@10"))}
            for name, v in values.items() if name != "two_tower"}
        result["over_promotion"] = _over_promotion(recommender, warm, inter[is_cold], cold_positions, seen_by_user,
                                                   max_users=max_promotion_users, seed=seed)
    say(f"cold items: Recall@50 two_tower {result['two_tower']['recall@50']:.4f}, text similarity "
        f"{result['text_similarity']['recall@50']:.4f}, new first {result['new_first']['recall@50']:.4f}, random "
        f"{result['random']['recall@50']:.4f}; among new products Recall@10 two_tower "
        f"{result['two_tower']['cold_recall@10']:.4f}, text similarity "
        f"{result['text_similarity']['cold_recall@10']:.4f}")
    return result


def _over_promotion(recommender: Recommender, warm: ds.CanonicalData, cold_interactions: pd.DataFrame,
                    cold_positions: np.ndarray, seen: dict[str, np.ndarray], *, max_users: int,
                    seed: int) -> dict[str, float]:
    """Share of top-50 places that new products take for known users who had none of them.

    Args:
        seen: each warm user's interacted item positions (excluded from their ranking).

    Returns:
        ``{"users", "share_of_top50", "catalogue_share"}``: the mean share over up to ``max_users``
        such users (a seeded sample) and the share of the catalogue that is new (what an even
        placement would give).
    """
    had_new = set(cold_interactions[ds.USER_ID].astype(str))
    users = [u for u in warm.users[ds.USER_ID].astype(str) if u not in had_new and recommender.knows_user(u)]
    if len(users) > max_users:
        users = sorted(np.random.default_rng(seed).choice(users, size=max_users, replace=False).tolist())
    catalogue_share = len(cold_positions) / max(1, recommender.n_items)
    if not users:
        return {"users": 0, "share_of_top50": 0.0, "catalogue_share": catalogue_share}
    ranked, _ = recommender.rank(recommender.known_user_vectors(users), [seen.get(u, np.zeros(0, dtype=np.int64))
                                                                          for u in users], 50)
    shares = np.isin(ranked, cold_positions).sum(axis=1) / np.maximum((ranked >= 0).sum(axis=1), 1)
    return {"users": len(users), "share_of_top50": float(shares.mean()), "catalogue_share": catalogue_share}


COLD_USERS_SERVED = "two_tower"
"""The key of the served model (both stages, through the API's Recommender) in the cold-shopper results, kept for
the results written before; shown as ``hybrid`` (:func:`served_label`), the served model's name in the
leave-last-out results, where ``two_tower`` is the retrieval stage alone."""


def served_label(model: str) -> str:
    """The name a cold-shopper result of ``model`` is shown under: ``hybrid`` for :data:`COLD_USERS_SERVED`."""
    return "hybrid" if model == COLD_USERS_SERVED else model


def format_cold_table(result: dict[str, Any]) -> str:
    """Cold-start results as text: HR@10 / Recall@50 per model and number of given interactions."""
    users = result["cold_users"]
    if users.get("not_measured"):
        lines = [f"Cold users: not measured ({users['not_measured']})."]
    else:
        givens = [key for key in users if key.startswith("given_")]
        columns = [(g, metric) for metric in ("hr@10", "next_hr@10") for g in givens]
        header = f"{'cold users':<18}" + "".join(
            f"{g.replace('given_', 'given ') + (' next HR@10' if metric == 'next_hr@10' else ' HR@10'):>21}"
            for g, metric in columns)
        lines = [f"Cold users ({users['users']} held out; HR@10 = any remaining item in the top 10, "
                 "next HR@10 = the product right after the given ones):", header]
        for model in users[givens[0]]:
            lines.append(f"{served_label(model):<18}" + "".join(
                f"{users[g][model].get(metric, float('nan')):>21.4f}" for g, metric in columns))
    items = result["cold_items"]
    lines.append(f"Cold items ({items['items']} held out, {items['users']} users who had them): Recall@50 of "
                 "the held-out products in the whole catalogue / Recall@10 when only the held-out products are ranked:")
    for model in COLD_ITEM_MODELS:
        if model in items:
            values = items[model]
            lines.append(f"  {model:<16}{values['recall@50']:>8.4f}{values.get('cold_recall@10', 0):>8.4f}")
    promotion = items.get("over_promotion")
    if promotion and not promotion.get("users"):
        lines.append("  new products' share of the two-tower's top-50 places: not measured (no trained shopper "
                     "was without them)")
    elif promotion:
        lines.append(f"  new products take {promotion['share_of_top50']:.4f} of the two-tower's top-50 places for "
                     f"{promotion['users']} users who had none of them "
                     f"(catalogue share {promotion['catalogue_share']:.4f})")
    def interval(v: dict[str, float]) -> str:
        return f"{v['difference']:+.4f} [{v['low']:+.4f}, {v['high']:+.4f}]"

    for group, baselines in users.get("differences", {}).items():
        if group == "given_0":
            continue
        for metric in ("next_hr@10", "next_ndcg@10"):  # the table's metric, then the one the stage chooses by
            parts = [f"{name} {interval(v[metric])}" for name, v in baselines.items()]
            lines.append(f"{served_label('two_tower')} minus baseline, {metric}, cold users "
                         f"{group.replace('_', ' ')}: " + "; ".join(parts))
    differences = items.get("differences", {})
    for metric in ("recall@50", "cold_recall@10") if differences else ():
        if metric == "cold_recall@10" and items["items"] <= 10:  # every held-out product is in any top 10 of them
            held = f"{items['items']} held-out product{'s' if items['items'] != 1 else ''}"
            lines.append(f"two_tower minus baseline, cold_recall@10, cold items: not informative ({held}, so every "
                         "model ranks each of them within the top 10)")
            continue
        lines.append(f"two_tower minus baseline, {metric}, cold items: "
                     + "; ".join(f"{name} {interval(v[metric])}" for name, v in differences.items()))
    return "\n".join(lines)
