"""The cold-start protocols: held-out shoppers and products, their baselines, intervals and leak guard."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from modeling import artifacts, cold_start
from modeling import datasets as ds
from modeling.baselines import fit_baselines, interaction_matrix, transition_probabilities
from modeling.cold_start import (
    _cold_user_metrics,
    _first_interactions,
    check_held_out,
    cold_items,
    cold_users,
    format_cold_table,
    random_recall,
)
from modeling.embeddings import load_embeddings
from modeling.recommender import Recommender
from modeling.splits import leave_last_out_split, time_order
from modeling.train import recent_popularity, sorted_history
from modeling.two_tower import TwoTowerParams
from tests.conftest import Pipeline

BASELINES = {"popularity", "item_knn", "ease", "ials", "transitions", "transitions+ease", "sequential_rules"}


def test_cold_user_metrics_match_hand_computed_values() -> None:
    ranked = np.arange(50)  # item i at rank i + 1
    # Remaining items 3, 12 and 70: one in the top 10, two in the top 50; the next product (3) at rank 4.
    hit, recall, next_hit, next_gain = _cold_user_metrics(ranked, np.array([3, 12, 70]), 3)
    assert (hit, next_hit) == (1.0, 1.0)
    assert recall == pytest.approx(2 / 3)
    assert next_gain == pytest.approx(1 / np.log2(5))
    # The next product (12) is outside the top 10, another remaining one (3) is inside.
    assert _cold_user_metrics(ranked, np.array([3, 12]), 12) == (1.0, 1.0, 0.0, 0.0)
    assert _cold_user_metrics(ranked, np.array([60]), 60) == (0.0, 0.0, 0.0, 0.0)


def test_random_placement_recall_hand_computed() -> None:
    assert random_recall(50, 200) == 0.25
    assert random_recall(50, 40) == 1.0  # fewer candidates than places: everything is shown
    assert random_recall(10, 0) == 1.0


def test_a_model_that_knows_a_held_out_shopper_or_product_is_refused(pipeline: Pipeline) -> None:
    recommender = Recommender(artifacts.load_bundle(pipeline.models / pipeline.version))
    known_user, known_item = str(recommender.user_ids[0]), str(recommender.item_ids[0])
    check_held_out(recommender, users=["nobody"], items=["no-such-product"])
    with pytest.raises(RuntimeError, match=known_user):
        check_held_out(recommender, users=[known_user])
    with pytest.raises(RuntimeError, match=known_item):
        check_held_out(recommender, items=[known_item])


def test_cold_shoppers_are_not_measured_where_none_has_a_product_after_the_given_ones(pipeline: Pipeline) -> None:
    """A shop where every shopper has 3 products held no cold shopper to measure: every figure was NaN, with numpy's
    "Mean of empty slice" warnings, after a model was trained for nothing."""
    inter = time_order(pipeline.data.interactions)
    first = inter.drop_duplicates([ds.USER_ID, ds.ITEM_ID])
    three = first[first.groupby(ds.USER_ID, observed=True).cumcount() < 3]
    data = cold_start._subset(pipeline.data, inter[inter.index.isin(three.index)])
    lines: list[str] = []
    users = cold_users(data, load_embeddings(pipeline.embeddings), TwoTowerParams(epochs=1), on_progress=lines.append)
    assert users == {"users": 0, "not_measured": "no shopper has more than 3 distinct products: a cold shopper is "
                                                 "given up to 3 and must have one more to find"}
    assert lines == [f"cold users: not measured ({users['not_measured']})"]
    table = format_cold_table({"cold_users": users, "cold_items": {"items": 0, "users": 0}})
    assert table.startswith(f"Cold users: not measured ({users['not_measured']}).") and "nan" not in table


def test_cold_shoppers_every_model_one_fallback_and_intervals(pipeline: Pipeline) -> None:
    embeddings = load_embeddings(pipeline.embeddings)
    users = cold_users(pipeline.data, embeddings, TwoTowerParams(epochs=2, batch_size=128), ease_l2=10.0)
    assert users["users"] == round(0.1 * pipeline.data.counts()["users"])
    for given in ("given_0", "given_1", "given_3"):
        assert set(users[given]) == BASELINES | {"two_tower"}
        for metrics in users[given].values():
            # The next product is one of the remaining ones, and a hit in the top 10 is one in the top 50.
            assert metrics["next_ndcg@10"] <= metrics["next_hr@10"] <= metrics["hr@10"]
    # With nothing given every model answers with the service's fallback (recent popularity), except
    # the popularity baseline itself (training counts); the output says so.
    for name in BASELINES - {"popularity"}:
        assert users["given_0"][name] == users["given_0"]["two_tower"]
    assert "recent popularity" in users["fallback_given_0"]
    # Given something, the models differ.
    assert len({tuple(m.values()) for m in users["given_3"].values()}) > 2
    for given in ("given_1", "given_3"):
        for name, metrics in users["differences"][given].items():
            for metric, value in metrics.items():
                gap = users[given]["two_tower"][metric] - users[given][name][metric]
                assert value["difference"] == pytest.approx(gap)
                assert value["low"] <= value["difference"] <= value["high"]
    items = cold_items(pipeline.data, embeddings, TwoTowerParams(epochs=1, batch_size=128))
    table = format_cold_table({"cold_users": users, "cold_items": items})
    assert "Cold items" in table and "text_similarity" in table and "next_ndcg@10, cold users given 3" in table
    # The served model's cold-shopper rows are shown as hybrid (its name in leave-last-out), not two_tower.
    cold_part = table.split("Cold items")[0]
    assert "\nhybrid " in cold_part and "two_tower" not in cold_part
    assert "hybrid minus baseline, next_ndcg@10, cold users given 1" in table
    # The table shows next HR@10 (the metric the cold-shopper target is set in): its intervals are printed too.
    assert "hybrid minus baseline, next_hr@10, cold users given 1" in table
    assert "hybrid minus baseline, next_hr@10, cold users given 3" in table


def _difference(value: float) -> dict[str, float]:
    return {"difference": value, "low": value - 0.01, "high": value + 0.01}


@pytest.mark.parametrize("held_out", [9, 40])
def test_the_cold_product_lines_show_both_metrics_and_when_one_cannot_tell_models_apart(held_out: int) -> None:
    """Only the products-only Recall@10 was printed: on a MovieLens shop it put the two-tower above every baseline
    while its whole-catalogue Recall@50 was below random and text similarity, with intervals below 0 (JSON only);
    and with 10 or fewer held-out products every model scores 1.0 on it, printed as a measured tie."""
    models = {name: {"recall@50": 0.1, "cold_recall@10": 1.0} for name in ("two_tower", "text_similarity", "random")}
    items = {"items": held_out, "users": 30, **models, "over_promotion": {"users": 0},
             "differences": {"text_similarity": {"recall@50": _difference(-0.049), "cold_recall@10": _difference(0.0)},
                             "random": {"recall@50": _difference(-0.002), "cold_recall@10": _difference(0.0)}}}
    users = {"users": 0, "not_measured": "no shopper has more than 3 distinct products"}
    table = format_cold_table({"cold_users": users, "cold_items": items})
    assert ("two_tower minus baseline, recall@50, cold items: text_similarity -0.0490 [-0.0590, -0.0390]; "
            "random -0.0020 [-0.0120, +0.0080]") in table
    informative = "two_tower minus baseline, cold_recall@10, cold items: text_similarity +0.0000"
    assert (informative in table) == (held_out > 10)
    assert ("cold_recall@10, cold items: not informative (9 held-out products" in table) == (held_out <= 10)


def test_the_cold_protocols_bundle_knows_only_the_interactions_the_baselines_are_fitted_on(
        pipeline: Pipeline, tmp_path) -> None:
    """The cold-start protocols fit their baselines on the warm split's training part: the served model's bundle
    (its popularity, its ranking stage's sources) must be published over that part too, not over the held-out
    validation and test interactions as well."""
    embeddings = load_embeddings(pipeline.embeddings)
    data = pipeline.data
    split = leave_last_out_split(data.interactions)
    assert len(split.test) > 0
    recommender = cold_start._train_and_load(data, embeddings, TwoTowerParams(epochs=1, batch_size=128),
                                             str(tmp_path), split)
    user_ids = data.users[ds.USER_ID].astype(str).to_numpy()
    item_ids = np.asarray(recommender.item_ids).astype(str)
    history = sorted_history(split.train, user_ids, item_ids, embeddings)
    half_life = recommender.bundle.manifest["popularity_half_life_days"]
    popularity = recent_popularity(history.items, history.weights, history.timestamps, len(item_ids),
                                   half_life_days=half_life)
    np.testing.assert_allclose(np.asarray(recommender.popularity), popularity, rtol=1e-5)
    transitions = transition_probabilities(history.users, history.items, len(item_ids)).toarray()
    np.testing.assert_allclose(recommender.stage.sources.transitions.toarray(), transitions, rtol=1e-5)


def test_first_interactions_keep_each_users_first_row_per_product_users_sorted() -> None:
    frame = pd.DataFrame({ds.USER_ID: pd.array(["b", "a", "b", "a", "b"], dtype="string"),
                          ds.ITEM_ID: pd.array(["x", "y", "x", "z", "w"], dtype="string"),
                          ds.TIMESTAMP: [1, 2, 3, 4, 5]})
    rows, users, starts = _first_interactions(frame)
    assert users.tolist() == ["a", "b"] and starts.tolist() == [0, 2, 4]
    assert rows[ds.ITEM_ID].tolist() == ["y", "z", "x", "w"] and rows[ds.TIMESTAMP].tolist() == [2, 4, 1, 5]
    empty_rows, empty_users, empty_starts = _first_interactions(frame.iloc[:0])
    assert len(empty_rows) == 0 and len(empty_users) == 0 and empty_starts.tolist() == [0]


def test_cold_users_scored_in_chunks_get_the_values_of_one_at_a_time(pipeline: Pipeline, monkeypatch) -> None:
    recommender = Recommender(artifacts.load_bundle(pipeline.models / pipeline.version))
    items = pd.Index(recommender.item_ids.astype(str))
    inter = time_order(pipeline.data.interactions)
    users = pd.Index(pipeline.data.users[ds.USER_ID].astype(str))
    u, i = users.get_indexer(inter[ds.USER_ID].astype(str)), items.get_indexer(inter[ds.ITEM_ID].astype(str))
    matrix = interaction_matrix(u, i, len(users), len(items))
    models = fit_baselines({"ease": {"l2": 10.0}, "ials": {"factors": 8}}, matrix, (u, i))
    # Unknown ids: the two-tower answers from the given history (content) or with its fallback (nothing given).
    distinct = inter.groupby(ds.USER_ID, observed=True)[ds.ITEM_ID].transform("nunique")
    cold = inter[distinct > 3].assign(**{ds.USER_ID: lambda f: ("new-" + f[ds.USER_ID].astype(str)).astype("string")})
    found = _first_interactions(cold)
    for g in (0, 1, 3):
        monkeypatch.setattr(cold_start, "SCORE_CHUNK", 512)
        together = cold_start._cold_user_values(recommender, models, found, items, g)
        assert len(together["two_tower"]) == len(found[1]) and list(together) == ["two_tower", *models]
        for size in (1, 7):  # one shopper at a time, and chunks with a ragged last one
            monkeypatch.setattr(cold_start, "SCORE_CHUNK", size)
            assert cold_start._cold_user_values(recommender, models, found, items, g) == together
