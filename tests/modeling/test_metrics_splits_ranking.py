"""Metrics (modeling.metrics) against hand-computed values, the split (modeling.splits), full-ranking top-k
(modeling.ranking) and the harness's per-user comparison."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modeling import datasets as ds
from modeling.baselines import popularity_scores
from modeling.evaluate import compare_per_user
from modeling.metrics import (
    catalogue_coverage,
    evaluate_leave_last_out,
    hit_rate_at_k,
    ndcg_at_k,
    paired_bootstrap,
    recall_at_k,
    user_hits_and_gains,
)
from modeling.ranking import members, seen_items, stable_top, top_k
from modeling.splits import (
    Split,
    for_refit,
    histories_before,
    known_interactions,
    leave_last_out_split,
    tied_share,
)


def test_hit_rate_and_ndcg_hand_computed() -> None:
    ranked = np.array([[3, 1, 2], [0, 1, 2], [2, 0, 1]])
    targets = np.array([1, 5, 2])
    # user 0 hit at rank 2, user 1 miss, user 2 hit at rank 1
    assert hit_rate_at_k(ranked, targets, 3) == pytest.approx(2 / 3)
    assert hit_rate_at_k(ranked, targets, 1) == pytest.approx(1 / 3)
    assert ndcg_at_k(ranked, targets, 3) == pytest.approx((1 / np.log2(3) + 0 + 1.0) / 3)


def test_per_user_hits_and_gains_hand_computed() -> None:
    ranked = np.array([[3, 1, 2], [0, 1, 2], [2, 0, 1]])
    hits, gains = user_hits_and_gains(ranked, np.array([1, 5, 2]), 3)
    assert hits.tolist() == [1.0, 0.0, 1.0]
    assert gains == pytest.approx([1 / np.log2(3), 0.0, 1.0])


def test_paired_bootstrap_interval() -> None:
    rng = np.random.default_rng(1)
    a = rng.random(400)
    # The same values: no difference and no spread.
    assert paired_bootstrap(a, a) == {"difference": 0.0, "low": 0.0, "high": 0.0}
    # A constant shift is found exactly, whatever the users drawn.
    shifted = paired_bootstrap(a + 0.1, a)
    assert shifted["difference"] == pytest.approx(0.1)
    assert shifted["low"] == pytest.approx(0.1) and shifted["high"] == pytest.approx(0.1)
    # Noise: the interval holds the mean, is about 2 x 1.96 standard errors wide, and follows the seed.
    b = rng.random(400)
    result = paired_bootstrap(a, b, resamples=4000)
    assert result["low"] < result["difference"] < result["high"]
    standard_error = np.std(a - b) / np.sqrt(400)
    assert result["high"] - result["low"] == pytest.approx(2 * 1.96 * standard_error, rel=0.15)
    assert paired_bootstrap(a, b, resamples=4000) == result
    assert paired_bootstrap(a, b, resamples=4000, seed=2) != result
    assert paired_bootstrap(np.zeros(0), np.zeros(0))["difference"] == 0.0


def test_compare_per_user_differences() -> None:
    targets = np.array([1, 5, 2, 0])
    better = np.array([[1, 0], [5, 0], [2, 0], [0, 1]])   # every target at rank 1
    worse = np.array([[0, 1], [0, 1], [0, 1], [1, 2]])    # one at rank 2, three missed
    result = compare_per_user(better, worse, targets, k=2)
    assert result["hr@2"]["difference"] == pytest.approx(1 - 1 / 4)
    assert result["ndcg@2"]["difference"] == pytest.approx(1 - (1 / np.log2(3)) / 4)
    assert result["hr@2"]["low"] <= result["hr@2"]["difference"] <= result["hr@2"]["high"]


def test_perfect_and_empty_rankings_give_limits() -> None:
    ranked = np.array([[4, 0], [7, 1]])
    assert hit_rate_at_k(ranked, np.array([4, 7]), 2) == 1.0
    assert ndcg_at_k(ranked, np.array([4, 7]), 2) == 1.0
    assert hit_rate_at_k(ranked, np.array([9, 9]), 2) == 0.0
    assert ndcg_at_k(ranked, np.array([9, 9]), 2) == 0.0


def test_recall_and_coverage_hand_computed() -> None:
    ranked = np.array([[0, 1], [0, 2]])
    assert recall_at_k(ranked, [np.array([1, 5]), np.array([2])], 2) == pytest.approx((0.5 + 1.0) / 2)
    assert catalogue_coverage(ranked, n_items=6, k=2) == pytest.approx(3 / 6)


def test_top_k_excludes_items_and_orders_by_score() -> None:
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [0.4, 0.3, 0.2, 0.1]])
    idx, top = top_k(scores, 2, [np.array([1]), np.array([], dtype=int)])
    assert idx.tolist() == [[3, 2], [0, 1]]
    assert top[0].tolist() == pytest.approx([0.7, 0.5])


def test_top_k_pads_when_too_few_items_remain() -> None:
    idx, top = top_k(np.array([[0.5, 0.2, 0.1]]), 3, [np.array([0, 2])])
    assert idx.tolist() == [[1, -1, -1]]
    assert np.isneginf(top[0, 1:]).all()


def _interactions(rows: list[tuple[str, str, int]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=[ds.USER_ID, ds.ITEM_ID, ds.TIMESTAMP])
    frame[ds.WEIGHT] = 1.0
    return frame


def test_leave_last_out_holds_out_the_last_two_items_found_first_occurrence_counts() -> None:
    """A repeated product counts from its first interaction, when the shopper found it (issue 13)."""
    frame = _interactions([
        ("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3), ("u1", "d", 4), ("u1", "c", 5),  # c again after d
        ("u2", "a", 1), ("u2", "b", 2),  # only 2 distinct items: all train
    ])
    split = leave_last_out_split(frame)
    assert split.test[[ds.USER_ID, ds.ITEM_ID, ds.TIMESTAMP]].values.tolist() == [["u1", "d", 4]]
    assert split.validation[[ds.USER_ID, ds.ITEM_ID, ds.TIMESTAMP]].values.tolist() == [["u1", "c", 3]]
    train_pairs = set(map(tuple, split.train[[ds.USER_ID, ds.ITEM_ID]].values.tolist()))
    assert train_pairs == {("u1", "a"), ("u1", "b"), ("u2", "a"), ("u2", "b")}


def test_leave_last_out_breaks_timestamp_ties_by_seed_not_file_order() -> None:
    # Five products rated in the same second: which one is "last" must not follow the file's order.
    frame = _interactions([("u1", item, 7) for item in "abcde"])
    tests = {leave_last_out_split(frame, seed=seed).test[ds.ITEM_ID].item() for seed in range(20)}
    assert len(tests) > 1
    assert leave_last_out_split(frame, seed=3).test.equals(leave_last_out_split(frame, seed=3).test)
    # Distinct timestamps still decide: the tie order never reorders time.
    split = leave_last_out_split(_interactions([("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3), ("u1", "d", 3)]),
                                 seed=5)
    assert split.train[ds.ITEM_ID].tolist() == ["a", "b"]


def test_histories_end_where_the_held_out_item_was_found() -> None:
    """A shopper who goes back to earlier products after finding one (a session of clicks): the history an item
    is ranked from holds what came before it, in time order, the validation item in its place among the
    training interactions. Before, the test history held the clicks after the test item too, and the
    sequential baselines read the validation item as the most recent product while the served model read
    the last click: the two ranked from different sequences."""
    frame = _interactions([
        ("u1", "a", 1), ("u1", "b", 2), ("u1", "a", 3), ("u1", "c", 4), ("u1", "a", 5), ("u1", "d", 6),
        ("u1", "b", 7),  # back to b after d
        ("u2", "a", 1), ("u2", "b", 2),  # nothing held out: the whole history
    ])
    split = leave_last_out_split(frame)
    assert split.validation[ds.ITEM_ID].tolist() == ["c"] and split.test[ds.ITEM_ID].tolist() == ["d"]

    def sequence(stage: str) -> list[tuple[str, str]]:
        rows = histories_before(split, stage)
        return list(zip(rows[ds.USER_ID], rows[ds.ITEM_ID], strict=True))

    assert sequence("validation") == [("u1", "a"), ("u1", "b"), ("u1", "a"), ("u2", "a"), ("u2", "b")]
    # The product touched last before d is a (the click after c), not c, and b's click after d is not there.
    assert sequence("test") == [("u1", "a"), ("u1", "b"), ("u1", "a"), ("u1", "c"), ("u1", "a"),
                                ("u2", "a"), ("u2", "b")]
    # The training interactions keep every click after the held-out ones: the models learn from them, and a
    # model refitted for the test items learns from them with the validation item, in time order.
    assert split.train[ds.ITEM_ID].tolist().count("b") == 3
    assert [item for user, item in zip(*(known_interactions(split)[c] for c in (ds.USER_ID, ds.ITEM_ID)),
                                       strict=True) if user == "u1"] == ["a", "b", "a", "c", "a", "b"]
    # A refit's split trains on those and ranks the test item from the same history as before.
    refit = for_refit(split)
    assert refit.train[ds.ITEM_ID].tolist() == known_interactions(split)[ds.ITEM_ID].tolist() and refit.validation.empty
    assert histories_before(refit, "test").equals(histories_before(split, "test"))
    # Same-second ties are cut in the split's seeded order, as the held-out items were chosen.
    tied = leave_last_out_split(_interactions([("u1", item, 7) for item in "abcde"]), seed=4)
    order = tied.train[ds.ITEM_ID].tolist()
    assert histories_before(tied, "validation")[ds.ITEM_ID].tolist() == order
    assert histories_before(tied, "test")[ds.ITEM_ID].tolist() == order + tied.validation[ds.ITEM_ID].tolist()
    with pytest.raises(ValueError, match="no time order"):
        histories_before(Split(train=split.train, validation=split.validation, test=split.test), "test")
    with pytest.raises(ValueError, match="no time order"):
        known_interactions(Split(train=split.train, validation=split.validation, test=split.test))
    with pytest.raises(ValueError, match="stage"):
        histories_before(split, "train")


def test_metric_curves_grow_with_k() -> None:
    from modeling.metrics import metric_curves

    ranked = np.array([[3, 1, 2, 0], [0, 1, 2, 3]])
    curves = metric_curves(ranked, np.array([1, 3]), ks=(1, 2, 4))
    assert curves["hr"] == {"1": 0.0, "2": 0.5, "4": 1.0}
    assert curves["ndcg"]["2"] == pytest.approx(0.5 / np.log2(3))
    assert curves["ndcg"]["4"] == pytest.approx((1 / np.log2(3) + 1 / np.log2(5)) / 2)


def test_evaluate_with_an_oracle_scorer_is_perfect_and_popularity_is_not() -> None:
    n_items = 5
    test_users, test_items = np.array([0, 1]), np.array([3, 4])
    seen = seen_items(np.array([0, 1, 1]), np.array([0, 0, 1]), 2)
    oracle = np.zeros((2, n_items))
    oracle[0, 3] = oracle[1, 4] = 1.0
    result = evaluate_leave_last_out(lambda u: oracle[u], test_users, test_items, seen, n_items, k=1, k_recall=2)
    assert result["hr@1"] == 1.0 and result["ndcg@1"] == 1.0
    popularity = popularity_scores(np.array([0, 0, 1, 2]), np.ones(4), n_items)
    assert popularity.tolist() == [2, 1, 1, 0, 0]
    result = evaluate_leave_last_out(lambda u: np.tile(popularity, (len(u), 1)), test_users, test_items, seen,
                                     n_items, k=1, k_recall=2)
    assert result["hr@1"] == 0.0


@settings(max_examples=60, deadline=None)
@given(m=st.integers(1, 4), n=st.integers(1, 3000), k=st.integers(1, 20), seed=st.integers(0, 10_000),
       blocked=st.floats(0, 0.99))
def test_top_k_equals_a_full_sort(m: int, n: int, k: int, seed: int, blocked: float) -> None:
    """The block-maximum shortcut for large catalogues returns exactly the sorted top k."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(m, n)).astype(np.float32)
    scores[rng.random((m, n)) < blocked] = -np.inf
    exclude = [rng.integers(0, n, rng.integers(0, 5)) for _ in range(m)]
    positions, values = top_k(scores, k, exclude)
    expected = scores.copy()
    for row, items in enumerate(exclude):
        expected[row, items] = -np.inf
    reference = np.sort(expected, axis=1)[:, ::-1][:, : min(k, n)]
    assert np.array_equal(values, reference)
    finite = np.isfinite(values)
    assert (positions[~finite] == -1).all()
    assert np.array_equal(np.take_along_axis(expected, np.where(finite, positions, 0), axis=1)[finite], values[finite])


