"""The sequential rules source: what follows the shopper's most recent products within a few steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modeling.baselines import sequential_rules, transition_probabilities
from modeling.candidates import SEQUENCE_HISTORIES, SEQUENCE_WINDOWS, HistoryBatch, Sources, fit_sources
from modeling.metrics import ndcg_at_k, sparse_ndcg_at_10
from modeling.ranking import rank_users


def test_rules_weigh_each_follower_by_its_distance_and_window_one_is_the_transitions() -> None:
    users = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    items = np.array([0, 0, 1, 2, 0, 2, 2, 1])  # 0 0 -> one 0; 2 2 -> one 2
    rules = sequential_rules(users, items, 3, 2).toarray()
    # user 0: 0 1 2 0 -> 0->1 (1), 0->2 (1/2), 1->2 (1), 1->0 (1/2), 2->0 (1); user 1: 2 1 -> 2->1 (1)
    np.testing.assert_allclose(rules[0], [0.0, 1.0 / 1.5, 0.5 / 1.5], rtol=1e-6)
    np.testing.assert_allclose(rules[1], [0.5 / 1.5, 0.0, 1.0 / 1.5], rtol=1e-6)
    np.testing.assert_allclose(rules[2], [0.5, 0.5, 0.0], rtol=1e-6)
    np.testing.assert_allclose(sequential_rules(users, items, 3, 1).toarray(),
                               transition_probabilities(users, items, 3).toarray(), rtol=1e-6)


@pytest.mark.parametrize("length", [1, 3, 10])
def test_a_history_is_scored_from_its_most_recent_products_by_place(length: int) -> None:
    rng = np.random.default_rng(length)
    n = 30
    rules = sequential_rules(rng.integers(0, 20, 400).repeat(3)[:400], rng.integers(0, n, 400), n, 3)
    items = [rng.integers(0, n, size) for size in (0, 1, 4, 12, 25)] + [np.array([5, 5, 7, 5, 5])]
    batch = HistoryBatch(items, [np.arange(len(h)) for h in items])
    got = batch.propagate_recent(rules, length)
    dense = rules.toarray()
    for row, history in enumerate(items):
        distinct = [item for at, item in enumerate(history) if at + 1 == len(history) or history[at + 1] != item]
        weights = np.zeros(n)
        for place, item in enumerate(reversed(distinct[-length:])):
            weights[item] += 1.0 / (place + 1)
        want = weights @ dense
        lo, hi = got.indptr[row], got.indptr[row + 1]
        row_values = np.zeros(n)
        row_values[got.indices[lo:hi]] = got.data[lo:hi]
        np.testing.assert_allclose(row_values, want, rtol=1e-5, atol=1e-7)
        assert (np.diff(got.indices[lo:hi]) > 0).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sparse_ndcg_equals_ranking_the_dense_rows(seed: int) -> None:
    """Ties (most scores are 0) go to the more popular product; seen products are left out."""
    rng = np.random.default_rng(seed)
    n, m = 60, 80
    dense = np.where(rng.random((m, n)) < 0.1, rng.integers(1, 4, (m, n)) / 4.0, 0.0)  # repeated values tie
    popular_place = rng.permutation(n)
    seen = [rng.choice(n, rng.integers(0, 6), replace=False) for _ in range(m)]
    targets = np.array([rng.choice(np.setdiff1d(np.arange(n), s)) for s in seen])
    indptr = np.concatenate([[0], np.cumsum((dense != 0).sum(axis=1))])
    rows, cols = np.nonzero(dense)

    class Rows:
        pass

    sparse = Rows()
    sparse.indptr, sparse.indices, sparse.data = indptr, cols, dense[rows, cols].astype(np.float32)
    tie_break = (n - popular_place) * 1e-6  # below the smallest gap between scores
    ranked = rank_users(lambda users: dense[users] + tie_break, np.arange(m), seen, 10)
    got = sparse_ndcg_at_10(sparse, targets, seen, popular_place)
    assert got.mean() == pytest.approx(ndcg_at_k(ranked, targets, 10))
    assert (got > 0).any() and (got == 0).any()


def _two_back_shop(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Each session is x, y, f(x) with y random: the product after next is foretold, the next one is not.
    Returns (users, items) sorted by user and time, each session's (x, y) and f(x), and the catalogue size."""
    rng = np.random.default_rng(seed)
    n, sessions = 40, 600
    x = rng.integers(0, 10, sessions)
    y = rng.integers(10, 30, sessions)
    follows = 30 + x  # f(x)
    users = np.repeat(np.arange(sessions), 3)
    items = np.stack([x, y, follows], axis=1).ravel()
    return users, items, np.stack([x, y], axis=1), follows, n


