"""The TFRS two-tower retrieval model (hybrid: ids, behaviour and content).

Query tower:     user id embedding (OOV bucket)
                 + user review-text embedding
                 + text behaviour embedding (recency-weighted mean of the history's item text)
                 + learned history embedding (weighted mean of item embeddings of the whole
                   recent history, and plain mean of the last few items)
                 -> MLP -> unit vector (d,)
Candidate tower: item id embedding (OOV bucket) + item text embedding
                 + category, brand and price-band embeddings -> MLP -> unit vector (d,)

The history embeddings depend only on the item ids of a shopper's history, so they
exist for shoppers who arrived after training. Training examples are causal: each
interaction is predicted from the interactions before it, which is what serving and
leave-last-out evaluation ask of the model.

Trained with ``tfrs.tasks.Retrieval`` (in-batch softmax with interaction weights, a
temperature and an optional logQ correction). During training ids are dropped to the
OOV bucket with probability ``id_dropout`` so the content inputs learn to stand alone,
which is what serves shoppers and products the model has never seen.

Feature dictionaries (all tensors batched on axis 0; t = text dim, L = history length):
    query:     {"user_id": (b,) string, "user_text": (b, t) float32, "user_behaviour": (b, t) float32,
                "history": (b, L) string (most recent first, "" pads), "history_weight": (b, L) float32}
    candidate: {"item_id": (b,) string, "item_text": (b, t) float32, "item_category": (b,) string,
                "item_brand": (b,) string, "item_price": (b,) float32 (negative: unknown)}
"""

from __future__ import annotations


from modeling import runtime as _runtime  # noqa: F401  (must precede tensorflow)

import tensorflow as tf  # noqa: E402
import tensorflow_recommenders as tfrs  # noqa: E402

from modeling.params import TwoTowerParams  # noqa: E402  (re-exported: its home before it moved)

USER_ID = "user_id"
USER_TEXT = "user_text"
USER_BEHAVIOUR = "user_behaviour"
HISTORY = "history"
HISTORY_WEIGHT = "history_weight"
ITEM_ID = "item_id"
ITEM_TEXT = "item_text"
ITEM_CATEGORY = "item_category"
ITEM_BRAND = "item_brand"
ITEM_PRICE = "item_price"
WEIGHT = "weight"
ITEM_PROBABILITY = "item_probability"
ITEM_POSITION = "item_position"
QUERY_FEATURES = (USER_ID, USER_TEXT, USER_BEHAVIOUR, HISTORY, HISTORY_WEIGHT)
CANDIDATE_FEATURES = (ITEM_ID, ITEM_TEXT, ITEM_CATEGORY, ITEM_BRAND, ITEM_PRICE)

# Price bands (currency units); an unknown price (negative) falls in the band below 0.
PRICE_BOUNDARIES = [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 35.0, 50.0, 75.0, 100.0, 150.0, 250.0, 500.0, 1000.0]
ATTRIBUTE_DIM = 16


# TwoTowerParams lives apart from TensorFlow (modeling.params), so that commands read their defaults without it.


def _drop_ids(ids: tf.Tensor, rate: float, training: bool) -> tf.Tensor:
    """Replace ids (lookup indices) by the OOV bucket 0 with probability ``rate`` during training."""
    if not training or rate <= 0:
        return ids
    drop = tf.random.uniform(tf.shape(ids)) < rate
    return tf.where(drop, tf.zeros_like(ids), ids)


