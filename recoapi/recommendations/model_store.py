"""Which model version is active, and where its bundle comes from.

One host (``RECO_MODEL_STORE`` unset, as shipped): ``models/ACTIVE`` names the active version and the bundles
are the folders of ``models/``.

Several hosts (``RECO_MODEL_STORE`` names a directory every host mounts): the database is the one source of
truth for the active version (``ModelVersion.is_active``), and bundles are published to the store
(:class:`modeling.store.DirectoryStore`). Each host's ``models/`` is its cache: a worker that finds a newer
active version in the database copies it from the store (checked against its checksums), loads it, and only
then swaps; on any failure it keeps serving what it has. ``models/ACTIVE`` then names what the host last
activated, which it serves when the database cannot be read, and ``/health`` says so.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import DatabaseError, transaction
from django.utils import timezone

from modeling import artifacts
from modeling.errors import ArtifactError
from modeling.store import CHECKSUM_FILE, DirectoryStore, verify
from recoapi.recommendations.models import ModelActivation, ModelVersion, TrainingRun

logger = logging.getLogger(__name__)

_state = {"active_source": "file"}  # where the last active_version() came from: file, database, cache
_state_lock = threading.Lock()


def store() -> DirectoryStore | None:
    """The shared store, or None on a single host."""
    return DirectoryStore(settings.RECO_MODEL_STORE) if settings.RECO_MODEL_STORE else None


def models_dir() -> Path:
    """This host's models/ (its cache, with a store)."""
    return Path(settings.RECO_MODELS_DIR)


def active_version() -> str | None:
    """The active model version: the database's with a store (this host's last one while the database cannot
    be read), else ``models/ACTIVE``."""
    if store() is None:
        return artifacts.read_active(models_dir())
    try:
        version = ModelVersion.objects.filter(is_active=True).values_list("version", flat=True).first()
        source = "database"
    except DatabaseError as exc:
        logger.warning("cannot read the active model version from the database; serving this host's: %s", exc)
        version, source = None, "cache"
    with _state_lock:
        _state["active_source"] = source
    return version or artifacts.read_active(models_dir())


def local_bundle(version: str) -> Path:
    """This host's folder of ``version``: copied from the store first when missing, and checked against its
    checksums (with a store).

    Raises:
        ArtifactError: not in the store or the store cannot be reached, or the local copy does not match its
            checksums (a damaged copy is never loaded).
    """
    path = models_dir() / version
    shared = store()
    if shared is None:
        return path
    if not path.exists():
        shared.fetch(version, models_dir())
    if (path / CHECKSUM_FILE).is_file():
        problems = verify(path)
        if problems:
            raise ArtifactError(f"this host's copy of model {version} is damaged: {'; '.join(problems[:5])} "
                                f"(remove {path.name}/ from the models folder to fetch it again)")
    return path


def publish(version: str) -> None:
    """Put a bundle of this host's ``models/`` into the store (nothing without one).

    Raises:
        ArtifactError: the store cannot be reached or written.
    """
    shared = store()
    if shared is not None:
        shared.publish(models_dir() / version)


def activate(version: str) -> None:
    """Make ``version`` the active model (its bundle has been loaded and checked by the caller).

    Points ``models/ACTIVE`` at it; with a store, publishes it there first and then marks it active in the
    database, which every host follows.

    Raises:
        ArtifactError: the store cannot be written (nothing is marked active then).
    """
    if store() is None:
        artifacts.set_active(models_dir(), version)
        _record_activation(version)
        return
    publish(version)
    manifest = read_manifest(version)
    with transaction.atomic():
        list(ModelVersion.objects.select_for_update().values_list("version", flat=True))  # one activation at a time
        ModelVersion.objects.filter(is_active=True).exclude(version=version).update(is_active=False)
        upsert_version(version, manifest, active=True)
        record_activation(version)
    artifacts.set_active(models_dir(), version)  # after the commit: this host's fallback names an active version
    logger.info("model %s is active on every host (database)", version)


def _record_activation(version: str) -> None:
    """Write down that ``version`` became active on this host (what ``rollback`` returns to). The model is active
    whether or not the row is written: a database that refuses it costs the record, not the activation."""
    try:
        with transaction.atomic():  # a savepoint: a refused write leaves a caller's transaction usable
            record_activation(version)
    except DatabaseError as exc:
        logger.warning("model %s is active, but its activation could not be recorded: %s", version, exc)