def test_the_choice_looks_past_the_last_product_when_the_product_before_it_tells() -> None:
    users, items, held_histories, held_targets, n = _two_back_shop()
    train = users < 500
    batch = HistoryBatch([h for h in held_histories[500:]], [np.arange(2) for _ in held_histories[500:]])
    place = np.arange(n)
    tried: list[tuple[int, int]] = []

    def choose(rules, length: int) -> float:
        tried.append((rules.shape[0], length))
        scores = batch.propagate_recent(rules, length)
        return float(sparse_ndcg_at_10(scores, held_targets[500:], [h for h in held_histories[500:]], place).mean())

    sources = fit_sources(users[train], items[train], 500, n, l2=1.0, choose_sequence=choose)
    assert len(tried) == len(SEQUENCE_WINDOWS) * len(SEQUENCE_HISTORIES)
    assert sources.sequence_window >= 2 and sources.sequence_history >= 2  # x is two steps back
    scores = batch.propagate_recent(sources.sequence, sources.sequence_history)
    assert sparse_ndcg_at_10(scores, held_targets[500:], list(held_histories[500:]), place).mean() > 0.9
    last_only = batch.propagate_recent(sources.transitions, 1)  # what the transitions see: nothing
    assert sparse_ndcg_at_10(last_only, held_targets[500:], list(held_histories[500:]), place).mean() < 0.5


def test_the_rules_and_their_choice_round_trip_and_a_refit_keeps_the_choice(tmp_path: Path) -> None:
    users, items, _, _, n = _two_back_shop(1)
    sources = fit_sources(users, items, 600, n, l2=1.0, sequence=(5, 3))
    assert (sources.sequence_window, sources.sequence_history) == (5, 3)
    sources.save(tmp_path)
    loaded = Sources.load(tmp_path, "ease", 1.0, 5, 3)
    assert (loaded.sequence.to_scipy() != sources.sequence).nnz == 0
    assert (loaded.sequence_window, loaded.sequence_history) == (5, 3)
    grown = loaded.resized(n + 4)
    assert grown.sequence.shape == (n + 4, n + 4) and (grown.sequence_window, grown.sequence_history) == (5, 3)
    plain = Sources(sources.item_item, sources.transitions, "ease", 1.0)  # without rules: the transitions
    assert plain.sequence is plain.transitions and plain.sequence_history == 1


def test_the_baseline_scores_as_the_rules_and_reads_the_most_recent_items_first() -> None:
    from modeling.baselines import SequentialRules, Transitions, fit_baseline, interaction_matrix
    from modeling.candidates import recent_items

    users, items, held_histories, held_targets, n = _two_back_shop(2)
    matrix = interaction_matrix(users, items, 600, n)
    recent = recent_items(users, items, 600, 10)
    assert recent[0, :3].tolist() == [items[2], items[1], items[0]] and (recent[0, 3:] == -1).all()
    model = fit_baseline("sequential_rules", {"window": 2, "history": 3}, matrix, (users, items))
    assert isinstance(model, SequentialRules) and model.params() == {"window": 2, "history": 3}
    histories = interaction_matrix(np.repeat(np.arange(100), 2), held_histories[500:].ravel(), 100, n)
    given = held_histories[500:, ::-1]  # most recent first
    scores = model.score(histories, given)
    assert (scores.argmax(axis=1) == held_targets[500:]).mean() > 0.7  # x, two steps back, foretells f(x)
    as_transitions = SequentialRules(1, 1).fit_sequences(matrix, users, items).score(histories, given)
    np.testing.assert_allclose(as_transitions, Transitions().fit_sequences(matrix, users, items).score(
        histories, given[:, 0]), rtol=1e-6)
    assert (as_transitions.argmax(axis=1) == held_targets[500:]).mean() < 0.5  # the last item alone cannot tell