@given(st.lists(st.sampled_from([-np.inf, 0.0, 0.5, 1.0, 2.0]), min_size=1, max_size=120), st.integers(0, 130))
@settings(max_examples=200, deadline=None)
def test_stable_top_is_the_head_of_a_full_stable_sort(values: list[float], k: int) -> None:
    scores = np.array(values)  # few distinct values: many ties, which must keep the lower position first
    assert stable_top(scores, k).tolist() == np.argsort(-scores, kind="stable")[:k].tolist()


def test_shared_scores_rank_as_every_user_scored_alone() -> None:
    from modeling.ranking import rank_by_shared_scores, rank_users

    rng = np.random.default_rng(4)
    n, users = 700, np.arange(40)
    scores = rng.permutation(n).astype(np.float32)  # distinct: no ties to order
    seen = [rng.choice(n, size=rng.integers(0, 30), replace=False) for _ in users]
    seen[5] = np.argsort(-scores)[:50]  # the 50 best already seen
    shared = rank_by_shared_scores(scores, users, seen, 60)
    np.testing.assert_array_equal(shared, rank_users(lambda u: np.tile(scores, (len(u), 1)), users, seen, 60))
    # Ties keep the lower position first; a catalogue shorter than k leaves -1.
    tied = rank_by_shared_scores(np.array([1.0, 3.0, 3.0, 1.0]), np.array([0]), [np.array([2])], 5)
    assert tied.tolist() == [[1, 0, 3, -1]]