def record_activation(version: str) -> None:
    """Record that ``version`` is active now, unless the latest record names it already (activating the active
    version again, e.g. ``train --activate`` that found the same model, changes nothing to return to)."""
    if ModelActivation.objects.values_list("version", flat=True).first() != version:
        ModelActivation.objects.create(version=version, activated_at=timezone.now())


def previously_active(active: str | None) -> Iterator[str]:
    """The versions that were active before ``active``, the most recent activation first (each once; ``active``
    itself left out). Nothing where no activation was recorded (bundles activated before this record existed)."""
    seen = {active}
    for version in ModelActivation.objects.values_list("version", flat=True).iterator():
        if version not in seen:
            seen.add(version)
            yield version


def refused_candidates() -> set[str]:
    """The versions the retraining gate refused (judged worse than the model they were measured against) that were
    never activated since (staff may activate one on purpose: it is then a model like any other): neither
    ``POST /reload_model`` without a version nor ``rollback`` without ``--to`` chooses one."""
    refused = set(TrainingRun.objects.filter(decision=TrainingRun.REFUSED).values_list("candidate_version", flat=True))
    activated = set(ModelActivation.objects.filter(version__in=refused).values_list("version", flat=True))
    return refused - activated


def read_manifest(version: str) -> dict[str, Any]:
    """A version's manifest, from this host's copy or else the store.

    Raises:
        ArtifactError: neither has it.
    """
    try:
        return json.loads((models_dir() / version / artifacts.MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        shared = store()
        if shared is None:
            raise ArtifactError(f"no model version {version!r}") from None
        return shared.manifest(version)


def upsert_version(version: str, manifest: dict[str, Any], *, active: bool | None) -> ModelVersion:
    """Create or update the ModelVersion row of ``version`` from its manifest; ``active`` None leaves an existing
    row's flag as it is (a new row is inactive)."""
    defaults: dict[str, Any] = {"created_at": datetime.fromisoformat(manifest["created"]),
                                "metrics": manifest.get("metrics", {}), "params": manifest.get("params", {}),
                                "counts": manifest.get("data_counts", manifest.get("counts", {}))}
    if active is not None:
        defaults["is_active"] = active
    row, _ = ModelVersion.objects.update_or_create(version=version, defaults=defaults)
    return row


def remove(version: str) -> None:
    """Delete ``version``'s bundle: from the store first (with one), then from this host's ``models/``.

    Raises:
        ArtifactError: the store cannot be reached or a folder cannot be removed.
    """
    shared = store()
    if shared is not None:
        shared.remove(version)
    artifacts.remove_bundle(models_dir(), version)


def incompatibility(version: str) -> str:
    """Why this version of the service cannot serve ``version`` ("" when it can, as far as its metadata tell):
    :func:`modeling.artifacts.incompatibility` of this host's copy, or else of the store's."""
    local = models_dir() / version
    shared = store()
    if (local / artifacts.MANIFEST_FILE).is_file() or shared is None:
        return artifacts.incompatibility(local)
    return artifacts.incompatibility(shared.root / version)


def versions() -> tuple[list[str], bool]:
    """``(the versions there are, whether that list is complete)``: the store's and this host's with a store
    (incomplete while the store cannot be reached), else this host's. This host's copy of a version removed from
    the store (:func:`remove`, on any host: the store records it) is not listed."""
    local = artifacts.list_versions(models_dir())
    shared = store()
    if shared is None:
        return local, True
    try:
        return sorted(set(shared.versions()) | {v for v in local if not shared.removed(v)}), True
    except ArtifactError as exc:
        logger.warning("%s; listing this host's versions only", exc)
        return local, False


_reachable: dict[str, Any] = {"at": float("-inf"), "value": True}


def status() -> dict[str, str | None]:
    """For /health: ``{"store": "off" | "ok" | "unreachable", "active_from": "file" | "database" | "cache",
    "active_version"}`` (the store is looked at at most every 5 seconds). A host serving another version than
    ``active_version`` is serving its cached copy (the active one could not be fetched or loaded)."""
    shared = store()
    if shared is None:
        return {"store": "off", "active_from": "file", "active_version": artifacts.read_active(models_dir())}
    now = time.monotonic()
    if now - _reachable["at"] >= 5.0:
        _reachable.update(at=now, value=shared.reachable())
    active = active_version()
    with _state_lock:
        source = _state["active_source"]
    return {"store": "ok" if _reachable["value"] else "unreachable", "active_from": source, "active_version": active}
