"""History windows, pooled vectors and product attributes (hand-computed values)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modeling import datasets as ds
from modeling.features import (
    ItemAttributes,
    attribute_vocabularies,
    history_windows,
    item_attributes,
    item_attributes_of_rows,
    pooled_vectors,
    sort_history,
    user_windows,
    window_ids,
    window_reviews,
)

DAY = 86_400


def _history():
    # user 0: items 3 (t=0), 1 (t=180 days), 2 (t=180 days + 1 s); user 1: item 0; user 2: nothing.
    return sort_history(
        user_pos=np.array([0, 1, 0, 0]), item_pos=np.array([1, 0, 3, 2]),
        timestamps=np.array([180 * DAY, 5, 0, 180 * DAY + 1]), weights=np.array([1.0, 2.0, 1.0, 3.0]),
        n_users=3, reviews=np.array([-1, 4, 7, -1]),
    )


def test_sort_history_orders_by_user_then_time() -> None:
    history = _history()
    assert history.items.tolist() == [3, 1, 2, 0]
    assert history.starts.tolist() == [0, 3, 4]
    assert history.ends.tolist() == [3, 4, 4]
    assert history.reviews.tolist() == [7, -1, -1, 4]


def test_user_windows_are_most_recent_first_with_decayed_weights() -> None:
    positions, weights, rows = user_windows(_history(), 4, half_life_days=180)
    assert positions.tolist() == [[2, 1, 3, -1], [0, -1, -1, -1], [-1, -1, -1, -1]]
    # user 0: item 3 is 180 days (one half-life) and 1 s older than the latest -> weight ~0.5
    assert weights[0] == pytest.approx([3.0, 1.0, 0.5, 0.0], abs=1e-6)
    assert weights[1] == pytest.approx([2.0, 0, 0, 0])
    assert rows.tolist() == [[2, 1, 0, -1], [3, -1, -1, -1], [-1, -1, -1, -1]]


def test_history_windows_stop_before_the_row_and_leave_out_the_target() -> None:
    history = _history()
    # The window of user 0's third row (item 2) holds the two rows before it; with item 3 as target it drops.
    positions, weights, _ = history_windows(history, np.array([2, 2]), np.array([0, 0]), 3,
                                            targets=np.array([0, 3]), half_life_days=180)
    assert positions.tolist() == [[1, 3, -1], [1, -1, -1]]
    assert weights[0] == pytest.approx([1.0, 0.5, 0.0], abs=1e-6)
    assert weights[1] == pytest.approx([1.0, 0.0, 0.0])
    # A window shorter than the history keeps the most recent rows only.
    positions, _, _ = history_windows(history, np.array([3]), np.array([0]), 1)
    assert positions.tolist() == [[2]]


def test_pooled_vectors_are_weighted_unit_means() -> None:
    table = np.eye(3, dtype=np.float32)
    out = pooled_vectors(np.array([[0, 1, -1], [-1, -1, -1]]), np.array([[0.5, 1.0, 9.0], [0, 0, 0]]), table)
    assert out[0] == pytest.approx(np.array([0.5, 1.0, 0.0]) / np.linalg.norm([0.5, 1.0]), abs=1e-6)
    assert out[1] == pytest.approx([0, 0, 0])  # empty window: zero vector
    unweighted = pooled_vectors(np.array([[2, 2]]), None, table)
    assert unweighted[0] == pytest.approx([0, 0, 1])


def test_window_ids_and_reviews_mark_pads() -> None:
    history = _history()
    positions, _, rows = user_windows(history, 2)
    ids = window_ids(positions, np.array(["a", "b", "c", "d"]))
    assert ids.tolist() == [["c", "b"], ["a", ""], ["", ""]]
    assert window_reviews(history, rows).tolist() == [[-1, -1], [4, -1], [-1, -1]]


def test_item_attributes_and_vocabularies() -> None:
    items = pd.DataFrame({
        ds.ITEM_ID: ["a", "b", "c", "d"], ds.CATEGORY: ["Cards > Gift", "Cards > Gift", None, "Toys"],
        ds.BRAND: ["Acme ", "acme", "Solo", ""], ds.PRICE: [12.5, None, -3.0, 0.0],
    })
    attributes = item_attributes(items)
    assert attributes.category.tolist() == ["Cards > Gift", "Cards > Gift", "", "Toys"]
    assert attributes.brand.tolist() == ["acme", "acme", "solo", ""]
    assert attributes.price.tolist() == [12.5, -1.0, -1.0, 0.0]
    categories, brands = attribute_vocabularies(attributes)
    assert categories == ["Cards > Gift", "Toys"]
    assert brands == ["acme"]  # "solo" sells one product: it shares the unknown bucket
    empty = ItemAttributes.empty(2)
    assert empty.category.tolist() == ["", ""] and empty.price.tolist() == [-1.0, -1.0]


def test_product_rows_give_the_attributes_and_texts_of_the_table() -> None:
    """A web worker reads products added after training from database rows, without pandas: the same
    attributes and texts as the canonical table gives training."""
    items = pd.DataFrame({
        ds.ITEM_ID: ["a", "b", "c", "d", "e"], ds.TITLE: ["Mug", "", "Cup", "", "Pot"],
        ds.DESCRIPTION: ["Enamel", "", "", "x" * 1500, ""],
        ds.BRAND: ["Acme ", "acme", None, "", "Solo"], ds.CATEGORY: ["Kitchen > Mugs", None, " Toys ", "", "Pots"],
        ds.PRICE: [12.5, None, -3.0, float("inf"), "7"],
    })
    rows = list(items[list(ds.ITEM_COLUMNS)].itertuples(index=False, name=None))
    rows[1] = ("b", None, None, "acme", None, None)  # the database's NULLs
    by_rows, by_table = item_attributes_of_rows(rows), item_attributes(items)
    assert by_rows.category.tolist() == by_table.category.tolist() == ["Kitchen > Mugs", "", "Toys", "", "Pots"]
    assert by_rows.brand.tolist() == by_table.brand.tolist() == ["acme", "acme", "", "", "solo"]
    assert by_rows.price.tolist() == by_table.price.tolist() == [12.5, -1.0, -1.0, -1.0, 7.0]
    assert by_rows.price.dtype == by_table.price.dtype == np.float32
    filled = list(items.fillna("")[list(ds.ITEM_COLUMNS)].itertuples(index=False, name=None))
    filled[1] = rows[1]
    texts = ds.item_text_of_rows(filled)
    assert texts == ds.item_text(items.fillna(""))
    assert texts[:2] == ["Mug. Brand: Acme . Category: Kitchen > Mugs. Enamel", "Brand: acme"]
    assert texts[3] == "x" * 1000 and item_attributes_of_rows([]).category.shape == (0,)


def test_windows_without_decay_keep_the_interaction_weights() -> None:
    _, weights, _ = user_windows(_history(), 4, half_life_days=0)
    assert weights[0] == pytest.approx([3.0, 1.0, 1.0, 0.0])


def test_pooled_vectors_in_batches_equal_the_whole_computation() -> None:
    from modeling.features import pool_batch

    rng = np.random.default_rng(0)
    table = rng.normal(size=(50, 8)).astype(np.float32)
    positions = rng.integers(-1, 50, size=(2 * pool_batch(5, 8) + 7, 5))
    positions[3] = -1  # an empty window
    weights = rng.random(positions.shape).astype(np.float32)
    summed = np.einsum("ml,mlt->mt", np.where(positions >= 0, weights, 0.0).astype(np.float32),
                       table[np.maximum(positions, 0)])
    norms = np.linalg.norm(summed, axis=1, keepdims=True)
    whole = np.divide(summed, norms, out=np.zeros_like(summed), where=norms > 0)
    out = pooled_vectors(positions, weights, table)
    assert out.dtype == np.float32 and out.shape == (len(positions), 8)
    np.testing.assert_array_equal(out, whole)
    assert not out[3].any()
