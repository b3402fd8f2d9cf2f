"""The layout signals `benchmarks/layout_signals.py` tries on the ranking stage, on a file small enough to read by
hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.layout_signals import extra_features, layout

HEADER = ("year;month;day;order;country;session ID;page 1 (main category);page 2 (clothing model);colour;location;"
          "model photography;price;price 2;page")


def test_products_are_placed_by_category_page_and_place_and_compared_with_the_last_product(tmp_path: Path) -> None:
    rows = ["2008;4;1;1;29;1;1;A1;1;1;1;28;2;1",   # A1: trousers, page 1, top left
            "2008;4;1;2;29;1;1;A2;1;6;1;28;2;1",   # A2: trousers, page 1, bottom right
            "2008;4;1;3;29;1;1;A3;1;1;1;28;2;3",   # A3: trousers, page 3, top left
            "2008;4;1;1;29;2;2;B1;1;2;1;28;2;1"]   # B1: skirts, page 1, top middle
    (tmp_path / "clicks.csv").write_text("\n".join([HEADER, *rows]) + "\n")
    places = layout(tmp_path, ["A1", "A2", "A3", "B1", "unknown"])
    np.testing.assert_array_equal(places, [[1, 1, 1], [1, 1, 6], [1, 3, 1], [2, 1, 2], [-1, -1, -1]])

    # Shopper 0 last saw A1 (after B1); shopper 1 has no history.
    extra = extra_features(np.array([[1, 2, 3, -1], [0, 1, -1, -1]]), [np.array([3, 0]), np.array([], dtype=np.int64)],
                           places)
    np.testing.assert_array_equal(extra["same_page"], [[1, 0, 0, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(extra["page_gap"], [[0, 2, -1, -1], [-1, -1, -1, -1]])
    np.testing.assert_array_equal(extra["same_place"], [[0, 0, 0, 0], [0, 0, 0, 0]])
    # A2 (bottom right) from A1 (top left) on the 2 x 3 grid: one row down, two columns across.
    np.testing.assert_array_equal(extra["place_distance"], [[3, -1, -1, -1], [-1, -1, -1, -1]])
    # Weights 1 (A1, the latest) and 1/2 (B1): A2 shares A1's page, B1 its own.
    np.testing.assert_allclose(extra["page_recent"], [[2 / 3, 0, 1 / 3, 0], [0, 0, 0, 0]], rtol=1e-6)
