"""Retraining from the database behind a gate, and rolling back.

Only the `retrain` and `rollback` commands import this module; serving does not.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from modeling import artifacts
from modeling.errors import ArtifactError
from recoapi.exceptions import ApplicationError, NotFound
from recoapi.locks import training_lock
from recoapi.recommendations import model_store
from recoapi.recommendations.models import TrainingRun
from recoapi.recommendations.services import (
    _read_manifest,
    check_trainable,
    model_version_sync,
    refuse_another_shops_model,
    training_snapshot,
)

logger = logging.getLogger(__name__)


def _manifest(models_dir: Path, version: str | None) -> dict[str, Any]:
    """The bundle's manifest; empty without a version or when it cannot be read."""
    if not version:
        return {}
    try:
        return _read_manifest(models_dir, version)
    except (OSError, json.JSONDecodeError):
        try:  # with a model store, a version this host has not fetched
            return model_store.read_manifest(version)
        except ArtifactError:
            return {}


class TrainingBusy(ApplicationError):
    """Another process holds the training lock."""

    status_code = 409


def model_retrain(*, holdout_days: float, tolerance: float, budget_seconds: float,
                  say: Callable[[str], None] = logger.info,
                  on_start: Callable[[], None] | None = None) -> TrainingRun:
    """:func:`_retrain` under the training lock (one training at a time across processes and hosts).

    ``on_start`` is called once the lock is held, before any work (so a caller says "retraining" only when it is).

    Raises:
        TrainingBusy: another retraining holds the lock (nothing was done).
    """
    with training_lock() as held:
        if not held:
            raise TrainingBusy("Another training is running (retrain, run_scheduler or train --activate); try again "
                               "when it has finished.", code="busy")
        if on_start is not None:
            on_start()
        return _retrain(holdout_days=holdout_days, tolerance=tolerance, budget_seconds=budget_seconds, say=say)


