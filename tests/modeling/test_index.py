"""Exact and approximate (FAISS HNSW) top-k: same interface, filters always exact, recall measured."""

from __future__ import annotations

import numpy as np
import pytest

from modeling.index import ExactIndex, HnswIndex, make_index, recall_against_exact


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    """20,000 unit-length items in 50 clusters, 32 dimensions, like trained (normalised) item vectors."""
    rng = np.random.default_rng(0)
    items = CENTRES[rng.integers(0, 50, 20_000)] + 0.3 * rng.normal(size=(20_000, 32))
    return (items / np.linalg.norm(items, axis=1, keepdims=True)).astype(np.float32)


CENTRES = np.random.default_rng(42).normal(size=(50, 32))


def queries(n: int, seed: int = 1) -> np.ndarray:
    """Unit-length queries near the clusters, like shoppers' query vectors."""
    rng = np.random.default_rng(seed)
    q = CENTRES[rng.integers(0, 50, n)] + 0.5 * rng.normal(size=(n, 32))
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def test_exact_index_matches_a_brute_force_sort(vectors: np.ndarray) -> None:
    q = queries(5)
    positions, scores = ExactIndex(vectors).search(q, 10, [np.zeros(0, dtype=np.int64)] * 5)
    expected = np.argsort(-(q @ vectors.T), axis=1)[:, :10]
    assert (positions == expected).all()
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_hnsw_recall_against_exact_search(vectors: np.ndarray) -> None:
    recall = recall_against_exact(HnswIndex(vectors), vectors, queries(200), 10)
    assert recall >= 0.9, recall


def test_hnsw_never_returns_excluded_or_disallowed_items(vectors: np.ndarray) -> None:
    q = queries(20, seed=3)
    exact_top, _ = ExactIndex(vectors).search(q, 30, [np.zeros(0, dtype=np.int64)] * 20)
    exclude = [row[:10] for row in exact_top]  # the best ten of each query are "already bought"
    allowed = np.ones(len(vectors), dtype=bool)
    allowed[exact_top[:, 10:15].ravel()] = False  # and the next five are out of stock
    positions, scores = HnswIndex(vectors).search(q, 10, exclude, allowed)
    for row in range(20):
        assert not set(positions[row]) & set(exclude[row])
        assert allowed[positions[row]].all()
        assert len(set(positions[row])) == 10 and np.isfinite(scores[row]).all()


def test_hnsw_falls_back_to_exact_search_under_a_narrow_filter(vectors: np.ndarray) -> None:
    q = queries(4, seed=5)
    allowed = np.zeros(len(vectors), dtype=bool)
    allowed[::50] = True  # 2% of the catalogue, e.g. one category
    none = [np.zeros(0, dtype=np.int64)] * 4
    approx = HnswIndex(vectors).search(q, 10, none, allowed)
    exact = ExactIndex(vectors).search(q, 10, none, allowed)
    assert (approx[0] == exact[0]).all()


def test_make_index_switches_at_the_configured_size(vectors: np.ndarray) -> None:
    assert isinstance(make_index(vectors, None), ExactIndex)
    assert isinstance(make_index(vectors, len(vectors) + 1), ExactIndex)
    assert isinstance(make_index(vectors, len(vectors)), HnswIndex)
