"""Recommendation use cases: serving, reloading, model versions."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from modeling import artifacts
from modeling.errors import ArtifactError
from modeling.recommender import History
from recoapi import metrics
from recoapi.catalog import selectors as catalog_selectors
from recoapi.catalog.services import (
    EventSpec,
    RecordResult,
    data_import,
    event_place,
    import_filters_from_settings,
    interactions_record,
)
from recoapi.env import RETENTION_MAX_DAYS
from recoapi.exceptions import ApplicationError, Conflict, NotFound, ServiceUnavailable
from recoapi.recommendations import experiments, feedback, impressions, model_store
from recoapi.recommendations.engine import Engine, registry, text_encoder
from recoapi.recommendations.engine import after_request as release_after_request
from recoapi.recommendations.models import (
    ANONYMOUS,
    SIMILAR_ITEMS,
    VISITOR,
    Experiment,
    ExperimentArm,
    ModelVersion,
    RecommendationList,
)

if TYPE_CHECKING:  # modeling.two_tower imports TensorFlow, which the web process loads only on demand
    from modeling.two_tower import TwoTowerParams

logger = logging.getLogger(__name__)


def _engine_or_503() -> Engine:
    engine = registry.current()
    if engine is None:
        failure = model_load_failure()
        if failure:
            raise ServiceUnavailable(failure, code="model_not_loaded")
        if model_store.store() is not None:
            raise ServiceUnavailable(
                "No active model: none is marked active in the database the hosts share (a model activated before "
                "RECO_MODEL_STORE was set is not). Activate one on any host: `POST /reload_model` with its "
                "\"version\" (which also publishes it to the store), or `python manage.py train --activate`.",
                code="no_model",
            )
        raise ServiceUnavailable(
            "No active model. Train one with `python manage.py train --activate`.", code="no_model"
        )
    return engine


def model_load_failure() -> str | None:
    """Why this worker could not load the active model ("The active model V cannot be loaded: ..."), without
    server paths; None when it loaded (or was never tried)."""
    failure = registry.failure()
    if failure is None:
        return None
    version, reason = failure
    reason = _public(ArtifactError(reason))
    for prefix in (f"models/{version}: ", f"{version}: ", f"models/{version}/", f"{version}/"):
        reason = reason.removeprefix(prefix)  # the bundle's folder: the version named before it
    return f"The active model {version} cannot be loaded: {reason}"


def _item_payloads(engine: Engine, positions: np.ndarray, scores: np.ndarray) -> list[dict[str, Any]]:
    """The items of an answer, in order."""
    ids = engine.recommender.item_ids[positions].tolist()
    titles, brands, categories, prices = engine.item_columns(positions)
    return [{"item_id": str(item), "score": round(score, 6), "title": title, "brand": brand, "category": category,
             "price": price}
            for item, score, title, brand, category, price in zip(ids, scores.tolist(), titles, brands, categories,
                                                                  prices, strict=True)]


def _answer_payloads(rankings: dict[str, tuple[Engine, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Each shopper's items with their ``position`` (1 = first), the products' details read
    once per engine for all the shoppers (100 shoppers' lists: one read of 1,000 products instead of 100 of 10)."""
    groups: dict[int, tuple[Engine, list[str]]] = {}
    for user, (engine, _) in rankings.items():
        groups.setdefault(id(engine), (engine, []))[1].append(user)
    out: dict[str, list[dict[str, Any]]] = {}
    for engine, users in groups.values():
        lists = [rankings[user][1] for user in users]
        positions = np.concatenate([np.asarray(r.items, dtype=np.int64) for r in lists])
        scores = np.concatenate([np.asarray(r.scores, dtype=np.float64) for r in lists])
        items = _item_payloads(engine, positions, scores)
        start = 0
        for user, ranking in zip(users, lists, strict=True):
            out[user] = items[start:start + len(ranking.items)]
            for place, item in enumerate(out[user], start=1):
                item["position"] = place
            start += len(ranking.items)
    return out


def _histories(raw: dict[str, list[tuple[str, int, float, str]]]) -> dict[str, History]:
    return {
        user: History(item_ids=np.asarray([r[0] for r in rows], dtype=object),
                      timestamps=np.asarray([r[1] for r in rows], dtype=np.int64),
                      weights=np.asarray([r[2] for r in rows], dtype=np.float64))
        for user, rows in raw.items()
    }


def _still_held(user_ids: list[str], raw: dict[str, Any]) -> set[str]:
    """Of ``user_ids`` without interactions in ``raw`` (their histories), those the database still holds as shoppers:
    the model may answer them from their stored vectors (a later export without their events replaced those), not
    a shopper removed since (an import's ``--replace``, staff). One indexed query, only when some id has no
    interactions."""
    without = [user for user in user_ids if user not in raw]
    return catalog_selectors.shopper_existing_ids(ids=without) if without else set()