def _retrain(*, holdout_days: float, tolerance: float, budget_seconds: float,
             say: Callable[[str], None]) -> TrainingRun:
    """Train a candidate on the database without its newest interactions, compare it with the active
    model on those, and activate it only when its recall@10 is at most ``tolerance`` below the active
    model's (or when no model is active).

    The held-out interactions are those of the last ``holdout_days`` days, and never any the active
    model trained on (its manifest's ``trained_until``). What is new to the active model is what it did
    not read, whatever its time (see :func:`_unread`): interactions recorded late with times at or before
    its ``trained_until`` are trained on, not held out. The candidate is published either way (the
    admin can activate a refused one); a failed run leaves the active model serving. Every run,
    whatever its outcome, is recorded as a :class:`TrainingRun`.
    """
    from dataclasses import replace

    from modeling import datasets as ds
    from modeling import train as training
    from modeling.embeddings import build_embeddings, load_embeddings
    from modeling.gate import holdout_metrics, holdout_split
    from modeling.recommender import Recommender
    from modeling.tuning import budgeted_search
    from modeling.two_tower import TwoTowerParams

    started, clock = timezone.now(), time.perf_counter()
    models_dir = Path(settings.RECO_MODELS_DIR)
    previous = model_store.active_version()
    row: dict[str, Any] = {"started_at": started, "previous_version": previous or "", "tolerance": tolerance}

    def finish(decision: str, reason: str, **fields: Any) -> TrainingRun:
        return TrainingRun.objects.create(**row, **fields, decision=decision, reason=reason,
                                          seconds=round(time.perf_counter() - clock, 2))

    unusable = model_store.incompatibility(previous) if previous else ""
    if unusable:  # after an upgrade: nothing to compare with or to keep serving, so the candidate is activated
        say(f"the active model {previous} cannot be served by this version ({unusable}): training a new one")
        previous = None
    try:
        data, from_database = training_snapshot()
        row["data_counts"] = {**data.counts(), "live_interactions": int(data.report.get("live_interactions", 0))}
        active = _manifest(models_dir, previous)
        trained_until, read_through = active.get("trained_until"), active.get("last_interaction_id")
        split = holdout_split(data.interactions, days=holdout_days, not_before=trained_until)
        late = _late(data, read_through, trained_until) if previous else 0
        row["holdout"] = {"cutoff": split.cutoff, "interactions": len(split.after),
                          "shoppers": int(split.after[ds.USER_ID].nunique()) if len(split.after) else 0,
                          "newest": int(data.interactions[ds.TIMESTAMP].max()) if len(data.interactions) else None,
                          "newest_id": data.report.get("last_interaction_id"), "late": late}
        if (previous and late and data.fingerprint != active.get("data_fingerprint")  # the same data: said below
                and _recorded_again(data, active)):  # a forced import of the same files, and newer rows beside them
            say(f"the {late:,} interaction(s) recorded since the active model's data was read and timed at or before "
                "the newest it trained on are those it was trained on, recorded again (an import of the same files): "
                "not new to it")
            row["holdout"]["recorded_again"], late = late, 0
        if previous and len(split.after) == 0 and late == 0:
            return finish(TrainingRun.SKIPPED, "no interactions since the active model's training data")
        if previous and late and data.fingerprint == active.get("data_fingerprint"):
            return finish(TrainingRun.SKIPPED, f"the {late:,} interaction(s) recorded since the active model's data "
                                               f"was read are those it was trained on, recorded again (an import of "
                                               f"the same files): the database holds the very rows it learned from")
        if previous and len(split.after) == 0:
            return finish(TrainingRun.SKIPPED, f"the {late:,} interaction(s) recorded since the active model's data "
                                               f"was read are all timed at or before the newest it trained on "
                                               f"({_iso(trained_until)}): none is newer, so there is nothing to "
                                               f"measure a candidate on; they are trained on at the next retraining "
                                               f"that has newer interactions")
        if previous and trained_until is not None and late == 0 and (
                len(split.before) == 0 or int(split.before[ds.TIMESTAMP].max()) <= int(trained_until)):
            return finish(TrainingRun.SKIPPED, f"every interaction since the active model's data is within the "
                                               f"held-out last {holdout_days:g} day(s), which measure the candidate "
                                               f"(counted back from the newest interaction, not from now, so waiting "
                                               f"alone changes nothing): there is something new to train on once "
                                               f"newer interactions move the earliest of them out of that window, or "
                                               f"with a shorter --holdout-days")
        if len(split.before) == 0:
            return finish(TrainingRun.SKIPPED, f"nothing before the cut-off of the last {holdout_days:g} days "
                                               "to train on")
        say(f"training on {len(split.before):,} interactions; {len(split.after):,} after the cut-off held out")
        train_data = ds.finish_tables(data.items, split.before, report=dict(data.report), fingerprint="",
                                      source_name="database", keep_items="all", from_files=False)
        train_data = replace(train_data, fingerprint=ds.content_fingerprint(train_data.items,
                                                                            train_data.interactions))
        check_trainable(train_data, holdout_days=holdout_days)  # before the embeddings are rebuilt for it
        if from_database:
            build_embeddings(data, settings.RECO_EMBEDDINGS_DIR, model_path=settings.RECO_TEXT_MODEL_PATH,
                             progress=False)
        embeddings = load_embeddings(settings.RECO_EMBEDDINGS_DIR)
        params = TwoTowerParams()
        result = budgeted_search(train_data, embeddings, params, budget_seconds=budget_seconds, seed=params.seed)
        fingerprint = training.training_fingerprint(train_data.fingerprint, embeddings.manifest["fingerprint"],
                                                    params, budget_seconds=budget_seconds)
        candidate = training.publish(result, train_data, embeddings, models_dir, fingerprint=fingerprint,
                                     ann_min_items=settings.RECO_ANN_MIN_ITEMS or None).name
        row["candidate_version"] = candidate
        model_version_sync()
        row["candidate_metrics"] = holdout_metrics(Recommender(artifacts.load_bundle(models_dir / candidate)), split)
        if previous:
            previous_bundle = artifacts.load_bundle(model_store.local_bundle(previous))
            row["previous_metrics"] = holdout_metrics(Recommender(previous_bundle), split)
    except Exception as exc:  # noqa: BLE001  (recorded; the active model keeps serving)
        logger.exception("retraining failed")
        return finish(TrainingRun.FAILED, f"{type(exc).__name__}: {exc}")

    new, old = row["candidate_metrics"].get("recall@10", 0.0), row.get("previous_metrics", {}).get("recall@10")
    if previous and new < old - tolerance:
        return finish(TrainingRun.REFUSED, f"recall@10 on the {row['holdout']['interactions']} newest "
                                           f"interactions {new:.4f} against the active model's {old:.4f} "
                                           f"(tolerance {tolerance:g}); {previous} stays active")
    refreshed = _with_holdout(result, data, embeddings, models_dir, fingerprint, candidate, len(split.after), say)
    try:
        _activate(models_dir, refreshed or candidate)
    except ArtifactError as exc:
        return finish(TrainingRun.FAILED, f"the candidate could not be activated: {exc}")
    shoppers = row["candidate_metrics"].get("shoppers", 0)
    reason = (f"recall@10 {new:.4f} against the active model's {old:.4f} on {shoppers} shoppers' new products "
              f"(tolerance {tolerance:g})" if previous else
              f"the active model {row['previous_version']} could not be served by this version ({unusable})"
              if unusable else "no model was active")
    if refreshed:
        row["candidate_version"] = refreshed
        reason += (f"; activated as {refreshed}: the measured candidate {candidate} published again with the "
                   f"{len(split.after)} held-out interactions in its item-item, transition and popularity data "
                   "and shopper windows (same towers and ranker)")
    return finish(TrainingRun.ACTIVATED, reason)