def _pooled(embedded: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """Weighted mean over axis 1: (b, L, e) and (b, L) -> (b, e); zero where all weights are 0."""
    total = tf.reduce_sum(weights, axis=1, keepdims=True)
    summed = tf.reduce_sum(embedded * weights[:, :, None], axis=1)
    return tf.math.divide_no_nan(summed, total)


class QueryTower(tf.keras.Model):
    """Maps query features to unit vectors (b, d)."""

    def __init__(self, user_vocabulary: list[str], item_vocabulary: list[str], params: TwoTowerParams,
                 item_layers: tuple[tf.keras.layers.Layer, tf.keras.layers.Layer] | None = None) -> None:
        """``item_layers``: the candidate tower's (lookup, embedding) to share for the history, or None
        for a table of its own."""
        super().__init__(name="query_tower")
        self.params_ = params
        if params.use_user_id:  # otherwise the tower (and its SavedModel) carries no user vocabulary at all
            self.user_lookup = tf.keras.layers.StringLookup(vocabulary=user_vocabulary, mask_token=None,
                                                            num_oov_indices=1)
            self.user_embedding = tf.keras.layers.Embedding(len(user_vocabulary) + 1, params.id_dim)
        if item_layers is None:
            item_layers = (tf.keras.layers.StringLookup(vocabulary=item_vocabulary, mask_token=None,
                                                        num_oov_indices=1),
                           tf.keras.layers.Embedding(len(item_vocabulary) + 1, params.id_dim))
        self.history_lookup, self.history_embedding = item_layers
        if params.attention_heads > 0:
            self.positions = tf.keras.layers.Embedding(params.history_length, params.id_dim)
            self.attention = tf.keras.layers.MultiHeadAttention(num_heads=params.attention_heads,
                                                                key_dim=max(1, params.id_dim // params.attention_heads))
        self.hidden = tf.keras.layers.Dense(params.hidden_dim, activation="relu")
        self.out = tf.keras.layers.Dense(params.embedding_dim)

    def call(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        history = features[HISTORY]
        weights = tf.cast(features[HISTORY_WEIGHT], tf.float32)
        embedded = self.history_embedding(self.history_lookup(history))  # (b, L, e)
        present = tf.cast(history != "", tf.float32)
        recent = self.params_.recent_length
        parts = [
            _pooled(embedded, weights * present),
            _pooled(embedded[:, :recent], present[:, :recent]),
            *self._attended(embedded, present),
            tf.cast(features[USER_TEXT], tf.float32),
            tf.cast(features[USER_BEHAVIOUR], tf.float32),
        ]
        if self.params_.use_user_id:
            users = _drop_ids(self.user_lookup(features[USER_ID]), self.params_.id_dropout, training)
            parts.append(self.user_embedding(users))
        x = self.hidden(tf.concat(parts, axis=1))
        return tf.math.l2_normalize(self.out(x), axis=1)


    def _attended(self, embedded: tf.Tensor, present: tf.Tensor) -> list[tf.Tensor]:
        """The most recent item attending over the window (with recency positions): [(b, e)], or []."""
        if self.params_.attention_heads <= 0:
            return []
        length = tf.shape(embedded)[1]
        x = embedded + self.positions(tf.range(length))[None, :, :]
        mask = tf.cast(present[:, None, :], tf.bool)  # (b, 1, L)
        attended = self.attention(query=x[:, :1], value=x, key=x, attention_mask=mask)  # (b, 1, e)
        return [attended[:, 0] * present[:, :1]]


class CandidateTower(tf.keras.Model):
    """Maps candidate features to unit vectors (b, d)."""

    def __init__(self, item_vocabulary: list[str], category_vocabulary: list[str], brand_vocabulary: list[str],
                 params: TwoTowerParams) -> None:
        super().__init__(name="candidate_tower")
        self.params_ = params
        self.item_lookup = tf.keras.layers.StringLookup(vocabulary=item_vocabulary, mask_token=None,
                                                        num_oov_indices=1)
        self.item_embedding = tf.keras.layers.Embedding(len(item_vocabulary) + 1, params.id_dim)
        self.category_lookup = tf.keras.layers.StringLookup(vocabulary=category_vocabulary or ["?"],
                                                            mask_token=None, num_oov_indices=1)
        self.category_embedding = tf.keras.layers.Embedding(len(category_vocabulary or ["?"]) + 1, ATTRIBUTE_DIM)
        self.brand_lookup = tf.keras.layers.StringLookup(vocabulary=brand_vocabulary or ["?"], mask_token=None,
                                                         num_oov_indices=1)
        self.brand_embedding = tf.keras.layers.Embedding(len(brand_vocabulary or ["?"]) + 1, ATTRIBUTE_DIM)
        self.price_bands = tf.keras.layers.Discretization(bin_boundaries=PRICE_BOUNDARIES)
        self.price_embedding = tf.keras.layers.Embedding(len(PRICE_BOUNDARIES) + 1, ATTRIBUTE_DIM // 2)
        self.hidden = tf.keras.layers.Dense(params.hidden_dim, activation="relu")
        self.out = tf.keras.layers.Dense(params.embedding_dim)

    def call(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        items = _drop_ids(self.item_lookup(features[ITEM_ID]), self.params_.id_dropout, training)
        price = tf.cast(features[ITEM_PRICE], tf.float32)
        parts = [
            self.item_embedding(items),
            tf.cast(features[ITEM_TEXT], tf.float32),
            self.category_embedding(self.category_lookup(features[ITEM_CATEGORY])),
            self.brand_embedding(self.brand_lookup(features[ITEM_BRAND])),
            self.price_embedding(self.price_bands(price)),
        ]
        x = self.hidden(tf.concat(parts, axis=1))
        return tf.math.l2_normalize(self.out(x), axis=1)


class TwoTowerModel(tfrs.Model):
    """tfrs.Model wiring the towers to a weighted softmax retrieval loss.

    With a ``catalogue`` (the candidate features of every item, for catalogues of at most
    ``full_softmax_max_items``) the softmax runs over the whole catalogue: every item is a
    negative at every step and there is no sampling bias to correct. Otherwise it is
    ``tfrs.tasks.Retrieval``'s in-batch softmax, optionally with the logQ correction.
    """

    def __init__(self, query_tower: QueryTower, candidate_tower: CandidateTower, params: TwoTowerParams,
                 catalogue: dict[str, tf.Tensor] | None = None) -> None:
        super().__init__()
        self.query_tower = query_tower
        self.candidate_tower = candidate_tower
        self.task = tfrs.tasks.Retrieval(temperature=params.temperature, remove_accidental_hits=True)
        self.logq_correction = params.logq_correction
        self.temperature = params.temperature
        self.catalogue = catalogue

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        query = self.query_tower(features, training=training)
        if self.catalogue is not None:
            candidates = self.candidate_tower(self.catalogue, training=training)  # (n_items, d)
            logits = tf.matmul(query, candidates, transpose_b=True) / self.temperature
            losses = tf.keras.losses.sparse_categorical_crossentropy(features[ITEM_POSITION], logits,
                                                                     from_logits=True)
            return tf.reduce_sum(losses * tf.cast(features[WEIGHT], tf.float32))
        candidate = self.candidate_tower(features, training=training)
        candidate_ids, probability = features[ITEM_ID], features[ITEM_PROBABILITY]
        context = tf.distribute.get_replica_context()
        if context is not None and context.num_replicas_in_sync > 1:
            # Several training workers: every replica's candidates are this replica's negatives, as they
            # would be in one process with the whole batch (see _every_replica).
            candidate, candidate_ids, probability = _every_replica(
                context, candidate, tf.stop_gradient(features[ITEM_POSITION]), tf.stop_gradient(probability))
        return self.task(
            query,
            candidate,
            sample_weight=features[WEIGHT],
            candidate_ids=candidate_ids,
            candidate_sampling_probability=probability if self.logq_correction else None,
            compute_metrics=False,
            compute_batch_metrics=False,
        )


def _every_replica(context: tf.distribute.ReplicaContext, *values: tf.Tensor) -> list[tf.Tensor]:
    """Gather per-replica rows from every replica, this replica's rows first.

    Each value is (b, ...) on this replica; each result is (sum of b over replicas, ...), rotated so
    that this replica's b rows come first. The in-batch softmax labels query j with candidate j, so
    the positives stay on the diagonal. ``all_gather`` passes gradients back to the replica that
    owns each row, so the gradient is that of one process training on the whole batch.
    """
    sizes = context.all_gather(tf.shape(values[0])[:1], axis=0)  # (replicas,)
    start = tf.reduce_sum(sizes[:context.replica_id_in_sync_group])
    return [tf.roll(context.all_gather(value, axis=0), shift=-start, axis=0) for value in values]


class QueryTowerServer(tf.Module):
    """SavedModel wrapper of the query tower with a fixed input signature.

    ``serve(user_id (b,) string, user_text (b, t) float32, user_behaviour (b, t) float32,
    history (b, L) string, history_weight (b, L) float32)`` returns (b, d) float32 unit vectors.
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
                tf.TensorSpec([None, None], tf.string, name=HISTORY),
                tf.TensorSpec([None, None], tf.float32, name=HISTORY_WEIGHT),
            ],
        )

    def _serve(self, user_id: tf.Tensor, user_text: tf.Tensor, user_behaviour: tf.Tensor, history: tf.Tensor,
               history_weight: tf.Tensor) -> tf.Tensor:
        return self.tower({USER_ID: user_id, USER_TEXT: user_text, USER_BEHAVIOUR: user_behaviour,
                           HISTORY: history, HISTORY_WEIGHT: history_weight}, training=False)


class CandidateTowerServer(tf.Module):
    """SavedModel wrapper of the candidate tower.

    ``serve(item_id (b,) string, item_text (b, t) float32, item_category (b,) string,
    item_brand (b,) string, item_price (b,) float32)`` returns (b, d) float32 unit vectors.
    """

    def __init__(self, tower: CandidateTower, text_dim: int) -> None:
        super().__init__()
        self.tower = tower
        self.serve = tf.function(
            self._serve,
            input_signature=[
                tf.TensorSpec([None], tf.string, name=ITEM_ID),
                tf.TensorSpec([None, text_dim], tf.float32, name=ITEM_TEXT),
                tf.TensorSpec([None], tf.string, name=ITEM_CATEGORY),
                tf.TensorSpec([None], tf.string, name=ITEM_BRAND),
                tf.TensorSpec([None], tf.float32, name=ITEM_PRICE),
            ],
        )

    def _serve(self, item_id: tf.Tensor, item_text: tf.Tensor, item_category: tf.Tensor, item_brand: tf.Tensor,
               item_price: tf.Tensor) -> tf.Tensor:
        return self.tower({ITEM_ID: item_id, ITEM_TEXT: item_text, ITEM_CATEGORY: item_category,
                           ITEM_BRAND: item_brand, ITEM_PRICE: item_price}, training=False)
