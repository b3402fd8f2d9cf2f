"""A TFRS listwise ranker over the ranking stage's candidate features (a challenger to LambdaMART).

Each candidate's feature row (:data:`modeling.reranker.FEATURES`) is standardised with the mean and
standard deviation of the training lists' real candidates (a missing value, such as an unknown
price, becomes the mean: 0 after standardising) and scored by a small Keras MLP. The MLP is trained
inside a ``tfrs.models.Model`` whose loss is ``tfrs.tasks.Ranking`` with a softmax cross-entropy over
each shopper's whole candidate list: the label is one-hot on the held-out item, pads get a logit of
-1e9 so they take no probability mass. A list whose held-out item is not among its candidates
teaches nothing and is skipped, as LambdaMART skips it (:func:`modeling.reranker._train_booster`).

TensorFlow is imported on demand (the first fit), as :mod:`modeling.train` does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modeling import runtime as _runtime  # noqa: F401  (must precede tensorflow)
from modeling.reranker import order_candidates

logger = logging.getLogger(__name__)

PAD_LOGIT = -1e9
"""The logit of a pad: its softmax probability is 0."""


@dataclass(frozen=True)
class ListwiseParams:
    """Hyper-parameters of :func:`fit_listwise`.

    Attributes:
        hidden: units of the hidden ReLU layer (0: a linear scorer).
        learning_rate: Adam's learning rate.
        batch_size: lists per gradient step.
    """

    hidden: int = 32
    learning_rate: float = 3e-3
    batch_size: int = 32


@dataclass
class ListwiseRanker:
    """A fitted listwise scorer of candidate feature rows.

    Attributes:
        scorer: the Keras MLP, (..., F) standardised rows -> (..., 1) logits.
        mean: (F,) float32 feature means of the training lists' candidates.
        std: (F,) float32 their standard deviations (1 where a feature is constant).
        epochs: epochs trained.
        seconds: training seconds so far (standardising, building and fitting).
        losses: the mean training loss of each epoch.
    """

    scorer: Any
    mean: np.ndarray
    std: np.ndarray
    epochs: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)

    def standardise(self, features: np.ndarray) -> np.ndarray:
        """(..., F) rows standardised, every missing or non-finite value 0. Returns float32 of the same shape."""
        return _standardise(features, self.mean, self.std)

    def score(self, features: np.ndarray, *, batch_size: int = 65_536) -> np.ndarray:
        """(r,) float32 scores of (r, F) feature rows (higher: better)."""
        features = np.asarray(features, dtype=np.float32)
        if features.ndim != 2 or features.shape[1] != len(self.mean):
            raise ValueError(f"expected (r, {len(self.mean)}) feature rows, got shape {features.shape}")
        if len(features) == 0:
            return np.zeros(0, dtype=np.float32)
        rows = self.standardise(features)
        parts = [self.scorer(rows[start:start + batch_size], training=False).numpy()[:, 0]
                 for start in range(0, len(rows), batch_size)]
        return np.concatenate(parts).astype(np.float32)

    def predict(self, features: np.ndarray, num_threads: int = 1) -> np.ndarray:
        """:meth:`score` under the name :class:`modeling.reranker.Ranker` calls on its booster (threads ignored)."""
        return self.score(features)

    def order(self, candidates: np.ndarray, features: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of each list, as :meth:`modeling.reranker.Ranker.order` gives it.

        Args:
            candidates: (m, C) item positions, -1 pads.
            features: (m, C, F) float32.
            k: list length.

        Returns:
            ``(positions (m, k) int64, scores (m, k) float32)``, -1 / -inf pads.
        """
        m, width = candidates.shape
        if width == 0:
            return np.full((m, k), -1, dtype=np.int64), np.full((m, k), -np.inf, dtype=np.float32)
        scores = self.score(np.asarray(features).reshape(m * width, -1)).reshape(m, width)
        return order_candidates(candidates, scores, k)


