"""Baseline recommenders for the evaluation harness: popularity, item-kNN (cosine), EASE, implicit ALS,
first-order transitions, transitions blended with EASE, and sequential rules.

Each baseline is fitted on a user x item interaction matrix and scores any history
row, so shoppers who were not in the training matrix are scored from their
interactions alone (the same fold-in the cold-start protocols need). Every model has
``name`` and ``score(histories (m, n_items) csr, last (m,) or (m, L) int64 | None) -> (m, n_items)``;
``last`` is each user's most recent item (-1: none), or their L most recent items, most recent first
(:func:`modeling.candidates.recent_items`), used by the sequential ones, which are fitted with ``fit_sequences`` on
time-ordered interactions instead of ``fit``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp

from modeling.candidates import SEQUENCE_HISTORIES
from modeling.ranking import stable_top

logger = logging.getLogger(__name__)

RECENT_ITEMS = max(SEQUENCE_HISTORIES)
"""Most recent items per user the evaluation gives the sequential baselines (the sequential rules' longest
history)."""


def interaction_matrix(user_idx: np.ndarray, item_idx: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """Binary user x item matrix (n_users, n_items) float32 (repeated pairs count once).

    EASE and item-kNN are defined on implicit (binary) feedback, so weights are not used.
    """
    data = np.ones(len(user_idx), dtype=np.float32)
    matrix = sp.csr_matrix((data, (user_idx, item_idx)), shape=(n_users, n_items), dtype=np.float32)
    matrix.data[:] = 1.0
    return matrix


def popularity_scores(item_idx: np.ndarray, weights: np.ndarray, n_items: int) -> np.ndarray:
    """Summed interaction weight per item: (n_items,) float32."""
    counts = np.zeros(n_items, dtype=np.float64)
    np.add.at(counts, np.asarray(item_idx, dtype=np.int64), np.asarray(weights, dtype=np.float64))
    return counts.astype(np.float32)


TIE_BREAK = 1e-6
"""Popularity breaks score ties in every baseline (transitions, EASE, item-kNN): each item's training count over
the largest, times this fraction of the row's largest absolute score. Without it the products a history says
nothing about (score 0) would be ordered by their position in the catalogue, i.e. by product id."""


def popularity_tie_break(matrix: sp.csr_matrix) -> np.ndarray:
    """(n_items,) float32 in [0, :data:`TIE_BREAK`]: training popularity scaled for breaking ties.

    Args:
        matrix: (n_users, n_items) training interactions.
    """
    popularity = np.asarray(matrix.sum(axis=0)).ravel().astype(np.float64)
    return (popularity / max(popularity.max(initial=0.0), 1.0) * TIE_BREAK).astype(np.float32)


def with_tie_break(scores: np.ndarray, tie_break: np.ndarray) -> np.ndarray:
    """(m, n) ``scores`` plus ``tie_break`` (n,) times each row's largest absolute score (1 for a row of zeros):
    equal scores go to the more popular product; scores further apart than a millionth of the row's largest keep
    their order."""
    if scores.size == 0:
        return scores.astype(np.float32)
    scale = np.abs(scores).max(axis=1, keepdims=True)
    scale[scale == 0] = 1.0
    return (scores + tie_break[None, :] * scale).astype(np.float32)


class Popularity:
    """Scores every item by its number of training interactions."""

    name = "popularity"

    def params(self) -> dict[str, float]:
        """The parameters :func:`fit_baseline` fits this model with."""
        return {}

    def fit(self, matrix: sp.csr_matrix) -> Popularity:
        """Args: matrix (n_users, n_items) training interactions."""
        self.scores = np.asarray(matrix.sum(axis=0)).ravel().astype(np.float32)
        return self

    def score(self, histories: sp.csr_matrix, last: np.ndarray | None = None) -> np.ndarray:
        """(m, n_items) scores for m history rows (the same for everybody; ``last`` is not used)."""
        return np.tile(self.scores, (histories.shape[0], 1))


class ItemKNN:
    """Item-based collaborative filtering with cosine similarity (sparse, self-similarity removed).

    The similarity matrix is kept sparse (only item pairs that share a user), so it scales to large
    catalogues: its size is the number of co-occurring pairs, not n_items².

    Args:
        neighbours: keep only each item's ``neighbours`` most similar items (0: all).
    """

    name = "item_knn"

    def __init__(self, neighbours: int = 100) -> None:
        self.neighbours = neighbours

    def params(self) -> dict[str, float]:
        """The parameters :func:`fit_baseline` fits this model with."""
        return {"neighbours": self.neighbours}

    def fit(self, matrix: sp.csr_matrix) -> ItemKNN:
        """Args: matrix (n_users, n_items) binary training interactions."""
        counts = np.sqrt(np.asarray(matrix.sum(axis=0)).ravel()).astype(np.float32)
        counts[counts == 0] = 1.0
        co = sp.csr_matrix(matrix.T @ matrix, dtype=np.float32)
        co.setdiag(0.0)
        co.eliminate_zeros()
        scale = 1.0 / counts
        similarity = sp.csr_matrix(sp.diags(scale) @ co @ sp.diags(scale), dtype=np.float32)
        self.similarity = _keep_neighbours(similarity, self.neighbours)
        self.tie_break = popularity_tie_break(matrix)
        return self

    def restricted(self, neighbours: int) -> ItemKNN:
        """A copy that keeps only each item's ``neighbours`` most similar items (self fitted with all: 0)."""
        if self.neighbours != 0:
            raise ValueError("restricted() needs a model fitted with every neighbour (neighbours=0)")
        copy = ItemKNN(neighbours)
        copy.similarity = _keep_neighbours(self.similarity, neighbours)
        copy.tie_break = self.tie_break
        return copy

    def score(self, histories: sp.csr_matrix, last: np.ndarray | None = None) -> np.ndarray:
        """(m, n_items) scores: sum of the similarities to the items of each history row (order-free), popularity
        breaking ties (see :data:`TIE_BREAK`)."""
        scores = np.asarray((sp.csr_matrix(histories) @ self.similarity).toarray(), dtype=np.float32)
        return with_tie_break(scores, self.tie_break)


