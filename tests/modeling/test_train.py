"""The two-tower model learns the demo shop's hidden tastes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from modeling import datasets as ds
from modeling.embeddings import build_embeddings, load_embeddings
from modeling.errors import TrainingError
from modeling.features import sort_history
from modeling.metrics import hit_rate_at_k
from modeling.sources import load_source
from modeling.synthetic import DemoParams, generate_demo_data
from modeling.train import TrainResult, train_model, training_fingerprint, without_last
from modeling.two_tower import TwoTowerParams
from tests.conftest import Pipeline


def test_two_tower_beats_popularity_on_held_out_demo_interactions(tmp_path: Path) -> None:
    generate_demo_data(tmp_path / "raw", DemoParams(n_users=800, n_items=250, n_interactions=12_000, seed=11),
                       progress=False)
    data = load_source("amazon2018", tmp_path / "raw")
    build_embeddings(data, tmp_path / "emb", progress=False)
    # The two-tower alone is measured: the ranking stage (not fitted here) has tests of its own.
    result = train_model(data, load_embeddings(tmp_path / "emb"), TwoTowerParams(epochs=8, seed=5),
                         ranking_stage=False)
    model, popular = result.metrics["two_tower"], result.metrics["popularity"]
    assert model["users"] == 800
    # Full ranking over all 250 products, training items excluded, fixed seeds.
    assert model["hr@10"] >= popular["hr@10"] + 0.08, result.metrics
    assert model["ndcg@10"] >= 1.3 * popular["ndcg@10"], result.metrics
    assert model["coverage@10"] > popular["coverage@10"]
    assert result.history and result.best_epoch >= 1


def test_training_history_and_metrics_are_recorded(pipeline: Pipeline) -> None:
    import json

    manifest = json.loads((pipeline.models / pipeline.version / "manifest.json").read_text())
    assert set(manifest["metrics"]) == {"two_tower", "popularity", "hybrid"}
    stage = manifest["ranking_stage"]
    assert stage["sources"]["item_item"] == "ease" and stage["sources"]["l2"] > 0
    assert stage["selection"]["choice"] in stage["selection"]["cross_validation"]
    assert 1 <= len(manifest["history"]) <= 3
    assert manifest["params"]["epochs"] == 3
    assert manifest["examples_per_second"] > 0


def test_training_fingerprint_depends_on_data_embeddings_and_params() -> None:
    base = training_fingerprint("d", "e", TwoTowerParams())
    assert base == training_fingerprint("d", "e", TwoTowerParams())
    assert base != training_fingerprint("d2", "e", TwoTowerParams())
    assert base != training_fingerprint("d", "e2", TwoTowerParams())
    assert base != training_fingerprint("d", "e", TwoTowerParams(epochs=2))


def test_too_little_data_is_refused(pipeline: Pipeline) -> None:
    data = pipeline.data
    one_user = ds.CanonicalData(items=data.items, users=data.users.iloc[:1],
                                interactions=data.interactions.iloc[:3], fingerprint="x")
    with pytest.raises(TrainingError, match="at least 2 users"):
        train_model(one_user, load_embeddings(pipeline.embeddings))


@pytest.fixture(scope="module")
def one_epoch(pipeline: Pipeline) -> TrainResult:
    """The model of ``TwoTowerParams(epochs=1, batch_size=128, seed=3)`` (the log-q correction on, its default),
    trained once per module: the reference each variant is compared with and the corrected model of the
    log-q test (each trained it anew, five times the same model). Tests only read it."""
    base = TwoTowerParams(epochs=1, batch_size=128, seed=3)
    assert base.logq_correction is True
    return train_model(pipeline.data, load_embeddings(pipeline.embeddings), base)


def test_logq_correction_changes_the_loss_and_still_trains(pipeline: Pipeline, one_epoch: TrainResult) -> None:
    from modeling.embeddings import load_embeddings

    embeddings = load_embeddings(pipeline.embeddings)
    plain = train_model(pipeline.data, embeddings,
                        TwoTowerParams(epochs=1, batch_size=128, seed=3, logq_correction=False))
    corrected = one_epoch  # TwoTowerParams(epochs=1, batch_size=128, seed=3, logq_correction=True)
    assert corrected.history[0]["loss"] != plain.history[0]["loss"]
    assert corrected.metrics["two_tower"]["hr@10"] == pytest.approx(
        hit_rate_at_k(corrected.test_ranked, corrected.test_items, 10))  # the figure is its rankings'
    assert corrected.params.to_dict()["logq_correction"] is True


@pytest.mark.parametrize("variant", [{"full_softmax_max_items": 100_000}, {"causal_history": False},
                                     {"share_item_embedding": True, "use_user_id": True},
                                     {"attention_heads": 2, "history_half_life_days": 0.0}])
def test_model_variants_train(pipeline: Pipeline, one_epoch: TrainResult, variant: dict) -> None:
    from modeling.embeddings import load_embeddings

    embeddings = load_embeddings(pipeline.embeddings)
    base = TwoTowerParams(epochs=1, batch_size=128, seed=3)
    plain = one_epoch  # train_model(pipeline.data, embeddings, base)
    assert plain.params == base
    varied = train_model(pipeline.data, embeddings, TwoTowerParams.from_dict(variant, base))
    assert varied.history[0]["loss"] != plain.history[0]["loss"]
    assert varied.metrics["two_tower"]["hr@10"] == pytest.approx(hit_rate_at_k(varied.test_ranked,
                                                                               varied.test_items, 10))
    assert varied.test_ranked.shape == (len(varied.test_items), min(100, len(pipeline.data.items)))


def test_without_validation_items_every_epoch_is_trained_and_kept(pipeline: Pipeline) -> None:
    from modeling.splits import Split, leave_last_out_split

    split = leave_last_out_split(pipeline.data.interactions)
    no_validation = Split(train=split.train, validation=split.validation.iloc[:0], test=split.test)
    result = train_model(pipeline.data, load_embeddings(pipeline.embeddings),
                         TwoTowerParams(epochs=3, patience=1, batch_size=128, seed=3), split=no_validation)
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert result.best_epoch == 3


def test_refit_trains_on_every_interaction_for_the_chosen_epochs(pipeline: Pipeline) -> None:
    import numpy as np

    from modeling.splits import leave_last_out_split
    from modeling.train import build_features, refit_model, sorted_history, tower_vectors

    embeddings = load_embeddings(pipeline.embeddings)
    measured = train_model(pipeline.data, embeddings, TwoTowerParams(epochs=2, batch_size=128, seed=3))
    epochs: list[dict] = []
    refit = refit_model(pipeline.data, embeddings, measured, on_epoch=epochs.append)
    assert refit.refit_epochs == measured.best_epoch == len(epochs) and all(row["refit"] for row in epochs)
    # Nothing is held out any more, so the held-out run's figures are what is reported.
    assert refit.metrics == measured.metrics and refit.params == measured.params
    # It learned from the held-out interactions too: another model.
    user_ids = pipeline.data.users["user_id"].astype(str).to_numpy()
    item_ids = pipeline.data.items["item_id"].astype(str).to_numpy()
    history = sorted_history(pipeline.data.interactions, user_ids, item_ids, embeddings)
    features = build_features(history, user_ids, item_ids, embeddings, pipeline.data.items,
                              measured.params.history_length, measured.params.history_half_life_days)
    assert not np.allclose(tower_vectors(refit.model, features)[0], tower_vectors(measured.model, features)[0])
    # With test rows in the split, the refitted model is measured on them.
    split = leave_last_out_split(pipeline.data.interactions)
    measured_on_test = refit_model(pipeline.data, embeddings, measured, split=split)
    assert measured_on_test.metrics["two_tower"]["users"] == measured.metrics["two_tower"]["users"]
    assert len(measured_on_test.test_items) == len(measured.test_items)


def test_epoch_loss_is_the_mean_over_every_training_example(pipeline: Pipeline) -> None:
    from modeling.splits import leave_last_out_split

    n = len(leave_last_out_split(pipeline.data.interactions).train)
    # A batch size whose last batch is large: a summed loss of one batch would be about that many
    # examples' cross-entropy, the mean per example is a few nats.
    batch_size = next(b for b in range(100, 400) if n % b > 0.6 * b)
    result = train_model(pipeline.data, load_embeddings(pipeline.embeddings),
                         TwoTowerParams(epochs=2, batch_size=batch_size, seed=3))
    for row in result.history:
        assert 0.0 < row["loss"] < 30.0, (n, batch_size, row)


def test_validation_and_test_features_hold_no_held_out_item_or_text(pipeline: Pipeline) -> None:
    """What the towers see for a user (history window, review text) comes from before the held-out items."""
    import numpy as np
    import pandas as pd

    from modeling.splits import leave_last_out_split
    from modeling.train import build_features, sorted_history

    data, embeddings = pipeline.data, load_embeddings(pipeline.embeddings)
    user_ids = data.users[ds.USER_ID].astype(str).to_numpy()
    item_ids = data.items[ds.ITEM_ID].astype(str).to_numpy()
    split = leave_last_out_split(data.interactions)
    params = TwoTowerParams()

    def features(frame: pd.DataFrame):
        return build_features(sorted_history(frame, user_ids, item_ids, embeddings), user_ids, item_ids, embeddings,
                              data.items, params.history_length, params.history_half_life_days)

    position = {user: row for row, user in enumerate(user_ids)}
    for stage, inputs, held in (("validation", split.train, [split.validation, split.test]),
                                ("test", pd.concat([split.train, split.validation]), [split.test])):
        built = features(inputs)
        for frame in held:
            for user, item in zip(frame[ds.USER_ID].astype(str), frame[ds.ITEM_ID].astype(str), strict=True):
                assert item not in set(built.history[position[user]]), (stage, user, item)
        # Review text: the same as from the input rows alone, whatever the held-out rows say.
        other = str(embeddings.review_texts[0])  # a text with a vector, unlike the held-out rows' own
        scrambled = pd.concat([inputs, *(f.assign(**{ds.TEXT: other}) for f in held)])
        leaky = features(scrambled)
        assert not np.allclose(leaky.user_text, built.user_text)  # the held-out text would show if it leaked
        assert np.array_equal(features(inputs).user_text, built.user_text)


@pytest.mark.parametrize("steps", [1, 2])
def test_without_last_removes_each_shopper_s_last_steps_and_keeps_their_first(steps: int) -> None:
    # shopper 0: 1 interaction, 1: 2, 2: none, 3: 4
    history = sort_history(np.array([0, 1, 1, 3, 3, 3, 3]), np.array([5, 6, 7, 1, 2, 3, 4]),
                           np.array([10, 20, 30, 1, 2, 3, 4]), np.ones(7, dtype=np.float32), 4)
    shorter, rows = without_last(history, steps)
    kept = {u: list(shorter.items[shorter.starts[u]:shorter.ends[u]]) for u in range(4)}
    if steps == 1:
        assert kept == {0: [5], 1: [6], 2: [], 3: [1, 2, 3]}
        assert list(rows) == [-1, 2, -1, 6] and list(history.items[rows[[1, 3]]]) == [7, 4]
    else:
        assert kept == {0: [5], 1: [6], 2: [], 3: [1, 2]}
        assert list(rows) == [-1, -1, -1, 5] and history.items[rows[3]] == 3
    assert list(shorter.users) == [u for u in range(4) for _ in kept[u]]
    assert len(shorter.timestamps) == len(shorter.weights) == len(shorter.reviews) == len(shorter.items)


def test_test_items_are_ranked_from_the_history_before_they_were_found() -> None:
    """Training measures its test items from what evaluation gives every model: the interactions before each
    test item was found (a click back to an earlier product after it is left out); a split made by hand,
    without a time order, gives every training and validation interaction."""
    import pandas as pd

    from modeling.splits import Split, leave_last_out_split
    from modeling.train import inputs_for_test

    frame = pd.DataFrame([("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3), ("u1", "d", 4), ("u1", "a", 5)],
                         columns=[ds.USER_ID, ds.ITEM_ID, ds.TIMESTAMP]).assign(**{ds.WEIGHT: 1.0})
    split = leave_last_out_split(frame)
    assert inputs_for_test(split)[ds.ITEM_ID].tolist() == ["a", "b", "c"]
    by_hand = Split(train=split.train, validation=split.validation, test=split.test)
    assert sorted(inputs_for_test(by_hand)[ds.ITEM_ID].tolist()) == ["a", "a", "b", "c"]


def test_a_passed_deadline_stops_training_after_the_epoch_under_way(pipeline: Pipeline) -> None:
    import time

    embeddings = load_embeddings(pipeline.embeddings)
    params = TwoTowerParams(epochs=4, patience=10, batch_size=128, seed=3)
    late = train_model(pipeline.data, embeddings, params, ranking_stage=False, deadline=time.time() - 1)
    assert len(late.history) == 1 and late.best_epoch == 1 and late.deadline_reached
    assert late.metrics["two_tower"]["users"] > 0  # measured like any other model
    on_time = train_model(pipeline.data, embeddings, params, ranking_stage=False, deadline=time.time() + 3600)
    assert len(on_time.history) == 4 and not on_time.deadline_reached
    # A deadline that passes during the last epoch cuts nothing short.
    last = train_model(pipeline.data, embeddings, replace(params, epochs=1), ranking_stage=False,
                       deadline=time.time() - 1)
    assert len(last.history) == 1 and not last.deadline_reached
