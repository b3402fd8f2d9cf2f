"""The signals `benchmarks/stage_features.py` tries on the ranking stage, on data small enough to count by hand."""

from __future__ import annotations

import numpy as np

from benchmarks.stage_features import extra_features


def test_second_order_transitions_count_what_followed_the_last_two_products() -> None:
    # Training sequences (shopper: products in time order); a repeated product in a row counts once.
    sequences = {0: [0, 1, 2], 1: [0, 1, 2], 2: [0, 1, 3], 3: [1, 1, 2], 4: [2, 0, 1, 4]}
    users = np.repeat(list(sequences), [len(s) for s in sequences.values()])
    items = np.concatenate([s for s in sequences.values()])
    candidates = np.array([[2, 3, 4, -1], [2, 3, 4, -1]])
    histories = [np.array([5, 0, 1]), np.array([1])]  # (0, 1) then the pair; a history of one product has none
    extra = extra_features(candidates, histories, np.array([5, 6]), users, items, n_users=7, n_items=6)
    # (0, 1) was followed by 2 twice, by 3 once and by 4 once (shopper 4): 4 times in all.
    assert np.allclose(extra["second_order"][0], [0.5, 0.25, 0.25, 0.0])
    assert np.allclose(extra["pair_count"][0], np.log1p(4))
    assert not extra["second_order"][1].any() and not extra["pair_count"][1].any()


def test_session_neighbours_weigh_recent_products_more_and_leave_out_the_shopper_themselves() -> None:
    # Shopper 0 is the one ranked (their own training products must not count); 1 shares the latest product,
    # 2 an older one, 3 nothing.
    users = np.array([0, 0, 1, 1, 2, 2, 3])
    items = np.array([0, 4, 1, 2, 0, 3, 5])
    candidates = np.array([[2, 3, 4, 5]])
    extra = extra_features(candidates, [np.array([0, 1])], np.array([0]), users, items, n_users=4, n_items=6)
    # Weights: product 1 (latest) 1.0, product 0 0.9; each neighbour's similarity is the weights it shares over
    # the square root of its number of products.
    assert np.allclose(extra["session_knn"][0], [1.0 / np.sqrt(2), 0.9 / np.sqrt(2), 0.0, 0.0], atol=1e-6)
    assert np.allclose(extra["session_knn_share"][0], [1.0, 0.9, 0.0, 0.0], atol=1e-6)