def _encode_text(engine: Engine, text: str) -> np.ndarray:
    """The (t,) vector of a visitor's text; 503 when the model's text encoder cannot be loaded."""
    try:
        return text_encoder(engine.recommender.bundle).encode([text])[0]
    except ArtifactError as exc:
        logger.error("text encoder of model %s: %s", engine.version, exc)
        raise ServiceUnavailable("Text queries are unavailable: the model's text encoder could not be loaded.",
                                 code="text_encoder_unavailable") from exc


def recommendation_list(
    *,
    user_ids: list[str],
    k: int,
    category: str | None = None,
    min_price: float | None = None,
    max_price: float | None = None,
    exclude_seen: bool = True,
    include_history: bool = False,
    context_items: list[str] | None = None,
    context_text: str | None = None,
    explain: bool = False,
    record: bool = True,
) -> dict[str, Any]:
    """Top-k products for each shopper, with the strategy used.

    Known to the model -> "two_tower"; in the database with a history but not in the
    model -> "content" (query tower on the history's behaviour embedding); otherwise ->
    "popular" (recent popularity). An anonymous visitor described by recently viewed
    products and/or a text gets "content" under the key ``"anonymous"``. Unavailable
    products are never recommended; by default neither are products the shopper already has.
    ``category`` keeps products whose category path starts with it, ignoring case.

    Raises:
        NotFound: no product's category starts with ``category`` (code "unknown_category"; the
            message lists the top-level categories), or none of ``context_items`` is known.
        ApplicationError: a price filter on a catalogue without any price (422, code "no_prices"); the shopper id
            ``"anonymous"`` (the visitor's key in the answer) among ``user_ids`` beside a visitor's items or text (400).

    Returns:
        ``{"model_version": str, "recommendations": {user_id: {"recommendation_id", "strategy", "items": [...],
        ["history"], ["experiment"]}}}``; each item has its ``position`` (1 = first). While an experiment runs,
        each shopper is answered by their arm (:mod:`recoapi.recommendations.experiments`) and the entry
        names it (``{"name", "arm", "model_version"}``). Each list is recorded as shown
        (:mod:`recoapi.recommendations.impressions`, in the background) and counted in ``/metrics`` by strategy
        unless ``record`` is False (a preview that no shopper sees: the admin).
    """
    # With items or text, "anonymous" is the visitor's key in the answer; without, a shopper's id like any other.
    visitor_key = ANONYMOUS if context_items or context_text else None
    if visitor_key and ANONYMOUS in user_ids:
        raise ApplicationError(f"users: {ANONYMOUS!r} is the key of the visitor's list (items, text) in the answer, so "
                               "a shopper of that id and a visitor cannot be answered together: ask for them in two "
                               "requests.", code="invalid")
    engine = _engine_or_503()
    if category and not engine.category_mask(category).any():
        raise NotFound(_unknown_category_message(engine, category), code="unknown_category")
    if (min_price is not None or max_price is not None) and not engine.has_prices:
        raise ApplicationError("No product has a price, so min_price and max_price would leave nothing to "
                               "recommend: leave them out (prices come with the product data; see \"Using your own "
                               "data\").", code="no_prices", status_code=422)
    raw = catalog_selectors.shopper_histories(ids=user_ids)
    histories = _histories(raw)
    stored_for = _still_held(user_ids, raw)
    keys = list(user_ids)
    if visitor_key:
        known = set(engine.recommender.item_positions(context_items or []).tolist())
        if context_items and not known:
            raise NotFound("None of the given products is known to the service.", code="unknown_item")
        text = _encode_text(engine, context_text) if context_text else None
        items = np.asarray(context_items or [], dtype=object)
        histories[ANONYMOUS] = History(item_ids=items, timestamps=np.zeros(len(items), dtype=np.int64),
                                       weights=np.ones(len(items)), text=text)
        keys.append(ANONYMOUS)
    plan = experiments.plan()
    groups: dict[experiments.Arm | None, list[str]] = {}
    for user in keys:  # visitors are not split: they get what everyone gets without the experiment
        groups.setdefault(None if user == visitor_key else plan.arm_for(user), []).append(user)
    answered: dict[str, tuple[Engine, Any, experiments.Arm | None]] = {}
    for arm, users in groups.items():
        arm_engine = registry.engine_for(arm.model_version, engine) if arm is not None and arm.model_version \
            else engine
        allowed = arm_engine.allowed(category=category, min_price=min_price, max_price=max_price)
        rankings = arm_engine.recommender.recommend(users, histories, k, allowed, exclude_seen=exclude_seen,
                                                    variant=arm.setting if arm is not None else plan.setting,
                                                    stored_for=stored_for)
        answered.update({user: (arm_engine, rankings[user], arm) for user in users})
    if record:  # a preview is no shopper's answer: not in the traffic's strategy counts either
        metrics.shoppers_answered([answered[user][1].strategy for user in keys])
    payloads = _answer_payloads({user: (engine, ranking) for user, (engine, ranking, _) in answered.items()})
    result: dict[str, Any] = {}
    shown: list[impressions.Shown] = []
    now = timezone.now()
    for user in keys:
        user_engine, ranking, arm = answered[user]
        entry: dict[str, Any] = {
            "recommendation_id": impressions.new_list_id(),
            "strategy": ranking.strategy,
            "items": payloads[user],
        }
        if arm is not None:
            entry["experiment"] = {"name": plan.name, "arm": arm.name, "model_version": user_engine.version}
        shown.append(impressions.Shown(entry["recommendation_id"], now, VISITOR if user == visitor_key else user,
                                       entry["strategy"], user_engine.version,
                                       [item["item_id"] for item in entry["items"]],
                                       plan.experiment_id if arm is not None else None,
                                       arm.name if arm is not None else ""))
        if explain:
            _add_reasons(user_engine, entry, histories.get(user), ranking.items)
        if include_history and user != visitor_key:
            entry["history"] = _history_payload(user_engine, raw.get(user, []))
        result[user] = entry
    if record:
        impressions.record(shown)
    release_after_request(len(keys))
    return {"model_version": engine.version, "recommendations": result}


