"""Whether the ranking stage's LambdaMART gains from where products are shown in the shop: the UCI clickstream's
page and place on the page, which its importer does not keep.

Usage:
    .venv/bin/python benchmarks/layout_signals.py --source clickstream \\
        --path ../shared/datasets/uci_eshop_clothing_2008 --output benchmarks/results/layout_signals_clickstream.json

Only for the UCI e-shop file: each product (``page 2 (clothing model)``) is shown in one main category, on one
of its pages (``page``, 1 to 5) and in one of six places on that page (``location``: 1 top left ... 6 bottom
right). Validation items only, with the lists and the measure of ``benchmarks/stage_features.py`` (LambdaMART on
the stage's own sample of lists in its three folds, measured on its selection shoppers, after 50 and 100 trees).
The variants:

- ``stage``: the stage's features (:data:`modeling.reranker.FEATURES`);
- ``+page``: whether the candidate is on the history's last product's page, the distance between their pages in
  the same category (-1 in another), and the recency-weighted share of the 10 most recent products on the
  candidate's page;
- ``+place``: whether the candidate is in the last product's place on the same page, and the distance between the
  two places on the page's 2 x 3 grid (-1 on another page);
- ``+both``: the five columns.

Each variant's paired difference from ``stage`` (same shoppers, same trees) with one standard error, and the
page signal alone as a ranking beside the stage's transitions alone. Prints a table and writes JSON to
``--output``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from modeling import runtime as _runtime  # noqa: E402,F401  (first: environment for TensorFlow)

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

RECENT = 10


def layout(path: Path, item_ids: list[str]) -> np.ndarray:
    """(n_items, 3) int64: each product's main category, page and place on the page (-1 where unknown)."""
    files = [path] if path.is_file() else sorted(path.glob("*.csv"))
    raw = pd.concat([pd.read_csv(file, sep=";") for file in files])
    raw["item"] = raw["page 2 (clothing model)"].astype(str).str.strip()
    first = raw.groupby("item")[["page 1 (main category)", "page", "location"]].first()
    table = np.full((len(item_ids), 3), -1, dtype=np.int64)
    for position, item in enumerate(item_ids):
        if item in first.index:
            table[position] = first.loc[item].to_numpy(dtype=np.int64)
    return table


def extra_features(candidates: np.ndarray, histories: list[np.ndarray], places: np.ndarray) -> dict[str, np.ndarray]:
    """The new columns for every (shopper, candidate), each (v, C) float32 (candidates (v, C), -1 pads;
    histories: v arrays of item positions, oldest first; places: (n_items, 3) from :func:`layout`)."""
    v, width = candidates.shape
    valid = candidates >= 0
    candidate = places[np.maximum(candidates, 0)]  # (v, C, 3)
    last = np.array([int(h[-1]) if len(h) else -1 for h in histories], dtype=np.int64)
    at = places[np.maximum(last, 0)][:, None, :]  # (v, 1, 3)
    known = valid & (last[:, None] >= 0) & (candidate[:, :, 0] >= 0) & (at[:, :, 0] >= 0)
    same_category = known & (candidate[:, :, 0] == at[:, :, 0])
    same_page = same_category & (candidate[:, :, 1] == at[:, :, 1])
    row_c, col_c = (candidate[:, :, 2] - 1) // 3, (candidate[:, :, 2] - 1) % 3
    row_l, col_l = (at[:, :, 2] - 1) // 3, (at[:, :, 2] - 1) % 3
    page_share = np.zeros((v, width), dtype=np.float32)
    for row, history in enumerate(histories):
        recent = np.asarray(history, dtype=np.int64)[::-1][:RECENT]
        if not len(recent):
            continue
        weights = 1.0 / np.arange(1, len(recent) + 1)
        keys = places[recent, 0] * 10 + places[recent, 1]
        ckeys = candidate[row, :, 0] * 10 + candidate[row, :, 1]
        page_share[row] = (weights[None, :] * (ckeys[:, None] == keys[None, :])).sum(axis=1) / weights.sum()
    return {
        "same_page": same_page.astype(np.float32),
        "page_gap": np.where(same_category, np.abs(candidate[:, :, 1] - at[:, :, 1]), -1).astype(np.float32),
        "page_recent": np.where(valid, page_share, 0.0).astype(np.float32),
        "same_place": (same_page & (candidate[:, :, 2] == at[:, :, 2])).astype(np.float32),
        "place_distance": np.where(same_page, np.abs(row_c - row_l) + np.abs(col_c - col_l), -1).astype(np.float32),
    }


VARIANTS = {"+page": ("same_page", "page_gap", "page_recent"), "+place": ("same_place", "place_distance"),
            "+both": ("same_page", "page_gap", "page_recent", "same_place", "place_distance")}


def main(argv: list[str] | None = None) -> int:
    from stage_features import compare_signals

    def make(run, histories: list[np.ndarray]) -> dict[str, np.ndarray]:  # noqa: ANN001  (a ranker_lists.Run)
        places = layout(Path(run.args.path), [str(item) for item in run.inputs.features.item_ids])
        return extra_features(run.lists.candidates, histories, places)

    return compare_signals(__doc__.split("\n\n")[0], argv, make, ("same_page", "page_recent"), VARIANTS)


if __name__ == "__main__":
    sys.exit(main())
