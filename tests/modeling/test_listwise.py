"""The TFRS listwise ranker: it learns what decides the held-out item, never ranks a pad, repeats itself."""

from __future__ import annotations

import numpy as np
import pytest

from modeling.listwise import ListwiseRanker, feature_moments, fit_listwise
from modeling.reranker import FEATURES, Ranker


def _synthetic_lists(m: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """m lists of ``width`` candidates whose held-out item is (nearly always) the best by item-item.

    Item ids are shuffled per list so the position in the list says nothing; prices are missing for some.
    """
    rng = np.random.default_rng(seed)
    candidates = np.stack([rng.permutation(1000)[:width] for _ in range(m)])
    features = rng.normal(size=(m, width, len(FEATURES))).astype(np.float32)
    features[:, :, FEATURES.index("price_ratio")][rng.random((m, width)) < 0.3] = np.nan
    utility = features[:, :, FEATURES.index("item_item")]
    chosen = np.argmax(utility + rng.normal(scale=0.1, size=utility.shape), axis=1)
    return candidates, features, candidates[np.arange(m), chosen]


def _top1(ranker: ListwiseRanker | Ranker, candidates: np.ndarray, features: np.ndarray,
          targets: np.ndarray) -> float:
    top, _ = ranker.order(candidates, features, 1)
    return float((top[:, 0] == targets).mean())


def test_the_listwise_ranker_puts_first_the_item_one_feature_decides() -> None:
    candidates, features, targets = _synthetic_lists(400, 20)
    ranker = fit_listwise(candidates, features, targets, epochs=15, seed=0)
    fresh_c, fresh_f, fresh_t = _synthetic_lists(300, 20, seed=9)
    accuracy = _top1(ranker, fresh_c, fresh_f, fresh_t)
    assert accuracy >= 0.6, accuracy  # chance: 1/20
    assert accuracy >= _top1(Ranker("feature", "two_tower"), fresh_c, fresh_f, fresh_t) + 0.4
    assert ranker.epochs == 15 and len(ranker.losses) == 15 and ranker.losses[-1] < ranker.losses[0]


def test_lists_without_their_item_are_skipped_and_pads_never_outrank_a_candidate() -> None:
    candidates, features, targets = _synthetic_lists(300, 12, seed=1)
    candidates[:, 8:] = -1  # shorter lists, padded
    features[:, 8:] = 1e3  # pad rows whose features would score them far above any real candidate
    targets[:50] = -5  # not among their candidates: nothing to learn from
    ranker = fit_listwise(candidates, features, targets, epochs=3, seed=0)
    positions, scores = ranker.order(candidates, features, 12)
    assert (positions[:, :8] >= 0).all() and (positions[:, 8:] == -1).all()
    assert np.isneginf(scores[:, 8:]).all() and np.isfinite(scores[:, :8]).all()
    assert np.all(np.isfinite(ranker.score(features[:, 0])))  # missing prices are scored


def test_with_no_list_to_learn_from_every_candidate_scores_zero() -> None:
    candidates, features, _ = _synthetic_lists(20, 5, seed=4)
    ranker = fit_listwise(candidates, features, np.full(20, -5), epochs=3, seed=0)
    assert ranker.epochs == 0
    np.testing.assert_array_equal(ranker.score(features[0]), np.zeros(5, dtype=np.float32))


def test_the_same_seed_gives_the_same_scores() -> None:
    candidates, features, targets = _synthetic_lists(120, 10, seed=2)
    rows = features.reshape(-1, len(FEATURES))
    first = fit_listwise(candidates, features, targets, epochs=2, seed=5).score(rows)
    again = fit_listwise(candidates, features, targets, epochs=2, seed=5).score(rows)
    other = fit_listwise(candidates, features, targets, epochs=2, seed=6).score(rows)
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


def test_a_longer_run_passes_through_the_shorter_runs() -> None:
    candidates, features, targets = _synthetic_lists(80, 10, seed=3)
    rows = features.reshape(-1, len(FEATURES))
    seen: dict[int, np.ndarray] = {}
    fit_listwise(candidates, features, targets, epochs=3, seed=1,
                 on_epoch=lambda ranker: seen.setdefault(ranker.epochs, ranker.score(rows)))
    short = fit_listwise(candidates, features, targets, epochs=2, seed=1).score(rows)
    np.testing.assert_allclose(seen[2], short, rtol=1e-6, atol=1e-6)


def test_moments_ignore_missing_values_and_constant_features_keep_their_scale() -> None:
    rows = np.array([[1.0, np.nan, 2.0], [3.0, 4.0, 2.0], [np.inf, 8.0, 2.0]], dtype=np.float32)
    mean, std = feature_moments(rows)
    np.testing.assert_allclose(mean, [2.0, 6.0, 2.0])
    np.testing.assert_allclose(std, [1.0, 2.0, 1.0])
    with pytest.raises(ValueError, match=r"features \(m, C, F\)"):
        fit_listwise(np.zeros((2, 3), dtype=np.int64), np.zeros((2, 3), dtype=np.float32), np.zeros(2))