def _add_reasons(engine: Engine, entry: dict[str, Any], history: History | None, items: np.ndarray) -> None:
    """Each item's ``reason`` (see RecommendationsInput's ``explain``)."""
    sources = (engine.recommender.explain(history, items, trained=entry["strategy"] == "two_tower")
               if history is not None and entry["strategy"] != "popular" else np.full(len(items), -1))
    otherwise = ("popular" if entry["strategy"] == "popular" else
                 "text" if history is not None and history.text is not None else "model")
    for payload, source in zip(entry["items"], sources, strict=True):
        if source >= 0:
            payload["reason"] = {"kind": "history", "item_id": str(engine.recommender.item_ids[source]),
                                 "title": engine.info(int(source)).title}
        else:
            payload["reason"] = {"kind": otherwise}


def _unknown_category_message(engine: Engine, category: str, shown: int = 30) -> str:
    tops = engine.top_level_categories
    listed = ", ".join(tops[:shown]) + (f" and {len(tops) - shown} more" if len(tops) > shown else "")
    inside = engine.products.path_holding(category)  # a level further down: a RetailRocket category id, say
    hint = f" It is a level of {inside!r}: give the path from its start." if inside else ""
    return (f"No product's category starts with {category.strip()!r} (matching ignores case).{hint} "
            f"Top-level categories: {listed or 'none'}.")


def _history_payload(engine: Engine, rows: list[tuple[str, int, float, str]]) -> list[dict[str, Any]]:
    latest = rows[-settings.RECO_HISTORY_LENGTH:][::-1]
    positions = engine.recommender.item_positions([r[0] for r in latest]) if latest else []
    titles = dict(zip((str(engine.recommender.item_ids[p]) for p in positions), engine.products.titles(positions),
                      strict=True))
    return [{"item_id": item, "event": event, "timestamp": datetime.fromtimestamp(ts, UTC).isoformat(),
             "title": titles.get(item, "")} for item, ts, _w, event in latest]


def similar_item_list(*, item_id: str, k: int, record: bool = True) -> dict[str, Any]:
    """The k available products nearest to ``item_id`` in the candidate-tower space.

    A product out of stock has neighbours (its page may show alternatives); a product removed from the catalogue
    has none, though the model still holds its vector. The list has a ``recommendation_id`` and each item its
    ``position`` (1 = first); unless ``record`` is False (a HEAD probe shows no one anything) the list is recorded
    as shown (:mod:`recoapi.recommendations.impressions`) under the visitor's shopper id, as it is asked for
    without one: the events sent with its id are attributed to it, whoever the shopper is.

    Raises:
        NotFound: when the product is not in the catalogue, or not in the active model.
    """
    engine = _engine_or_503()
    positions = engine.recommender.item_positions([item_id])
    if len(positions) == 0 or not engine.known[positions[0]]:
        if len(positions) == 0 and catalog_selectors.product_rows(ids=[item_id]):
            raise NotFound(f"Product {item_id!r} is not in the active model.", code="unknown_item")
        raise NotFound(f"Product {item_id!r} is not in the catalogue.", code="unknown_item")
    query = np.asarray(engine.recommender.item_vectors[positions], dtype=np.float32)
    top, scores = engine.recommender.rank(query, [positions], k, engine.allowed())
    valid = top[0] >= 0
    items = _item_payloads(engine, top[0][valid], scores[0][valid])
    for place, item in enumerate(items, start=1):
        item["position"] = place
    recommendation_id = impressions.new_list_id()
    if record:
        impressions.record([impressions.Shown(recommendation_id, timezone.now(), VISITOR, SIMILAR_ITEMS,
                                              engine.version, [item["item_id"] for item in items])])
    return {"model_version": engine.version, "item_id": item_id, "recommendation_id": recommendation_id,
            "items": items}


