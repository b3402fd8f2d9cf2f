"""`benchmarks/ranker_lists.py` trains each number of leaves with its own settings; the stage's stay as they were."""

from __future__ import annotations

import numpy as np

from benchmarks.ranker_lists import LEAVES, TREES, measure
from modeling import reranker
from tests.benchmarks.test_ranker_settings import _lists


def test_each_variant_is_measured_and_the_stage_s_own_leaves_give_the_stage_s_figures() -> None:
    lists, before = _lists(seed=2, shoppers=120), dict(reranker.LIGHTGBM_PARAMS)
    in_sample = np.ones(len(lists.targets), dtype=bool)
    in_sample[-30:] = False
    results = measure(lists, in_sample, in_sample, 0)
    assert reranker.LIGHTGBM_PARAMS == before
    assert set(results) == {f"{pool}-{leaves}:{trees}" for pool in ("sample", "all") for leaves in LEAVES
                            for trees in TREES}
    for values in results.values():
        assert np.all((values >= 0) & (values <= 1)) and np.all(values[~in_sample] == 0)
    stage_leaves = reranker.LIGHTGBM_PARAMS["num_leaves"]
    assert stage_leaves in LEAVES
    # the stage's own number of leaves, given as a booster's setting, trains what the stage's settings train
    learn = np.zeros(len(lists.targets), dtype=bool)
    learn[:60] = True
    own = reranker._train_booster(lists.candidates[learn], lists.features[learn], lists.targets[learn], 20, 0,
                                  params={"num_leaves": stage_leaves})
    stage = reranker._train_booster(lists.candidates[learn], lists.features[learn], lists.targets[learn], 20, 0)
    rows = lists.features.reshape(-1, lists.features.shape[2])
    np.testing.assert_array_equal(own.predict(rows), stage.predict(rows))