def _with_holdout(result: Any, data: Any, embeddings: Any, models_dir: Path, fingerprint: str, measured: str,
                  held_out: int, say: Callable[[str], None]) -> str | None:
    """The accepted candidate published again over every interaction, the held-out ones included, so the
    served model knows the newest day as well (its towers and ranker are the measured ones); None when
    nothing was held out or that publish failed (the measured candidate is activated then)."""
    if held_out == 0:
        return None
    from modeling import train as training

    try:
        say(f"publishing the accepted candidate again with the {held_out:,} held-out interactions")
        return training.publish(result, data, embeddings, models_dir, fingerprint=fingerprint,
                                published_from=measured, ann_min_items=settings.RECO_ANN_MIN_ITEMS or None).name
    except Exception:  # noqa: BLE001  (the measured candidate is still good)
        logger.exception("publishing the candidate with the held-out interactions failed; activating it as measured")
        return None


def _activate(models_dir: Path, version: str, check: Callable[[artifacts.Bundle], None] | None = None) -> None:
    """Point models/ACTIVE at ``version`` once its bundle loads and ``check`` of it raises nothing (every serving
    worker follows within a second); raises ArtifactError for a broken bundle, or what ``check`` raises, and
    nothing changes then."""
    bundle = artifacts.load_bundle(model_store.local_bundle(version))
    if check is not None:
        check(bundle)
    model_store.activate(version)
    model_version_sync()


def _moment(unix: int) -> datetime:
    return datetime.fromtimestamp(unix, tz=UTC)


def _iso(unix: Any) -> str:
    return _moment(int(unix)).isoformat() if unix is not None else "unknown"


