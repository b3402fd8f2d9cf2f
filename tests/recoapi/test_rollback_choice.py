"""Which version `rollback` activates when none is named."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from django.utils import timezone

from recoapi.exceptions import NotFound
from recoapi.recommendations import model_store, retraining
from recoapi.recommendations.models import ModelActivation, TrainingRun


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Four published versions, the newest active; what rollback activates is recorded instead of loaded."""
    versions = ["20261201T000000Z", "20261202T000000Z", "20261203T000000Z", "20261204T000000Z"]
    activated: list[str] = []
    monkeypatch.setattr(retraining.model_store, "versions", lambda: (list(versions), {}))
    monkeypatch.setattr(retraining.model_store, "active_version", lambda: versions[-1])
    monkeypatch.setattr(retraining.model_store, "incompatibility", lambda version: "")
    monkeypatch.setattr(retraining, "_manifest", lambda models_dir, version: {})
    def activate(models_dir: Path, version: str, check: Any = None) -> None:
        if check is not None:
            check(_NO_PRODUCTS)
        activated.append(version)

    monkeypatch.setattr(retraining, "_activate", activate)
    return activated


_NO_PRODUCTS = SimpleNamespace(arrays=SimpleNamespace(item_ids=np.zeros(0, dtype=str)))
"""A bundle as the checks before an activation read it (its product ids); the tests' database has no product."""


def _refused(candidate: str) -> None:
    TrainingRun.objects.create(started_at=timezone.now(), seconds=1.0, decision=TrainingRun.REFUSED,
                               reason="below the active model", candidate_version=candidate,
                               previous_version="20261202T000000Z", tolerance=0.01)


@pytest.mark.django_db
def test_rollback_passes_over_candidates_the_gate_refused(published: list[str]) -> None:
    """A candidate the gate refused was published (newer than the model it was measured against): rollback took
    it, the model judged worse, instead of the one that served before."""
    _refused("20261203T000000Z")
    assert retraining.model_rollback()["model_version"] == "20261202T000000Z"
    assert retraining.model_rollback(version="20261203T000000Z")["model_version"] == "20261203T000000Z"  # by name
    assert published == ["20261202T000000Z", "20261203T000000Z"]


@pytest.mark.django_db
def test_rollback_says_so_when_only_refused_candidates_are_older(published: list[str]) -> None:
    for version in ("20261201T000000Z", "20261202T000000Z", "20261203T000000Z"):
        _refused(version)
    with pytest.raises(NotFound, match="that the retraining gate did not refuse"):
        retraining.model_rollback()
    assert published == []


def _activated(*versions: str) -> None:
    start = timezone.now()
    for minutes, version in enumerate(versions):
        ModelActivation.objects.create(version=version, activated_at=start + timedelta(minutes=minutes))


@pytest.mark.django_db
def test_rollback_returns_to_the_version_that_served_before(published: list[str]) -> None:
    """20261203 was trained without --activate and never served: rollback activated it, the newest version older
    than the active one, instead of the model the shop had before."""
    _activated("20261202T000000Z", "20261204T000000Z")
    assert retraining.model_rollback()["model_version"] == "20261202T000000Z"


@pytest.mark.django_db
def test_a_second_rollback_undoes_the_first(published: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    _activated("20261202T000000Z", "20261204T000000Z", "20261202T000000Z")  # the last: a rollback
    monkeypatch.setattr(retraining.model_store, "active_version", lambda: "20261202T000000Z")
    assert retraining.model_rollback()["model_version"] == "20261204T000000Z"


@pytest.mark.django_db
def test_an_earlier_active_version_that_is_gone_falls_back_to_the_newest_older_one(published: list[str]) -> None:
    _activated("20261130T000000Z", "20261204T000000Z")  # its bundle deleted since
    assert retraining.model_rollback()["model_version"] == "20261203T000000Z"


@pytest.mark.django_db
def test_every_activation_is_recorded(tmp_path: Path, settings: Any) -> None:
    settings.RECO_MODELS_DIR = str(tmp_path)
    settings.RECO_MODEL_STORE = ""
    versions = ["20261201T000000Z", "20261202T000000Z", "20261203T000000Z"]
    for version in versions:  # set_active needs only the manifest to be there
        (tmp_path / version).mkdir()
        (tmp_path / version / "manifest.json").write_text("{}")
    for version in (versions[0], versions[1], versions[1], versions[2], versions[0]):
        model_store.activate(version)
    # newest first; the same version activated twice in a row once
    assert list(ModelActivation.objects.values_list("version", flat=True)) == [
        versions[0], versions[2], versions[1], versions[0]]
    assert list(model_store.previously_active(versions[0])) == [versions[2], versions[1]]


@pytest.mark.django_db
def test_after_an_upgrade_a_second_rollback_still_undoes_the_first(monkeypatch: pytest.MonkeyPatch) -> None:
    """Versions activated before the record existed left it empty: the first rollback took the newest older
    version, and the second found no record of the one it had left, so it went further back ("No version older
    than the active one" with two versions). The version rolled back from is now recorded first."""
    versions = ["20261203T000000Z", "20261204T000000Z"]
    state = {"active": versions[-1]}

    def activate(models_dir: Path, version: str, check: Any = None) -> None:  # as the real one: pointer and record
        if check is not None:
            check(_NO_PRODUCTS)
        state["active"] = version
        model_store.record_activation(version)

    monkeypatch.setattr(retraining.model_store, "versions", lambda: (list(versions), {}))
    monkeypatch.setattr(retraining.model_store, "active_version", lambda: state["active"])
    monkeypatch.setattr(retraining.model_store, "incompatibility", lambda version: "")
    monkeypatch.setattr(retraining, "_manifest", lambda models_dir, version: {})
    monkeypatch.setattr(retraining, "_activate", activate)
    first = retraining.model_rollback()
    assert (first["model_version"], first["chosen_by"]) == ("20261203T000000Z", "published")
    second = retraining.model_rollback()
    assert (second["model_version"], second["chosen_by"]) == ("20261204T000000Z", "activations")
    activate(Path("."), "20261204T000000Z")  # activating the active version again adds no record
    assert list(ModelActivation.objects.order_by("activated_at", "id").values_list("version", flat=True)) == [
        "20261204T000000Z", "20261203T000000Z", "20261204T000000Z"]
