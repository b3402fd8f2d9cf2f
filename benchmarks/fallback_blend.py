"""What the ranking stage serves where no richer ranker clears its bar, on validation items only: the blend of
transitions and item-item (the transitions+EASE baseline's form) against the linear blend that also weighs the
two-tower score, the recency-weighted item-item score and the sequential rules.

Usage:
    .venv/bin/python benchmarks/fallback_blend.py --source amazon2018 --path <category folder> \\
        --output benchmarks/results/fallback_blend_<name>.json

The data is loaded and the two-tower trained as `benchmarks/rankers.py` does (default parameters, no search); the
stage's sources are fitted and the validation shoppers' candidate lists built as training builds them; then both
blends are cross-validated as :func:`modeling.reranker.fit_ranker` does (3 folds over every validation shopper,
each fold's weights chosen on the other folds' selection shoppers, the half of the validation shoppers the
two-tower's early stopping never looked at) and compared on the selection shoppers: the paired mean difference
of NDCG@10 and its standard error, on all of them and on the half whose validation item came latest (the
shoppers nearest in time to the test items). No test item is looked at.

Prints one line and writes JSON to ``--output``.
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

import numpy as np  # noqa: E402

logger = logging.getLogger("benchmarks.fallback_blend")


def _paired(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean of ``a - b`` and its standard error (over the shoppers: len(a) == len(b))."""
    diff = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    error = float(diff.std(ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
    return {"mean": round(float(diff.mean()), 5), "standard_error": round(error, 5), "shoppers": int(len(diff))}


def measure(source: str, path: str, embeddings_dir: str | None = None) -> dict[str, Any]:
    """The two blends' cross-validated NDCG@10 on the selection shoppers and their paired difference."""
    from stage_weighting import stage_sources

    from modeling.reranker import BLEND_PARTS, StageConfig, _blend_grid, _cross_validated_weights, _sequential_grid
    from modeling.train import validation_lists

    params, trained, inputs, selection, sources = stage_sources(source, path, embeddings_dir)
    config = StageConfig(seed=params.seed)
    lists = validation_lists(trained.model, inputs.validation_history, inputs.item_vectors, inputs.tables,
                             sources, inputs.validation_features, inputs.val_u, inputs.val_i, selection, config)
    m = len(lists.targets)
    select = np.asarray(lists.selection, dtype=bool)
    folds = max(2, config.folds)
    fold_of = np.random.default_rng(config.seed).permutation(m) % folds  # fit_ranker's folds
    results: dict[str, Any] = {"shoppers": m, "selection_shoppers": int(select.sum())}
    per_shopper = {}
    for name, grid in (("transitions+item_item", _sequential_grid()), ("blend", _blend_grid())):
        values, weights, _ = _cross_validated_weights(lists.candidates, lists.features, lists.targets, grid, fold_of,
                                                      folds, select)
        per_shopper[name] = values
        results[name] = {"cross_validation": round(float(values[select].mean()), 5),
                         "weights": dict(zip(BLEND_PARTS, weights, strict=True))}
    results["blend_minus_transitions_item_item"] = _paired(per_shopper["blend"][select],
                                                           per_shopper["transitions+item_item"][select])
    # The latest half of the selection shoppers by the time of their validation item (nearest to the test items).
    times = _validation_times(inputs, lists)
    if times is not None:
        chosen = np.flatnonzero(select)
        late = chosen[np.argsort(times[chosen], kind="stable")[len(chosen) // 2:]]
        results["latest_half"] = _paired(per_shopper["blend"][late], per_shopper["transitions+item_item"][late])
    return results


def _validation_times(inputs: Any, lists: Any) -> np.ndarray | None:
    """(m,) each validation list's moment (the latest timestamp of the history it is ranked from), or None where the
    lists are not in the validation shoppers' order."""
    history, users = inputs.validation_history, np.asarray(inputs.val_u)
    if len(users) != len(lists.targets) or not np.array_equal(np.asarray(inputs.val_i), np.asarray(lists.targets)):
        return None
    starts, ends = history.starts[users], history.ends[users]
    return np.where(ends > starts, history.timestamps[np.maximum(ends - 1, 0)], 0).astype(np.int64)


def main() -> None:
    from rankers import dataset_args

    args = dataset_args(__doc__.splitlines()[0])
    results = measure(args.source, args.path, args.embeddings)
    diff = results["blend_minus_transitions_item_item"]
    late = results.get("latest_half", {})
    sys.stdout.write(f"{args.path}: blend {results['blend']['cross_validation']:.4f}, transitions+item_item "
                     f"{results['transitions+item_item']['cross_validation']:.4f}: {diff['mean']:+.4f} ± "
                     f"{diff['standard_error']:.4f} on {diff['shoppers']} selection shoppers"
                     + (f"; latest half {late['mean']:+.4f} ± {late['standard_error']:.4f}" if late else "") + "\n")
    Path(args.output).write_text(json.dumps({"source": args.source, "path": args.path, **results}, indent=1),
                                 encoding="utf-8")


if __name__ == "__main__":
    main()