def _keep_neighbours(similarity: sp.csr_matrix, neighbours: int) -> sp.csr_matrix:
    """A copy of (n, n) sparse ``similarity`` with only each row's ``neighbours`` largest entries (0: all); of equal
    entries at the cut, those of the lowest columns (a partition's choice among them depends on the CPU's
    instruction set, and cosines of small counts tie often)."""
    similarity = similarity.copy()
    if neighbours <= 0:
        return similarity
    similarity.sort_indices()
    lengths = np.diff(similarity.indptr)
    for row in np.flatnonzero(lengths > neighbours):
        start, end = similarity.indptr[row], similarity.indptr[row + 1]
        values = similarity.data[start:end]  # in column order (sorted indices)
        cut = np.ones(len(values), dtype=bool)
        cut[stable_top(values, neighbours)] = False
        values[cut] = 0.0
    similarity.eliminate_zeros()
    return similarity


EASE_MAX_ITEMS = 10_000
"""Above this many products EASE is fitted on the most interacted ones only: its dense item x item
inverse needs n_items² x 8 bytes (0.8 GB at 10,000 products, 20 GB at 50,000) and its cost grows with
n_items³ (one fit of 20,000 products took 6 minutes on 2 cores, and the evaluation fits one per λ)."""

_EASE_BLOCK = 512
"""Rows handled at once when EASE's inverse is symmetrised and scaled (bounds the temporary arrays)."""


