"""Whether other LightGBM settings, or several boosters averaged, would give the ranking stage more.

Usage:
    .venv/bin/python benchmarks/ranker_settings.py --source clickstream \\
        --path ../shared/datasets/uci_eshop_clothing_2008 --output benchmarks/results/ranker_settings_clickstream.json

The lists, the stage's sample, its three folds and its selection shoppers are those of
``benchmarks/ranker_lists.py`` (the data loaded and the two-tower trained with default parameters, no search;
validation items only). For each fold, LambdaMART is trained on the sample's other folds with the stage's settings
(:data:`modeling.reranker.LIGHTGBM_PARAMS`) changed as each variant says, and measured after 50, 100 and 200
trees:

- ``bagged5``: five boosters of different seeds, each on 80% of the rows and 80% of the features per tree
  (LightGBM's bagging), their scores averaged;
- ``min_leaf100``: at least 100 rows in a leaf (the stage's: 20);
- ``xendcg``: LightGBM's ``rank_xendcg`` objective instead of ``lambdarank``;
- ``lr0.1``: learning rate 0.1 (the stage's: 0.05).

Each variant's mean NDCG@10 on the selection shoppers and its paired difference from the stage's own settings
(same number of trees) with one standard error. Prints a table and writes JSON to ``--output``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from modeling import runtime as _runtime  # noqa: E402,F401  (first: environment for TensorFlow)

import logging  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

logger = logging.getLogger("benchmarks.ranker_settings")

TREES = (50, 100, 200)
VARIANTS: dict[str, tuple[dict[str, Any], int]] = {
    "stage": ({}, 1),
    "bagged5": ({"bagging_fraction": 0.8, "bagging_freq": 1, "feature_fraction": 0.8}, 5),
    "min_leaf100": ({"min_data_in_leaf": 100}, 1),
    "xendcg": ({"objective": "rank_xendcg"}, 1),
    "lr0.1": ({"learning_rate": 0.1}, 1),
}
"""Each variant: the settings changed from the stage's, and how many boosters (seeds) are averaged."""


def measure(lists: Any, in_sample: np.ndarray, seed: int, settings: dict[str, Any], boosters: int
            ) -> dict[int, np.ndarray]:
    """{trees: (v,) NDCG@10} with the stage's settings changed by ``settings``, ``boosters`` averaged; 0 outside the
    stage's sample (:func:`stage_features.measure` with those settings)."""
    from stage_features import measure as measure_features

    return measure_features(lists, in_sample, seed, {}, (), trees=TREES, boosters=boosters, params=settings)


def main(argv: list[str] | None = None) -> int:
    from ranker_lists import report, start
    from stage_features import _difference

    run = start(__doc__.split("\n\n")[0], argv)
    results = {}
    for name, (settings, boosters) in VARIANTS.items():
        results[name] = measure(run.lists, run.in_sample, run.seed, settings, boosters)
        logger.info("%s measured", name)
    table = {f"{name}:{trees}": _difference(values[trees][run.measured], results["stage"][trees][run.measured])
             for name, values in results.items() for trees in TREES}
    report(run, table, {"settings": {name: {"changed": settings, "boosters": boosters}
                                     for name, (settings, boosters) in VARIANTS.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
