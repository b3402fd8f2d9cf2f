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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from modeling import artifacts
from modeling import datasets as ds
from modeling import runtime as _runtime  # noqa: F401
from modeling.embeddings import Embeddings, behaviour_embeddings
from modeling.errors import TrainingError
from modeling.evaluate import Split, evaluate_leave_last_out, leave_last_out_split, popularity_scores, seen_items
from modeling.two_tower import (
    ITEM_ID,
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


def recent_popularity(item_idx: np.ndarray, weights: np.ndarray, timestamps: np.ndarray, n_items: int,
                      *, half_life_days: float = POPULARITY_HALF_LIFE_DAYS) -> np.ndarray:
    """Time-decayed popularity: each interaction's weight halves every ``half_life_days`` before the latest one.

    Args:
        item_idx, weights, timestamps: (n,) interaction item positions, weights and unix seconds.
        n_items: catalogue size.

    Returns:
        (n_items,) float32 scores.
    """
    if len(item_idx) == 0:
        return np.zeros(n_items, dtype=np.float32)
    age_days = (np.max(timestamps) - np.asarray(timestamps, dtype=np.float64)) / 86_400.0
    decayed = np.asarray(weights, dtype=np.float64) * np.power(0.5, age_days / half_life_days)
    return popularity_scores(item_idx, decayed, n_items)


@dataclass
class Features:
    """Dense inputs of both towers, aligned to user and item positions.

    Attributes:
        user_ids: (n_users,) str.
        item_ids: (n_items,) str.
        user_text: (n_users, t) float32.
        user_behaviour: (n_users, t) float32.
        item_text: (n_items, t) float32.
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    user_text: np.ndarray
    user_behaviour: np.ndarray
    item_text: np.ndarray


@dataclass
class TrainResult:
    """A trained model and what was measured on the way."""

    model: TwoTowerModel
    params: TwoTowerParams
    metrics: dict[str, dict[str, float]]
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = 0
    examples_per_second: float = 0.0
    train_seconds: float = 0.0


def build_features(interactions: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray,
                   embeddings: Embeddings) -> Features:
    """Text and behaviour features from ``interactions`` (only these rows are used).

    Args:
        interactions: canonical interactions (a training split, or everything).
        user_ids: (n_users,) the user vocabulary.
        item_ids: (n_items,) the item vocabulary.
        embeddings: precomputed text embeddings.
    """
    user_pos = pd.Index(user_ids).get_indexer(interactions[ds.USER_ID].astype(str))
    item_pos = pd.Index(item_ids).get_indexer(interactions[ds.ITEM_ID].astype(str))
    keep = (user_pos >= 0) & (item_pos >= 0)
    item_text = embeddings.item_matrix_for(item_ids)
    behaviour = behaviour_embeddings(
        user_pos[keep], item_pos[keep], interactions[ds.TIMESTAMP].to_numpy()[keep],
        interactions[ds.WEIGHT].to_numpy()[keep], item_text, len(user_ids),
    )
    texts = interactions[ds.TEXT].to_numpy(dtype=object)[keep]
    user_text = embeddings.user_text_from_history(user_pos[keep], texts, len(user_ids))
    return Features(user_ids=user_ids, item_ids=item_ids, user_text=user_text, user_behaviour=behaviour,
                    item_text=item_text)


def tower_vectors(model: TwoTowerModel, features: Features, *, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Query vectors of every user and candidate vectors of every item.

    Returns:
        ``(user_vectors (n_users, d), item_vectors (n_items, d))`` float32.
    """
    import tensorflow as tf

    users = []
    for start in range(0, len(features.user_ids), batch_size):
        sl = slice(start, start + batch_size)
        users.append(model.query_tower({
            USER_ID: tf.constant(features.user_ids[sl]),
            USER_TEXT: tf.constant(features.user_text[sl]),
            USER_BEHAVIOUR: tf.constant(features.user_behaviour[sl]),
        }, training=False).numpy())
    items = []
    for start in range(0, len(features.item_ids), batch_size):
        sl = slice(start, start + batch_size)
        items.append(model.candidate_tower({
            ITEM_ID: tf.constant(features.item_ids[sl]),
            ITEM_TEXT: tf.constant(features.item_text[sl]),
        }, training=False).numpy())
    dim = model.query_tower.out.units
    user_vectors = np.concatenate(users) if users else np.zeros((0, dim), dtype=np.float32)
    return user_vectors.astype(np.float32), np.concatenate(items).astype(np.float32)


def _positions(frame: pd.DataFrame, user_ids: np.ndarray, item_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (pd.Index(user_ids).get_indexer(frame[ds.USER_ID].astype(str)),
            pd.Index(item_ids).get_indexer(frame[ds.ITEM_ID].astype(str)))


def train_model(data: ds.CanonicalData, embeddings: Embeddings, params: TwoTowerParams | None = None, *,
                split: Split | None = None,
                on_epoch: Callable[[dict[str, float]], None] | None = None) -> TrainResult:
    """Fit the two-tower model on a leave-last-out split of ``data``.

    Args:
        data: canonical tables.
        embeddings: text embeddings of the same data.
        params: hyper-parameters.
        split: a precomputed split (default: :func:`leave_last_out_split`).
        on_epoch: called after each epoch with ``{"epoch", "epochs", "loss", "val_hr@10", "val_ndcg@10"}``.

    Returns:
        The trained model with validation history and test metrics of the model and of
        the popularity baseline: ``metrics = {"two_tower": {...}, "popularity": {...}}``.

    Raises:
        TrainingError: when there are too few users, items or interactions.
    """
    import tensorflow as tf

    params = params or TwoTowerParams()
    user_ids = data.users[ds.USER_ID].astype(str).to_numpy()
    item_ids = data.items[ds.ITEM_ID].astype(str).to_numpy()
    if len(user_ids) < MIN_USERS or len(item_ids) < MIN_ITEMS:
        raise TrainingError(f"need at least {MIN_USERS} users and {MIN_ITEMS} items, "
                            f"got {len(user_ids)} users and {len(item_ids)} items")
    split = split or leave_last_out_split(data.interactions)
    if len(split.train) == 0:
        raise TrainingError("no training interactions")
    tf.keras.utils.set_random_seed(params.seed)

    features = build_features(split.train, user_ids, item_ids, embeddings)
    train_u, train_i = _positions(split.train, user_ids, item_ids)
    weights = split.train[ds.WEIGHT].to_numpy(dtype=np.float32)
    seen = seen_items(train_u, train_i, len(user_ids))

    # Constant feature tables; the dataset carries only positions and is gathered per batch.
    user_id_t = tf.constant(user_ids)
    item_id_t = tf.constant(item_ids)
    user_text_t = tf.constant(features.user_text)
    user_beh_t = tf.constant(features.user_behaviour)
    item_text_t = tf.constant(features.item_text)
    # How often each item is a training positive, i.e. how often it shows up as an in-batch negative.
    item_probability_t = tf.constant(
        (np.bincount(train_i[train_i >= 0], minlength=len(item_ids)) / max(1, int((train_i >= 0).sum())))
        .astype(np.float32))

    def gather(u: tf.Tensor, i: tf.Tensor, w: tf.Tensor) -> dict[str, tf.Tensor]:
        return {
            USER_ID: tf.gather(user_id_t, u), USER_TEXT: tf.gather(user_text_t, u),
            USER_BEHAVIOUR: tf.gather(user_beh_t, u), ITEM_ID: tf.gather(item_id_t, i),
            ITEM_TEXT: tf.gather(item_text_t, i), WEIGHT: w, ITEM_PROBABILITY: tf.gather(item_probability_t, i),
        }

    dataset = (
        tf.data.Dataset.from_tensor_slices((train_u.astype(np.int32), train_i.astype(np.int32), weights))
        .shuffle(len(train_u), seed=params.seed, reshuffle_each_iteration=True)
        .batch(params.batch_size)
        .map(gather, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )

    model = TwoTowerModel(QueryTower(list(user_ids), params), CandidateTower(list(item_ids), params), params)
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=params.learning_rate))

    val_u, val_i = _positions(split.validation, user_ids, item_ids)
    valid = (val_u >= 0) & (val_i >= 0)
    val_u, val_i = val_u[valid], val_i[valid]

    def evaluate_on(users: np.ndarray, items: np.ndarray) -> dict[str, float]:
        user_vectors, item_vectors = tower_vectors(model, features)
        return evaluate_leave_last_out(lambda u: user_vectors[u] @ item_vectors.T, users, items, seen, len(item_ids))

    history: list[dict[str, float]] = []
    best_score, best_epoch, best_weights, waited = -1.0, 0, model.get_weights(), 0
    started = time.perf_counter()
    for epoch in range(1, params.epochs + 1):
        fit = model.fit(dataset, epochs=1, verbose=0)
        loss = float(fit.history["loss"][-1])
        val = evaluate_on(val_u, val_i) if len(val_u) else {"hr@10": 0.0, "ndcg@10": 0.0}
        history.append({"epoch": epoch, "loss": loss, "val_hr@10": val["hr@10"], "val_ndcg@10": val["ndcg@10"]})
        logger.info("epoch %d/%d: loss %.4f, validation HR@10 %.4f", epoch, params.epochs, loss, val["hr@10"])
        if on_epoch is not None:
            on_epoch({**history[-1], "epochs": params.epochs})
        if val["ndcg@10"] > best_score:
            best_score, best_epoch, best_weights, waited = val["ndcg@10"], epoch, model.get_weights(), 0
        else:
            waited += 1
            if waited >= params.patience:
                break
    train_seconds = time.perf_counter() - started
    model.set_weights(best_weights)

    test_u, test_i = _positions(split.test, user_ids, item_ids)
    ok = (test_u >= 0) & (test_i >= 0)
    test_u, test_i = test_u[ok], test_i[ok]
    popularity = popularity_scores(train_i, weights, len(item_ids))
    metrics = {
        "two_tower": evaluate_on(test_u, test_i),
        "popularity": evaluate_leave_last_out(lambda u: np.tile(popularity, (len(u), 1)), test_u, test_i, seen,
                                              len(item_ids)),
    }
    examples = len(train_u) * len(history)
    return TrainResult(model=model, params=params, metrics=metrics, history=history, best_epoch=best_epoch,
                       examples_per_second=examples / train_seconds if train_seconds else 0.0,
                       train_seconds=train_seconds)


def training_fingerprint(data_fingerprint: str, embeddings_fingerprint: str, params: TwoTowerParams) -> str:
    """Identifies a training run's inputs: data, embeddings and parameters."""
    payload = json.dumps({"data": data_fingerprint, "embeddings": embeddings_fingerprint,
                          "params": params.to_dict(), "format": artifacts.BUNDLE_FORMAT}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def publish(result: TrainResult, data: ds.CanonicalData, embeddings: Embeddings, models_dir: Path | str, *,
            version: str | None = None) -> Path:
    """Write the trained model as a bundle (not activated).

    Known-shopper vectors use features from each shopper's full history; popularity is
    recent popularity over every interaction (see :func:`recent_popularity`).

    Returns:
        The bundle directory.
    """
    import tensorflow as tf

    user_ids = data.users[ds.USER_ID].astype(str).to_numpy()
    item_ids = data.items[ds.ITEM_ID].astype(str).to_numpy()
    features = build_features(data.interactions, user_ids, item_ids, embeddings)
    user_vectors, item_vectors = tower_vectors(result.model, features)
    _, all_items = _positions(data.interactions, user_ids, item_ids)
    arrays = artifacts.BundleArrays(
        item_ids=item_ids,
        item_vectors=item_vectors,
        item_content=features.item_text,
        user_ids=user_ids,
        user_vectors=user_vectors,
        popularity=recent_popularity(all_items[all_items >= 0],
                                     data.interactions[ds.WEIGHT].to_numpy()[all_items >= 0],
                                     data.interactions[ds.TIMESTAMP].to_numpy()[all_items >= 0], len(item_ids)),
    )
    text_dim = embeddings.dim

    def save_towers(directory: Path) -> None:
        tf.saved_model.save(QueryTowerServer(result.model.query_tower, text_dim),
                            str(directory / artifacts.QUERY_TOWER_DIR))
        tf.saved_model.save(CandidateTowerServer(result.model.candidate_tower, text_dim),
                            str(directory / artifacts.CANDIDATE_TOWER_DIR))

    manifest: dict[str, Any] = {
        "model": "two_tower",
        "data_fingerprint": data.fingerprint,
        "embeddings": {k: embeddings.manifest.get(k) for k in ("fingerprint", "model_name", "dim", "created")},
        "training_fingerprint": training_fingerprint(data.fingerprint, embeddings.manifest["fingerprint"],
                                                     result.params),
        "params": result.params.to_dict(),
        "metrics": result.metrics,
        "history": result.history,
        "best_epoch": result.best_epoch,
        "train_seconds": round(result.train_seconds, 2),
        "examples_per_second": round(result.examples_per_second, 1),
        "data_counts": data.counts(),
        "popularity_half_life_days": POPULARITY_HALF_LIFE_DAYS,
    }
    return artifacts.write_bundle(models_dir, arrays, manifest, save_towers, version=version)


def find_trained_version(models_dir: Path | str, fingerprint: str) -> str | None:
    """The newest bundle in ``models_dir`` trained from exactly these inputs, if any."""
    for version in reversed(artifacts.list_versions(models_dir)):
        manifest_path = Path(models_dir) / version / artifacts.MANIFEST_FILE
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if manifest.get("training_fingerprint") == fingerprint:
            return version
    return None