class EASEGram:
    """XᵀX of one training matrix, computed once and reused by the EASE fit of every λ tried.

    The Gram matrix is kept as the float32 co-occurrence counts the sparse product gives (exact integers
    below 2²⁴ shoppers, the same values a float64 copy would hold) in half the memory of float64.

    Args:
        matrix: (n_users, n_items) binary training interactions.
        max_items: most products fitted; above it the ``max_items`` most interacted ones (``subset``).

    Attributes:
        n_items: products of ``matrix``.
        subset: (max_items,) sorted positions of the products fitted, or None (every product).
        gram: (k, k) float32, k = min(n_items, max_items).
    """

    def __init__(self, matrix: sp.csr_matrix, max_items: int = EASE_MAX_ITEMS) -> None:
        matrix = sp.csr_matrix(matrix)
        self.n_items = matrix.shape[1]
        self.max_items = max_items
        self.subset: np.ndarray | None = None
        if self.n_items > max_items:
            counts = np.asarray(matrix.sum(axis=0)).ravel()
            self.subset = np.sort(np.argsort(-counts, kind="stable")[:max_items])
            logger.info("EASE fitted on the %d most interacted of %d products", max_items, self.n_items)
            matrix = matrix[:, self.subset]
        self.gram = np.asarray((matrix.T @ matrix).toarray(), dtype=np.float32)

    def regularised(self, l2: float) -> np.ndarray:
        """A (k, k) float64 Fortran-ordered copy of the Gram matrix with ``l2`` added to its diagonal."""
        work = np.array(self.gram, dtype=np.float64, order="F")
        work[np.diag_indices_from(work)] += l2
        return work


def ease_weights(work: np.ndarray) -> np.ndarray:
    """EASE's weights B = I - P diag(1 / diag(P)), P = work⁻¹, with B's diagonal set to zero.

    ``work`` is overwritten: it is factorised (Cholesky) and inverted in place, so the peak memory is
    that matrix plus the float32 result.

    Args:
        work: (k, k) float64 Fortran-ordered symmetric positive definite matrix XᵀX + λI.

    Returns:
        (k, k) float32 weights.

    Raises:
        numpy.linalg.LinAlgError: when ``work`` is not positive definite.
    """
    from scipy.linalg import lapack

    factor, info = lapack.dpotrf(work, lower=0, clean=0, overwrite_a=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: XᵀX + λI is not positive definite (dpotrf info {info})")
    inverse, info = lapack.dpotri(factor, lower=0, overwrite_c=1)
    if info != 0:
        raise np.linalg.LinAlgError(f"EASE: XᵀX + λI could not be inverted (dpotri info {info})")
    k = inverse.shape[0]
    diagonal = np.diag(inverse).copy()
    weights = np.empty((k, k), dtype=np.float32)
    for start in range(0, k, _EASE_BLOCK):  # only the upper triangle holds the inverse: mirror it, block by block
        stop = min(k, start + _EASE_BLOCK)
        inverse[start:stop, :start] = inverse[:start, start:stop].T
        block = inverse[start:stop, start:stop]
        lower = np.tril_indices(stop - start, -1)
        block[lower] = block.T[lower]
        weights[start:stop] = inverse[start:stop] / -diagonal
    np.fill_diagonal(weights, 0.0)
    return weights


class EASE:
    """Embarrassingly Shallow Autoencoder (Steck, 2019): closed-form item-item weights.

    B = I - P diag(1 / diag(P)), P = (XᵀX + λI)⁻¹; scores = X_u B. Above ``max_items`` products
    the model is fitted on the ``max_items`` most interacted products only (``subset``); the others
    get no weights (they are never recommended by it and do not count in a history). The inverse
    comes from a Cholesky factorisation done in place (see :func:`ease_weights`); several λ on one
    matrix share one :class:`EASEGram`.

    Args:
        l2: the regularisation λ.
        max_items: most products fitted (default :data:`EASE_MAX_ITEMS`).
    """

    name = "ease"

    def __init__(self, l2: float = 500.0, max_items: int = EASE_MAX_ITEMS) -> None:
        self.l2 = l2
        self.max_items = max_items

    def params(self) -> dict[str, float]:
        """The parameters :func:`fit_baseline` fits this model with."""
        return {"l2": self.l2, "max_items": self.max_items}

    def fit(self, matrix: sp.csr_matrix, *, gram: EASEGram | None = None) -> EASE:
        """Fit on (n_users, n_items) binary training interactions. Cost O(min(n_items, max_items)³).

        Args:
            gram: the Gram matrix of this ``matrix`` already computed (with the same ``max_items``);
                computed here when None.
        """
        if gram is None:
            gram = EASEGram(matrix, self.max_items)
        elif gram.n_items != matrix.shape[1] or gram.max_items != self.max_items:
            raise ValueError(f"the Gram matrix is of {gram.n_items} products (at most {gram.max_items} fitted), "
                             f"the model of {matrix.shape[1]} (at most {self.max_items})")
        work = gram.regularised(self.l2)
        self.n_items, self.subset = gram.n_items, gram.subset
        self.tie_break = popularity_tie_break(matrix)
        del gram  # one built here is freed before the inversion
        self.weights = ease_weights(work)
        return self

    def score(self, histories: sp.csr_matrix, last: np.ndarray | None = None) -> np.ndarray:
        """(m, n_items) scores of m history rows (order-free: ``last`` is not used), popularity breaking ties
        (see :data:`TIE_BREAK`)."""
        if self.subset is None:
            scores = np.asarray(histories @ self.weights, dtype=np.float32)
        else:
            scores = np.zeros((histories.shape[0], self.n_items), dtype=np.float32)
            scores[:, self.subset] = sp.csr_matrix(histories)[:, self.subset] @ self.weights
        return with_tie_break(scores, self.tie_break)


def transition_counts(user_idx: np.ndarray, item_idx: np.ndarray, n_items: int) -> sp.csr_matrix:
    """(n_items, n_items) float32 counts of item i directly followed by item j in the same user's sequence.

    Args:
        user_idx, item_idx: (n,) positions of the interactions, sorted by user and then time.
            Consecutive repeats of one item count once (a shopper viewing a product twice is not a transition).
    """
    user_idx = np.asarray(user_idx, dtype=np.int64)
    item_idx = np.asarray(item_idx, dtype=np.int64)
    follows = (user_idx[1:] == user_idx[:-1]) & (item_idx[1:] != item_idx[:-1])
    data = np.ones(int(follows.sum()), dtype=np.float32)
    return sp.csr_matrix((data, (item_idx[:-1][follows], item_idx[1:][follows])), shape=(n_items, n_items),
                         dtype=np.float32)


def transition_probabilities(user_idx: np.ndarray, item_idx: np.ndarray, n_items: int) -> sp.csr_matrix:
    """(n_items, n_items) float32 row-normalised :func:`transition_counts`: P(next item j | last item i).

    Args:
        user_idx, item_idx: (n,) positions of the interactions, sorted by user and then time.
    """
    counts = transition_counts(user_idx, item_idx, n_items)
    totals = np.asarray(counts.sum(axis=1)).ravel()
    totals[totals == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / totals) @ counts, dtype=np.float32)


