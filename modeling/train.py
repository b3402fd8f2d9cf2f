"""Training the two-tower model and publishing a versioned bundle.

``train_model`` fits the model on a leave-last-out split (validation for early
stopping, test for the reported metrics, popularity measured on the same split).
``publish`` turns the trained towers into a bundle: item vectors for the whole
catalogue and query vectors of every known shopper, computed from each
shopper's full history.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modeling import artifacts
from modeling import datasets as ds
from modeling import runtime as _runtime  # noqa: F401
from modeling.baselines import popularity_scores
from modeling.candidates import HistoryBatch, Sources, fit_sources, refit_choices
from modeling.embeddings import DEFAULT_MODEL_NAME, Embeddings, default_model_path
from modeling.errors import ArtifactError, TrainingError
from modeling.exported_text import ensure_text_export
from modeling.exported_towers import EXPORT_DIR, TOLERANCE, export_towers, largest_difference, load_towers
from modeling.features import (
    HISTORY_HALF_LIFE_DAYS,
    ItemAttributes,
    SortedHistory,
    attribute_vocabularies,
    history_windows,
    item_attributes,
    pooled_vectors,
    sort_history,
    user_windows,
    window_ids,
    window_reviews,
)
from modeling.index import ExactIndex, write_item_index, write_text_index
from modeling.metrics import (
    CURVE_KS,
    evaluate_leave_last_out,
    evaluate_shared_scores,
    leave_last_out_metrics,
    sparse_ndcg_at_10,
    user_hits_and_gains,
)
from modeling.ranking import rank_users, seen_items
from modeling.reranker import (
    STAGE_DIR,
    EarlierLists,
    ItemTables,
    Ranker,
    RankingStage,
    StageConfig,
    batched_candidate_features,
    fit_ranker,
    rows_are_unit,
    stack_lists,
    stage_summary,
)
from modeling.rows import QuantizedRows
from modeling.splits import Split, histories_before, leave_last_out_split
from modeling.two_tower import (
    HISTORY,
    HISTORY_WEIGHT,
    ITEM_BRAND,
    ITEM_CATEGORY,
    ITEM_ID,
    ITEM_POSITION,
    ITEM_PRICE,
    ITEM_PROBABILITY,
    ITEM_TEXT,
    USER_BEHAVIOUR,
    USER_ID,
    USER_TEXT,
    WEIGHT,
    CandidateTower,
    CandidateTowerServer,
    QueryTower,
    QueryTowerServer,
    TwoTowerModel,
    TwoTowerParams,
)

logger = logging.getLogger(__name__)

MIN_USERS = 2
MIN_ITEMS = 2
POPULARITY_HALF_LIFE_DAYS = 180.0
RANKER_MAX_SHOPPERS = 10_000  # validation shoppers the ranking stage learns from, at most (a random sample)
EARLIER_MAX_SHOPPERS = 1_000
"""Validation lists up to which the ranking stage also builds the lists held out earlier (:func:`earlier_lists`):
where there are more, LambdaMART has more to learn from already, and the extra lists would double its cost (the
demo shop's 2,000 lists: the stage's choice took 181 s of training with them on a shared machine)."""
# Half-lives (days) the popularity fallback chooses from on the validation items; None: no decay.
POPULARITY_HALF_LIVES: tuple[float | None, ...] = (30.0, 90.0, 180.0, 365.0, 730.0, None)


def recent_popularity(item_idx: np.ndarray, weights: np.ndarray, timestamps: np.ndarray, n_items: int,
                      *, half_life_days: float | None = POPULARITY_HALF_LIFE_DAYS) -> np.ndarray:
    """Time-decayed popularity: each interaction's weight halves every ``half_life_days`` before the latest one.

    Args:
        item_idx, weights, timestamps: (n,) interaction item positions, weights and unix seconds.
        n_items: catalogue size.
        half_life_days: None for plain summed weights.

    Returns:
        (n_items,) float32 scores.
    """
    if len(item_idx) == 0:
        return np.zeros(n_items, dtype=np.float32)
    decayed = np.asarray(weights, dtype=np.float64)
    if half_life_days is not None:
        age_days = (np.max(timestamps) - np.asarray(timestamps, dtype=np.float64)) / 86_400.0
        decayed = decayed * np.power(0.5, age_days / half_life_days)
    return popularity_scores(item_idx, decayed, n_items)


def choose_popularity_half_life(history: SortedHistory, users: np.ndarray, items: np.ndarray,
                                seen: list[np.ndarray], n_items: int) -> float | None:
    """The half-life of :data:`POPULARITY_HALF_LIVES` whose popularity ranks the validation items best (NDCG@10).

    Args:
        history: training interactions.
        users, items: (v,) validation user and item positions.
        seen: per user, the items to exclude.
        n_items: catalogue size.
    """
    best, best_score = POPULARITY_HALF_LIFE_DAYS, -1.0
    if len(users) == 0:
        return best
    for half_life in POPULARITY_HALF_LIVES:
        scores = recent_popularity(history.items, history.weights, history.timestamps, n_items,
                                   half_life_days=half_life)
        ndcg = evaluate_shared_scores(scores, users, items, seen, n_items)["ndcg@10"]
        if ndcg > best_score:
            best, best_score = half_life, ndcg
    return best


@dataclass
class Features:
    """Inputs of both towers for every user and item, aligned to user and item positions.

    Attributes:
        user_ids: (n_users,) str.
        item_ids: (n_items,) str.
        user_text: (n_users, t) float32 review-text embeddings.
        user_behaviour: (n_users, t) float32 pooled item text of each user's history window.
        history: (n_users, L) str item ids of each user's history window ("" pads).
        history_weight: (n_users, L) float32.
        item_text: (n_items, t) float32.
        attributes: category, brand and price of each item.
        stored_item_text: ``item_text`` as a bundle stores it (:func:`modeling.artifacts.stored_content`): what
            serving pools the history's text from and computes the ranking stage's text features with, so
            training does the same (rounded once here, not per use).
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    user_text: np.ndarray
    user_behaviour: np.ndarray
    history: np.ndarray
    history_weight: np.ndarray
    item_text: np.ndarray
    attributes: ItemAttributes
    stored_item_text: QuantizedRows


@dataclass
class TrainResult:
    """A trained model and what was measured on the way.

    ``test_ranked`` (t, 100) holds the top 100 items of each test user (best first) and
    ``test_items`` (t,) their held-out items, for metric@k curves. ``refit_epochs`` > 0 marks a
    model trained again on more interactions (see :func:`refit_model`).
    """

    model: TwoTowerModel
    params: TwoTowerParams
    metrics: dict[str, dict[str, float]]
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    examples_per_second: float = 0.0
    train_seconds: float = 0.0
    test_ranked: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    test_items: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    popularity_half_life_days: float | None = POPULARITY_HALF_LIFE_DAYS
    refit_epochs: int = 0
    refit_seconds: float = 0.0
    stage: RankingStage | None = None
    search: dict[str, Any] | None = None
    stage_ranked: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.int64))
    workers: int = 1
    deadline_reached: bool = False


def sorted_history(interactions: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray,
                   embeddings: Embeddings) -> SortedHistory:
    """``interactions`` as a :class:`~modeling.features.SortedHistory` over these vocabularies."""
    user_pos, item_pos = _positions(interactions, user_ids, item_ids)
    return sort_history(user_pos, item_pos, interactions[ds.TIMESTAMP].to_numpy(),
                        interactions[ds.WEIGHT].to_numpy(), len(user_ids),
                        reviews=embeddings.review_positions(interactions[ds.TEXT].to_numpy(dtype=object)))


