"""The ranking stage learns from exactly the features the service computes.

Training builds each validation shopper's candidates and features from the training split
(:func:`modeling.train.validation_lists`); the service builds them in :class:`~modeling.recommender.Recommender`
from a published bundle and the shopper's history as the database gives it. Any difference between the two
paths (how a history is ordered, deduplicated or weighted, which products are excluded, how popularity is
computed) would train the ranker on inputs it never sees when answering, and ``evaluate``, which measures the
served path, would not show why.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modeling import artifacts, reranker
from modeling import datasets as ds
from modeling.embeddings import Embeddings, load_embeddings
from modeling.recommender import History, Recommender
from modeling.splits import Split, leave_last_out_split
from modeling.train import TrainResult, earlier_lists, publish, stage_inputs, train_model, validation_lists
from modeling.two_tower import TwoTowerParams
from tests.conftest import Pipeline


@dataclass
class Trained:
    data: ds.CanonicalData
    embeddings: Embeddings
    split: Split
    result: TrainResult


@pytest.fixture(scope="module")
def trained(pipeline: Pipeline) -> Trained:
    data = pipeline.data
    embeddings = load_embeddings(pipeline.embeddings)
    params = TwoTowerParams(epochs=1, batch_size=128, seed=3)
    split = leave_last_out_split(data.interactions)
    result = train_model(data, embeddings, params, split=split)
    assert result.stage is not None
    return Trained(data, embeddings, split, result)


def test_validation_lists_hold_the_candidates_and_features_the_service_computes(
        trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, embeddings, split, result = trained.data, trained.embeddings, trained.split, trained.result

    # The lists as training builds them.
    inputs = stage_inputs(result, data, embeddings, split)
    assert len(inputs.val_u) >= 20
    lists = validation_lists(result.model, inputs.history, inputs.item_vectors, inputs.tables, result.stage.sources,
                             inputs.features, inputs.val_u, inputs.val_i, np.ones(len(inputs.val_u), dtype=bool),
                             result.stage.config)
    _assert_served_alike(trained, split.train, inputs.val_u, lists.candidates, lists.features, tmp_path,
                         monkeypatch)


def test_earlier_lists_hold_what_the_service_computes_without_the_held_out_item(
        trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A list held out a step before the validation item is the service's list for the shopper's history
    without it, from a bundle published without it: the item and what follows from it are unknown there."""
    data, embeddings, split, result = trained.data, trained.embeddings, trained.split, trained.result
    inputs = stage_inputs(result, data, embeddings, split)
    earlier = earlier_lists(result.model, inputs.history, inputs.features, inputs.item_vectors, result.stage.sources,
                            inputs.val_u, replace(result.stage.config, earlier_positions=1), params=result.params,
                            popularity_half_life_days=result.popularity_half_life_days)
    users = inputs.val_u[earlier.owner]
    assert result.stage.report["earlier_lists"]["lists"] == len(earlier)  # what training's stage learned from
    lengths = inputs.history.ends - inputs.history.starts
    assert len(earlier) == int((lengths[inputs.val_u] >= 2).sum()) >= 20
    assert np.array_equal(earlier.targets, inputs.history.items[inputs.history.ends[users] - 1])
    # Each shopper's last training interaction removed: the rows of the training split whose time is the
    # shopper's latest there (one per shopper: the split's rows are ordered as the sorted history).
    ordered = split.train.sort_values([ds.USER_ID, ds.TIMESTAMP], kind="stable")
    counts = ordered.groupby(ds.USER_ID, sort=False)[ds.ITEM_ID].transform("size")
    place = ordered.groupby(ds.USER_ID, sort=False).cumcount()
    shorter = ordered[(place < counts - 1) | (counts == 1)]
    _assert_served_alike(trained, shorter, users, earlier.candidates, earlier.features, tmp_path, monkeypatch)
    assert (earlier.candidates == earlier.targets[:, None]).any(axis=1).sum() >= 5  # lists a ranker learns from


def _assert_served_alike(trained: Trained, interactions: pd.DataFrame, users: np.ndarray, want_candidates: np.ndarray,
                         want_features: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The service, from a bundle published on ``interactions`` and each shopper's rows of them, computes
    ``want_candidates`` (m, C) and ``want_features`` (m, C, F) for ``users`` (m,)."""
    data, embeddings, result = trained.data, trained.embeddings, trained.result
    computed: list[tuple[np.ndarray, np.ndarray]] = []
    original = reranker.candidate_features

    def recorded(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        computed.append(original(*args, **kwargs))
        return computed[-1]

    recommender = Recommender(artifacts.load_bundle(publish(result, data, embeddings, tmp_path,
                                                            interactions=interactions, export_text=False)))
    monkeypatch.setattr(reranker, "candidate_features", recorded)
    user_ids = data.users[ds.USER_ID].astype(str).to_numpy()
    shoppers = [str(u) for u in user_ids[users]]
    rows = interactions[interactions[ds.USER_ID].astype(str).isin(set(shoppers))]
    histories = {str(user): History(group[ds.ITEM_ID].astype(str).to_numpy(dtype=object),
                                    group[ds.TIMESTAMP].to_numpy(dtype=np.int64),
                                    group[ds.WEIGHT].to_numpy(dtype=np.float64))
                 for user, group in rows.groupby(rows[ds.USER_ID].astype(str), sort=False)}
    recommender.recommend(shoppers, histories, 10)
    served = [(candidates, feats) for part_candidates, part_feats in computed
              for candidates, feats in zip(part_candidates, part_feats, strict=True)]
    assert len(served) == len(shoppers)

    for row, (candidates, feats) in enumerate(served):
        expected = want_candidates[row]
        assert np.array_equal(candidates[candidates >= 0], expected[expected >= 0]), shoppers[row]
        np.testing.assert_allclose(feats[candidates >= 0], want_features[row][expected >= 0], rtol=1e-5,
                                   atol=1e-5, equal_nan=True, err_msg=shoppers[row])