def sequential_rules(user_idx: np.ndarray, item_idx: np.ndarray, n_items: int, window: int) -> sp.csr_matrix:
    """(n_items, n_items) float32 sequential rules, row-normalised: how often item j came within ``window``
    steps after item i in the same user's sequence, each occurrence weighted 1 / its distance in steps
    (Ludewig and Jannach's "SR" of session-based recommendation; ``window`` 1 is :func:`transition_probabilities`).

    Args:
        user_idx, item_idx: (n,) positions of the interactions, sorted by user and then time. Consecutive
            repeats of one item count once, and an item never follows itself.
        window: steps looked ahead (>= 1).
    """
    user_idx = np.asarray(user_idx, dtype=np.int64)
    item_idx = np.asarray(item_idx, dtype=np.int64)
    keep = np.ones(len(user_idx), dtype=bool)
    keep[1:] = (user_idx[1:] != user_idx[:-1]) | (item_idx[1:] != item_idx[:-1])
    user_idx, item_idx = user_idx[keep], item_idx[keep]
    rows, cols, values = [], [], []
    for distance in range(1, max(1, int(window)) + 1):
        follows = (user_idx[distance:] == user_idx[:-distance]) & (item_idx[distance:] != item_idx[:-distance])
        rows.append(item_idx[:-distance][follows])
        cols.append(item_idx[distance:][follows])
        values.append(np.full(int(follows.sum()), 1.0 / distance, dtype=np.float32))
    counts = sp.csr_matrix((np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
                           shape=(n_items, n_items), dtype=np.float32)
    counts.sum_duplicates()
    totals = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    totals[totals == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / totals) @ counts, dtype=np.float32)


