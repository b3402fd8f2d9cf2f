"""The model-selection report's helpers on hand-made results (the notebook itself is executed on the demo shop
by tests/report/test_readme_commands.py, from the README's own command line)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modeling import datasets as ds
from modeling import selection

RESULT = {
    "models": {"popularity": {"hr@10": 0.1, "ndcg@10": 0.05, "users": 9.0},
               "two_tower": {"hr@10": 0.3, "ndcg@10": 0.2, "users": 9.0}},
    "curves": {"popularity": {"hr": {"1": 0.0, "10": 0.1, "5": 0.05}, "ndcg": {"1": 0.0, "10": 0.05, "5": 0.03}},
               "two_tower": {"hr": {"1": 0.1, "10": 0.3, "5": 0.2}, "ndcg": {"1": 0.1, "10": 0.2, "5": 0.15}}},
    "cold_users": {"users": 4, "given_0": {"two_tower": {"hr@10": 0.5}, "popularity": {"hr@10": 0.5}},
                   "given_1": {"two_tower": {"hr@10": 0.75}, "popularity": {"hr@10": 0.25}}},
    "cold_items": {"items": 2, "users": 3, "two_tower": {"recall@50": 0.6}, "random": {"recall@50": 0.2}},
}


def test_results_table_has_one_row_per_model_protocol_metric() -> None:
    table = selection.results_table(RESULT)
    assert len(table) == 4 + 4 + 2
    # The served model's cold-shopper results (keyed two_tower in cold_start's output) are hybrid rows, as the served
    # model is in leave-last-out; two_tower there is the retrieval stage alone.
    row = table[(table.model == "hybrid") & (table.protocol == "cold_users_given_1")]
    assert row["value"].tolist() == [0.75]
    assert set(table[table.model == "two_tower"].protocol) == {"leave_last_out", "cold_items"}
    assert "users" not in set(table.metric)
    wide = selection.wide_table(table)
    assert wide.loc["random", ("cold_items", "recall@50")] == 0.2
    assert wide.loc["popularity", ("leave_last_out", "hr@10")] == 0.1


def test_curves_and_cold_tables_are_sorted_by_k() -> None:
    curves = selection.curves_table(RESULT, "hr")
    assert curves.index.tolist() == [1, 5, 10]
    assert curves["two_tower"].tolist() == [0.1, 0.2, 0.3]
    cold = selection.cold_users_table(RESULT["cold_users"])
    assert cold.index.tolist() == [0, 1]
    assert cold.loc[1, "hybrid"] == 0.75 and "two_tower" not in cold.columns


def test_pca_2d_recovers_the_main_directions() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(200, 2)) * np.array([10.0, 3.0])
    vectors = np.concatenate([base, rng.normal(scale=0.01, size=(200, 3))], axis=1)
    xy = selection.pca_2d(vectors)
    assert xy.shape == (200, 2)
    assert abs(np.corrcoef(xy[:, 0], base[:, 0])[0, 1]) > 0.99
    assert abs(np.corrcoef(xy[:, 1], base[:, 1])[0, 1]) > 0.99
    assert np.array_equal(selection.pca_2d(vectors), xy)  # deterministic signs


def test_item_map_labels_top_categories() -> None:
    items = pd.DataFrame({ds.ITEM_ID: ["a", "b", "c", "d"],
                          ds.CATEGORY: ["Toys > Cars", "Toys", "Books", None]})
    points = selection.item_map(np.eye(4), items, top_categories=2)
    assert points["category"].tolist() == ["Toys", "Toys", "Books", "other"]
    assert list(points.columns) == ["item_id", "x", "y", "category"]


@pytest.mark.parametrize("bad", ["{\"epochs\": 0}", "{\"nope\": 1}", "[1]", "not json"])
def test_read_params_refuses_bad_files(tmp_path: Path, bad: str) -> None:
    from modeling.errors import TrainingError
    from modeling.tuning import read_params

    path = tmp_path / "params.json"
    path.write_text(bad)
    with pytest.raises(TrainingError, match="params.json"):
        read_params(path)


def test_read_params_takes_the_best_of_a_search_log(tmp_path: Path) -> None:
    from modeling.tuning import read_params

    path = tmp_path / "results.json"
    path.write_text(json.dumps({"search": {"best": {"temperature": 0.2, "batch_size": 128}}}))
    params = read_params(path)
    assert params.temperature == 0.2 and params.batch_size == 128


def test_read_params_takes_what_an_evaluate_output_measured(tmp_path: Path) -> None:
    """evaluate's default output (a time-budgeted search, no ``search`` log) was refused as "unknown parameters:
    baselines, budget_search, ..."."""
    from modeling.tuning import read_params

    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps({"budget_search": {"best_trial": 1}, "protocol": "leave_last_out",
                                "params": {"temperature": 0.2, "history_length": 20}, "baselines": {}}))
    params = read_params(path)
    assert params.temperature == 0.2 and params.history_length == 20


def test_read_params_takes_what_a_cold_protocols_run_measured(tmp_path: Path) -> None:
    """``evaluate --protocols cold`` writes no leave-last-out ``protocol`` key: its output was refused as "unknown
    parameters: cold_items, cold_users, params, source"."""
    from modeling.tuning import read_params

    path = tmp_path / "evaluation.json"
    path.write_text(json.dumps({"params": {"temperature": 0.3, "history_length": 10}, "cold_users": {},
                                "cold_items": {}, "source": {"name": "csv", "path": "shop", "counts": {}}}))
    params = read_params(path)
    assert params.temperature == 0.3 and params.history_length == 10