def test_shared_scores_metrics_equal_the_dense_path(monkeypatch: pytest.MonkeyPatch) -> None:
    from modeling import metrics

    rng = np.random.default_rng(5)
    n, users = 300, np.arange(200)
    scores = rng.permutation(n).astype(np.float32) / n
    seen = [rng.choice(n, size=5, replace=False) for _ in users]
    items = np.array([rng.choice(np.setdiff1d(np.arange(n), s)) for s in seen])
    dense = metrics.evaluate_shared_scores(scores, users, items, seen, n)
    monkeypatch.setattr(metrics, "SHARED_SCORES_DENSE_MAX_CELLS", 0)
    assert metrics.evaluate_shared_scores(scores, users, items, seen, n) == dense
    assert dense["hr@10"] > 0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 60), max_size=30), st.lists(st.integers(0, 60), max_size=40))
def test_members_is_isin_over_sorted_unique_keys(sorted_keys: list[int], keys: list[int]) -> None:
    reference = np.unique(np.asarray(sorted_keys, dtype=np.int64))
    flat = np.asarray(keys, dtype=np.int64)
    assert np.array_equal(members(flat, reference), np.isin(flat, reference))
    if len(flat) % 2 == 0:  # any shape of keys, as a batch's (m, c) candidates
        grid = flat.reshape(2, -1)
        assert np.array_equal(members(grid, reference), np.isin(grid, reference))