def _read_manifest(models_dir: Path, version: str) -> dict[str, Any]:
    return json.loads((models_dir / version / artifacts.MANIFEST_FILE).read_text(encoding="utf-8"))


@transaction.atomic
def model_version_sync() -> list[ModelVersion]:
    """Mirror the bundles (this host's models/, and the shared store's when there is one) into the
    ModelVersion table. Without a store the active flag mirrors models/ACTIVE; with one, the table is where
    the active version is kept, and its flag is left as it is."""
    shared = model_store.store() is not None
    active = model_store.active_version()
    versions, complete = model_store.versions()
    rows = []
    for version in versions:
        try:
            manifest = model_store.read_manifest(version)
        except ArtifactError:
            logger.warning("skipping model %s: unreadable manifest", version)
            continue
        # with a store the table is the truth: an existing row's flag is left to activations
        rows.append(model_store.upsert_version(version, manifest, active=None if shared else version == active))
    if complete:
        ModelVersion.objects.exclude(version__in=versions).delete()
    return rows


def model_version_check_deletable(*, versions: list[str]) -> None:
    """Refuse to delete the active model version (the one every worker serves).

    Raises:
        Conflict: one of ``versions`` is active (named by ``models/ACTIVE`` or marked active), or an arm of the
            running experiment.
    """
    active = {model_store.active_version()}
    active |= set(ModelVersion.objects.filter(is_active=True).values_list("version", flat=True))
    refused = sorted(set(versions) & (active - {None}))
    if refused:
        raise Conflict(
            f"Model {refused[0]} is the active model and cannot be deleted: the service answers with it. "
            "Activate another version first (the action \"Activate the selected version\" or "
            "POST /reload_model), then delete this one.", code="active_model")
    in_test = sorted(set(versions) & set(ExperimentArm.objects.filter(experiment__status=Experiment.RUNNING)
                                         .values_list("model_version", flat=True)))
    if in_test:
        raise Conflict(f"Model {in_test[0]} is an arm of the running experiment and cannot be deleted: stop the "
                       "experiment first.", code="model_in_experiment")


def model_version_delete(*, versions: list[str]) -> list[str]:
    """Delete model versions: their bundles (from the shared store too, with one) and their rows. Without this a
    deleted row came back with the next :func:`model_version_sync`, as its bundle was still there.

    Returns:
        the versions deleted, oldest first.

    Raises:
        Conflict: one of ``versions`` is active or in a running experiment (nothing is deleted).
        ApplicationError: a bundle cannot be removed (code ``model_not_removed``; those before it are deleted).
    """
    model_version_check_deletable(versions=versions)
    deleted = []
    for version in sorted(set(versions)):
        try:
            model_store.remove(version)
        except ArtifactError as exc:
            raise ApplicationError(f"Model {version} could not be deleted: {_public(exc)}",
                                   code="model_not_removed", status_code=503) from exc
        ModelVersion.objects.filter(version=version).delete()
        deleted.append(version)
    logger.info("deleted model versions %s", ", ".join(deleted))
    return deleted


def model_reload(*, version: str | None = None) -> dict[str, Any]:
    """Load the newest (or the given) bundle and make it the active model.

    The newest passes over the candidates the retraining gate refused (each was judged worse than the model it was
    measured against); ``version`` may name one. The bundle is loaded and checked before anything changes; a
    broken bundle is refused and the current model keeps serving.

    Raises:
        NotFound: no such version / no model at all (but refused candidates).
        ApplicationError: the bundle is broken (code "invalid_model").
        Conflict: none of the model's products is in the database (code "other_shop").
    """
    versions, _ = model_store.versions()
    if version is None:
        if not versions:
            raise NotFound("No trained model in the models directory.", code="no_model")
        refused = model_store.refused_candidates()
        version = next((v for v in reversed(versions) if v not in refused), None)
        if version is None:
            raise NotFound(f"Each of the {len(versions)} models in the models directory is a candidate the "
                           f"retraining gate refused; name the one to activate (\"version\").", code="no_model")
    elif version not in versions:
        raise NotFound(f"No model version {version!r}.", code="unknown_version")
    previous = registry.current()
    try:
        engine = registry.activate(version, check=refuse_another_shops_model)
    except ArtifactError as exc:
        logger.error("refused model %s: %s", version, exc)
        raise ApplicationError(
            f"Model {version} cannot be loaded and was not activated: {_public(exc)}", code="invalid_model",
            status_code=422,
        ) from exc
    model_version_sync()
    return {"model_version": engine.version, "previous_version": previous.version if previous else None}