def build_features(history: SortedHistory, user_ids: np.ndarray, item_ids: np.ndarray, embeddings: Embeddings,
                   items: pd.DataFrame, history_length: int,
                   half_life_days: float = HISTORY_HALF_LIFE_DAYS) -> Features:
    """Features of every user at the end of ``history`` (only these interactions are used).

    Args:
        history: interactions as :func:`sorted_history` gives them (a training split, or everything).
        user_ids: (n_users,) the user vocabulary.
        item_ids: (n_items,) the item vocabulary.
        embeddings: precomputed text embeddings.
        items: canonical items table whose rows are aligned with ``item_ids``.
        history_length: L.
        half_life_days: recency decay of the window weights.
    """
    item_text = embeddings.item_matrix_for(item_ids)
    user_text = embeddings.user_text_from_reviews(history.users, history.reviews, len(user_ids))
    stored_item_text = artifacts.stored_content(item_text)  # the history's text is pooled as serving pools it
    return Features(user_ids=user_ids, item_ids=item_ids, user_text=user_text, item_text=item_text,
                    attributes=item_attributes(items), stored_item_text=stored_item_text,
                    **_window_features(history, item_ids, stored_item_text, history_length, half_life_days))


def _window_features(history: SortedHistory, item_ids: np.ndarray, stored_item_text: np.ndarray | QuantizedRows,
                     history_length: int, half_life_days: float) -> dict[str, np.ndarray]:
    """Every user's window at the end of ``history``, as the query tower reads it: ``user_behaviour``
    (n_users, t) the pooled text of the window's items, ``history`` (n_users, L) their ids and
    ``history_weight`` (n_users, L) their recency weights."""
    positions, weights, _ = user_windows(history, history_length, half_life_days=half_life_days)
    return {"user_behaviour": pooled_vectors(positions, weights, stored_item_text),
            "history": window_ids(positions, item_ids), "history_weight": weights}


def query_vectors(tower: Any, features: Features, *, batch_size: int = 4096) -> np.ndarray:
    """Query vectors of every user of ``features``. Returns (n_users, d) float32."""
    import tensorflow as tf

    users = []
    for start in range(0, len(features.user_ids), batch_size):
        sl = slice(start, start + batch_size)
        users.append(tower({
            USER_ID: tf.constant(features.user_ids[sl]),
            USER_TEXT: tf.constant(features.user_text[sl]),
            USER_BEHAVIOUR: tf.constant(features.user_behaviour[sl]),
            HISTORY: tf.constant(features.history[sl]),
            HISTORY_WEIGHT: tf.constant(features.history_weight[sl]),
        }, training=False).numpy())
    dim = tower.out.units
    return (np.concatenate(users) if users else np.zeros((0, dim), dtype=np.float32)).astype(np.float32)


def candidate_inputs(item_ids: np.ndarray, item_text: np.ndarray, attributes: ItemAttributes) -> dict[str, Any]:
    """The candidate tower's input dictionary for n items (tensors)."""
    import tensorflow as tf

    return {ITEM_ID: tf.constant(np.asarray(item_ids, dtype=str)),
            ITEM_TEXT: tf.constant(np.asarray(item_text, dtype=np.float32)),
            ITEM_CATEGORY: tf.constant(np.asarray(attributes.category, dtype=str)),
            ITEM_BRAND: tf.constant(np.asarray(attributes.brand, dtype=str)),
            ITEM_PRICE: tf.constant(np.asarray(attributes.price, dtype=np.float32))}


def candidate_vectors(tower: Any, item_ids: np.ndarray, item_text: np.ndarray, attributes: ItemAttributes, *,
                      batch_size: int = 4096) -> np.ndarray:
    """Candidate vectors of n items from their ids, text (n, t) and attributes. Returns (n, d) float32."""
    parts = []
    for start in range(0, len(item_ids), batch_size):
        sl = slice(start, start + batch_size)
        chunk = ItemAttributes(attributes.category[sl], attributes.brand[sl], attributes.price[sl])
        parts.append(tower(candidate_inputs(item_ids[sl], item_text[sl], chunk), training=False).numpy())
    return (np.concatenate(parts) if parts else np.zeros((0, tower.out.units))).astype(np.float32)


