"""How much the ranking stage's LambdaMART gains from more validation lists and from larger trees.

Usage:
    .venv/bin/python benchmarks/ranker_lists.py --source clickstream \\
        --path ../shared/datasets/uci_eshop_clothing_2008 --output benchmarks/results/ranker_lists_clickstream.json

The ranking stage learns from at most :data:`modeling.train.RANKER_MAX_SHOPPERS` validation shoppers' lists (a
seeded sample above that) with LightGBM's settings in :data:`modeling.reranker.LIGHTGBM_PARAMS`. This script
asks whether either limits a shop with many validation shoppers. The data is loaded and the two-tower trained
as ``benchmarks/rankers.py`` does (default parameters, no search); the stage's sources are fitted as training
fits them, and the lists of **every** validation shopper are built, each from the history before its item was
found (:func:`modeling.train.validation_inputs`).

Every variant is measured on the same shoppers: the stage's sample, its three folds (``fit_ranker``'s fold
assignment) and its selection half. A variant trains, for each fold, on

- ``sample``: the sample's lists outside the fold (what the stage learns from), or
- ``all``: every validation shopper's list outside the fold (the shoppers beyond the sample are spread over
  the folds with a seeded permutation; none of them is ever measured),

with 15 leaves (the stage's) or 31, and is measured after 50, 100 and 200 trees. Each variant's mean NDCG@10
on the selection shoppers, and its paired difference from the stage's own (``sample``, 15 leaves, same number
of trees) with one standard error. On a shop with at most ``RANKER_MAX_SHOPPERS`` validation shoppers the
sample is every shopper and ``all`` equals ``sample``.

Prints a table and writes JSON to ``--output``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from modeling import runtime as _runtime  # noqa: E402,F401  (first: environment for TensorFlow)

import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

logger = logging.getLogger("benchmarks.ranker_lists")

TREES = (50, 100, 200)
LEAVES = (15, 31)


def all_lists(data: Any, embeddings: Any, params: Any = None
              ) -> tuple[Any, np.ndarray, np.ndarray, int, dict[str, float], Any]:
    """Every validation shopper's list, which of them the stage's sample holds, its fold seed, timings and the
    stage's inputs (:class:`modeling.train.StageInputs`: the lists are in the order of its ``val_u``).

    Args:
        params: the two-tower's :class:`TwoTowerParams` (default: the defaults, no search).

    Returns:
        ``(lists, in_sample (v,) bool, selection (v,) bool, seed, seconds, inputs)``.
    """
    from modeling import train
    from modeling.reranker import StageConfig
    from modeling.splits import leave_last_out_split
    from modeling.two_tower import TwoTowerParams

    params, seconds = params or TwoTowerParams(), {}
    started = time.perf_counter()
    split = leave_last_out_split(data.interactions)
    trained = train.train_model(data, embeddings, params, split=split, ranking_stage=False)
    seconds["two_tower"] = time.perf_counter() - started
    started = time.perf_counter()
    inputs = train.stage_inputs(trained, data, embeddings, split)
    sources = train.fit_stage_sources(inputs.history, len(inputs.features.user_ids), len(inputs.features.item_ids),
                                      inputs.val_u, inputs.val_i, inputs.validation_history, say=logger.info)
    selection = ~train.stopping_shoppers(len(inputs.val_u), params.seed)
    in_sample = np.zeros(len(inputs.val_u), dtype=bool)
    in_sample[train.ranker_sample(len(inputs.val_u), params.seed)] = True
    limit = train.RANKER_MAX_SHOPPERS
    train.RANKER_MAX_SHOPPERS = len(inputs.val_u)  # every shopper's list, in order
    try:
        lists = train.validation_lists(trained.model, inputs.validation_history, inputs.item_vectors, inputs.tables,
                                       sources, inputs.validation_features, inputs.val_u, inputs.val_i, selection,
                                       StageConfig(seed=params.seed))
    finally:
        train.RANKER_MAX_SHOPPERS = limit
    seconds["lists"] = time.perf_counter() - started
    return lists, in_sample, selection, params.seed, seconds, inputs


def stage_folds(in_sample: np.ndarray, seed: int, folds: int = 3) -> np.ndarray:
    """(v,) int64: the fold of each shopper of the stage's sample, as ``fit_ranker`` assigns them; -1 outside it."""
    fold_of = np.full(len(in_sample), -1, dtype=np.int64)
    sample = np.flatnonzero(in_sample)
    fold_of[sample] = np.random.default_rng(seed).permutation(len(sample)) % folds
    return fold_of