def refuse_another_shops_model(bundle: artifacts.Bundle, instead: str = "") -> None:
    """Raise Conflict when the database has products but none of those ``bundle``'s model was trained on: every
    shopper would get text-based lists (the demo's model reloaded, or rolled back to, over one's own shop).
    ``instead``: a sentence on what else to do, after training a model on the shop's data."""
    ids = bundle.arrays.item_ids
    if catalog_selectors.product_any_among(ids=[str(item) for item in ids]) is not False:
        return
    logger.warning("refused model %s: none of its %d products is in the database", bundle.version, len(ids))
    raise Conflict(f"Model {bundle.version} was trained on {len(ids)} products, none of which is among the "
                   f"{catalog_selectors.product_count()} in the database: it belongs to another shop, and was not "
                   f"activated. Train a model on this shop's data (`manage.py train --activate`).{instead}",
                   code="other_shop")


def _public(exc: Exception) -> str:
    """An error message without server paths (the models folder's and the shared store's): "the model store
    /mnt/models" (or "the store /mnt/models") becomes "the model store", a path inside the store the path within
    it, and the store's path anywhere else "the model store"."""
    text = str(exc)
    if settings.RECO_MODEL_STORE:
        store = str(Path(settings.RECO_MODEL_STORE))
        for named in (f"the model store {store}", f"the store {store}"):
            text = text.replace(named, "the model store")
        text = text.replace(store + "/", "").replace(store, "the model store")
    models_dir = str(Path(settings.RECO_MODELS_DIR))
    return text.replace(models_dir + "/", "").replace(models_dir, "models")


def data_reload(*, force: bool = False, replace: bool = False, merge: bool = False) -> dict[str, Any]:
    """Re-import the configured data files and refresh the serving caches.

    ``replace`` and ``merge`` are those of :func:`recoapi.catalog.services.data_import`; while another import
    runs, it is refused (409 ``import_running``), not queued behind it for as long as that one takes.
    """
    result = data_import(source=settings.RECO_DATA_SOURCE, path=settings.RECO_DATA_PATH, force=force,
                         filters=import_filters_from_settings(), replace=replace, merge=merge, wait=False)
    registry.refresh()
    payload = result.as_dict()
    path = Path(result.path)
    if path.is_relative_to(settings.BASE_DIR):
        payload["path"] = str(path.relative_to(settings.BASE_DIR))
    else:
        payload["path"] = path.name
    return payload


TRAINING_SNAPSHOT = "training"
"""Folder in RECO_PROCESSED_DIR with the database snapshot the latest model trained on (when it differs
from the import snapshot)."""


def training_snapshot() -> tuple[Any, bool]:
    """What training learns from: the database's products and interactions (imported and live) at one
    moment, within RECO_TRAIN_SINCE_DAYS of the newest interaction when set.

    Returns ``(canonical data, from_database)``: where the database holds exactly the imported data,
    the import snapshot itself (with its fingerprint, so its embeddings and trained models stay
    current); otherwise the database's tables, fingerprinted by their contents.

    Raises:
        ApplicationError: nothing to train on (code ``no_data``).
    """
    from modeling import datasets as ds
    from modeling.errors import DataValidationError, StoredDataError

    since = settings.RECO_TRAIN_SINCE_DAYS or None
    try:
        data = catalog_selectors.training_data(since_days=since)
    except StoredDataError as exc:  # rows an earlier version stored, which migrate mends
        raise ApplicationError(f"Cannot train on the database: {exc}.", code="no_data") from exc
    except DataValidationError as exc:
        raise ApplicationError(f"Nothing to train on: {exc}. Import data with `manage.py load_data` first.",
                               code="no_data") from exc
    processed = Path(settings.RECO_PROCESSED_DIR)
    if since is None and ds.read_snapshot_manifest(processed) is not None:
        imported = ds.read_snapshot(processed)
        if ds.content_fingerprint(imported.items, imported.interactions) == data.fingerprint:
            # the same rows: what the database held when they were read (see training_data) goes with them
            imported.report["last_interaction_id"] = data.report.get("last_interaction_id")
            return imported, False
    logger.info("training on the database: %s (%d live interactions)", data.counts(),
                data.report.get("live_interactions", 0))
    return data, True