@pytest.mark.parametrize("seed", range(8))
def test_stable_top_k_orders_equal_scores_by_position_at_the_cut_too(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m, n, k = int(rng.integers(1, 6)), int(rng.integers(1, 3000)), int(rng.integers(1, 120))
    scores = rng.integers(0, 6, (m, n)).astype(np.float32)  # ties everywhere, the cut included
    scores[rng.random((m, n)) < 0.05] = np.nan
    exclude = [rng.choice(n, int(rng.integers(0, min(n, 50))), replace=False) for _ in range(m)]
    positions, values = top_k(scores, k, exclude, stable=True)
    for row in range(m):
        full = scores[row].copy()
        full[exclude[row]] = -np.inf
        full[np.isnan(full)] = -np.inf
        want = np.argsort(-full, kind="stable")[:k]
        assert positions[row].tolist() == np.where(np.isfinite(full[want]), want, -1).tolist()


_RANK_SCRIPT = """
import hashlib, numpy as np
from modeling.ranking import rank_users, top_k
from modeling.baselines import _keep_neighbours
import scipy.sparse as sp
rng = np.random.default_rng(0)
scores = rng.integers(0, 30, 9742).astype(np.float32)  # popularity counts of a MovieLens-sized catalogue
seen = [rng.choice(9742, 20, replace=False) for _ in range(64)]
ranked = rank_users(lambda users: np.tile(scores, (len(users), 1)), np.arange(64), seen, 100)
plain, _ = top_k(np.tile(scores, (64, 1)), 100, seen)
knn = _keep_neighbours(sp.random(300, 300, density=0.5, random_state=1, format="csr",
                                 data_rvs=lambda size: np.round(np.random.default_rng(2).random(size), 1)), 20)
print(hashlib.sha256(ranked.tobytes()).hexdigest(), hashlib.sha256(plain.tobytes()).hexdigest(),
      hashlib.sha256(knn.indices.tobytes()).hexdigest())
"""


def test_baselines_rank_alike_whatever_the_cpus_instruction_set() -> None:
    """numpy's AVX-512 partition leaves equal scores in another order than its generic one: the popularity
    baseline's NDCG@10 on MovieLens was 0.017 on one machine and 0.016 on another, item-kNN kept other neighbours."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]

    def hashes(disabled: str) -> list[str]:
        env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": disabled, "PYTHONPATH": str(root)}
        done = subprocess.run([sys.executable, "-c", _RANK_SCRIPT], env=env, capture_output=True, text=True,
                              timeout=300, cwd=root)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    native, generic = hashes(""), hashes("AVX512_ICL X86_V4")
    if native[1] == generic[1]:
        pytest.skip("this machine's numpy partitions alike with and without AVX-512 (nothing to tell apart)")
    assert native[0] == generic[0]  # rank_users: the same lists
    assert native[2] == generic[2]  # item-kNN: the same neighbours


def test_a_split_without_test_items_is_refused_with_what_each_shopper_needs() -> None:
    from modeling.errors import TrainingError
    from modeling.splits import leave_last_out_split, require_held_out

    two_each = pd.DataFrame({ds.USER_ID: ["u1", "u1", "u2", "u2"], ds.ITEM_ID: ["a", "b", "a", "c"],
                             ds.TIMESTAMP: [1, 2, 1, 2]})
    with pytest.raises(TrainingError, match=r"at least 3 distinct products .* none of the 2 shoppers has 3"):
        require_held_out(leave_last_out_split(two_each))
    three = pd.concat([two_each, pd.DataFrame({ds.USER_ID: ["u1"], ds.ITEM_ID: ["c"], ds.TIMESTAMP: [3]})])
    require_held_out(leave_last_out_split(three))  # one shopper with three: evaluable


def test_the_table_says_when_a_column_covers_the_whole_catalogue() -> None:
    # On a shop of 50 products or fewer every model read Recall@50 1.000, without a word on why.
    from modeling.evaluate import format_table

    models = {"ease": {"hr@10": 0.5, "ndcg@10": 0.3, "recall@50": 1.0, "users": 9},
              "hybrid": {"hr@10": 0.6, "ndcg@10": 0.4, "recall@50": 1.0, "users": 9}}
    small = format_table({"models": models, "split": {"items": 40}})
    assert small.splitlines()[-1] == ("(recall@50: lists of at least the whole catalogue of 40 products, so every "
                                      "model reads 1.000 there)")
    assert "whole catalogue" not in format_table({"models": models, "split": {"items": 51}})


def test_the_share_of_steps_between_equal_times_is_counted_per_shopper() -> None:
    """evaluate says when most of the order is a seeded one (a shop whose export stamped every event alike)."""
    frame = pd.DataFrame({ds.USER_ID: ["a", "a", "a", "b", "b", "c"], ds.ITEM_ID: list("xyzxyz"),
                          ds.TIMESTAMP: [5, 5, 9, 9, 7, 9]})
    assert tied_share(frame) == pytest.approx(1 / 3)  # a: 5 -> 5 tied, 5 -> 9 not; b: 7 -> 9 not; c alone
    assert tied_share(frame.assign(**{ds.TIMESTAMP: 0})) == 1.0
    assert tied_share(frame[frame[ds.USER_ID] == "c"]) == 0.0