def _unread(last_id: int | None, until: int | None) -> Q:
    """The interactions that data read up to interaction id ``last_id`` and trained up to the unix second ``until``
    does not hold: recorded after it was read (a larger id: ids grow with every insert, on PostgreSQL and SQLite,
    and are never reused; a reload that replaces the imported interactions records them anew), whatever their time,
    or timed after ``until`` (``until`` is cut to whole seconds: what it trained on is everything before the next
    second; a measured candidate did not train on its held-out interactions, which it read).

    One gap: on PostgreSQL ids are handed out at insert and seen at commit, so a batch of events still being
    written while the data was read can commit afterwards with ids below ``last_id``; such events (unless timed
    after ``until``) do not count here, though the next retraining reads and trains on them.

    Without ``last_id`` (bundles published before manifests recorded it, runs recorded before): the interactions
    timed after ``until`` (the rule of earlier versions, blind to events recorded late with earlier times, and
    counting again those of the second ``until`` it read); without either, all of them."""
    if last_id is not None:
        unread = Q(id__gt=int(last_id))
        if until is not None:
            unread |= Q(occurred_at__gte=_moment(int(until) + 1))
        return unread
    if until is not None:
        return Q(occurred_at__gt=_moment(int(until)))
    return Q()


def _recorded_again(data: Any, active: dict[str, Any]) -> bool:
    """Whether ``data``'s interactions timed at or before the active model's ``trained_until`` are exactly those it
    learned from (its manifest's ``interactions_fingerprint``): after a forced import of the same files every row is
    recorded anew, with new ids, and would count as recorded late; False where the manifest does not say (bundles
    published before it was recorded)."""
    from modeling import datasets as ds

    expected, until = active.get("interactions_fingerprint"), active.get("trained_until")
    if not expected or until is None:
        return False
    interactions = data.interactions
    return ds.interactions_fingerprint(interactions[interactions[ds.TIMESTAMP] <= int(until)]) == expected


def _late(data: Any, last_id: int | None, until: int | None) -> int:
    """How many of ``data``'s interactions (a :func:`training_snapshot`) the model that read up to id ``last_id``
    and trained up to ``until`` did not read although they are timed at or before ``until``: events recorded late
    with their original times (offline sales, an app syncing later, a retried queue). 0 when either is unknown."""
    from modeling import datasets as ds
    from recoapi.catalog.models import Interaction

    newest_id = data.report.get("last_interaction_id")
    if last_id is None or until is None or newest_id is None or len(data.interactions) == 0:
        return 0
    # within what the snapshot read: its ids, and its time window (RECO_TRAIN_SINCE_DAYS)
    return Interaction.objects.filter(id__gt=int(last_id), id__lte=int(newest_id),
                                      occurred_at__lt=_moment(int(until) + 1),
                                      occurred_at__gte=_moment(int(data.interactions[ds.TIMESTAMP].min()))).count()


def new_interactions(*, last_id: int | None, until: int | None) -> tuple[int, int | None]:
    """``(interactions that data read up to id `last_id` and trained up to the unix time `until` does not hold (see
    :func:`_unread`), the largest id among them)``."""
    from django.db.models import Max

    from recoapi.catalog.models import Interaction

    query = Interaction.objects.filter(_unread(last_id, until))
    return query.count(), query.aggregate(last_id=Max("id"))["last_id"]


def active_unservable() -> str:
    """Why this version of the service cannot serve the active model ("" when it can, or none is active): e.g. it
    was trained by an earlier version (see :func:`recoapi.recommendations.model_store.incompatibility`)."""
    active = model_store.active_version()
    return model_store.incompatibility(active) if active else ""


def _latest_attempt() -> dict[str, int]:
    """``{"newest": time, "newest_id": id}`` of what the latest recorded retraining read, the keys it recorded
    (runs recorded before the id was: the time alone).

    What a scheduler started anew (``run_scheduler --once`` from cron) counts new interactions from besides
    the published models' data: a refused candidate's data ends at its held-out cut-off, so without it every
    check would count the held-out interactions as new again and retrain on the same data."""
    run = (TrainingRun.objects.filter(holdout__has_key="newest").order_by("-started_at").only("holdout").first())
    held = run.holdout if run is not None else {}
    return {key: int(held[key]) for key in ("newest", "newest_id") if held.get(key) is not None}