def check_trainable(data: Any, *, holdout_days: float | None = None) -> None:
    """Refuse training data too small to train on (:func:`modeling.train.check_trainable`), naming the
    RECO_TRAIN_SINCE_DAYS window when one is set, and ``retrain``'s held-out days (``holdout_days``) where they were
    cut off: they are the likely causes.

    Raises:
        ApplicationError: code ``no_data``.
    """
    from modeling import train as training
    from modeling.errors import TrainingError

    try:
        training.check_trainable(data)
    except TrainingError as exc:
        since = settings.RECO_TRAIN_SINCE_DAYS
        causes = []
        if since:
            causes.append(f"the RECO_TRAIN_SINCE_DAYS window (the interactions of the last {since:g} day(s) before "
                          "the newest one): widen it, or unset it to train on every interaction")
        if holdout_days is not None:
            causes.append(f"the last {holdout_days:g} day(s) held out to measure the candidate: retrain with a "
                          "shorter --holdout-days")
        hint = f" in what is left after {'; and '.join(causes)}" if causes else ""
        raise ApplicationError(f"Cannot train: {exc}{hint}.", code="no_data") from exc


def model_train(
    *,
    params: TwoTowerParams,
    activate: bool = False,
    force: bool = False,
    refit: bool = False,
    budget_seconds: float = 0.0,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    on_trial: Callable[[dict[str, Any]], None] | None = None,
    workers: int = 1,
    on_start: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Train the two-tower model and its ranking stage on the imported data and embeddings; publish a bundle.

    The model is first trained with every shopper's last two products held out (early stopping,
    the ranking stage and the reported test metrics); with ``budget_seconds`` > 0 other two-tower
    parameters are tried on the same validation items while the budget lasts (see
    :func:`modeling.tuning.budgeted_search`); with ``refit`` it is then trained again on every interaction
    for the chosen number of epochs, and that model is published (see
    :func:`modeling.train.refit_model`). Skipped (the existing version is returned) when a bundle
    trained from the same data, embeddings, parameters and refit choice exists, unless ``force``.

    Args:
        params: :class:`modeling.two_tower.TwoTowerParams`.
        activate: point models/ACTIVE at the result; the run then holds the training lock (see
            :mod:`recoapi.locks`), as retraining does.
        force: train even when an identical run exists.
        refit: publish a model trained again on every interaction.
        budget_seconds: time for the two-tower search (0: default parameters only).
        on_epoch: progress callback, see :func:`modeling.train.train_model`.
        on_trial: called after each search trial with its log entry.
        workers: training processes on this machine (see :func:`modeling.train.train_model`).
        on_start: called once the run may go on (the lock held, with ``activate``), before any work.

    Returns:
        ``{"version", "skipped", "activated", "metrics", "train_seconds", "examples_per_second",
        "refit_epochs", "search", "ranking_stage", "data"}`` (``data``: counts of what was trained on and
        whether it came from the database or the import snapshot).

    Raises:
        ApplicationError: with ``activate``, another training holds the lock (code ``busy``, nothing done).
    """
    from recoapi.locks import training_lock

    # A run that activates its model runs beside no other one that does (retrain); one that does not takes no lock.
    with training_lock() if activate else contextlib.nullcontext(True) as held:
        if not held:
            raise ApplicationError("Another training is running (retrain, run_scheduler or train --activate); "
                                   "try again when it has finished.", code="busy", status_code=409)
        if on_start is not None:
            on_start()
        return _model_train(params=params, activate=activate, force=force, refit=refit,
                            budget_seconds=budget_seconds, on_epoch=on_epoch, on_trial=on_trial, workers=workers)


def _model_train(*, params: TwoTowerParams, activate: bool, force: bool, refit: bool, budget_seconds: float,
                 on_epoch: Callable[[dict[str, float]], None] | None,
                 on_trial: Callable[[dict[str, Any]], None] | None, workers: int) -> dict[str, Any]:
    """:func:`model_train`'s work (under the training lock when it activates)."""
    from modeling import datasets as ds
    from modeling import train as training
    from modeling.embeddings import build_embeddings, load_embeddings
    from modeling.reranker import stage_summary
    from modeling.tuning import budgeted_search

    models_dir = Path(settings.RECO_MODELS_DIR)
    data, from_database = training_snapshot()
    check_trainable(data)  # before the embeddings are rebuilt for data that cannot be trained on
    if from_database:  # live events or products the import snapshot lacks: embeddings for this data
        build_embeddings(data, settings.RECO_EMBEDDINGS_DIR, model_path=settings.RECO_TEXT_MODEL_PATH,
                         progress=False)
    embeddings = load_embeddings(settings.RECO_EMBEDDINGS_DIR)
    if embeddings.manifest.get("data_fingerprint") != data.fingerprint:
        raise ApplicationError("The embeddings were built from other data; run `manage.py build_embeddings` first.",
                               code="stale_embeddings")
    fingerprint = training.training_fingerprint(data.fingerprint, embeddings.manifest["fingerprint"], params,
                                                refit=refit, budget_seconds=budget_seconds)
    existing = None if force else training.find_trained_version(models_dir, fingerprint)
    if existing is not None:
        manifest = _read_manifest(models_dir, existing)
        result = {"version": existing, "skipped": True, "metrics": manifest.get("metrics", {}),
                  "train_seconds": manifest.get("train_seconds"),
                  "examples_per_second": manifest.get("examples_per_second"),
                  "refit_epochs": manifest.get("refit_epochs", 0), "search": manifest.get("search"),
                  "ranking_stage": manifest.get("ranking_stage")}
    else:
        trained = budgeted_search(data, embeddings, params, budget_seconds=budget_seconds, seed=params.seed,
                                  on_trial=on_trial, on_epoch=on_epoch, workers=workers)
        if refit:
            trained = training.refit_model(data, embeddings, trained, on_epoch=on_epoch, workers=workers)
        path = training.publish(trained, data, embeddings, models_dir, fingerprint=fingerprint,
                                ann_min_items=settings.RECO_ANN_MIN_ITEMS or None)
        if from_database:  # after publishing: a run that fails or is killed leaves the snapshot as it was
            ds.write_snapshot(data, Path(settings.RECO_PROCESSED_DIR) / TRAINING_SNAPSHOT, source="database")
        result = {"version": path.name, "skipped": False, "metrics": trained.metrics,
                  "train_seconds": round(trained.train_seconds + trained.refit_seconds, 2),
                  "examples_per_second": round(trained.examples_per_second, 1),
                  "refit_epochs": trained.refit_epochs, "search": trained.search,
                  "ranking_stage": stage_summary(trained.stage) if trained.stage is not None else None}
    model_store.publish(result["version"])  # with a shared store: every host can activate it
    if activate:
        artifacts.load_bundle(models_dir / result["version"])  # refuse a broken bundle before pointing at it
        model_store.activate(result["version"])
    model_version_sync()
    return {**result, "activated": activate,
            "data": {"source": "database" if from_database else "import", **data.counts(),
                     "live_interactions": int(data.report.get("live_interactions", 0))}}


