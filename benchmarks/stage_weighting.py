"""The ranking stage's trials with its item-item history weighting on and off, on validation items only.

Usage:
    .venv/bin/python benchmarks/stage_weighting.py --source amazon2018 --path <category folder> \\
        --output benchmarks/results/stage_weighting_<name>.json

The stage's item-item features weigh each history product by recency (its weight halves every
``StageConfig.history_half_life_days``, 365, before the shopper's latest interaction): the one choice of the
stage made for the product (a shopper's new purchases must move their list) rather than on validation.
This script asks whether validation would have chosen it. The data is loaded and the two-tower trained as
`benchmarks/rankers.py` does (default parameters, no search); the stage's sources are fitted as training
fits them (EASE's λ chosen on the validation items); then the validation shoppers' candidate lists are built
and ``fit_ranker`` cross-validates its trials twice, with the weighting (365 days) and without it (0: every
history product counts alike), on the same folds and selection shoppers. No test item is looked at.

Prints one line per setting and writes ``fit_ranker``'s cross-validated NDCG@10 of every trial, its
reference, best and choice, per setting, as JSON to ``--output``.
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
from typing import Any  # noqa: E402

logger = logging.getLogger("benchmarks.stage_weighting")

HALF_LIVES = (365.0, 0.0)


def stage_sources(source: str, path: str, embeddings_dir: str | None = None) -> tuple[Any, Any, Any, Any, Any]:
    """The data loaded and the two-tower trained as `benchmarks/rankers.py` does (default parameters, no search),
    and the stage's sources fitted as training fits them. Returns ``(params, trained, inputs, selection, sources)``:
    the :class:`~modeling.two_tower.TwoTowerParams`, the ``TrainResult``, the ``StageInputs``, the (n_val,) bool
    selection shoppers and the fitted ``Sources``."""
    from rankers import load

    from modeling.splits import leave_last_out_split
    from modeling.train import fit_stage_sources, stage_inputs, stopping_shoppers, train_model
    from modeling.two_tower import TwoTowerParams

    data, embeddings, _ = load(source, path, embeddings_dir)
    params = TwoTowerParams()
    split = leave_last_out_split(data.interactions)
    trained = train_model(data, embeddings, params, split=split, ranking_stage=False)
    inputs = stage_inputs(trained, data, embeddings, split)
    selection = ~stopping_shoppers(len(inputs.val_u), params.seed)
    sources = fit_stage_sources(inputs.history, len(inputs.features.user_ids), len(inputs.features.item_ids),
                                inputs.val_u, inputs.val_i, inputs.validation_history, say=logger.info)
    return params, trained, inputs, selection, sources


def measure(source: str, path: str, embeddings_dir: str | None = None) -> dict[str, Any]:
    """``{half_life: {"choice", "reference", "best", "gain_over_reference", "cross_validation"}}``."""
    from modeling.reranker import StageConfig, fit_ranker
    from modeling.train import validation_lists

    params, trained, inputs, selection, sources = stage_sources(source, path, embeddings_dir)
    results: dict[str, Any] = {}
    for half_life in HALF_LIVES:
        config = StageConfig(seed=params.seed, history_half_life_days=half_life)
        lists = validation_lists(trained.model, inputs.validation_history, inputs.item_vectors, inputs.tables,
                                 sources, inputs.validation_features, inputs.val_u, inputs.val_i, selection, config)
        _, report = fit_ranker(lists.candidates, lists.features, lists.targets, config=config,
                               selection=lists.selection, say=logger.info)
        results[str(half_life)] = {key: report[key] for key in ("choice", "reference", "best",
                                                                "gain_over_reference", "cross_validation",
                                                                "selection_shoppers")}
    return results


def main() -> None:
    from rankers import dataset_args

    args = dataset_args(__doc__.splitlines()[0])
    results = measure(args.source, args.path, args.embeddings)
    for half_life, report in results.items():
        cv = report["cross_validation"]
        sys.stdout.write(f"half-life {half_life} days: choice {report['choice']} {cv[report['choice']]:.4f}; "
                         f"feature:item_item {cv['feature:item_item']:.4f}; transitions+item_item "
                         f"{cv['transitions+item_item']:.4f}; best {report['best']} {cv[report['best']]:.4f} "
                         f"({report['selection_shoppers']} selection shoppers)\n")
    Path(args.output).write_text(json.dumps({"source": args.source, "path": args.path, "half_lives": results},
                                            indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
