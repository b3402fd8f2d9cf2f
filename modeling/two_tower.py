"""The TFRS two-tower retrieval model.

Query tower:     user id embedding (OOV bucket) + user review-text embedding
                 + user behaviour embedding -> MLP -> unit vector (d,)
Candidate tower: item id embedding (OOV bucket) + item text embedding
                 -> MLP -> unit vector (d,)

Trained with ``tfrs.tasks.Retrieval`` (in-batch softmax with interaction weights
and a temperature). During training ids are dropped to the OOV bucket with
probability ``id_dropout`` so the content inputs learn to stand alone, which is
what serves shoppers and products the model has never seen.

Feature dictionaries (all tensors batched on axis 0):
    query:     {"user_id": (b,) string, "user_text": (b, 384) float32, "user_behaviour": (b, 384) float32}
    candidate: {"item_id": (b,) string, "item_text": (b, 384) float32}
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from modeling import runtime as _runtime  # noqa: F401  (must precede tensorflow)

import tensorflow as tf  # noqa: E402
import tensorflow_recommenders as tfrs  # noqa: E402

USER_ID = "user_id"
USER_TEXT = "user_text"
USER_BEHAVIOUR = "user_behaviour"
ITEM_ID = "item_id"
ITEM_TEXT = "item_text"
WEIGHT = "weight"
ITEM_PROBABILITY = "item_probability"
QUERY_FEATURES = (USER_ID, USER_TEXT, USER_BEHAVIOUR)
CANDIDATE_FEATURES = (ITEM_ID, ITEM_TEXT)


@dataclass(frozen=True)
class TwoTowerParams:
    """Hyper-parameters of the model and its training run.

    Attributes:
        embedding_dim: size d of the output vectors of both towers.
        id_dim: size of the id embeddings.
        hidden_dim: width of the hidden layer of each tower's MLP.
        temperature: softmax temperature over the (unit-norm) dot products.
        id_dropout: probability that a training example's ids are replaced by the OOV bucket.
        learning_rate: Adam learning rate.
        batch_size: examples per step (also the number of in-batch negatives).
        epochs: maximum number of epochs.
        patience: epochs without validation improvement before stopping early.
        seed: seed of weights, shuffling and dropout.
        logq_correction: subtract log(item frequency) from the in-batch logits, so popular items
            are not over-penalised for appearing as negatives more often (sampling-bias correction).
    """

    embedding_dim: int = 64
    id_dim: int = 32
    hidden_dim: int = 128
    temperature: float = 0.05
    id_dropout: float = 0.1
    learning_rate: float = 0.003
    batch_size: int = 512
    epochs: int = 15
    patience: int = 3
    seed: int = 42
    logq_correction: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Tower(tf.keras.Model):
    """id embedding (+ OOV bucket) concatenated with dense content features, then an MLP."""

    def __init__(self, vocabulary: list[str], id_key: str, dense_keys: tuple[str, ...], params: TwoTowerParams,
                 name: str) -> None:
        super().__init__(name=name)
        self.id_key = id_key
        self.dense_keys = dense_keys
        self.id_dropout = params.id_dropout
        self.seed = params.seed
        self.lookup = tf.keras.layers.StringLookup(vocabulary=vocabulary, mask_token=None, num_oov_indices=1)
        self.id_embedding = tf.keras.layers.Embedding(len(vocabulary) + 1, params.id_dim)
        self.hidden = tf.keras.layers.Dense(params.hidden_dim, activation="relu")
        self.out = tf.keras.layers.Dense(params.embedding_dim)

    def call(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        ids = self.lookup(features[self.id_key])
        if training and self.id_dropout > 0:
            drop = tf.random.uniform(tf.shape(ids)) < self.id_dropout
            ids = tf.where(drop, tf.zeros_like(ids), ids)
        parts = [self.id_embedding(ids)] + [tf.cast(features[key], tf.float32) for key in self.dense_keys]
        x = self.hidden(tf.concat(parts, axis=1))
        return tf.math.l2_normalize(self.out(x), axis=1)


class QueryTower(_Tower):
    """Maps query features to unit vectors (b, d)."""

    def __init__(self, user_vocabulary: list[str], params: TwoTowerParams) -> None:
        super().__init__(user_vocabulary, USER_ID, (USER_TEXT, USER_BEHAVIOUR), params, name="query_tower")


class CandidateTower(_Tower):
    """Maps candidate features to unit vectors (b, d)."""

    def __init__(self, item_vocabulary: list[str], params: TwoTowerParams) -> None:
        super().__init__(item_vocabulary, ITEM_ID, (ITEM_TEXT,), params, name="candidate_tower")


class TwoTowerModel(tfrs.Model):
    """tfrs.Model wiring the towers to a weighted in-batch softmax retrieval task."""

    def __init__(self, query_tower: QueryTower, candidate_tower: CandidateTower, params: TwoTowerParams) -> None:
        super().__init__()
        self.query_tower = query_tower
        self.candidate_tower = candidate_tower
        self.task = tfrs.tasks.Retrieval(temperature=params.temperature, remove_accidental_hits=True)
        self.logq_correction = params.logq_correction

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        query = self.query_tower(features, training=training)
        candidate = self.candidate_tower(features, training=training)
        return self.task(
            query,
            candidate,
            sample_weight=features[WEIGHT],
            candidate_ids=features[ITEM_ID],
            candidate_sampling_probability=features[ITEM_PROBABILITY] if self.logq_correction else None,
            compute_metrics=False,
            compute_batch_metrics=False,
        )


class QueryTowerServer(tf.Module):
    """SavedModel wrapper of the query tower with a fixed input signature.

    ``serve(user_id (b,) string, user_text (b, t) float32, user_behaviour (b, t) float32)``
    returns (b, d) float32 unit vectors.
    """

    def __init__(self, tower: QueryTower, text_dim: int) -> None:
        super().__init__()
        self.tower = tower
        self.serve = tf.function(
            self._serve,
            input_signature=[
                tf.TensorSpec([None], tf.string, name=USER_ID),
                tf.TensorSpec([None, text_dim], tf.float32, name=USER_TEXT),
                tf.TensorSpec([None, text_dim], tf.float32, name=USER_BEHAVIOUR),
            ],
        )

    def _serve(self, user_id: tf.Tensor, user_text: tf.Tensor, user_behaviour: tf.Tensor) -> tf.Tensor:
        return self.tower({USER_ID: user_id, USER_TEXT: user_text, USER_BEHAVIOUR: user_behaviour}, training=False)


class CandidateTowerServer(tf.Module):
    """SavedModel wrapper of the candidate tower.

    ``serve(item_id (b,) string, item_text (b, t) float32)`` returns (b, d) float32 unit vectors.
    """

    def __init__(self, tower: CandidateTower, text_dim: int) -> None:
        super().__init__()
        self.tower = tower
        self.serve = tf.function(
            self._serve,
            input_signature=[
                tf.TensorSpec([None], tf.string, name=ITEM_ID),
                tf.TensorSpec([None, text_dim], tf.float32, name=ITEM_TEXT),
            ],
        )

    def _serve(self, item_id: tf.Tensor, item_text: tf.Tensor) -> tf.Tensor:
        return self.tower({ITEM_ID: item_id, ITEM_TEXT: item_text}, training=False)
