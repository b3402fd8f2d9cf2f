"""The evaluation harness: the two-tower model and every baseline on one leave-last-out split.

Splits come from :mod:`modeling.splits`, rankings from :mod:`modeling.ranking`, metrics from
:mod:`modeling.metrics`; this module only fits, tunes (on the validation items) and compares.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from modeling import datasets as ds
from modeling.metrics import (
    CURVE_KS,
    leave_last_out_metrics,
    metric_curves,
    ndcg_at_k,
    paired_bootstrap,
    user_hits_and_gains,
)
from modeling.ranking import rank_users, seen_items
from modeling.reranker import stage_choice_line, stage_summary
from modeling.splits import for_refit, histories_before, leave_last_out_split, require_held_out

logger = logging.getLogger(__name__)


EASE_L2_GRID: tuple[float, ...] = (10.0, 50.0, 200.0, 500.0, 1000.0)
KNN_NEIGHBOURS_GRID: tuple[int, ...] = (20, 50, 100, 200)
BLEND_WEIGHT_GRID: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0)
ALS_GRIDS: dict[str, tuple[float, ...]] = {"regularization": (0.01, 0.1, 1.0, 10.0), "alpha": (1.0, 4.0, 16.0),
                                           "factors": (32.0, 64.0, 128.0)}


def tune_baselines(matrix: Any, order: tuple[np.ndarray, np.ndarray], validate: Callable[[Any], float], *,
                   ease_l2_grid: Sequence[float] = EASE_L2_GRID,
                   knn_neighbours_grid: Sequence[int] = KNN_NEIGHBOURS_GRID,
                   blend_grid: Sequence[float] = BLEND_WEIGHT_GRID,
                   als_grids: dict[str, Sequence[float]] | None = None, seed: int = 0,
                   say: Callable[[str], None] = lambda message: None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit every baseline on the training interactions, each tuned parameter chosen on the validation items.

    Grids are widened past an edge that wins (:func:`modeling.grid_search.widening_search`). implicit
    ALS is tuned one parameter at a time (regularisation, then confidence weight, then factors), each
    search starting from the best values so far.

    Args:
        matrix: (n_users, n_items) binary training interactions.
        order: (user positions, item positions) of the training interactions sorted by user and time.
        validate: validation NDCG@10 of a fitted model.

    Returns:
        ``(models, tuning)``: the fitted models by name (popularity, item_knn, ease, ials, transitions,
        transitions+ease) and, per tuned model, its chosen parameters and every value tried.
    """
    from modeling.baselines import (
        EASE,
        EASEGram,
        ImplicitALS,
        ItemKNN,
        Popularity,
        SequentialRules,
        Transitions,
        TransitionsEASE,
    )
    from modeling.candidates import SEQUENCE_HISTORIES, choose_window_and_history
    from modeling.grid_search import widening_search

    def report(name: str, parameter: str, result: Any) -> None:
        note = f"; grid widened to {', '.join(f'{v:g}' for v in result.widened)}" if result.widened else ""
        edge = " (still at the edge after widening)" if result.at_edge else ""
        say(f"{name} {parameter}={result.best:g}: validation NDCG@10 {result.score:.4f}{note}{edge}")

    models: dict[str, Any] = {"popularity": Popularity().fit(matrix)}
    tuning: dict[str, Any] = {}

    full_knn = ItemKNN(0).fit(matrix)
    kept: dict[str, tuple[float, float, Any]] = {}  # the best model so far of each search: (score, value, model)

    def keep(name: str, value: float, model: Any) -> float:
        score = validate(model)
        if name not in kept or score > kept[name][0]:
            kept[name] = (score, value, model)
        return score

    result = widening_search(lambda n: keep("item_knn", n, full_knn.restricted(int(n))), knn_neighbours_grid,
                             label="item_knn neighbours",
                             lower=1, upper=matrix.shape[1] - 1, integer=True)
    report("item_knn", "neighbours", result)
    models["item_knn"] = kept.pop("item_knn")[2]
    tuning["item_knn"] = {"params": {"neighbours": int(result.best)}, "neighbours": result.to_dict()}
    full_knn = None

    gram = EASEGram(matrix)  # XᵀX once for every λ tried
    result = widening_search(lambda l2: keep("ease", l2, EASE(l2).fit(matrix, gram=gram)), ease_l2_grid, lower=1e-3,
                             label="ease l2")
    gram = None
    report("ease", "λ", result)
    models["ease"] = kept.pop("ease")[2]
    tuning["ease"] = {"params": {"l2": result.best}, "l2": result.to_dict()}
    if models["ease"].subset is not None:
        fitted = len(models["ease"].subset)
        tuning["ease"]["fitted_items"] = fitted
        say(f"ease: fitted on the {fitted:,} most interacted of {matrix.shape[1]:,} products (a dense EASE of "
            f"every product would need {matrix.shape[1] ** 2 * 8 / 1e9:.0f} GB)")

    models["transitions"] = Transitions().fit_sequences(matrix, *order)
    blend = TransitionsEASE(models["ease"].l2).fit_sequences(matrix, *order, ease=models["ease"],
                                                             transitions=models["transitions"])

    def weight(w: float) -> float:
        blend.weight = w
        return validate(blend)

    result = widening_search(weight, blend_grid, lower=0.0, upper=1.0, label="transitions+ease weight")
    report("transitions+ease", "weight", result)
    blend.weight = result.best
    models["transitions+ease"] = blend
    tuning["transitions+ease"] = {"params": {"l2": blend.l2, "weight": result.best}, "weight": result.to_dict()}

    def with_history(rules: Any, history: int) -> float:
        rules.history = history
        return validate(rules)

    chosen = choose_window_and_history(
        lambda window: SequentialRules(window, max(SEQUENCE_HISTORIES)).fit_sequences(matrix, *order), with_history)
    models["sequential_rules"] = chosen.fitted
    models["sequential_rules"].history = chosen.history
    tuning["sequential_rules"] = {"params": {"window": chosen.window, "history": chosen.history},
                                  "grid": chosen.tried}
    say(f"sequential_rules window={chosen.window}, history={chosen.history}: validation NDCG@10 {chosen.score:.4f}")

    grids = {**ALS_GRIDS, **(als_grids or {})}
    als_params: dict[str, float] = {"regularization": 0.1, "alpha": 1.0, "factors": 64.0}
    tuning["ials"] = {}
    for name in ("regularization", "alpha", "factors"):
        def als(value: float, name: str = name) -> float:
            trial = {**als_params, name: value}
            model = ImplicitALS(factors=int(trial["factors"]), regularization=trial["regularization"],
                                alpha=trial["alpha"], seed=seed).fit(matrix)
            return keep("ials", value, model)

        kept.pop("ials", None)
        result = widening_search(als, grids[name], lower=1 if name == "factors" else 1e-4,
                                 upper=512 if name == "factors" else None, integer=name == "factors",
                                 label=f"ials {name}")
        report("ials", name, result)
        als_params[name] = result.best
        tuning["ials"][name] = result.to_dict()
    models["ials"] = kept.pop("ials")[2]
    tuning["ials"]["params"] = {**als_params, "factors": int(als_params["factors"])}
    return models, tuning