def tower_vectors(model: TwoTowerModel, features: Features, *, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Query vectors of every user and candidate vectors of every item.

    Returns:
        ``(user_vectors (n_users, d), item_vectors (n_items, d))`` float32.
    """
    return (query_vectors(model.query_tower, features, batch_size=batch_size),
            candidate_vectors(model.candidate_tower, features.item_ids, features.item_text, features.attributes,
                              batch_size=batch_size))


def _positions(frame: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(r,) user and item positions of every row of ``frame`` (-1: an id the vocabulary lacks)."""
    return (pd.Index(user_ids).get_indexer(frame[ds.USER_ID].astype(str)),
            pd.Index(item_ids).get_indexer(frame[ds.ITEM_ID].astype(str)))


def _known_positions(frame: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_positions` of the rows whose user and item both vocabularies know (the others dropped)."""
    users, items = _positions(frame, user_ids, item_ids)
    known = (users >= 0) & (items >= 0)
    return users[known], items[known]


def _at_end_of(frame: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray, embeddings: Embeddings,
               data: ds.CanonicalData, params: TwoTowerParams) -> tuple[SortedHistory, Features]:
    """``frame``'s interactions as a sorted history, and every shopper's features at its end."""
    history = sorted_history(frame, user_ids, item_ids, embeddings)
    return history, build_features(history, user_ids, item_ids, embeddings, data.items, params.history_length,
                                   params.history_half_life_days)


def _training_dataset(history: SortedHistory, features: Features, embeddings: Embeddings,
                      params: TwoTowerParams, *, input_context: Any = None, epoch: int = 1) -> Any:
    """tf.data pipeline of training examples: one per interaction, predicted from the window before it.

    The windows (and their pooled text) are built per batch with numpy, so memory stays O(interactions).
    With an ``input_context`` (a ``tf.distribute.InputContext``: several training workers) the
    examples are shuffled the same way on every worker (seed + ``epoch``), repeated, and each worker
    keeps its own share, batched at its replica's part of ``params.batch_size``.
    """
    import tensorflow as tf

    item_text = features.item_text
    review_text = np.asarray(embeddings.review_text, dtype=np.float32)
    n = len(history.items)
    length = params.history_length

    def windows(users: np.ndarray, items: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        ends = rows if params.causal_history else history.ends[users]
        positions, weights, source = history_windows(history, ends, history.starts[users], length, targets=items,
                                                     half_life_days=params.history_half_life_days)
        reviews = window_reviews(history, source)
        return (positions + 1, weights, pooled_vectors(positions, weights, features.stored_item_text),
                pooled_vectors(reviews, None, review_text))

    ids_with_pad = tf.constant(np.concatenate([[""], features.item_ids.astype(str)]))
    user_id_t = tf.constant(features.user_ids)
    item_id_t = tf.constant(features.item_ids)
    item_text_t = tf.constant(item_text)
    category_t = tf.constant(features.attributes.category)
    brand_t = tf.constant(features.attributes.brand)
    price_t = tf.constant(features.attributes.price)
    # How often each item is a training positive, i.e. how often it shows up as an in-batch negative.
    # Raised to logq_strength: the correction subtracts logq_strength * log(frequency) from the logits.
    item_probability_t = tf.constant(
        np.power(np.bincount(history.items, minlength=len(features.item_ids)) / max(1, n),
                 params.logq_strength).astype(np.float32))
    text_dim = item_text.shape[1]

    def gather(u: tf.Tensor, i: tf.Tensor, w: tf.Tensor, r: tf.Tensor) -> dict[str, tf.Tensor]:
        positions, weights, behaviour, review = tf.numpy_function(
            windows, [u, i, r], [tf.int64, tf.float32, tf.float32, tf.float32], stateful=False)
        positions.set_shape([None, length])
        weights.set_shape([None, length])
        behaviour.set_shape([None, text_dim])
        review.set_shape([None, text_dim])
        return {
            USER_ID: tf.gather(user_id_t, u), USER_TEXT: review, USER_BEHAVIOUR: behaviour,
            HISTORY: tf.gather(ids_with_pad, positions), HISTORY_WEIGHT: weights,
            ITEM_ID: tf.gather(item_id_t, i), ITEM_TEXT: tf.gather(item_text_t, i),
            ITEM_CATEGORY: tf.gather(category_t, i), ITEM_BRAND: tf.gather(brand_t, i),
            ITEM_PRICE: tf.gather(price_t, i), WEIGHT: w, ITEM_PROBABILITY: tf.gather(item_probability_t, i),
            ITEM_POSITION: i,
        }

    examples = tf.data.Dataset.from_tensor_slices((history.users, history.items, history.weights, np.arange(n)))
    if input_context is None:
        examples = examples.shuffle(n, seed=params.seed, reshuffle_each_iteration=True).batch(params.batch_size)
    else:
        examples = (examples.shuffle(n, seed=params.seed + epoch, reshuffle_each_iteration=True).repeat()
                    .shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
                    .batch(input_context.get_per_replica_batch_size(params.batch_size)))
    return examples.map(gather, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).prefetch(tf.data.AUTOTUNE)


def served_query_vectors(tower: Any, features: Features, users: np.ndarray) -> np.ndarray:
    """Query vectors of ``users`` (m,) as the serving path computes them: without review text. Returns (m, d)."""
    rows = Features(user_ids=features.user_ids[users], item_ids=features.item_ids,
                    user_text=np.zeros_like(features.user_text[users]),
                    user_behaviour=features.user_behaviour[users], history=features.history[users],
                    history_weight=features.history_weight[users], item_text=features.item_text,
                    attributes=features.attributes, stored_item_text=features.stored_item_text)
    return query_vectors(tower, rows)


def history_batch(history: SortedHistory, users: np.ndarray) -> HistoryBatch:
    """The interactions of ``users`` (m,) in ``history``, oldest first."""
    return HistoryBatch([history.items[history.starts[u]:history.ends[u]] for u in users],
                        [history.timestamps[history.starts[u]:history.ends[u]] for u in users])


def item_tables(features: Features, popularity: np.ndarray) -> ItemTables:
    """The ranking stage's per-item inputs from the training features and a popularity vector (n_items,).

    The text vectors are rounded to the precision a bundle stores them in (:data:`modeling.artifacts.CONTENT_DTYPE`),
    so the ranker learns from the text features serving computes, not from ones a rounding away."""
    attributes = features.attributes
    content = np.asarray(features.item_text)
    return ItemTables.build(attributes.category, attributes.brand, attributes.price,
                            features.stored_item_text, popularity, content_unit=rows_are_unit(content))


STOPPING_SHARE = 0.5
"""Share of the validation shoppers whose items choose the two-tower's epoch (and search trial); the ranking
stage's choice is measured on the others, where the two-tower's scores are not flattered by that choice."""


def stopping_shoppers(n: int, seed: int = 0) -> np.ndarray:
    """(n,) bool: which of n validation shoppers early stopping uses (a seeded half; all when n < 8)."""
    if n < 8:
        return np.ones(n, dtype=bool)
    chosen = np.zeros(n, dtype=bool)
    chosen[np.random.default_rng(seed).permutation(n)[: int(round(n * STOPPING_SHARE))]] = True
    return chosen


def fit_ranking_stage(model: TwoTowerModel, history: SortedHistory, features: Features, item_vectors: np.ndarray,
                      tables: ItemTables,
                      val_u: np.ndarray, val_i: np.ndarray, selection: np.ndarray | None = None, *, seed: int = 0,
                      params: TwoTowerParams | None = None,
                      popularity_half_life_days: float | None = POPULARITY_HALF_LIFE_DAYS,
                      validation: tuple[SortedHistory, Features] | None = None,
                      say: Callable[[str], None] = logger.info) -> RankingStage:
    """Fit the second stage on the validation items, with every source fitted without them.

    The item-item and transition sources are fitted on ``history`` (the training interactions; EASE's
    λ and the sequential rules chosen on the validation items), the towers were trained on the same
    interactions, and the ranker learns to put each validation item first among its shopper's candidates
    (see :func:`modeling.reranker.fit_ranker`), each list built from the history the item is ranked from.

    Args:
        model: the trained two-tower model.
        history: training interactions.
        features: features at the end of ``history``.
        item_vectors: (n_items, d) the trained candidate tower's vectors.
        tables: the stage's per-item inputs (:func:`item_tables`, popularity over ``history``).
        val_u, val_i: (v,) validation user and item positions.
        selection: (v,) bool, the shoppers whose items choose among the rankers (all when None); the
            ranker learns from every validation shopper.
        params: the towers' parameters (their history window); with them, and at most
            :data:`EARLIER_MAX_SHOPPERS` validation lists, LambdaMART may also learn from each validation
            shopper's list :attr:`StageConfig.earlier_positions` steps earlier (:func:`earlier_lists`).
        popularity_half_life_days: the popularity of ``tables`` (the earlier lists' is computed the same way).
        validation: the histories the validation items are ranked from and the features at their end
            (:func:`validation_inputs`: each shopper's training interactions before the item was found);
            default ``history`` and ``features``.
    """
    val_history, val_features = validation if validation is not None else (history, features)
    selection = np.ones(len(val_u), dtype=bool) if selection is None else np.asarray(selection, dtype=bool)
    sources = fit_stage_sources(history, len(features.user_ids), len(features.item_ids), val_u, val_i, val_history,
                                say=say)
    config = StageConfig(seed=seed)
    if len(val_u) == 0:
        return RankingStage(sources, Ranker("feature", "two_tower"), config, {"choice": "feature:two_tower",
                                                                             "shoppers": 0})
    lists = validation_lists(model, val_history, item_vectors, tables, sources, val_features, val_u, val_i,
                             selection, config)
    earlier = None
    if params is not None and config.earlier_positions > 0 and len(lists.targets) <= EARLIER_MAX_SHOPPERS:
        earlier = earlier_lists(model, history, features, item_vectors, sources, val_u[ranker_sample(len(val_u), seed)],
                                config, params=params, popularity_half_life_days=popularity_half_life_days)
        say(f"ranking stage: {len(earlier)} lists held out up to {config.earlier_positions} step(s) earlier")
    ranker, report = fit_ranker(lists.candidates, lists.features, lists.targets, config=config,
                                selection=lists.selection, earlier=earlier, say=say)
    return RankingStage(sources, ranker, config, report)


def fit_stage_sources(history: SortedHistory, n_users: int, n_items: int, val_u: np.ndarray, val_i: np.ndarray,
                      val_history: SortedHistory, *, say: Callable[[str], None] = logger.info) -> Sources:
    """The ranking stage's sources fitted on ``history`` (the training interactions), the item-item source (EASE
    and its λ or item-kNN and its neighbours) and the sequential rules' window and history chosen on the
    validation items (``val_u``, ``val_i`` (v,) positions), each ranked
    from ``val_history`` (the histories before the items were found, :func:`validation_inputs`); the defaults
    without validation items."""
    seen = seen_items(history.users, history.items, n_users)
    matrix = None

    def validation_ndcg(model: Any) -> np.ndarray:  # EASE or item-kNN, from the shoppers' training rows: (v,)
        nonlocal matrix
        if matrix is None:
            from modeling.baselines import interaction_matrix

            matrix = interaction_matrix(history.users, history.items, n_users, n_items)
        ranked = rank_users(lambda u: model.score(matrix[u]), val_u, seen, 10)
        return user_hits_and_gains(ranked, val_i, 10)[1]

    val_batch, val_seen = history_batch(val_history, val_u), [seen[u] for u in val_u]  # the same products
    popular_place = np.empty(n_items, dtype=np.int64)
    popular_place[np.argsort(-np.bincount(history.items, minlength=n_items), kind="stable")] = np.arange(n_items)

    def choose_sequence(rules: Any, length: int) -> float:  # called for each of the grid's 9 (window, history)
        scores = val_batch.propagate_recent(rules, length)
        return float(np.mean(sparse_ndcg_at_10(scores, val_i, val_seen, popular_place)))

    return fit_sources(history.users, history.items, n_users, n_items, validate=validation_ndcg if len(val_u) else None,
                       choose_sequence=choose_sequence if len(val_u) else None, say=say)


def ranker_sample(n: int, seed: int) -> np.ndarray:
    """(≤ n,) sorted positions of the validation shoppers the ranking stage learns from: all of them, or a seeded
    sample of :data:`RANKER_MAX_SHOPPERS` above that."""
    if n <= RANKER_MAX_SHOPPERS:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, RANKER_MAX_SHOPPERS, replace=False))


def without_last(history: SortedHistory, steps: int) -> tuple[SortedHistory, np.ndarray]:
    """``history`` without each shopper's last ``steps`` interactions (their first one always kept).

    Returns:
        ``(shorter history, rows)``: rows (n_users,) is the row of ``history`` holding each shopper's
        interaction ``steps`` from their last (-1 for a shopper with at most ``steps`` interactions).
    """
    lengths = history.ends - history.starts
    kept = np.maximum(np.minimum(lengths, 1), lengths - steps)
    keep = np.arange(len(history.items)) < (history.starts + kept)[history.users]
    ends = np.cumsum(kept)
    shorter = SortedHistory(items=history.items[keep], timestamps=history.timestamps[keep],
                            weights=history.weights[keep], users=history.users[keep], starts=ends - kept, ends=ends,
                            reviews=history.reviews[keep])
    return shorter, np.where(lengths > steps, history.ends - steps, -1)


def features_at_end(history: SortedHistory, features: Features, params: TwoTowerParams) -> Features:
    """``features`` with every shopper's history window at the end of ``history`` (another cut of the same
    interactions), as serving builds them: no review text."""
    return replace(features, user_text=np.zeros_like(features.user_text),
                   **_window_features(history, features.item_ids, features.stored_item_text, params.history_length,
                                      params.history_half_life_days))


def earlier_lists(model: TwoTowerModel, history: SortedHistory, features: Features, item_vectors: np.ndarray,
                  sources: Sources, users: np.ndarray, config: StageConfig, *, params: TwoTowerParams,
                  popularity_half_life_days: float | None) -> EarlierLists:
    """Lists of ``users`` (m,) (validation shoppers) held out 1 to :attr:`StageConfig.earlier_positions` steps
    before the end of ``history``, for the ranker to learn from.

    For each step s, every shopper's last s training interactions are removed; the sources are fitted again
    on what is left (with ``sources``' choices, :func:`~modeling.candidates.refit_choices`), popularity and
    each shopper's window are computed at its end, and the list of every shopper with more than s interactions is built
    as the validation lists are, the interaction s from the last held out. The towers themselves trained on
    these interactions, so their scores are somewhat flattered here; the ranker is still chosen only on the
    validation lists.

    Returns:
        :class:`~modeling.reranker.EarlierLists`, ``owner`` the position of each list's shopper in ``users``.
    """
    n_users, n_items = len(features.user_ids), len(features.item_ids)
    index = ExactIndex(item_vectors)
    parts: list[EarlierLists] = []
    for steps in range(1, config.earlier_positions + 1):
        shorter, rows = without_last(history, steps)
        owner = np.flatnonzero(rows[users] >= 0)
        if not len(owner):
            break
        chosen = users[owner]
        fitted = fit_sources(shorter.users, shorter.items, n_users, n_items, **refit_choices(sources))
        recent = recent_popularity(shorter.items, shorter.weights, shorter.timestamps, n_items,
                                   half_life_days=popularity_half_life_days)
        seen = seen_items(shorter.users, shorter.items, n_users)
        query = served_query_vectors(model.query_tower, features_at_end(shorter, features, params), chosen)
        candidates, feats = batched_candidate_features(query, item_vectors, index, fitted,
                                                       item_tables(features, recent), history_batch(shorter, chosen),
                                                       [seen[u] for u in chosen], config)
        parts.append(EarlierLists(candidates, feats, history.items[rows[chosen]], owner))
    candidates, feats = stack_lists([(p.candidates, p.features) for p in parts])
    none = np.zeros(0, dtype=np.int64)
    return EarlierLists(candidates, feats, np.concatenate([none, *(p.targets for p in parts)]),
                        np.concatenate([none, *(p.owner for p in parts)]))


@dataclass
class ValidationLists:
    """What the ranker learns from: each validation shopper's candidates and their features.

    candidates (v, C) item positions, -1 pads; features (v, C, len(FEATURES)); targets (v,) the held-out
    items; selection (v,) bool, the shoppers whose items choose among the rankers.
    """

    candidates: np.ndarray
    features: np.ndarray
    targets: np.ndarray
    selection: np.ndarray


def validation_lists(model: TwoTowerModel, history: SortedHistory, item_vectors: np.ndarray, tables: ItemTables,
                     sources: Sources, features: Features, val_u: np.ndarray, val_i: np.ndarray,
                     selection: np.ndarray, config: StageConfig) -> ValidationLists:
    """The validation shoppers' candidate lists, from sources and towers fitted without their items
    (at most :data:`RANKER_MAX_SHOPPERS` shoppers, a seeded sample above), each shopper read from ``history``
    and ``features`` (the histories the items are ranked from, :func:`validation_inputs`)."""
    keep = ranker_sample(len(val_u), config.seed)
    val_u, val_i, selection = val_u[keep], val_i[keep], selection[keep]
    seen = seen_items(history.users, history.items, len(features.user_ids))
    query = served_query_vectors(model.query_tower, features, val_u)
    candidates, feats = batched_candidate_features(query, item_vectors, ExactIndex(item_vectors), sources, tables,
                                                   history_batch(history, val_u), [seen[u] for u in val_u], config)
    return ValidationLists(candidates, feats, val_i, selection)


@dataclass
class StageInputs:
    """What the ranking stage of a model is fitted on, from a split's training interactions.

    ``history`` and ``features``: the training interactions and every shopper's features at their end;
    ``val_u``/``val_i`` (v,): the validation shoppers and items (positions; ids unknown to the vocabularies
    dropped); ``tables``: the items' feature inputs with the training interactions' recent popularity;
    ``item_vectors`` (n_items, d): the candidate tower's vectors; ``validation_history`` and
    ``validation_features``: what the validation items are ranked from (:func:`validation_inputs`).
    """

    history: SortedHistory
    features: Features
    val_u: np.ndarray
    val_i: np.ndarray
    tables: ItemTables
    item_vectors: np.ndarray
    validation_history: SortedHistory
    validation_features: Features


def stage_inputs(result: TrainResult, data: ds.CanonicalData, embeddings: Embeddings, split: Split) -> StageInputs:
    """The ranking stage's inputs for ``result``'s towers on ``split`` (what :func:`add_ranking_stage` fits the
    stage on; benchmarks and tests rebuild the validation lists from these)."""
    user_ids = data.users[ds.USER_ID].astype(str).to_numpy()
    item_ids = data.items[ds.ITEM_ID].astype(str).to_numpy()
    history, features = _at_end_of(split.train, user_ids, item_ids, embeddings, data, result.params)
    val_u, val_i = _known_positions(split.validation, user_ids, item_ids)
    recent = recent_popularity(history.items, history.weights, history.timestamps, len(item_ids),
                               half_life_days=result.popularity_half_life_days)
    item_vectors = candidate_vectors(result.model.candidate_tower, features.item_ids, features.item_text,
                                     features.attributes)
    cut = validation_inputs(split, history, features, user_ids, item_ids, embeddings, data, result.params)
    return StageInputs(history, features, val_u, val_i, item_tables(features, recent), item_vectors, *cut)


@dataclass
class PreparedFit:
    """What fitting the towers needs, built the same way in one process and on every training worker.

    ``val_u``/``val_i`` (v,) are the validation shoppers and items (positions), ``stopping`` (v,) bool
    marks the ones early stopping watches (the others train the ranking stage). ``validation_history`` and
    ``validation_features``: the histories the validation items are ranked from and every shopper's features at
    their end (:func:`validation_inputs`; ``history`` and ``features`` themselves where nothing is cut).
    """

    model: TwoTowerModel
    params: TwoTowerParams
    split: Split
    user_ids: np.ndarray
    item_ids: np.ndarray
    history: SortedHistory
    features: Features
    seen: list[np.ndarray]
    val_u: np.ndarray
    val_i: np.ndarray
    stopping: np.ndarray
    validation_history: SortedHistory
    validation_features: Features

    def validation_metrics(self) -> dict[str, float] | None:
        """HR@10 and NDCG@10 on the early-stopping shoppers, each ranked from the history before their item was
        found; None when there are none."""
        users, items = self.val_u[self.stopping], self.val_i[self.stopping]
        if not len(users):
            return None
        user_vectors, item_vectors = tower_vectors(self.model, self.validation_features)
        return evaluate_leave_last_out(lambda u: user_vectors[u] @ item_vectors.T, users, items, self.seen,
                                       len(self.item_ids))


@dataclass
class FitOutcome:
    """The towers' weights at the best epoch and the epochs' log (see :func:`fit_epochs`)."""

    weights: list[np.ndarray]
    history: list[dict[str, float]]
    best_epoch: int
    seconds: float
    examples: int = 0
    deadline_reached: bool = False


def check_trainable(data: ds.CanonicalData) -> None:
    """Refuse data too small to train on; cheap, so that a caller can check before doing work for it
    (building its embeddings).

    Raises:
        TrainingError: fewer than :data:`MIN_USERS` users or :data:`MIN_ITEMS` items, or no interactions.
    """
    n_users, n_items = len(data.users), len(data.items)
    if n_users < MIN_USERS or n_items < MIN_ITEMS:
        raise TrainingError(f"need at least {MIN_USERS} users and {MIN_ITEMS} items, "
                            f"got {n_users} users and {n_items} items")
    if len(data.interactions) == 0:
        raise TrainingError("no training interactions")


def prepare_fit(data: ds.CanonicalData, embeddings: Embeddings, params: TwoTowerParams,
                split: Split | None = None) -> PreparedFit:
    """Vocabularies, training history, features and a compiled (unbuilt) model for ``data``.

    Under a ``tf.distribute`` strategy's scope the model's variables belong to that strategy.

    Raises:
        TrainingError: when there are too few users, items or interactions.
    """
    import tensorflow as tf

    check_trainable(data)
    user_ids = data.users[ds.USER_ID].astype(str).to_numpy()
    item_ids = data.items[ds.ITEM_ID].astype(str).to_numpy()
    split = split or leave_last_out_split(data.interactions)
    if len(split.train) == 0:
        raise TrainingError("no training interactions")
    tf.keras.utils.set_random_seed(params.seed)

    history, features = _at_end_of(split.train, user_ids, item_ids, embeddings, data, params)
    seen = seen_items(history.users, history.items, len(user_ids))

    categories, brands = attribute_vocabularies(features.attributes)
    candidate_tower = CandidateTower(list(item_ids), categories, brands, params)
    shared = (candidate_tower.item_lookup, candidate_tower.item_embedding) if params.share_item_embedding else None
    full = len(item_ids) <= params.full_softmax_max_items
    catalogue = candidate_inputs(item_ids, features.item_text, features.attributes) if full else None
    model = TwoTowerModel(QueryTower(list(user_ids), list(item_ids), params, shared), candidate_tower, params,
                          catalogue)
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=params.learning_rate))

    val_u, val_i = _known_positions(split.validation, user_ids, item_ids)
    stopping = stopping_shoppers(len(val_u), params.seed)
    validation_history, validation_features = validation_inputs(split, history, features, user_ids, item_ids,
                                                                embeddings, data, params)
    return PreparedFit(model=model, params=params, split=split, user_ids=user_ids, item_ids=item_ids, history=history,
                       features=features, seen=seen, val_u=val_u, val_i=val_i, stopping=stopping,
                       validation_history=validation_history, validation_features=validation_features)


def _local_epochs(fit: PreparedFit, embeddings: Embeddings, params: TwoTowerParams) -> Callable[[int], float]:
    """One epoch in this process: ``epoch -> summed loss`` (the task's loss is summed over each batch)."""
    import tensorflow as tf

    dataset = _training_dataset(fit.history, fit.features, embeddings, params)
    batch_losses: list[float] = []
    record = tf.keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: batch_losses.append(float(logs["loss"])))

    def one_epoch(epoch: int) -> float:
        batch_losses.clear()
        fit.model.fit(dataset, epochs=1, verbose=0, callbacks=[record])
        return sum(batch_losses)

    return one_epoch


def fit_epochs(fit: PreparedFit, one_epoch: Callable[[int], float], *,
               on_epoch: Callable[[dict[str, float]], None] | None = None, examples_per_epoch: int | None = None,
               validate: bool = True, agree: Callable[[bool], bool] | None = None,
               deadline: float | None = None) -> FitOutcome:
    """Train epoch by epoch with early stopping on the validation shoppers; keep the best epoch's weights.

    Args:
        fit: the prepared model and data.
        one_epoch: trains one epoch (``epoch`` counts from 1) and returns its summed loss.
        on_epoch: called after each epoch, see :func:`train_model`.
        examples_per_epoch: what the summed loss is divided by (default: the training interactions).
        validate: False on a training worker that is not the chief: it neither measures nor keeps weights
            and follows ``agree``.
        agree: given this process's decision to stop, returns the decision every worker follows.
        deadline: a ``time.time()`` after which no epoch starts (the one under way ends, and the best
            epoch so far is kept; ``deadline_reached`` says so); None: no deadline. Decided where
            ``validate`` is True, like early stopping.

    Returns:
        The best epoch's weights (empty when ``validate`` is False) and the log.
    """
    epochs, patience = fit.params.epochs, fit.params.patience
    examples = examples_per_epoch or len(fit.history.items)
    history_log: list[dict[str, float]] = []
    best_score, best_epoch, best_weights, waited = -1.0, 0, [], 0
    started = time.perf_counter()
    late = False
    for epoch in range(1, epochs + 1):
        loss = one_epoch(epoch) / max(1, examples)
        val = fit.validation_metrics() if validate else None
        row = {"epoch": epoch, "loss": loss, "val_hr@10": val["hr@10"] if val else 0.0,
               "val_ndcg@10": val["ndcg@10"] if val else 0.0}
        history_log.append(row)
        stop = False
        if validate:
            logger.info("epoch %d/%d: loss %.4f, validation HR@10 %.4f", epoch, epochs, loss, row["val_hr@10"])
            if on_epoch is not None:
                on_epoch({**row, "epochs": epochs})
            if val is None or val["ndcg@10"] > best_score:  # without validation items every epoch is kept
                best_score, best_epoch, best_weights, waited = row["val_ndcg@10"], epoch, fit.model.get_weights(), 0
            else:
                waited += 1
                stop = waited >= patience
            if not stop and epoch < epochs and deadline is not None and time.time() >= deadline:
                stop = late = True
                logger.info("stopped after epoch %d: the time budget is spent", epoch)
        if agree is not None:
            stop = agree(stop)
        if stop:
            break
    return FitOutcome(weights=best_weights, history=history_log, best_epoch=best_epoch,
                      seconds=time.perf_counter() - started, examples=len(fit.history.items) * len(history_log),
                      deadline_reached=late)


def build_variables(model: TwoTowerModel, dataset: Any) -> None:
    """Create the towers' variables by computing the loss of one batch of ``dataset``."""
    for batch in dataset.take(1):
        model.compute_loss(batch, training=False)


def _set_weights(model: TwoTowerModel, weights: list[np.ndarray]) -> None:
    shapes = [tuple(w.shape) for w in model.get_weights()]
    if shapes != [tuple(w.shape) for w in weights]:
        raise TrainingError("the training workers returned weights of another shape than this model's")
    model.set_weights(weights)


def train_model(data: ds.CanonicalData, embeddings: Embeddings, params: TwoTowerParams | None = None, *,
                split: Split | None = None,
                on_epoch: Callable[[dict[str, float]], None] | None = None,
                stage: RankingStage | None = None, ranking_stage: bool = True, workers: int = 1,
                deadline: float | None = None) -> TrainResult:
    """Fit the two-tower model and the ranking stage on a leave-last-out split of ``data``.

    Args:
        data: canonical tables.
        embeddings: text embeddings of the same data.
        params: hyper-parameters.
        split: a precomputed split (default: :func:`leave_last_out_split`).
        on_epoch: called after each epoch with ``{"epoch", "epochs", "loss", "val_hr@10", "val_ndcg@10"}``;
            ``loss`` is the epoch's mean loss per training example (weighted softmax cross-entropy).
        stage: keep this ranking stage's ranker (its sources are fitted again on ``split.train``)
            instead of fitting one on the validation items.
        ranking_stage: False: the two-tower alone (a search trial); see :func:`add_ranking_stage`.
        workers: training processes; more than 1 fits the towers on that many local worker
            processes with ``tf.distribute.MultiWorkerMirroredStrategy`` (see :mod:`modeling.distributed`);
            the rest (validation, test, ranking stage) runs here.
        deadline: a ``time.time()`` after which the towers start no new epoch (see :func:`fit_epochs`);
            the result's ``deadline_reached`` says whether it cut the training short.

    Returns:
        The trained model and ranking stage with validation history and test metrics of the
        two-tower alone, the popularity baseline and both stages together:
        ``metrics = {"two_tower": {...}, "popularity": {...}, "hybrid": {...}}``.

    Raises:
        TrainingError: when there are too few users, items or interactions, or a worker fails.
    """
    params = params or TwoTowerParams()
    if workers < 1:
        raise TrainingError(f"workers must be 1 or more, got {workers}")
    fit = prepare_fit(data, embeddings, params, split)
    model, history, features = fit.model, fit.history, fit.features
    if workers > 1:
        from modeling.distributed import fit_on_workers

        outcome = fit_on_workers(data, embeddings, params, fit.split, workers=workers, on_epoch=on_epoch,
                                 deadline=deadline)
        build_variables(model, _training_dataset(history, features, embeddings, params))
        _set_weights(model, outcome.weights)
    else:
        outcome = fit_epochs(fit, _local_epochs(fit, embeddings, params), on_epoch=on_epoch, deadline=deadline)
        model.set_weights(outcome.weights)
    history_log, best_epoch, train_seconds = outcome.history, outcome.best_epoch, outcome.seconds
    split, user_ids, item_ids, seen = fit.split, fit.user_ids, fit.item_ids, fit.seen
    val_u, val_i, stopping = fit.val_u, fit.val_i, fit.stopping

    # Test: the validation interactions join the input history (and the excluded items), as they would
    # in production, which ends where each test item was found; the model itself was fitted on the training
    # interactions only.
    test_u, test_i = _known_positions(split.test, user_ids, item_ids)
    test_history, test_features = _at_end_of(inputs_for_test(split), user_ids, item_ids, embeddings, data, params)
    test_seen = seen_items(test_history.users, test_history.items, len(user_ids))
    popularity = popularity_scores(history.items, history.weights, len(item_ids))
    user_vectors, item_vectors = tower_vectors(model, test_features)
    test_ranked = rank_users(lambda u: user_vectors[u] @ item_vectors.T, test_u, test_seen, max(CURVE_KS))
    metrics = {
        "two_tower": leave_last_out_metrics(test_ranked, test_i, len(item_ids)),
        "popularity": evaluate_shared_scores(popularity, test_u, test_i, test_seen, len(item_ids)),
    }
    half_life = choose_popularity_half_life(history, val_u, val_i, seen, len(item_ids))
    examples = len(history.items) * len(history_log)
    result = TrainResult(model=model, params=params, metrics=metrics, history=history_log, best_epoch=best_epoch,
                         examples_per_second=examples / train_seconds if train_seconds else 0.0,
                         train_seconds=train_seconds, test_ranked=test_ranked, test_items=test_i,
                         popularity_half_life_days=half_life, workers=workers,
                         deadline_reached=outcome.deadline_reached)
    if ranking_stage:
        _attach_stage(result, history, features, (val_u, val_i, ~stopping), test_history, test_features,
                      (test_u, test_i), test_seen, stage, item_vectors,
                      validation_histories=(fit.validation_history, fit.validation_features))
    return result


def _attach_stage(result: TrainResult, history: SortedHistory, features: Features,
                  validation: tuple[np.ndarray, np.ndarray, np.ndarray], test_history: SortedHistory,
                  test_features: Features,
                  test: tuple[np.ndarray, np.ndarray], test_seen: list[np.ndarray],
                  stage: RankingStage | None = None, item_vectors: np.ndarray | None = None,
                  tables: ItemTables | None = None,
                  validation_histories: tuple[SortedHistory, Features] | None = None) -> None:
    """Fit (or re-source) the ranking stage of ``result`` and measure both stages on the test items.

    ``item_vectors`` (n_items, d): the candidate tower's vectors, and ``tables`` the items' feature inputs from
    ``history``, when already computed (computed here if None); ``validation_histories``: what the validation
    items are ranked from (see :func:`fit_ranking_stage`).
    """
    n_users, n_items = len(features.user_ids), len(features.item_ids)
    if tables is None:
        recent = recent_popularity(history.items, history.weights, history.timestamps, n_items,
                                   half_life_days=result.popularity_half_life_days)
        tables = item_tables(features, recent)
    if item_vectors is None:
        item_vectors = candidate_vectors(result.model.candidate_tower, features.item_ids, features.item_text,
                                         features.attributes)
    if stage is None:
        stage = fit_ranking_stage(result.model, history, features, item_vectors, tables, *validation,
                                  seed=result.params.seed, params=result.params,
                                  popularity_half_life_days=result.popularity_half_life_days,
                                  validation=validation_histories, say=logger.info)
    else:  # the ranker of an earlier run, over sources fitted on these interactions
        stage = RankingStage(fit_sources(history.users, history.items, n_users, n_items,
                                         **refit_choices(stage.sources)),
                             stage.ranker, stage.config, stage.report)
    result.stage = stage
    test_u, test_i = test
    if len(test_u):
        query = served_query_vectors(result.model.query_tower, test_features, test_u)
        result.stage_ranked, _ = stage.rank(query, item_vectors, ExactIndex(item_vectors), tables,
                                            history_batch(test_history, test_u), [test_seen[u] for u in test_u],
                                            max(CURVE_KS))
        result.metrics["hybrid"] = leave_last_out_metrics(result.stage_ranked, test_i, n_items)


def inputs_for_test(split: Split) -> pd.DataFrame:
    """The interactions the test items are ranked from: each shopper's training and validation interactions
    before their test item was found (:func:`modeling.splits.histories_before`; every interaction of the two
    for a split made by hand, which holds no time order)."""
    if split.order:
        return histories_before(split, "test")
    return pd.concat([split.train, split.validation], ignore_index=True)


def validation_inputs(split: Split, history: SortedHistory, features: Features, user_ids: np.ndarray,
                      item_ids: np.ndarray, embeddings: Embeddings, data: ds.CanonicalData, params: TwoTowerParams
                      ) -> tuple[SortedHistory, Features]:
    """The histories the validation items are ranked from, and every shopper's features at their end.

    Each shopper's training interactions before their validation item was found
    (:func:`modeling.splits.histories_before`), as the test items are ranked (:func:`inputs_for_test`) and as the
    service ranks: what a shopper did after finding the item is not known at that moment. The towers and the
    ranking stage's sources still learn from every training interaction (``history``, ``features`` at its end);
    those are returned as they are when nothing is cut (no shopper went back to an earlier product after finding
    their validation item, or a split made by hand, which holds no time order).
    """
    if not split.order or len(split.validation) == 0:
        return history, features
    cut = histories_before(split, "validation")
    if len(cut) == len(split.train):  # the same rows in the same order
        return history, features
    return _at_end_of(cut, user_ids, item_ids, embeddings, data, params)


def add_ranking_stage(result: TrainResult, data: ds.CanonicalData, embeddings: Embeddings, split: Split) -> None:
    """Fit the ranking stage of a model trained without one (``train_model(..., ranking_stage=False)``) on ``split``."""
    user_ids = data.users[ds.USER_ID].astype(str).to_numpy()
    item_ids = data.items[ds.ITEM_ID].astype(str).to_numpy()
    inputs = stage_inputs(result, data, embeddings, split)
    test_history, test_features = _at_end_of(inputs_for_test(split), user_ids, item_ids, embeddings, data,
                                             result.params)
    test_seen = seen_items(test_history.users, test_history.items, len(user_ids))
    _attach_stage(result, inputs.history, inputs.features,
                  (inputs.val_u, inputs.val_i, ~stopping_shoppers(len(inputs.val_u), result.params.seed)),
                  test_history, test_features, _known_positions(split.test, user_ids, item_ids), test_seen,
                  item_vectors=inputs.item_vectors, tables=inputs.tables,
                  validation_histories=(inputs.validation_history, inputs.validation_features))


def refit_model(data: ds.CanonicalData, embeddings: Embeddings, measured: TrainResult, *,
                split: Split | None = None,
                on_epoch: Callable[[dict[str, float]], None] | None = None, workers: int = 1) -> TrainResult:
    """Train again, on the interactions that were held out too, for the epochs early stopping chose.

    :func:`train_model` holds every shopper's last two products out (validation and test), so
    its model never learns from the newest interactions. Once the held-out run has measured
    the recipe and chosen the number of epochs, the same parameters are trained for that many
    epochs on ``split.train`` (default: every interaction) with no early stopping.

    Args:
        data: canonical tables.
        embeddings: text embeddings of the same data.
        measured: the held-out run (parameters, best epoch, metrics).
        split: what to train on and, if it has test rows, measure (its validation is ignored; with a time
            order, as :func:`modeling.splits.for_refit` gives, the test items are ranked from the histories
            before they were found). Default: every interaction, nothing measured.
        on_epoch: as for :func:`train_model`, with ``"refit": True`` in each row (the validation
            figures are 0: there are no validation items).
        workers: training processes (see :func:`train_model`).

    Returns:
        The refitted model. Its ``metrics`` are those of ``split.test`` when it has rows, else the
        held-out run's (a model trained the same way on less data); ``params`` and ``history`` are
        the held-out run's, ``refit_epochs`` the epochs trained.
    """
    epochs = max(1, measured.best_epoch)
    nothing = data.interactions.iloc[:0]
    order = {} if split is None or not split.order else {**split.order, "validation": np.zeros(0, dtype=np.int64)}
    split = Split(train=data.interactions if split is None else split.train, validation=nothing,
                  test=nothing if split is None else split.test, order=order)
    marked = None if on_epoch is None else (lambda row: on_epoch({**row, "refit": True}))
    refit = train_model(data, embeddings, replace(measured.params, epochs=epochs), split=split, on_epoch=marked,
                        stage=measured.stage, workers=workers)
    measured_test = len(split.test) > 0
    return TrainResult(
        model=refit.model, params=measured.params,
        metrics=refit.metrics if measured_test else measured.metrics,
        history=measured.history, best_epoch=measured.best_epoch,
        examples_per_second=refit.examples_per_second, train_seconds=measured.train_seconds,
        test_ranked=refit.test_ranked if measured_test else measured.test_ranked,
        test_items=refit.test_items if measured_test else measured.test_items,
        popularity_half_life_days=measured.popularity_half_life_days,
        refit_epochs=epochs, refit_seconds=refit.train_seconds, stage=refit.stage, search=measured.search,
        stage_ranked=refit.stage_ranked if measured_test else measured.stage_ranked, workers=refit.workers,
    )


def training_fingerprint(data_fingerprint: str, embeddings_fingerprint: str, params: TwoTowerParams, *,
                         refit: bool = False, budget_seconds: float = 0.0) -> str:
    """Identifies a training run's inputs: data, embeddings, parameters, search budget and refit choice."""
    payload = json.dumps({"data": data_fingerprint, "embeddings": embeddings_fingerprint,
                          "params": params.to_dict(), "format": artifacts.BUNDLE_FORMAT,
                          **({"refit": True} if refit else {}),
                          **({"budget_seconds": budget_seconds} if budget_seconds > 0 else {})}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def publish(result: TrainResult, data: ds.CanonicalData, embeddings: Embeddings, models_dir: Path | str, *,
            version: str | None = None, interactions: pd.DataFrame | None = None,
            fingerprint: str | None = None, export_text: bool = True, published_from: str | None = None,
            ann_min_items: int | None = None) -> Path:
    """Write the trained model and its ranking stage as a bundle (not activated).

    Known-shopper vectors use features from each shopper's history window at the end of
    ``interactions``; popularity is recent popularity over them, with the half-life chosen on the
    validation items (see :func:`choose_popularity_half_life`); the ranking stage's item-item and
    transition sources are fitted again on them (with the λ chosen in training), its ranker kept.

    Args:
        interactions: what the bundle may know (default: every interaction of ``data``; the
            evaluation passes the interactions its models were fitted on).
        fingerprint: the run's :func:`training_fingerprint` (default: from the result's parameters, no search).
        published_from: the version whose model this bundle publishes again over more interactions
            (recorded in the manifest; ``rollback`` skips it).
        export_text: name (and make, once per text model) the ONNX export of the text encoder under
            ``models_dir/text_encoder/`` (:mod:`modeling.exported_text`), which serving encodes with.
        ann_min_items: from this many products on, an approximate index over the product vectors is
            built, tuned on the trained shoppers' vectors and stored in the bundle (:mod:`modeling.index`;
            None: never), and one over the products' text vectors for text queries.

    Returns:
        The bundle directory.
    """
    interactions = data.interactions if interactions is None else interactions
    user_ids = data.users[ds.USER_ID].astype(str).to_numpy()
    item_ids = data.items[ds.ITEM_ID].astype(str).to_numpy()
    history, features = _at_end_of(interactions, user_ids, item_ids, embeddings, data, result.params)
    user_vectors, item_vectors = tower_vectors(result.model, features)
    arrays = artifacts.BundleArrays(
        item_ids=item_ids,
        item_vectors=item_vectors,
        item_content=features.item_text,
        user_ids=user_ids,
        user_vectors=user_vectors,
        popularity=recent_popularity(history.items, history.weights, history.timestamps, len(item_ids),
                                     half_life_days=result.popularity_half_life_days),
    )
    if result.stage is None:
        raise TrainingError("the trained model has no ranking stage")
    stage = RankingStage(fit_sources(history.users, history.items, len(user_ids), len(item_ids),
                                     **refit_choices(result.stage.sources)),
                         result.stage.ranker, result.stage.config, result.stage.report)
    def save(directory: Path) -> None:
        save_towers(result.model, embeddings.dim, directory)
        manifest["exported_towers"] = exported_difference(directory, features, user_vectors, item_vectors)
        stage.save(directory / STAGE_DIR, features.attributes)
        if ann_min_items is not None and len(item_ids) >= ann_min_items:
            manifest["item_index"] = write_item_index(directory, item_vectors, user_vectors)
            manifest["text_index"] = write_text_index(directory, features.item_text)

    manifest: dict[str, Any] = {
        "model": "two_tower",
        "data_fingerprint": data.fingerprint,
        "embeddings": {k: embeddings.manifest.get(k) for k in ("fingerprint", "model_name", "dim", "created")},
        "training_fingerprint": fingerprint or training_fingerprint(
            data.fingerprint, embeddings.manifest["fingerprint"], result.params, refit=result.refit_epochs > 0),
        "refit_epochs": result.refit_epochs,
        "refit_seconds": round(result.refit_seconds, 2),
        "params": result.params.to_dict(),
        "metrics": result.metrics,
        "history": result.history,
        "best_epoch": result.best_epoch,
        "train_seconds": round(result.train_seconds, 2),
        "examples_per_second": round(result.examples_per_second, 1),
        "training_workers": result.workers,
        "data_counts": data.counts(),
        "trained_until": int(interactions[ds.TIMESTAMP].max()) if len(interactions) else None,
        # what it learned from, however it was read (files or the database): a retraining tells the rows recorded
        # again by a forced import from rows recorded late
        "interactions_fingerprint": ds.interactions_fingerprint(interactions),
        # the largest database interaction id when the data was read (None: not read from the service's database)
        "last_interaction_id": data.report.get("last_interaction_id"),
        "popularity_half_life_days": result.popularity_half_life_days,
        "ranking_stage": stage_summary(stage),
        "search": result.search,
        **({"published_from": published_from} if published_from else {}),
    }
    text_model = _text_model_path(embeddings) if export_text else None
    if text_model is not None:
        try:
            manifest["text_encoder"] = ensure_text_export(models_dir, text_model)
        except ArtifactError as exc:  # the bundle is still good: serving then encodes with sentence-transformers
            logger.warning("no ONNX text encoder for this bundle: %s", exc)
    return artifacts.write_bundle(models_dir, arrays, manifest, save, version=version)


def _text_model_path(embeddings: Embeddings) -> str | None:
    """The sentence-transformers folder the embeddings were built with, or None when it is gone."""
    path = embeddings.manifest.get("model_path")
    if path and Path(path).is_dir():
        return str(path)
    if embeddings.manifest.get("model_name") == DEFAULT_MODEL_NAME:
        return default_model_path()
    logger.warning("the text model of the embeddings (%s) is not here: the bundle names no text encoder export, "
                   "serving encodes text with sentence-transformers", embeddings.manifest.get("model_name"))
    return None


def save_towers(model: TwoTowerModel, text_dim: int, directory: Path) -> None:
    """Write a model's towers into a bundle folder: as SavedModels and as numpy arrays (what serving runs)."""
    import tensorflow as tf

    tf.saved_model.save(QueryTowerServer(model.query_tower, text_dim), str(directory / artifacts.QUERY_TOWER_DIR))
    tf.saved_model.save(CandidateTowerServer(model.candidate_tower, text_dim),
                        str(directory / artifacts.CANDIDATE_TOWER_DIR))
    export_towers(model.query_tower, model.candidate_tower, directory / EXPORT_DIR)


def exported_difference(directory: Path, features: Features, user_vectors: np.ndarray, item_vectors: np.ndarray, *,
                        batch_size: int = 4096) -> dict[str, Any]:
    """Check the numpy towers written to ``directory`` against TensorFlow's vectors of the same inputs.

    Args:
        features: the inputs ``user_vectors`` (n_users, d) and ``item_vectors`` (n_items, d) were computed from.

    Returns:
        ``{"query": max abs difference, "candidate": ..., "tolerance": TOLERANCE}``.

    Raises:
        ArtifactError: when either difference exceeds the tolerance.
    """
    query, candidate = load_towers(directory / EXPORT_DIR)
    attributes = features.attributes

    def in_batches(n: int, compute: Callable[[slice], np.ndarray]) -> np.ndarray:
        parts = [compute(slice(start, start + batch_size)) for start in range(0, n, batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, query.dim), np.float32)

    users = in_batches(len(features.user_ids), lambda sl: query.serve(
        user_id=features.user_ids[sl], user_text=features.user_text[sl], user_behaviour=features.user_behaviour[sl],
        history=features.history[sl], history_weight=features.history_weight[sl]))
    items = in_batches(len(features.item_ids), lambda sl: candidate.serve(
        item_id=features.item_ids[sl], item_text=features.item_text[sl], item_category=attributes.category[sl],
        item_brand=attributes.brand[sl], item_price=attributes.price[sl]))
    return {
        "query": largest_difference(users, user_vectors),
        "candidate": largest_difference(items, item_vectors),
        "tolerance": TOLERANCE,
    }


def find_trained_version(models_dir: Path | str, fingerprint: str) -> str | None:
    """The newest bundle in ``models_dir`` trained from exactly these inputs that this version can serve, if any (one
    written by another version of the service is not reused: training again replaces it)."""
    for version in reversed(artifacts.list_versions(models_dir)):
        manifest_path = Path(models_dir) / version / artifacts.MANIFEST_FILE
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if manifest.get("training_fingerprint") != fingerprint:
            continue
        problem = artifacts.incompatibility(Path(models_dir) / version, manifest)
        if problem:
            logger.info("model %s was trained from the same inputs, but %s: training again", version, problem)
            continue
        return version
    return None
