"""The ranking stage learns from exactly the features the service computes.

Training builds each validation shopper's candidates and features from the training split
(:func:`modeling.train.validation_lists`); the service builds them in :class:`~modeling.recommender.Recommender`
from a published bundle and the shopper's history as the database gives it. Any difference between the two
paths (how a history is ordered, deduplicated or weighted, which products are excluded, how popularity is
computed) would train the ranker on inputs it never sees when answering, and ``evaluate``, which measures the
served path, would not show why.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modeling import artifacts, reranker
from modeling import datasets as ds
from modeling.embeddings import load_embeddings
from modeling.recommender import History, Recommender
from modeling.splits import leave_last_out_split
from modeling.train import publish, stage_inputs, train_model, validation_lists
from modeling.two_tower import TwoTowerParams
from tests.conftest import Pipeline


def test_validation_lists_hold_the_candidates_and_features_the_service_computes(
        pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = pipeline.data
    embeddings = load_embeddings(pipeline.embeddings)
    params = TwoTowerParams(epochs=1, batch_size=128, seed=3)
    split = leave_last_out_split(data.interactions)
    trained = train_model(data, embeddings, params, split=split)
    assert trained.stage is not None

    # The lists as training builds them.
    inputs = stage_inputs(trained, data, embeddings, split)
    assert len(inputs.val_u) >= 20
    lists = validation_lists(trained.model, inputs.history, inputs.item_vectors, inputs.tables, trained.stage.sources,
                             inputs.features, inputs.val_u, inputs.val_i, np.ones(len(inputs.val_u), dtype=bool),
                             trained.stage.config)

    # The same shoppers through the service's path: a bundle of the training split, histories as rows.
    computed: list[tuple[np.ndarray, np.ndarray]] = []
    original = reranker.candidate_features

    def recorded(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        computed.append(original(*args, **kwargs))
        return computed[-1]

    recommender = Recommender(artifacts.load_bundle(publish(trained, data, embeddings, tmp_path,
                                                            interactions=split.train, export_text=False)))
    monkeypatch.setattr(reranker, "candidate_features", recorded)
    user_ids = data.users[ds.USER_ID].astype(str).to_numpy()
    shoppers = [str(u) for u in user_ids[inputs.val_u]]
    rows = split.train[split.train[ds.USER_ID].astype(str).isin(set(shoppers))]
    histories = {str(user): History(group[ds.ITEM_ID].astype(str).to_numpy(dtype=object),
                                    group[ds.TIMESTAMP].to_numpy(dtype=np.int64),
                                    group[ds.WEIGHT].to_numpy(dtype=np.float64))
                 for user, group in rows.groupby(rows[ds.USER_ID].astype(str), sort=False)}
    recommender.recommend(shoppers, histories, 10)
    served = [(candidates, feats) for part_candidates, part_feats in computed
              for candidates, feats in zip(part_candidates, part_feats, strict=True)]
    assert len(served) == len(shoppers)

    for row, (candidates, feats) in enumerate(served):
        expected = lists.candidates[row]
        assert np.array_equal(candidates[candidates >= 0], expected[expected >= 0]), shoppers[row]
        np.testing.assert_allclose(feats[candidates >= 0], lists.features[row][expected >= 0], rtol=1e-5,
                                   atol=1e-5, equal_nan=True, err_msg=shoppers[row])