def last_items(user_idx: np.ndarray, item_idx: np.ndarray, n_users: int) -> np.ndarray:
    """(n_users,) int64: each user's last item position (arrays sorted by user and time), -1 without any."""
    last = np.full(n_users, -1, dtype=np.int64)
    last[np.asarray(user_idx, dtype=np.int64)] = np.asarray(item_idx, dtype=np.int64)  # later rows overwrite
    return last


def _most_recent(last: np.ndarray | None) -> np.ndarray | None:
    """(m,) the most recent item of ``last`` given as (m,) or as (m, L) most recent first."""
    if last is None:
        return None
    last = np.asarray(last)
    return last[:, 0] if last.ndim == 2 else last


class Transitions:
    """First-order transitions: P(next item j | last item i) from row-normalised transition counts.

    Scores a user from their last item alone; users whose last item was never followed by anything
    (or who have none) get popularity, and popularity breaks ties everywhere (scaled far below one
    transition probability). Fitted with :meth:`fit_sequences` on time-ordered interactions.
    """

    name = "transitions"
    sequential = True

    def params(self) -> dict[str, float]:
        """The parameters :func:`fit_baseline` fits this model with."""
        return {}

    def fit_sequences(self, matrix: sp.csr_matrix, user_idx: np.ndarray, item_idx: np.ndarray) -> Transitions:
        """Args: matrix (n_users, n_items) binary training interactions; user_idx, item_idx (n,) by user, time."""
        self.probabilities = transition_probabilities(user_idx, item_idx, matrix.shape[1])
        self.tie_break = popularity_tie_break(matrix)
        return self

    def score(self, histories: sp.csr_matrix, last: np.ndarray | None = None) -> np.ndarray:
        """(m, n_items) scores of m users from their last items (m,) (-1: none, popularity only)."""
        m = histories.shape[0]
        scores = np.tile(self.tie_break, (m, 1))
        last = _most_recent(last)
        if last is not None:
            rows = np.flatnonzero(np.asarray(last) >= 0)
            if len(rows):
                scores[rows] += self.probabilities[np.asarray(last)[rows]].toarray()
        return scores


def _row_scaled(scores: np.ndarray) -> np.ndarray:
    """Each row divided by its largest absolute value (rows of zeros unchanged): (m, n) float32."""
    scale = np.abs(scores).max(axis=1, keepdims=True)
    scale[scale == 0] = 1.0
    return (scores / scale).astype(np.float32)


