"""The ranking stage's LambdaMART with and without lists held out earlier in each shopper's history, on validation.

Usage:
    .venv/bin/python benchmarks/earlier_lists.py --source amazon2018 --path <category folder> \\
        --output benchmarks/results/earlier_lists_<name>.json [--positions 1 2 3]

The ranking stage learns from one list per validation shopper (their validation item held out). LambdaMART
may also learn from each shopper's list 1 to P steps earlier (:func:`modeling.train.earlier_lists`: the
item P steps before the validation item held out, every source fitted again without it). The towers did
train on those earlier items, so the two-tower's scores there may be flattered; this script shows by how
much, and what the extra lists give LambdaMART, for each P.

The data is loaded and the two-tower trained as `benchmarks/rankers.py` does (default parameters, no
search); the stage's sources are fitted as training fits them; then, for each P, ``fit_ranker`` runs on the
same validation lists and folds with the earlier lists of up to P steps. Every figure is a cross-validated
NDCG@10 on the selection shoppers (the half early stopping did not use), except the two-tower's NDCG@10 on
the earlier lists and on every validation list, which compares the towers' scores where they trained and
where they did not. No test item is looked at.

Prints one line per P and writes the figures as JSON to ``--output``.
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
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from typing import Any  # noqa: E402

logger = logging.getLogger("benchmarks.earlier_lists")


def _best(trials: dict[str, float], earlier: bool) -> tuple[str, float]:
    """The best LambdaMART trial learning with (or without) the earlier lists: (name, cross-validated NDCG@10)."""
    names = [name for name in trials if name.startswith("lightgbm") and ("+earlier" in name) == earlier]
    name = max(names, key=lambda n: trials[n])
    return name, trials[name]


def measure(source: str, path: str, positions: list[int], embeddings_dir: str | None = None) -> dict[str, Any]:
    """``{"validation": {...}, "positions": {P: {...}}}`` (see the module docstring)."""
    from rankers import load

    from modeling.reranker import Ranker, _ndcg_at_10, fit_ranker
    from modeling.splits import leave_last_out_split
    from modeling.train import (
        earlier_lists,
        fit_ranking_stage,
        ranker_sample,
        stage_inputs,
        stopping_shoppers,
        train_model,
        validation_lists,
    )
    from modeling.two_tower import TwoTowerParams

    params = TwoTowerParams()
    data, embeddings, _ = load(source, path, embeddings_dir)
    split = leave_last_out_split(data.interactions)
    trained = train_model(data, embeddings, params, split=split, ranking_stage=False)
    inputs = stage_inputs(trained, data, embeddings, split)
    selection = ~stopping_shoppers(len(inputs.val_u), params.seed)
    stage = fit_ranking_stage(trained.model, inputs.history, inputs.features, inputs.item_vectors, inputs.tables,
                              inputs.val_u, inputs.val_i, selection, seed=params.seed,
                              validation=(inputs.validation_history, inputs.validation_features), say=logger.info)
    lists = validation_lists(trained.model, inputs.validation_history, inputs.item_vectors, inputs.tables,
                             stage.sources, inputs.validation_features, inputs.val_u, inputs.val_i, selection,
                             stage.config)
    ranked, _ = Ranker("feature", "two_tower").order(lists.candidates, lists.features, 10)
    tower = _ndcg_at_10(ranked, lists.targets)
    result: dict[str, Any] = {
        "validation": {"lists": int(len(lists.targets)), "selection_shoppers": int(lists.selection.sum()),
                       "two_tower_ndcg@10": round(float(tower.mean()), 5),
                       "two_tower_ndcg@10_selection": round(float(tower[lists.selection].mean()), 5)},
        "positions": {},
    }
    users = inputs.val_u[ranker_sample(len(inputs.val_u), params.seed)]
    for count in positions:
        config = replace(stage.config, earlier_positions=count)
        started = time.perf_counter()
        earlier = earlier_lists(trained.model, inputs.history, inputs.features, inputs.item_vectors, stage.sources,
                                users, config, params=params,
                                popularity_half_life_days=trained.popularity_half_life_days)
        built = time.perf_counter() - started
        _, report = fit_ranker(lists.candidates, lists.features, lists.targets, config=config,
                               selection=lists.selection, earlier=earlier, say=logger.info)
        trials = report["cross_validation"]
        (alone, alone_v), (joined, joined_v) = _best(trials, False), _best(trials, True)
        result["positions"][str(count)] = {
            "earlier_lists": report.get("earlier_lists"), "best_alone": {alone: alone_v},
            "best_with_earlier": {joined: joined_v}, "reference": {report["reference"]: trials[report["reference"]]},
            "choice": report["choice"], "cross_validation": trials, "seconds": {"lists": round(built, 1),
                                                                                 "fit_ranker": report["seconds"]}}
        logger.info("P=%d: %s", count, result["positions"][str(count)]["best_with_earlier"])
    return result


def main(argv: list[str] | None = None) -> int:
    from rankers import dataset_parser

    parser = dataset_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--positions", type=int, nargs="+", default=[1, 2, 3],
                        help="Steps before the validation item measured (each P: lists of 1 to P steps earlier).")
    args = parser.parse_args(argv)
    if min(args.positions) < 1:
        parser.error("--positions must be at least 1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    result = {"source": {"name": args.source, "folder": Path(args.path).name},
              **measure(args.source, args.path, sorted(set(args.positions)), args.embeddings)}
    from modeling.atomic import atomic_write

    target = Path(args.output)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(target) as handle:
        json.dump(result, handle, indent=2)
    v = result["validation"]
    print(f"{args.source} {Path(args.path).name}: {v['lists']} validation lists, "
          f"two-tower NDCG@10 {v['two_tower_ndcg@10']}")
    for count, row in result["positions"].items():
        (alone, a), (joined, j) = next(iter(row["best_alone"].items())), next(iter(row["best_with_earlier"].items()))
        info = row["earlier_lists"] or {}
        print(f"P={count}: {info.get('lists', 0)} earlier lists "
              f"(two-tower NDCG@10 there {info.get('two_tower_ndcg@10')}); "
              f"best alone {alone} {a:.4f}, best with them {joined} {j:.4f}; choice {row['choice']}")
    print(f"written to {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