LIST_CLOCK_SKEW = timedelta(minutes=5)
"""How much earlier than its list's answer an event sent with its recommendation_id may be timed (the shop's clock
against the service's)."""


def events_record(events: list[EventSpec]) -> RecordResult:
    """Store live events (:func:`recoapi.catalog.services.interactions_record`), refusing a ``recommendation_id``
    whose stored list was shown to another shopper, or answered after the event happened: such an event credited
    that list with a view or purchase it did not cause (lists of anonymous visitors take any shopper's events; a
    list not written yet, a moment after its answer, is not checked).

    Raises:
        ApplicationError: such an event (code ``invalid``, 400; its position named in a batch); the catalogue's
            own errors otherwise.
    """
    ids = sorted({spec.recommendation_id for spec in events if spec.recommendation_id})
    lists = {row.id: row for row in RecommendationList.objects.filter(id__in=ids).only("id", "shopper_id",
                                                                                     "created_at")}
    for position, spec in enumerate(events):
        shown = lists.get(spec.recommendation_id or "")
        if shown is None:
            continue
        where = event_place(position, len(events))
        if not feedback.credited(list_shopper=shown.shopper_id, event_shopper=spec.user_id):
            raise ApplicationError(f"{where}recommendation_id: that list was shown to another shopper, not to "
                                   f"{spec.user_id!r}.", code="invalid")
        if spec.occurred_at is not None and spec.occurred_at < shown.created_at - LIST_CLOCK_SKEW:
            minutes = f"{LIST_CLOCK_SKEW.total_seconds() / 60:g}"
            raise ApplicationError(f"{where}recommendation_id: the event ({spec.occurred_at.isoformat()}) happened "
                                   f"more than {minutes} minutes before that list was shown "
                                   f"({shown.created_at.isoformat()}); an event may be timed at most {minutes} "
                                   "minutes before its list (the shop's clock may differ from the service's).",
                                   code="invalid")
    return interactions_record(events)