def measure(lists: Any, in_sample: np.ndarray, selection: np.ndarray, seed: int, folds: int = 3
            ) -> dict[str, np.ndarray]:
    """(v,) NDCG@10 of every variant (``"<pool>-<leaves>:<trees>"``), 0 outside the measured shoppers."""
    from modeling import reranker

    candidates, features, targets = lists.candidates, lists.features, lists.targets
    fold_of = stage_folds(in_sample, seed, folds)
    rest = np.flatnonzero(~in_sample)
    fold_of[rest] = np.random.default_rng(seed + 1).permutation(len(rest)) % folds
    results: dict[str, np.ndarray] = {}
    for leaves in LEAVES:
        for pool in ("sample", "all"):
            if pool == "all" and in_sample.all():
                continue
            started = time.perf_counter()
            for fold in range(folds):
                test = (fold_of == fold) & in_sample
                learn = (fold_of != fold) & (in_sample if pool == "sample" else True)
                booster = reranker._train_booster(candidates[learn], features[learn], targets[learn], max(TREES),
                                                  seed, params={"num_leaves": leaves})
                for trees in TREES:
                    ranked, _ = reranker.Ranker("lightgbm", booster=reranker._Truncated(booster, trees)).order(
                        candidates[test], features[test], 10)
                    results.setdefault(f"{pool}-{leaves}:{trees}", np.zeros(len(targets)))[test] = (
                        reranker._ndcg_at_10(ranked, targets[test]))
            logger.info("%s lists, %d leaves: %.0f s", pool, leaves, time.perf_counter() - started)
    return results


def summarise(results: dict[str, np.ndarray], measured: np.ndarray) -> dict[str, Any]:
    """Each variant's mean on the measured shoppers and its paired difference from the stage's own."""
    table: dict[str, Any] = {}
    stage_leaves = LEAVES[0]
    for name, values in results.items():
        trees = name.split(":")[1]
        difference = values[measured] - results[f"sample-{stage_leaves}:{trees}"][measured]
        error = float(difference.std(ddof=1) / np.sqrt(len(difference))) if len(difference) > 1 else 0.0
        table[name] = {"ndcg@10": round(float(values[measured].mean()), 5),
                       "minus_stage": round(float(difference.mean()), 5), "standard_error": round(error, 5)}
    return table


@dataclass
class Run:
    """A validation benchmark's command line, data and every validation shopper's list (:func:`all_lists`);
    ``measured`` (v,) bool: the stage's sample and selection shoppers; ``started``: ``time.perf_counter()``."""

    args: Any
    data: Any
    embeddings: Any
    lists: Any
    in_sample: np.ndarray
    selection: np.ndarray
    measured: np.ndarray
    seed: int
    seconds: dict[str, float]
    inputs: Any
    started: float


def start(description: str, argv: list[str] | None) -> Run:
    """Parse the benchmark's options, load the data set and build every validation shopper's list."""
    from rankers import dataset_parser, load

    args = dataset_parser(description).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    started = time.perf_counter()
    data, embeddings, _ = load(args.source, args.path, args.embeddings)
    lists, in_sample, selection, seed, seconds, inputs = all_lists(data, embeddings)
    measured = in_sample & selection
    if not measured.any():
        raise SystemExit("no validation shopper to measure on")
    return Run(args, data, embeddings, lists, in_sample, selection, measured, seed, seconds, inputs, started)


def main(argv: list[str] | None = None) -> int:
    run = start(__doc__.split("\n\n")[0], argv)
    results = measure(run.lists, run.in_sample, run.selection, run.seed)
    report(run, summarise(results, run.measured))
    return 0


def report(run: Run, table: dict[str, dict[str, float]], extra: dict[str, Any] | None = None) -> None:
    """Write a benchmark's result as JSON to ``run.args.output`` (the data set, the lists, ``extra``, the variants'
    ``table`` and the seconds) and print the table: each variant's NDCG@10 and its difference from the stage's."""
    args, data, lists, in_sample, measured = run.args, run.data, run.lists, run.in_sample, run.measured
    seconds = {**run.seconds, "total": time.perf_counter() - run.started}
    result = {
        "source": {"name": args.source, "folder": Path(args.path).name, "counts": data.counts()},
        "lists": {"validation_shoppers": int(len(lists.targets)), "stage_sample": int(in_sample.sum()),
                  "measured": int(measured.sum())},
        **(extra or {}),
        "variants": table,
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }
    target = Path(args.output)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.source} {Path(args.path).name}: {len(lists.targets)} validation shoppers, the stage's sample "
          f"{int(in_sample.sum())}, measured on {int(measured.sum())}")
    print(f"{'variant':<18}{'NDCG@10':>9}{'minus the stage':>18}")
    for name, row in table.items():
        print(f"{name:<18}{row['ndcg@10']:>9.4f}{row['minus_stage']:>+11.4f} ± {row['standard_error']:.4f}")
    print(f"written to {target}")


if __name__ == "__main__":
    sys.exit(main())
