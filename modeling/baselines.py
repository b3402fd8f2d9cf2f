"""Baseline recommenders for the evaluation harness: popularity, item-kNN (cosine) and EASE.

Each baseline is fitted on a user x item interaction matrix and scores any history
row, so shoppers who were not in the training matrix are scored from their
interactions alone (the same fold-in the cold-start protocols need).
"""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

logger = logging.getLogger(__name__)


def interaction_matrix(user_idx: np.ndarray, item_idx: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """Binary user x item matrix (n_users, n_items) float32 (repeated pairs count once).

    EASE and item-kNN are defined on implicit (binary) feedback, so weights are not used.
    """
    data = np.ones(len(user_idx), dtype=np.float32)
    matrix = sp.csr_matrix((data, (user_idx, item_idx)), shape=(n_users, n_items), dtype=np.float32)
    matrix.data[:] = 1.0
    return matrix


class Popularity:
    """Scores every item by its number of training interactions."""

    name = "popularity"

    def fit(self, matrix: sp.csr_matrix) -> Popularity:
        """Args: matrix (n_users, n_items) training interactions."""
        self.scores = np.asarray(matrix.sum(axis=0)).ravel().astype(np.float32)
        return self

    def score(self, histories: sp.csr_matrix) -> np.ndarray:
        """(m, n_items) scores for m history rows (the same for everybody)."""
        return np.tile(self.scores, (histories.shape[0], 1))


class ItemKNN:
    """Item-based collaborative filtering with cosine similarity (dense, self-similarity removed).

    Args:
        neighbours: keep only each item's ``neighbours`` most similar items (0: all).
    """

    name = "item_knn"

    def __init__(self, neighbours: int = 100) -> None:
        self.neighbours = neighbours

    def fit(self, matrix: sp.csr_matrix) -> ItemKNN:
        """Args: matrix (n_users, n_items) binary training interactions."""
        counts = np.sqrt(np.asarray(matrix.sum(axis=0)).ravel()).astype(np.float32)
        counts[counts == 0] = 1.0
        co = (matrix.T @ matrix).toarray().astype(np.float32)
        similarity = co / counts[:, None] / counts[None, :]
        np.fill_diagonal(similarity, 0.0)
        if 0 < self.neighbours < similarity.shape[1]:
            cut = np.argpartition(-similarity, self.neighbours, axis=1)[:, self.neighbours:]
            np.put_along_axis(similarity, cut, 0.0, axis=1)
        self.similarity = similarity
        return self

    def score(self, histories: sp.csr_matrix) -> np.ndarray:
        """(m, n_items) scores: sum of the similarities to the items of each history row."""
        return np.asarray(histories @ self.similarity, dtype=np.float32)


class EASE:
    """Embarrassingly Shallow Autoencoder (Steck, 2019): closed-form item-item weights.

    B = I - P diag(1 / diag(P)), P = (XᵀX + λI)⁻¹; scores = X_u B.

    Args:
        l2: the regularisation λ.
    """

    name = "ease"

    def __init__(self, l2: float = 500.0) -> None:
        self.l2 = l2

    def fit(self, matrix: sp.csr_matrix) -> EASE:
        """Args: matrix (n_users, n_items) binary training interactions. Cost O(n_items³)."""
        gram = (matrix.T @ matrix).toarray().astype(np.float64)
        gram[np.diag_indices_from(gram)] += self.l2
        inverse = np.linalg.inv(gram)
        weights = inverse / (-np.diag(inverse))
        np.fill_diagonal(weights, 0.0)
        self.weights = weights.astype(np.float32)
        return self

    def score(self, histories: sp.csr_matrix) -> np.ndarray:
        """(m, n_items) scores of m history rows."""
        return np.asarray(histories @ self.weights, dtype=np.float32)