def _standardise(features: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    rows = (np.asarray(features, dtype=np.float32) - mean) / std
    return np.where(np.isfinite(rows), rows, 0.0).astype(np.float32)


def feature_moments(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of each column of (r, F) rows, ignoring missing and non-finite values.

    Returns:
        ``(mean (F,), std (F,))`` float32; a column with no finite value has mean 0, a constant one std 1.
    """
    rows = np.asarray(rows, dtype=np.float64)
    finite = np.isfinite(rows)
    count = finite.sum(axis=0)
    values = np.where(finite, rows, 0.0)
    mean = values.sum(axis=0) / np.maximum(count, 1)
    variance = (np.where(finite, rows - mean, 0.0) ** 2).sum(axis=0) / np.maximum(count, 1)
    std = np.sqrt(variance)
    return mean.astype(np.float32), np.where(std > 1e-12, std, 1.0).astype(np.float32)


def _build_model(n_features: int, params: ListwiseParams) -> Any:
    """The scorer and the ``tfrs.models.Model`` training it: ``(model, scorer)``."""
    import tensorflow as tf
    import tensorflow_recommenders as tfrs

    class ListwiseModel(tfrs.models.Model):
        """Softmax cross-entropy of each list's held-out item among its real candidates.

        Inputs: ``{"features": (b, C, F) float32 standardised, "valid": (b, C) bool, "label": (b, C) float32
        one-hot}``.
        """

        def __init__(self, scorer: tf.keras.Model) -> None:
            super().__init__()
            self.scorer = scorer
            self.task = tfrs.tasks.Ranking(loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True))

        def compute_loss(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
            features = inputs["features"]  # (b, C, F)
            shape = tf.shape(features)
            rows = tf.reshape(features, [-1, n_features])
            logits = tf.reshape(self.scorer(rows, training=training), shape[:2])  # (b, C)
            logits = tf.where(inputs["valid"], logits, tf.constant(PAD_LOGIT, dtype=logits.dtype))
            return self.task(labels=inputs["label"], predictions=logits, compute_metrics=False)

    layers = [tf.keras.layers.Dense(params.hidden, activation="relu")] if params.hidden > 0 else []
    scorer = tf.keras.Sequential([tf.keras.Input(shape=(n_features,)), *layers, tf.keras.layers.Dense(1)])
    model = ListwiseModel(scorer)
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=params.learning_rate))
    return model, scorer


def fit_listwise(candidates: np.ndarray, features: np.ndarray, targets: np.ndarray, *, epochs: int = 20,
                 seed: int = 0, params: ListwiseParams | None = None,
                 on_epoch: Callable[[ListwiseRanker], None] | None = None) -> ListwiseRanker:
    """Train the listwise scorer on m candidate lists.

    Deterministic given ``seed`` (weights and the order of the lists). A run of ``epochs`` passes
    through the same states as a longer run with the same seed, so ``on_epoch`` can measure every
    shorter run on the way.

    Args:
        candidates: (m, C) int item positions, -1 pads.
        features: (m, C, F) float32 feature rows (NaN allowed: missing).
        targets: (m,) int the held-out item of each list; lists without it among their candidates are skipped.
        epochs: passes over the lists.
        seed: seed of the weights and of the shuffling.
        params: model and optimiser settings (default :class:`ListwiseParams`).
        on_epoch: called after each epoch with the ranker so far (``ranker.epochs`` epochs trained); its own
            time is not counted in ``ranker.seconds``.

    Returns:
        The fitted ranker (with no usable list: one that scores every row 0).

    Raises:
        ValueError: when the shapes disagree.
    """
    import tensorflow as tf

    started = time.perf_counter()
    params = params or ListwiseParams()
    candidates = np.asarray(candidates)
    features = np.asarray(features, dtype=np.float32)
    targets = np.asarray(targets)
    if features.ndim != 3 or candidates.shape != features.shape[:2] or targets.shape != candidates.shape[:1]:
        raise ValueError(f"expected candidates (m, C), features (m, C, F) and targets (m,), got "
                         f"{candidates.shape}, {features.shape} and {targets.shape}")
    valid = candidates >= 0
    labels = (candidates == targets[:, None]) & valid
    useful = labels.any(axis=1)
    n_features = features.shape[2]
    tf.keras.utils.set_random_seed(seed)
    mean, std = feature_moments(features[useful][valid[useful]]) if useful.any() else (
        np.zeros(n_features, dtype=np.float32), np.ones(n_features, dtype=np.float32))
    model, scorer = _build_model(n_features, params)
    ranker = ListwiseRanker(scorer, mean, std)
    if not useful.any():
        logger.warning("listwise ranker: none of %d lists holds its held-out item; every score is 0", len(targets))
        scorer.set_weights([np.zeros_like(w) for w in scorer.get_weights()])
        ranker.seconds = time.perf_counter() - started
        return ranker
    inputs = {"features": _standardise(features[useful], mean, std), "valid": valid[useful],
              "label": labels[useful].astype(np.float32)}
    m = int(useful.sum())
    dataset = (tf.data.Dataset.from_tensor_slices(inputs)
               .shuffle(m, seed=seed, reshuffle_each_iteration=True)
               .batch(params.batch_size))
    logger.info("listwise ranker: %d of %d lists hold their item, %d candidates wide, %d epochs",
                m, len(targets), candidates.shape[1], epochs)
    batch_losses: list[float] = []  # tfrs logs each batch's loss; the epoch's is their mean
    record = tf.keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: batch_losses.append(float(logs["loss"])))
    for epoch in range(1, epochs + 1):
        batch_losses.clear()
        model.fit(dataset, epochs=1, verbose=0, callbacks=[record])
        ranker.losses.append(float(np.mean(batch_losses)))
        ranker.epochs = epoch
        ranker.seconds = time.perf_counter() - started
        logger.debug("listwise epoch %d/%d: loss %.4f", epoch, epochs, ranker.losses[-1])
        if on_epoch is not None:
            on_epoch(ranker)
            started = time.perf_counter() - ranker.seconds  # the callback's time is not training time
    return ranker
