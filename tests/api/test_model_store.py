"""One source of truth for the active model with a shared store (RECO_MODEL_STORE): activation goes through
the database and the store, workers follow the database, a damaged local copy is never loaded."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from modeling import artifacts
from modeling.errors import ArtifactError
from modeling.store import DirectoryStore
from recoapi.recommendations import model_store
from recoapi.recommendations.models import ModelVersion
from recoapi.recommendations.services import model_version_sync
from tests.api.test_endpoints import a_known_user
from tests.conftest import Pipeline

OTHER = "20990101T000000Z"


@pytest.fixture
def store(service: Pipeline, settings, tmp_path: Path) -> Path:
    """A shared store holding the service's model and OTHER, a second version this host has not fetched."""
    root = tmp_path / "store"
    root.mkdir()
    settings.RECO_MODEL_STORE = str(root)
    models = Path(settings.RECO_MODELS_DIR)
    shared = DirectoryStore(root)
    shared.publish(models / service.version)
    shutil.copytree(models / service.version, models / OTHER)
    (models / OTHER / "checksums.json").unlink()
    shared.publish(models / OTHER)
    shutil.rmtree(models / OTHER)  # published by another host
    model_store._reachable["at"] = float("-inf")
    ModelVersion.objects.all().delete()
    model_store.activate(service.version)
    model_version_sync()
    return root


def _served(client: APIClient, service: Pipeline) -> str:
    return client.get("/recommendations", {"users": a_known_user(service)}).json()["model_version"]


def test_activation_fetches_the_version_and_records_it_in_the_database(
        store: Path, service: Pipeline, client: APIClient, staff_client: APIClient, settings) -> None:
    assert {v.version for v in ModelVersion.objects.all()} == {service.version, OTHER}  # the store's versions
    assert _served(client, service) == service.version
    response = staff_client.post("/reload_model", {"version": OTHER}, format="json")
    assert response.status_code == 200, response.content
    assert ModelVersion.objects.get(is_active=True).version == OTHER
    assert artifacts.read_active(settings.RECO_MODELS_DIR) == OTHER  # what this host serves without a database
    assert (Path(settings.RECO_MODELS_DIR) / OTHER / "manifest.json").is_file()  # fetched into the cache
    assert _served(client, service) == OTHER
    assert client.get("/health").json()["model_store"] == {"store": "ok", "active_from": "database",
                                                           "active_version": OTHER}


def test_workers_follow_the_database(store: Path, service: Pipeline, client: APIClient) -> None:
    assert _served(client, service) == service.version
    ModelVersion.objects.update(is_active=False)
    ModelVersion.objects.filter(version=OTHER).update(is_active=True)  # activated on another host
    assert _served(client, service) == OTHER


def test_a_damaged_local_copy_is_not_loaded(store: Path, service: Pipeline, client: APIClient, settings,
                                            caplog) -> None:
    assert _served(client, service) == service.version
    local = DirectoryStore(store).fetch(OTHER, Path(settings.RECO_MODELS_DIR))
    data = bytearray((local / "item_vectors.npy").read_bytes())
    data[-1] ^= 0xFF
    (local / "item_vectors.npy").write_bytes(bytes(data))
    ModelVersion.objects.update(is_active=False)
    ModelVersion.objects.filter(version=OTHER).update(is_active=True)
    assert _served(client, service) == service.version  # keeps its model
    assert "copy of model 20990101T000000Z is damaged" in caplog.text


def test_health_says_whether_the_store_is_reachable(store: Path, service: Pipeline, client: APIClient,
                                                    settings, tmp_path: Path) -> None:
    assert client.get("/health").json()["model_store"]["store"] == "ok"
    store.rename(tmp_path / "unmounted")
    model_store._reachable["at"] = float("-inf")
    body = client.get("/health").json()
    assert body["status"] == "ok" and body["model_store"]["store"] == "unreachable"
    assert body["model_version"] == service.version  # still serving
    settings.RECO_MODEL_STORE = ""
    assert client.get("/health").json()["model_store"] == {"store": "off", "active_from": "file",
                                                           "active_version": service.version}