def newest_read() -> tuple[int | None, int | None]:
    """``(the largest interaction id, the newest interaction time)`` that any published model (the active one
    included) or the latest retraining read and trained up to; None where none says (bundles published before
    manifests recorded the id: their ``trained_until`` alone).

    What the scheduler counts new interactions from (see :func:`new_interactions`): after a rollback to an older
    model, the interactions the rolled-back model had trained on are not new, and retraining on them at once
    would undo the rollback; nor are those a refused retraining held out."""
    models_dir = Path(settings.RECO_MODELS_DIR)
    versions, _ = model_store.versions()
    manifests = [_manifest(models_dir, version) for version in [*versions, model_store.active_version()]]
    attempt = _latest_attempt()
    ids = [m.get("last_interaction_id") for m in manifests] + [attempt.get("newest_id")]
    times = [m.get("trained_until") for m in manifests] + [attempt.get("newest")]
    ids, times = [int(v) for v in ids if v is not None], [int(v) for v in times if v is not None]
    return (max(ids) if ids else None), (max(times) if times else None)


def model_rollback(*, version: str | None = None) -> dict[str, str | None]:
    """Activate ``version``, or the version that was active before the active one (the most recent activation of
    another version whose bundle is still there and that this version can serve). Where no activation was
    recorded (bundles activated before the record existed): the newest version published before the active one,
    other than the measured candidate the active one was published again from (see :func:`model_retrain`) and
    the candidates the gate refused (a refused candidate was judged worse than the model it was measured against;
    ``version`` names one explicitly).

    Returns:
        ``{"model_version", "previous_version", "chosen_by"}``, ``chosen_by`` one of "given", "activations" (the
        record of activations) and "published" (the newest older version: the record had none to offer).

    Raises:
        NotFound: no earlier version, or no such version.
        ApplicationError: the bundle cannot be loaded (code ``invalid_model``); nothing changes.
    """
    models_dir = Path(settings.RECO_MODELS_DIR)
    versions, _ = model_store.versions()
    active = model_store.active_version()
    chosen_by = "given"
    if version is None:
        present = set(versions)
        version = next((v for v in model_store.previously_active(active)
                        if v in present and not model_store.incompatibility(v)), None)
        chosen_by = "activations"
    if version is None:  # the measured candidate an active retrained bundle was published from is skipped
        chosen_by = "published"
        source = _manifest(models_dir, active).get("published_from") if active else None
        refused = model_store.refused_candidates()  # those activated since are among the activations, above
        earlier = [v for v in versions if (active is None or v < active) and v != source and v not in refused]
        # the newest that this version can serve (one trained by another version is skipped): read newest first,
        # as far as needed, not every bundle's files
        version = next((v for v in reversed(earlier) if not model_store.incompatibility(v)), None)
        if version is None:
            raise NotFound("No version older than the active one (that this version can serve, and that the "
                           "retraining gate did not refuse) to roll back to.", code="no_model")
    elif version not in versions:
        raise NotFound(f"No model version {version!r}.", code="unknown_version")
    def check(bundle: artifacts.Bundle) -> None:
        refuse_another_shops_model(bundle, instead=" Or name another version with --to.")
        if active is not None:  # the version rolled back from is in the record (one activated before it began:
            model_store.record_activation(active)  # after an upgrade), so that the next rollback can return to it

    try:
        _activate(models_dir, version, check)
    except ArtifactError as exc:
        raise ApplicationError(f"Model {version} cannot be loaded and was not activated: {exc}",
                               code="invalid_model") from exc
    return {"model_version": version, "previous_version": active, "chosen_by": chosen_by}
