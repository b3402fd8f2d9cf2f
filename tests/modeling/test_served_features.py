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
from typing import Any

import numpy as np
import pandas as pd
import pytest

from modeling import artifacts, reranker, train
from modeling import datasets as ds
from modeling.embeddings import Embeddings, load_embeddings
from modeling.recommender import History, Recommender
from modeling.splits import Split, histories_before, leave_last_out_split
from modeling.train import TrainResult, earlier_lists, publish, stage_inputs, train_model, validation_lists
from modeling.two_tower import TwoTowerParams
from tests.conftest import Pipeline


@dataclass
class Trained:
    data: ds.CanonicalData
    embeddings: Embeddings
    split: Split
    result: TrainResult
    built: list[tuple[Any, ...]]


@pytest.fixture(scope="module")
def trained(pipeline: Pipeline) -> Trained:
    data = with_returns(pipeline.data)
    embeddings = load_embeddings(pipeline.embeddings)
    params = TwoTowerParams(epochs=1, batch_size=128, seed=3)
    split = leave_last_out_split(data.interactions)
    built: list[tuple[Any, ...]] = []
    original = train.validation_lists
    with pytest.MonkeyPatch.context() as patch:  # what training's ranking stage learned from
        patch.setattr(train, "validation_lists", lambda *args: built.append(args) or original(*args))
        result = train_model(data, embeddings, params, split=split)
    assert result.stage is not None
    return Trained(data, embeddings, split, result, built)


def with_returns(data: ds.CanonicalData, shoppers: int = 40) -> ds.CanonicalData:
    """``data`` where some shoppers went back to their first product after finding their last two (as shoppers
    who click through a session do): training keeps those interactions, but the held-out items must be ranked
    from what came before them."""
    split = leave_last_out_split(data.interactions)
    test = split.test.set_index(ds.USER_ID)
    first = split.train.drop_duplicates(ds.USER_ID).set_index(ds.USER_ID)
    users = [u for u in test.index if u in first.index][:shoppers]
    returns = first.loc[users].reset_index().assign(**{ds.TIMESTAMP: test.loc[users, ds.TIMESTAMP].to_numpy() + 1})
    interactions = pd.concat([data.interactions, returns[data.interactions.columns]], ignore_index=True)
    return replace(data, interactions=interactions.sort_values([ds.USER_ID, ds.TIMESTAMP], kind="stable")
                   .reset_index(drop=True))


def test_validation_lists_hold_the_candidates_and_features_the_service_computes(
        trained: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data, embeddings, split, result = trained.data, trained.embeddings, trained.split, trained.result

    # The lists as training builds them.
    inputs = stage_inputs(result, data, embeddings, split)
    assert len(inputs.val_u) >= 20
    lists = validation_lists(result.model, inputs.validation_history, inputs.item_vectors, inputs.tables,
                             result.stage.sources, inputs.validation_features, inputs.val_u, inputs.val_i,
                             np.ones(len(inputs.val_u), dtype=bool),
                             result.stage.config)
    # Each shopper as the service sees them when the validation item is found: a bundle published on every
    # training interaction, and the history before the item (the return to the first product not yet made).
    before = histories_before(split, "validation")
    assert len(before) < len(split.train)  # the returns are cut
    (args,) = trained.built  # training's stage learned from these lists
    assert len(args[1].items) == len(before)
    assert np.array_equal(args[5].history, inputs.validation_features.history)
    assert all(np.array_equal(getattr(args[1], name), getattr(inputs.validation_history, name))
               for name in ("items", "users", "timestamps"))
    _assert_served_alike(trained, split.train, inputs.val_u, lists.candidates, lists.features, tmp_path,
                         monkeypatch, histories_from=before)


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
                         want_features: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *,
                         histories_from: pd.DataFrame | None = None) -> None:
    """The service, from a bundle published on ``interactions`` and each shopper's rows of ``histories_from``
    (default ``interactions``), computes ``want_candidates`` (m, C) and ``want_features`` (m, C, F) for
    ``users`` (m,)."""
    data, embeddings, result = trained.data, trained.embeddings, trained.result
    computed: list[tuple[np.ndarray, np.ndarray]] = []
    original = reranker.candidate_features

    def recorded(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        computed.append(original(*args, **kwargs))
        return computed[-1]

    recommender = Recommender(artifacts.load_bundle(publish(result, data, embeddings, tmp_path,
                                                            interactions=interactions, export_text=False)))
    monkeypatch.setattr(reranker, "candidate_features", recorded)
    # Every feature, as for a learned ranker (a single-feature or blended order has only those it reads computed).
    monkeypatch.setattr(reranker.Ranker, "columns", lambda self: None)
    user_ids = data.users[ds.USER_ID].astype(str).to_numpy()
    shoppers = [str(u) for u in user_ids[users]]
    histories_from = interactions if histories_from is None else histories_from
    rows = histories_from[histories_from[ds.USER_ID].astype(str).isin(set(shoppers))]
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


def test_early_stopping_ranks_the_validation_items_from_the_history_before_them(trained: Trained) -> None:
    """The two-tower's epoch (and search trial) is chosen on the validation items as the ranking stage and the
    test measure them: each shopper's window ends where their item was found, not at their return after it."""
    from modeling.train import prepare_fit

    data, embeddings, split, result = trained.data, trained.embeddings, trained.split, trained.result
    fit = prepare_fit(data, embeddings, result.params, split)
    before = histories_before(split, "validation")
    assert len(fit.validation_history.items) == len(before) < len(fit.history.items)
    inputs = stage_inputs(result, data, embeddings, split)
    assert np.array_equal(fit.validation_features.history, inputs.validation_features.history)
    changed = (fit.validation_features.history != fit.features.history).any(axis=1)
    assert changed.sum() >= 20  # the returning shoppers' windows
    assert np.array_equal(fit.validation_features.item_text, fit.features.item_text)