def test_a_version_deleted_on_one_host_is_gone_from_every_host(store: Path, service: Pipeline, settings) -> None:
    """Deleting removes the bundle from the store and this host's cache and records the removal in the store;
    another host's cached copy is not listed again, so no host's sync brings the version's row back."""
    from recoapi.recommendations.services import model_version_delete

    models = Path(settings.RECO_MODELS_DIR)
    DirectoryStore(store).fetch(OTHER, models)  # this host has served it: a cached copy
    shutil.copytree(models / OTHER, models.parent / "other-host-cache")
    assert model_version_delete(versions=[OTHER]) == [OTHER]
    assert not (store / OTHER).exists() and not (models / OTHER).exists()
    assert (store / service.version).is_dir()
    shutil.copytree(models.parent / "other-host-cache", models / OTHER)  # as another host's cache still holds it
    assert model_store.versions() == ([service.version], True)
    model_version_sync()
    assert list(ModelVersion.objects.values_list("version", flat=True)) == [service.version]
    # A bundle of this host the store never had (not published yet) is listed; so are this host's copies when
    # the store's folder is empty (a share not mounted, a new store): only a recorded removal hides a copy.
    later = "20990102T000000Z"
    shutil.copytree(models / service.version, models / later)
    assert model_store.versions() == (sorted([service.version, later]), True)
    settings.RECO_MODEL_STORE = str(models.parent / "empty-store")
    (models.parent / "empty-store").mkdir()
    assert model_store.versions() == (sorted([service.version, OTHER, later]), True)


def test_store_errors_name_the_model_store_once_and_say_why_it_cannot_be_reached(
        store: Path, service: Pipeline, staff_client: APIClient, tmp_path: Path) -> None:
    """The API's messages hide the store's path without garbling the sentence around it ("the model store the
    model store cannot be reached"), and a store whose folder does not exist says so."""
    store.rename(tmp_path / "unmounted")
    model_store._reachable["at"] = float("-inf")
    response = staff_client.post("/reload_model", {"version": service.version}, format="json")
    assert response.status_code == 422, response.content
    assert response.json()["error"]["message"] == (
        f"Model {service.version} cannot be loaded and was not activated: the model store cannot be reached: the "
        "folder does not exist (create it, or mount the share, on every host)")
    assert str(tmp_path) not in response.content.decode()


def test_a_version_missing_from_the_store_is_named_without_the_store_path(store: Path, settings,
                                                                          tmp_path: Path) -> None:
    from recoapi.recommendations.services import _public

    shutil.rmtree(store / OTHER)
    with pytest.raises(ArtifactError) as missing:
        model_store.local_bundle(OTHER)
    assert _public(missing.value) == f"model {OTHER} is not in the model store"
    store.rename(tmp_path / "unmounted")
    with pytest.raises(ArtifactError) as unreachable:
        model_store.local_bundle(OTHER)
    assert _public(unreachable.value) == (f"model {OTHER} cannot be fetched: the model store cannot be reached: "
                                          "the folder does not exist (create it, or mount the share, on every host)")


def test_a_host_with_no_active_model_in_the_database_says_how_to_activate_one(
        store: Path, service: Pipeline, client: APIClient, settings) -> None:
    """A host that joins a store no host has activated a model through (the model of a single host, activated
    before RECO_MODEL_STORE was set, is not marked active in the database) says what to do."""
    from recoapi.recommendations.engine import registry

    ModelVersion.objects.update(is_active=False)
    (Path(settings.RECO_MODELS_DIR) / "ACTIVE").unlink()  # a new host: nothing cached
    registry.reset()
    response = client.get("/recommendations", {"users": a_known_user(service)})
    assert response.status_code == 503
    message = response.json()["error"]["message"]
    assert "none is marked active in the database the hosts share" in message
    assert "`POST /reload_model` with its \"version\"" in message
