"""The ranking stage's learned orders compared: LightGBM LambdaMART against a TFRS listwise model.

Usage:
    .venv/bin/python benchmarks/rankers.py --source amazon2018 --path <category folder> \\
        --output benchmarks/results/rankers_<name>.json [--epochs 5 10 20 40 80]

The data is loaded as `manage.py evaluate` loads it (the source's loader, the default event-time
bounds, MiniLM text embeddings cached under data/evaluation/<fingerprint>/ unless ``--embeddings``
says where). The two-tower is trained with default parameters and no search
(``train_model(..., ranking_stage=False)``), then the ranking stage is fitted as training fits it
(:func:`modeling.train.fit_ranking_stage`: sources, EASE λ and ``fit_ranker``'s own choice, kept
as the reference) and the validation shoppers' candidate lists are built again with
:func:`modeling.train.validation_lists`.

On the same folds as ``fit_ranker`` (``default_rng(StageConfig.seed).permutation(m) % folds``; the
seed is the two-tower's, which ``fit_ranking_stage`` passes on), every validation shopper's held-out
NDCG@10 is measured for each trial, trained on the other folds:

- ``feature:*`` and the two blends: as ``fit_ranker`` measures them (the blend weights chosen on the
  other folds' selection shoppers);
- ``lightgbm:R``: LambdaMART after R of :data:`modeling.reranker.ROUNDS` rounds (one booster per
  fold, truncated, as ``fit_ranker`` does; the seconds are those of boosters trained for R rounds);
- ``listwise:E``: the TFRS listwise model (:mod:`modeling.listwise`) after E epochs (one run per
  fold, measured on the way; the seconds are the training time up to epoch E).

Means are over the selection shoppers (those early stopping did not use), as ``fit_ranker`` chooses;
the paired difference of each listwise trial minus the best LightGBM trial has a 95% bootstrap
interval (1,000 resamples of the selection shoppers, seeded). Both best trials are chosen on the
shoppers they are measured on, so both are equally flattered. Seconds are summed over the folds.

Prints a table and writes JSON to ``--output``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modeling import runtime as _runtime  # noqa: E402,F401  (first: environment for TensorFlow)

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import asdict, replace  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

logger = logging.getLogger("benchmarks.rankers")

EARLIEST_EVENT = "1995-01-01"  # RECO_EVENT_MIN_TIME's default: the bounds `manage.py evaluate` applies
MAX_FUTURE_SECONDS = 300  # RECO_EVENT_MAX_FUTURE_SECONDS's default
LISTWISE_EPOCHS = (5, 10, 20, 40, 80)
RESAMPLES = 1_000


def dataset_parser(description: str) -> argparse.ArgumentParser:
    """A parser with the options every validation benchmark of the ranking stage takes: ``--source``, ``--path``,
    ``--output`` (JSON) and ``--embeddings`` (the text embeddings' cache, as :func:`load` reads it)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--source", required=True, help="A source of modeling.sources (amazon2018, movielens, ...).")
    parser.add_argument("--path", required=True, help="Files of the source.")
    parser.add_argument("--output", required=True, help="Write the results as JSON to this file.")
    parser.add_argument("--embeddings", help="Text embeddings cache directory (default: data/evaluation/<fp>/).")
    return parser


def dataset_args(description: str) -> argparse.Namespace:
    """The options of :func:`dataset_parser`, parsed, with logging set as the validation benchmarks log (their
    progress at INFO, TensorFlow's at WARNING)."""
    args = dataset_parser(description).parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("tensorflow", "absl", "h5py"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return args


def load(source: str, path: str, embeddings_dir: str | None) -> tuple[Any, Any, Path]:
    """The canonical data and its text embeddings, as `manage.py evaluate` loads them (no database)."""
    from modeling import datasets as ds
    from modeling.embeddings import build_embeddings, load_embeddings
    from modeling.sources import load_source

    earliest = int(datetime.fromisoformat(EARLIEST_EVENT).replace(tzinfo=UTC).timestamp())
    bounds = ds.TimeBounds(earliest=earliest, latest=int(time.time()) + MAX_FUTURE_SECONDS)
    data = load_source(source, path, time_bounds=bounds)
    cache = Path(embeddings_dir) if embeddings_dir else ROOT / "data" / "evaluation" / data.fingerprint[:16]
    logger.info("loaded %s; text embeddings in %s", data.counts(), cache)
    build_embeddings(data, cache, progress=False)
    return data, load_embeddings(cache), cache


def validation_stage(data: Any, embeddings: Any, params: Any) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Train the two-tower (no search, no stage), fit the stage as training does and rebuild its lists.

    Returns:
        ``(trained, stage, lists, timings)``: the :class:`~modeling.train.TrainResult`, the fitted
        :class:`~modeling.reranker.RankingStage` (its report is ``fit_ranker``'s), the
        :class:`~modeling.train.ValidationLists` and the seconds of each step.
    """
    from modeling.splits import leave_last_out_split
    from modeling.train import fit_ranking_stage, stage_inputs, stopping_shoppers, train_model, validation_lists

    timings: dict[str, float] = {}
    started = time.perf_counter()
    split = leave_last_out_split(data.interactions)
    trained = train_model(data, embeddings, params, split=split, ranking_stage=False)
    timings["two_tower"] = time.perf_counter() - started
    logger.info("two-tower: best epoch %d, test NDCG@10 %.4f (%.0f s)", trained.best_epoch,
                trained.metrics["two_tower"]["ndcg@10"], timings["two_tower"])

    # As modeling.train.add_ranking_stage and _attach_stage build the stage's inputs.
    started = time.perf_counter()
    inputs = stage_inputs(trained, data, embeddings, split)
    selection = ~stopping_shoppers(len(inputs.val_u), params.seed)
    stage = fit_ranking_stage(trained.model, inputs.history, inputs.features, inputs.item_vectors, inputs.tables,
                              inputs.val_u, inputs.val_i, selection, seed=params.seed,
                              validation=(inputs.validation_history, inputs.validation_features), say=logger.info)
    timings["ranking_stage"] = time.perf_counter() - started
    started = time.perf_counter()
    lists = validation_lists(trained.model, inputs.validation_history, inputs.item_vectors, inputs.tables,
                             stage.sources, inputs.validation_features, inputs.val_u, inputs.val_i, selection,
                             stage.config)
    timings["validation_lists"] = time.perf_counter() - started
    return trained, stage, lists, timings


def cross_validate(candidates: np.ndarray, features: np.ndarray, targets: np.ndarray, selection: np.ndarray,
                   config: Any, epochs: tuple[int, ...]) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """Every trial's (m,) held-out NDCG@10 on ``fit_ranker``'s folds, and its training seconds (all folds)."""
    from modeling.listwise import ListwiseParams, ListwiseRanker, fit_listwise
    from modeling.reranker import (
        ROUNDS,
        SINGLE_FEATURES,
        Ranker,
        _blend_grid,
        _cross_validated_weights,
        _ndcg_at_10,
        _sequential_grid,
        _train_booster,
        _Truncated,
    )

    m = len(targets)
    folds = max(2, config.folds)
    fold_of = np.random.default_rng(config.seed).permutation(m) % folds
    trials: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for name in SINGLE_FEATURES:
        ranked, _ = Ranker("feature", name).order(candidates, features, 10)
        trials[f"feature:{name}"], seconds[f"feature:{name}"] = _ndcg_at_10(ranked, targets), 0.0
    for trial, grid in {"blend": _blend_grid(), "transitions+item_item": _sequential_grid()}.items():
        started = time.perf_counter()
        trials[trial], _, _ = _cross_validated_weights(candidates, features, targets, grid, fold_of, folds, selection)
        seconds[trial] = time.perf_counter() - started

    has_positive = ((candidates == targets[:, None]) & (candidates >= 0)).any(axis=1)
    if has_positive.sum() < 2 * folds:
        logger.warning("only %d lists hold their item: no learned ranker is measured", int(has_positive.sum()))
        return trials, seconds
    learned = [f"lightgbm:{r}" for r in ROUNDS] + [f"listwise:{e}" for e in epochs]
    trials.update({name: np.zeros(m) for name in learned})
    seconds.update(dict.fromkeys(learned, 0.0))
    for fold in range(folds):
        test, train = fold_of == fold, fold_of != fold
        logger.info("fold %d/%d: training on %d lists, measuring on %d", fold + 1, folds, int(train.sum()),
                    int(test.sum()))
        booster = _train_booster(candidates[train], features[train], targets[train], max(ROUNDS), config.seed)
        for rounds in ROUNDS:
            started = time.perf_counter()  # the time of a booster of this many rounds (the same trees)
            _train_booster(candidates[train], features[train], targets[train], rounds, config.seed)
            seconds[f"lightgbm:{rounds}"] += time.perf_counter() - started
            ranked, _ = Ranker("lightgbm", booster=_Truncated(booster, rounds)).order(candidates[test],
                                                                                     features[test], 10)
            trials[f"lightgbm:{rounds}"][test] = _ndcg_at_10(ranked, targets[test])

        def measure(ranker: ListwiseRanker, test: np.ndarray = test) -> None:
            if ranker.epochs in epochs:
                ranked, _ = ranker.order(candidates[test], features[test], 10)
                trials[f"listwise:{ranker.epochs}"][test] = _ndcg_at_10(ranked, targets[test])
                seconds[f"listwise:{ranker.epochs}"] += ranker.seconds

        ranker = fit_listwise(candidates[train], features[train], targets[train], epochs=max(epochs),
                              seed=config.seed, params=ListwiseParams(), on_epoch=measure)
        logger.info("fold %d/%d: listwise loss %.4f -> %.4f over %d epochs (%.1f s)", fold + 1, folds,
                    ranker.losses[0], ranker.losses[-1], ranker.epochs, ranker.seconds)
    return trials, seconds


def compare(trials: dict[str, np.ndarray], seconds: dict[str, float], selection: np.ndarray,
            report: dict[str, Any], seed: int) -> dict[str, Any]:
    """Means, the paired listwise - LightGBM differences with their bootstrap intervals, and a verdict."""
    from modeling.metrics import paired_bootstrap

    means = {name: float(values[selection].mean()) if selection.any() else 0.0 for name, values in trials.items()}
    table = {name: {"ndcg@10": round(means[name], 5), "ndcg@10_all_shoppers": round(float(values.mean()), 5),
                    "train_seconds": round(seconds.get(name, 0.0), 3)} for name, values in trials.items()}
    out: dict[str, Any] = {"trials": table}
    lightgbm = [name for name in trials if name.startswith("lightgbm:")]
    listwise = [name for name in trials if name.startswith("listwise:")]
    if not lightgbm or not listwise:
        out["verdict"] = "not measured: too few lists hold their held-out item"
        return out

    def difference(a: str, b: str) -> dict[str, float]:
        result = paired_bootstrap(trials[a][selection], trials[b][selection], resamples=RESAMPLES, seed=seed)
        return {key: round(value, 5) for key, value in result.items()}

    best_lgb = max(lightgbm, key=lambda name: means[name])
    best_lw = max(listwise, key=lambda name: means[name])
    out["best_lightgbm"], out["best_listwise"] = best_lgb, best_lw
    out["listwise_minus_best_lightgbm"] = {name: difference(name, best_lgb) for name in listwise}
    headline = out["listwise_minus_best_lightgbm"][best_lw]
    out["best_listwise_minus_best_lightgbm"] = headline
    choice = report.get("choice")
    if choice in trials:
        out["fit_ranker_choice"] = choice
        out["best_listwise_minus_fit_ranker_choice"] = difference(best_lw, choice)
    if headline["low"] > 0:
        out["verdict"] = f"{best_lw} beats {best_lgb}: the 95% interval of the gain is above 0"
    elif headline["high"] < 0:
        out["verdict"] = f"{best_lgb} beats {best_lw}: the 95% interval of the listwise gain is below 0"
    else:
        out["verdict"] = f"{best_lw} and {best_lgb} are not distinguishable: the 95% interval contains 0"
    return out


def format_table(result: dict[str, Any]) -> str:
    """The trials, one per line, and the paired differences."""
    lists = result["lists"]
    lines = [f"{result['source']['name']} {result['source']['folder']}: {lists['shoppers']} validation "
             f"shoppers ({lists['selection_shoppers']} selection, {lists['with_item_in_candidates']} with the "
             f"item among their candidates), {lists['folds']} folds",
             f"{'trial':<26}{'NDCG@10 sel.':>13}{'all':>9}{'train s':>10}{'  listwise - best LightGBM [95%]':<34}"]
    differences = result.get("listwise_minus_best_lightgbm", {})
    for name, row in result["trials"].items():
        extra = ""
        if name in differences:
            d = differences[name]
            extra = f"  {d['difference']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]"
        marks = "*" if name in (result.get("best_lightgbm"), result.get("best_listwise")) else ""
        lines.append(f"{name + marks:<26}{row['ndcg@10']:>13.4f}{row['ndcg@10_all_shoppers']:>9.4f}"
                     f"{row['train_seconds']:>10.2f}{extra}")
    lines.append(f"fit_ranker chose {result['fit_ranker'].get('choice')}; verdict: {result['verdict']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = dataset_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, nargs="+", default=list(LISTWISE_EPOCHS),
                        help="Listwise epoch counts measured (one run per fold up to the largest).")
    parser.add_argument("--two-tower-epochs", type=int, help="Two-tower max epochs (default: TwoTowerParams').")
    parser.add_argument("--seed", type=int, help="Two-tower seed, also the folds' (default: TwoTowerParams').")
    args = parser.parse_args(argv)
    if min(args.epochs) < 1:
        parser.error("--epochs must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from modeling.listwise import ListwiseParams
    from modeling.two_tower import TwoTowerParams

    started = time.perf_counter()
    params = TwoTowerParams()
    overrides = {"epochs": args.two_tower_epochs, "seed": args.seed}
    params = replace(params, **{k: v for k, v in overrides.items() if v is not None})
    data, embeddings, cache = load(args.source, args.path, args.embeddings)
    trained, stage, lists, timings = validation_stage(data, embeddings, params)
    selection = np.asarray(lists.selection, dtype=bool)
    if not selection.any():
        selection = np.ones(len(lists.targets), dtype=bool)
    epochs = tuple(sorted(set(args.epochs)))
    trials, seconds = cross_validate(lists.candidates, lists.features, lists.targets, selection, stage.config,
                                     epochs)
    report = stage.report
    for name, value in report.get("cross_validation", {}).items():  # the same folds: the same figures
        if name in trials and abs(round(float(trials[name][selection].mean()), 5) - value) > 1e-5:
            logger.warning("%s: %.5f here, %.5f in fit_ranker's report", name, trials[name][selection].mean(),
                           value)
    comparison = compare(trials, seconds, selection, report, stage.config.seed)
    valid = lists.candidates >= 0
    result: dict[str, Any] = {
        "source": {"name": args.source, "folder": Path(args.path).name, "counts": data.counts()},
        "embeddings": {"fingerprint": embeddings.manifest.get("fingerprint"), "cache": cache.name},
        "two_tower": {"params": params.to_dict(), "best_epoch": trained.best_epoch,
                      "test": trained.metrics.get("two_tower")},
        "lists": {"shoppers": int(len(lists.targets)), "selection_shoppers": int(selection.sum()),
                  "with_item_in_candidates": int(((lists.candidates == lists.targets[:, None]) & valid)
                                                 .any(axis=1).sum()),
                  "width": int(lists.candidates.shape[1]), "mean_candidates": round(float(valid.sum(axis=1).mean()), 1)
                  if len(valid) else 0.0, "folds": max(2, stage.config.folds), "fold_seed": stage.config.seed},
        "listwise_params": asdict(ListwiseParams()), "listwise_epochs": list(epochs),
        "bootstrap": {"resamples": RESAMPLES, "level": 0.95, "seed": stage.config.seed},
        **comparison,
        "fit_ranker": report,
        "seconds": {**{k: round(v, 1) for k, v in timings.items()}, "total": round(time.perf_counter() - started, 1)},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    target = Path(args.output)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=2)
    os.replace(tmp, target)
    print(format_table(result))
    print(f"written to {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
