"""`benchmarks/ranker_settings.py` measures LightGBM variants on the stage's folds and leaves the stage's settings
as they were."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from benchmarks.ranker_settings import TREES, measure
from benchmarks.stage_features import Averaged
from modeling import reranker


def _lists(seed: int = 0, shoppers: int = 90, width: int = 8) -> SimpleNamespace:
    """Lists whose target is the candidate with the largest first feature (with noise in the others)."""
    rng = np.random.default_rng(seed)
    candidates = np.tile(np.arange(width), (shoppers, 1))
    features = rng.normal(size=(shoppers, width, len(reranker.FEATURES))).astype(np.float32)
    targets = candidates[np.arange(shoppers), features[:, :, 0].argmax(axis=1)]
    return SimpleNamespace(candidates=candidates, features=features, targets=targets)


def test_averaged_boosters_score_the_mean() -> None:
    one = SimpleNamespace(predict=lambda rows, num_threads=1: np.array([1.0, 2.0]))
    two = SimpleNamespace(predict=lambda rows, num_threads=1: np.array([3.0, 0.0]))
    np.testing.assert_array_equal(Averaged([one, two]).predict(np.zeros((2, 3))), [2.0, 1.0])


def test_variants_are_measured_on_every_shopper_of_the_sample_and_the_settings_come_back() -> None:
    lists, before = _lists(), dict(reranker.LIGHTGBM_PARAMS)
    in_sample = np.ones(len(lists.targets), dtype=bool)
    in_sample[-10:] = False
    results = measure(lists, in_sample, 0, {"min_data_in_leaf": 5, "bagging_fraction": 0.8, "bagging_freq": 1}, 2)
    assert reranker.LIGHTGBM_PARAMS == before
    assert set(results) == set(TREES)
    for values in results.values():
        assert np.all((values >= 0) & (values <= 1)) and np.all(values[~in_sample] == 0)
        assert values[in_sample].mean() > 0.5  # the first feature tells the target: learned on the other folds