def refit_baseline(name: str, model: Any, matrix: Any, order: tuple[np.ndarray, np.ndarray], *,
                   seed: int = 0) -> Any:
    """The baseline ``name`` fitted again with ``model``'s parameters on other interactions.

    Args:
        model: the fitted baseline whose ``params()`` are kept.
        matrix: (n_users, n_items) binary interactions; order: their (n,) user and item positions
            sorted by user and time (see :func:`modeling.baselines.fit_baseline`).
    """
    from modeling.baselines import fit_baseline

    return fit_baseline(name, model.params(), matrix, order, seed=seed)


def json_safe(value: Any) -> Any:
    """``value`` (nested dicts, lists, tuples) with every float that is not finite (a mean over no shopper) as None:
    JSON has no NaN, and ``json.dump`` writes a bare ``NaN`` that JavaScript's and other strict parsers refuse."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def compare_leave_last_out(
    data: ds.CanonicalData,
    embeddings: Any,
    params: Any = None,
    *,
    ease_l2_grid: Sequence[float] = EASE_L2_GRID,
    knn_neighbours_grid: Sequence[int] = KNN_NEIGHBOURS_GRID,
    curve_ks: Sequence[int] = CURVE_KS,
    trained: Any = None,
    refit: bool = False,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Protocol 1 (leave-last-out) for the two-tower model and the baselines, on one split.

    Full ranking over every item. Validation items are ranked from the training interactions,
    test items from the training and validation interactions (fold-in; the models are fitted on
    training interactions only), each history cut where the held-out item was found
    (:func:`modeling.splits.histories_before`): every model, the served one included, reads the same
    sequence; the input items are excluded. Every tuned parameter of every baseline is chosen on the
    validation items (best NDCG@10, see :func:`tune_baselines`); the sequential baselines score from the
    most recent input items.
    With ``refit`` every model is fitted again on the training and validation interactions before
    it ranks the test items (the baselines with their chosen parameters, the two-tower for the
    epochs early stopping chose, see :func:`modeling.train.refit_model`), as ``manage.py train``
    does with every interaction.

    Args:
        data: canonical tables.
        embeddings: :class:`modeling.embeddings.Embeddings` of the same data (for the two-tower).
        params: :class:`modeling.two_tower.TwoTowerParams` (default parameters if None).
        ease_l2_grid: λ values tried first for EASE (widened past a winning edge).
        knn_neighbours_grid: neighbour counts tried first for item-kNN (widened likewise).
        curve_ks: list lengths of the HR@k / NDCG@k curves (at most the depth of the two-tower's
            stored test rankings, 100).
        trained: a :class:`modeling.train.TrainResult` already fitted on this split with ``params``
            (trained here when None).
        refit: fit every model again on training + validation interactions for the test items.
        on_progress: called with a short message as each model finishes.

    Returns:
        ``{"protocol", "split": {...}, "models": {name: metrics}, "curves": {name: {"hr": {k: v},
        "ndcg": {k: v}}}, "ease_l2": float, "baselines": {name: {"params", <parameter>: grid log}},
        "differences": {baseline: {"hr@10", "ndcg@10": {"difference", "low", "high"}}} (two-tower minus
        baseline, see :func:`compare_per_user`), "two_tower": {"best_epoch", "examples_per_second",
        "train_seconds", "history", "params"}}``.
    """
    from modeling.baselines import RECENT_ITEMS, interaction_matrix
    from modeling.candidates import recent_items
    from modeling.train import refit_model, train_model

    say = on_progress or (lambda message: None)
    split = leave_last_out_split(data.interactions)
    require_held_out(split)
    users = pd.Index(data.users[ds.USER_ID].astype(str))
    items = pd.Index(data.items[ds.ITEM_ID].astype(str))

    def positions(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        u = users.get_indexer(frame[ds.USER_ID].astype(str))
        i = items.get_indexer(frame[ds.ITEM_ID].astype(str))
        ok = (u >= 0) & (i >= 0)
        return u[ok], i[ok]

    train_u, train_i = positions(split.train)
    val_u, val_i = positions(split.validation)
    test_u, test_i = positions(split.test)
    matrix = interaction_matrix(train_u, train_i, len(users), len(items))
    # Every model ranks a held-out item from the same history: the interactions before it was found, in time
    # order (the test items' with the validation interactions folded in). The models are fitted on every
    # training interaction.
    histories = {stage: histories_before(split, stage) for stage in ("validation", "test")}

    def stage_inputs(frame: pd.DataFrame) -> tuple[Any, list[np.ndarray], np.ndarray]:
        u, i = positions(frame)  # sorted by user and time: the sequential baselines read the most recent first
        return (interaction_matrix(u, i, len(users), len(items)), seen_items(u, i, len(users)),
                recent_items(u, i, len(users), RECENT_ITEMS))

    inputs = {stage: stage_inputs(frame) for stage, frame in histories.items()}
    before = histories["test"]
    if refit:  # refitting for the test items learns from every training and validation interaction
        refit_split = for_refit(split)
        known_u, known_i = positions(refit_split.train)
        known_matrix = interaction_matrix(known_u, known_i, len(users), len(items))

    depth = max(50, *curve_ks)
    results: dict[str, dict[str, float]] = {}
    curves: dict[str, dict[str, dict[str, float]]] = {}
    rankings: dict[str, np.ndarray] = {}

    def rank(model: Any, u: np.ndarray, stage: str) -> np.ndarray:
        rows, seen, last = inputs[stage]
        return rank_users(lambda batch: model.score(rows[batch], last[batch]), u, seen, depth)

    def validate(model: Any) -> float:
        return ndcg_at_k(rank(model, val_u, "validation"), val_i, 10)

    seed = getattr(params, "seed", 0) or 0
    baselines, tuning = tune_baselines(matrix, (train_u, train_i), validate, ease_l2_grid=ease_l2_grid,
                                       knn_neighbours_grid=knn_neighbours_grid, seed=seed, say=say)
    for name, model in baselines.items():
        if refit:
            model = refit_baseline(name, model, known_matrix, (known_u, known_i), seed=seed)
        ranked = rank(model, test_u, "test")
        curves[name], rankings[name] = metric_curves(ranked, test_i, curve_ks), ranked
        results[name] = leave_last_out_metrics(ranked, test_i, len(items))
        say(f"{name}: HR@10 {results[name]['hr@10']:.4f}, NDCG@10 {results[name]['ndcg@10']:.4f}")
    if trained is None:
        trained = train_model(data, embeddings, params, split=split)
    if refit:
        trained = refit_model(data, embeddings, trained, split=refit_split)
    results["two_tower"] = trained.metrics["two_tower"]
    curves["two_tower"] = metric_curves(trained.test_ranked, trained.test_items, curve_ks)
    say(f"two_tower (retrieval alone): HR@10 {results['two_tower']['hr@10']:.4f}, "
        f"NDCG@10 {results['two_tower']['ndcg@10']:.4f}")
    if not np.array_equal(trained.test_items, test_i):
        raise ValueError("the two-tower model was measured on other test items than the baselines")
    known = refit_split.train if refit else split.train
    served = served_rankings(data, embeddings, trained, known, before, users[test_u].to_numpy(), depth)
    results[SERVED] = leave_last_out_metrics(served, test_i, len(items))
    curves[SERVED] = metric_curves(served, test_i, curve_ks)
    say(f"{SERVED} (the served path, both stages): HR@10 {results[SERVED]['hr@10']:.4f}, "
        f"NDCG@10 {results[SERVED]['ndcg@10']:.4f}")
    if trained.stage is not None:
        say(stage_choice_line(trained.stage.report))
    differences = {name: compare_per_user(served, ranked, test_i) for name, ranked in rankings.items()}
    differences["two_tower"] = compare_per_user(served, trained.test_ranked, test_i)
    return {
        "protocol": "leave_last_out",
        "split": {"train": int(len(split.train)), "validation_users": int(len(val_u)),
                  "test_users": int(len(test_u)), "items": int(len(items))},
        "models": results,
        "curves": curves,
        "ease_l2": tuning["ease"]["params"]["l2"],
        "baselines": tuning,
        "refit": refit,
        "differences": differences,
        "ranking_stage": stage_summary(trained.stage) if trained.stage is not None else None,
        "two_tower": {"best_epoch": trained.best_epoch, "refit_epochs": trained.refit_epochs,
                      "examples_per_second": round(trained.examples_per_second),
                      "train_seconds": round(trained.train_seconds, 1), "history": trained.history,
                      "params": trained.params.to_dict()},
    }


SERVED = "hybrid"
"""The row of the served model: the Recommender the API uses, over a bundle published from the split."""


def served_rankings(data: ds.CanonicalData, embeddings: Any, trained: Any, known: pd.DataFrame,
                    inputs: pd.DataFrame, users: np.ndarray, depth: int) -> np.ndarray:
    """Rank through the serving code path: publish a bundle, load it, ask the Recommender.

    Args:
        data: canonical tables.
        embeddings: their text embeddings.
        trained: a :class:`modeling.train.TrainResult` fitted on ``known``.
        known: the interactions the bundle may know (its popularity, sources and stored vectors).
        inputs: the interactions given as each shopper's current history at request time.
        users: (t,) shopper ids to rank for.
        depth: list length.

    Returns:
        (t, depth) int64 item positions (in ``data.items`` order), -1 pads.
    """
    import tempfile

    from modeling import artifacts
    from modeling.recommender import History, Recommender
    from modeling.train import publish

    with tempfile.TemporaryDirectory(prefix="served-") as directory:
        recommender = Recommender(artifacts.load_bundle(publish(trained, data, embeddings, directory,
                                                                interactions=known, export_text=False)))
        wanted = set(map(str, users))
        rows = inputs[inputs[ds.USER_ID].astype(str).isin(wanted)]
        histories = {str(user): History(group[ds.ITEM_ID].astype(str).to_numpy(dtype=object),
                                         group[ds.TIMESTAMP].to_numpy(dtype=np.int64),
                                         group[ds.WEIGHT].to_numpy(dtype=np.float64))
                     for user, group in rows.groupby(rows[ds.USER_ID].astype(str), sort=False)}
        ranked = np.full((len(users), depth), -1, dtype=np.int64)
        ids = [str(u) for u in users]
        for start in range(0, len(ids), 512):
            chunk = ids[start:start + 512]
            rankings = recommender.recommend(chunk, histories, depth)
            for offset, user in enumerate(chunk):
                items = rankings[user].items[:depth]
                ranked[start + offset, : len(items)] = items
        if not np.array_equal(np.asarray(recommender.item_ids[: len(data.items)]).astype(str),
                              data.items[ds.ITEM_ID].astype(str).to_numpy()):
            raise ValueError("the bundle's products are not in the data's order")
    return ranked


def compare_per_user(ranked: np.ndarray, other: np.ndarray, targets: np.ndarray, *,
                     k: int = 10) -> dict[str, dict[str, float]]:
    """HR@k and NDCG@k of one ranking minus another on the same users, with 95% paired bootstrap intervals.

    Args:
        ranked, other: (t, >=k) item positions of the same t users, best first.
        targets: (t,) held-out items.

    Returns:
        ``{"hr@k": {"difference", "low", "high"}, "ndcg@k": {...}}``.
    """
    hits, gains = user_hits_and_gains(ranked, targets, k)
    other_hits, other_gains = user_hits_and_gains(other, targets, k)
    return {f"hr@{k}": paired_bootstrap(hits, other_hits), f"ndcg@{k}": paired_bootstrap(gains, other_gains)}


def format_differences(comparison: dict[str, Any], model: str = "hybrid") -> str:
    """One line per baseline: the model's HR@10 and NDCG@10 minus the baseline's, with 95% intervals."""
    lines = [f"{model} minus each baseline (95% paired bootstrap interval over test users):"]
    differences = comparison.get("differences", {})
    width = max([12, *(len(name) + 2 for name in differences)])
    for name, metrics in differences.items():
        parts = [f"{metric.upper()} {v['difference']:+.4f} "
                 f"[{v['low']:+.4f}, {v['high']:+.4f}]" for metric, v in metrics.items()]
        lines.append(f"  {name:<{width}}" + "   ".join(parts))
    return "\n".join(lines)


def format_table(comparison: dict[str, Any]) -> str:
    """The comparison as a text table: one row per model, one column per metric."""
    models = comparison["models"]
    metrics = [m for m in next(iter(models.values())) if m != "users"]
    width = max([12, *(len(name) + 2 for name in models)])
    header = f"{'model':<{width}}" + "".join(f"{m:>13}" for m in metrics)
    lines = [header, "-" * len(header)]
    for name, values in models.items():
        lines.append(f"{name:<{width}}" + "".join(f"{values[m]:>13.4f}" for m in metrics))
    items = (comparison.get("split") or {}).get("items")
    whole = [m for m in metrics if m.startswith(("recall@", "hr@")) and items and int(m.split("@")[1]) >= items]
    if whole:  # a list as long as the catalogue holds every held-out item: the column tells the models nothing apart
        lines.append(f"({', '.join(whole)}: lists of at least the whole catalogue of {items} products, so every model "
                     f"reads 1.000 there)")
    return "\n".join(lines)