#: The longest retention :func:`recommendation_lists_prune` takes: RECO_LIST_RETENTION_DAYS's bound.
PRUNE_MAX_DAYS = RETENTION_MAX_DAYS


def recommendation_lists_prune(*, days: float, dry_run: bool = False,
                               progress: Callable[[int], None] | None = None) -> int:
    """Delete the stored lists answered more than ``days`` days ago, except an existing experiment's
    (:func:`recoapi.recommendations.impressions.prune`); with ``dry_run`` only count them.

    Returns:
        How many lists were (or would be) deleted.

    Raises:
        ValueError: ``days`` is not a positive number up to :data:`PRUNE_MAX_DAYS`.
    """
    if not 0 < days <= PRUNE_MAX_DAYS:
        raise ValueError(f"days must be a positive number up to {PRUNE_MAX_DAYS}, got {days:g}")
    older_than = timezone.now() - timedelta(days=days)
    if dry_run:
        return impressions.prunable(older_than).count()
    deleted = impressions.prune(older_than, progress=progress)
    if deleted:
        logger.info("deleted %d recommendation lists answered before %s", deleted, older_than.isoformat())
    return deleted


def model_load() -> str:
    """Load the active model into this process now (it is otherwise loaded on first use).

    Returns:
        The active model version.

    Raises:
        ServiceUnavailable: no model is active (code ``no_model``), or it cannot be loaded (``model_not_loaded``,
            saying why).
    """
    return _engine_or_503().version


def batch_setting() -> str:
    """The setting the API serves outside an experiment's arms now: a stopped experiment's winning one while it
    holds (see :func:`experiments.read_plan`), else both stages."""
    return experiments.read_plan().setting


def recommendation_batch(*, user_ids: list[str], k: int,
                         setting: str | None = None) -> tuple[str, list[tuple[str, int, str, float]]]:
    """Top-k for many shoppers at once (same ladder and filters as the API's defaults), with ``setting`` (None:
    :func:`batch_setting`; a caller answering in chunks reads it once).

    Returns:
        ``(model_version, rows)`` with rows ``(user_id, rank (1-based), item_id, score)``.
    """
    engine = _engine_or_503()
    raw = catalog_selectors.shopper_histories(ids=user_ids)
    rankings = engine.recommender.recommend(user_ids, _histories(raw), k, engine.allowed(),
                                            variant=setting or batch_setting(), stored_for=_still_held(user_ids, raw))
    rows = [(user, rank, str(engine.recommender.item_ids[p]), round(float(score), 6))
            for user in user_ids
            for rank, (p, score) in enumerate(zip(rankings[user].items, rankings[user].scores, strict=True),
                                              start=1)]
    return engine.version, rows


def experiment_start(*, experiment: Experiment) -> Experiment:
    """Start a draft experiment once every arm's model version exists and loads.

    Raises:
        ApplicationError: an arm cannot run (code ``invalid_experiment``), e.g. a broken bundle.
        Conflict: another experiment is running.
    """
    versions, _ = model_store.versions()
    experiments.check_arms(experiment, versions)
    for version in sorted({arm.model_version for arm in experiment.arms.all() if arm.model_version}):
        try:
            artifacts.load_bundle(model_store.local_bundle(version))
        except ArtifactError as exc:
            raise ApplicationError(f"Experiment {experiment.name!r} cannot start: model {version} cannot be "
                                   f"loaded: {_public(exc)}", code="invalid_experiment") from exc
    return experiments.start(experiment, versions)


def experiment_stop(*, experiment: Experiment, winner: ExperimentArm) -> Experiment:
    """Stop a running experiment and send all traffic to ``winner``: its model version (if it names one)
    becomes the active model first (a version that cannot be loaded leaves the experiment running), and its
    setting then serves every shopper.

    Raises:
        ApplicationError: not running, not its arm, or the winner's model cannot be activated.
    """
    experiments.check_stoppable(experiment, winner)
    previous = model_store.active_version()
    # claimed first: a second stop racing with this one is refused
    experiments.stop(experiment, winner, winner.model_version or previous or "")
    if winner.model_version and winner.model_version != previous:
        try:
            model_reload(version=winner.model_version)
        except ApplicationError:  # the experiment runs on as it was
            Experiment.objects.filter(pk=experiment.pk).update(status=Experiment.RUNNING, stopped_at=None,
                                                               winner=None, winner_version="")
            experiment.status, experiment.stopped_at, experiment.winner = Experiment.RUNNING, None, None
            experiments.forget()
            raise
    experiments.record_winner_activation(experiment)
    return experiment