class TransitionsEASE:
    """Blend of first-order transitions and EASE: w * transitions + (1 - w) * EASE, each row scaled to max 1.

    Args:
        l2: EASE's λ.
        weight: the blend weight w of transitions (0: EASE alone, 1: transitions alone).
    """

    name = "transitions+ease"
    sequential = True

    def __init__(self, l2: float = 500.0, weight: float = 0.5) -> None:
        self.l2 = l2
        self.weight = weight

    def params(self) -> dict[str, float]:
        """The parameters :func:`fit_baseline` fits this model with."""
        return {"l2": self.l2, "weight": self.weight}

    def fit_sequences(self, matrix: sp.csr_matrix, user_idx: np.ndarray, item_idx: np.ndarray,
                      *, ease: EASE | None = None, transitions: Transitions | None = None) -> TransitionsEASE:
        """Fits both parts (an EASE with ``l2`` and transitions already fitted on the same data can be passed in)."""
        self.ease = ease if ease is not None else EASE(self.l2).fit(matrix)
        self.transitions = transitions if transitions is not None else Transitions().fit_sequences(matrix, user_idx,
                                                                                                     item_idx)
        return self

    def parts(self, histories: sp.csr_matrix, last: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The two scaled (m, n_items) score matrices (transitions, EASE), to blend with any weight."""
        return (_row_scaled(self.transitions.score(histories, last)), _row_scaled(self.ease.score(histories)))

    def score(self, histories: sp.csr_matrix, last: np.ndarray | None = None) -> np.ndarray:
        """(m, n_items) blended scores."""
        transitions, ease = self.parts(histories, last)
        return self.weight * transitions + (1.0 - self.weight) * ease


class SequentialRules:
    """Sequential rules (Ludewig and Jannach, 2018): what followed each of the user's ``history`` most recent
    items within ``window`` steps in training sequences (:func:`sequential_rules`), the most recent item
    weighted 1, the one before it 1/2, and so on; popularity breaks ties. With ``window`` and ``history`` 1 it
    is :class:`Transitions`. The ranking stage's sequential rules source, as a model of its own.

    Args:
        window: steps looked ahead.
        history: most recent items scored from (``last`` must then hold that many columns).
    """

    name = "sequential_rules"
    sequential = True

    def __init__(self, window: int = 10, history: int = 10) -> None:
        self.window = int(window)
        self.history = int(history)

    def params(self) -> dict[str, float]:
        """The parameters :func:`fit_baseline` fits this model with."""
        return {"window": self.window, "history": self.history}

    def fit_sequences(self, matrix: sp.csr_matrix, user_idx: np.ndarray, item_idx: np.ndarray) -> SequentialRules:
        """Args: matrix (n_users, n_items) binary training interactions; user_idx, item_idx (n,) by user, time."""
        self.rules = sequential_rules(user_idx, item_idx, matrix.shape[1], self.window)
        self.tie_break = popularity_tie_break(matrix)
        return self

    def score(self, histories: sp.csr_matrix, last: np.ndarray | None = None) -> np.ndarray:
        """(m, n_items) scores of m users from their most recent items ``last``, (m, L) most recent first or
        (m,) (-1: none; popularity only)."""
        m = histories.shape[0]
        scores = np.tile(self.tie_break, (m, 1))
        if last is None:
            return scores
        recent = np.asarray(last, dtype=np.int64).reshape(m, -1)[:, :self.history]
        rows, places = np.nonzero(recent >= 0)
        if len(rows):
            weights = sp.csr_matrix((1.0 / (places + 1.0), (rows, recent[rows, places])),
                                    shape=(m, self.rules.shape[0]), dtype=np.float32)
            scores += np.asarray((weights @ self.rules).toarray(), dtype=np.float32)
        return scores


class ImplicitALS:
    """Implicit-feedback matrix factorisation (Hu, Koren and Volinsky, 2008) from the ``implicit`` library.

    A user's vector is solved from their history row against the item factors (fold-in), so users
    outside the training matrix, or with interactions added after fitting, are scored the same way.

    Args:
        factors: latent dimensions.
        regularization: L2 regularisation λ.
        alpha: confidence weight of an observed interaction (c = 1 + alpha).
        iterations: ALS sweeps.
        seed: seed of the initial factors.
    """

    name = "ials"

    def __init__(self, factors: int = 64, regularization: float = 0.1, alpha: float = 1.0, iterations: int = 15,
                 seed: int = 0) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.seed = seed

    def params(self) -> dict[str, float]:
        """The parameters :func:`fit_baseline` fits this model with (the seed is given apart)."""
        return {"factors": self.factors, "regularization": self.regularization, "alpha": self.alpha,
                "iterations": self.iterations}

    def fit(self, matrix: sp.csr_matrix) -> ImplicitALS:
        """Args: matrix (n_users, n_items) binary training interactions."""
        from implicit.cpu.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):  # implicit parallelises itself; nested BLAS threads only slow it
            self.model = AlternatingLeastSquares(factors=self.factors, regularization=self.regularization,
                                                 alpha=self.alpha, iterations=self.iterations,
                                                 random_state=self.seed)
            self.model.fit(sp.csr_matrix(matrix, dtype=np.float32), show_progress=False)
        return self

    def score(self, histories: sp.csr_matrix, last: np.ndarray | None = None) -> np.ndarray:
        """(m, n_items) scores: folded-in user vectors dot the item factors."""
        from threadpoolctl import threadpool_limits

        histories = sp.csr_matrix(histories, dtype=np.float32)
        # implicit solves each user's system on its OpenMP threads with scipy's OpenBLAS, a pthreads build: with
        # more than one BLAS thread it prints "OpenBLAS Warning : Detect OpenMP Loop" per user (factors >= 256)
        # once libgomp is loaded globally (torch does). One BLAS thread, as in fit; the same scores.
        with threadpool_limits(1, "blas"):
            vectors = self.model.recalculate_user(np.arange(histories.shape[0]), histories)
        return np.asarray(np.atleast_2d(vectors) @ self.model.item_factors.T, dtype=np.float32)


class Baseline(Protocol):
    """What every baseline offers the evaluation harness."""

    name: str

    def params(self) -> dict[str, float]:
        """The parameters it was fitted with (see :func:`fit_baseline`)."""
        ...

    def score(self, histories: sp.csr_matrix, last: np.ndarray | None = None) -> np.ndarray:
        """(m, n_items) scores of m history rows (m,) last items."""
        ...


BASELINES: tuple[str, ...] = ("popularity", "item_knn", "ease", "ials", "transitions", "transitions+ease",
                              "sequential_rules")
"""Every baseline :func:`fit_baseline` knows, in the order the evaluation reports them."""

_PARAMETERS: dict[str, dict[str, type]] = {
    "popularity": {}, "item_knn": {"neighbours": int}, "ease": {"l2": float, "max_items": int},
    "ials": {"factors": int, "regularization": float, "alpha": float, "iterations": int}, "transitions": {},
    "transitions+ease": {"l2": float, "weight": float}, "sequential_rules": {"window": int, "history": int}}


def fit_baseline(name: str, params: Mapping[str, Any], matrix: sp.csr_matrix, order: tuple[np.ndarray, np.ndarray],
                 *, seed: int = 0, parts: Mapping[str, Baseline] | None = None) -> Baseline:
    """The baseline ``name`` fitted with ``params`` (the class defaults for those absent).

    Args:
        name: one of :data:`BASELINES`.
        params: its parameters, as a fitted model's ``params()`` or the evaluation's tuning report
            gives them (e.g. ``{"l2": 200.0}`` for EASE).
        matrix: (n_users, n_items) binary training interactions.
        order: (n,) user and (n,) item positions of the same interactions sorted by user and time
            (for the sequential baselines).
        seed: implicit ALS's seed.
        parts: models already fitted on the same interactions that ``transitions+ease`` takes instead
            of fitting its own: ``"transitions"``, and ``"ease"`` when its parameters are the blend's.

    Raises:
        ValueError: an unknown baseline or parameter.
    """
    if name not in _PARAMETERS:
        raise ValueError(f"unknown baseline {name!r}")
    unknown = set(params) - set(_PARAMETERS[name])
    if unknown:
        raise ValueError(f"unknown parameters of {name}: {sorted(unknown)}")
    kwargs = {key: cast(params[key]) for key, cast in _PARAMETERS[name].items() if key in params}
    if name == "popularity":
        return Popularity().fit(matrix)
    if name == "item_knn":
        return ItemKNN(**kwargs).fit(matrix)
    if name == "ease":
        return EASE(**kwargs).fit(matrix)
    if name == "ials":
        return ImplicitALS(**kwargs, seed=seed).fit(matrix)
    if name == "transitions":
        return Transitions().fit_sequences(matrix, *order)
    if name == "sequential_rules":
        return SequentialRules(**kwargs).fit_sequences(matrix, *order)
    blend = TransitionsEASE(**kwargs)
    parts = parts or {}
    ease, transitions = parts.get("ease"), parts.get("transitions")
    return blend.fit_sequences(
        matrix, *order,
        ease=ease if isinstance(ease, EASE) and ease.params() == EASE(blend.l2).params() else None,
        transitions=transitions if isinstance(transitions, Transitions) else None)


def fit_baselines(params: Mapping[str, Mapping[str, Any]], matrix: sp.csr_matrix,
                  order: tuple[np.ndarray, np.ndarray], *, seed: int = 0,
                  names: tuple[str, ...] = BASELINES) -> dict[str, Baseline]:
    """Every baseline of ``names`` fitted by :func:`fit_baseline` (``transitions+ease`` reuses the
    ``ease`` and ``transitions`` fitted before it).

    Args:
        params: ``{name: {parameter: value}}``; a baseline not in it gets the class defaults.
        matrix, order, seed: as :func:`fit_baseline`.

    Returns:
        ``{name: fitted model}`` in the order of ``names``.
    """
    models: dict[str, Baseline] = {}
    for name in names:
        models[name] = fit_baseline(name, params.get(name, {}), matrix, order, seed=seed, parts=models)
    return models
