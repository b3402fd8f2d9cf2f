"""Training learns from the database: imported and live interactions, products added over the API."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from rest_framework.test import APIClient

from modeling import datasets as ds
from recoapi.catalog.models import Interaction
from recoapi.catalog.selectors import training_data
from recoapi.exceptions import ApplicationError
from recoapi.recommendations.services import training_snapshot
from tests.conftest import Pipeline


def test_a_database_holding_the_import_trains_on_the_import_snapshot(service: Pipeline, settings) -> None:
    data, from_database = training_snapshot()
    assert not from_database
    imported = ds.read_snapshot(settings.RECO_PROCESSED_DIR)
    assert data.fingerprint == imported.fingerprint
    fresh = training_data()
    assert ds.content_fingerprint(imported.items, imported.interactions) == fresh.fingerprint
    assert fresh.counts() == imported.counts()
    # what the database held when it was read goes with the import's rows: a model trained on them records it
    assert data.report["last_interaction_id"] == fresh.report["last_interaction_id"] == Interaction.objects.order_by(
        "-id").first().id


def test_live_events_and_new_products_are_in_the_training_data(service: Pipeline, staff_client: APIClient) -> None:
    before = training_data()
    assert staff_client.post("/products", {"id": "FRESH-1", "title": "A brand new kettle"},
                             format="json").status_code == 201
    events = [{"user": "live-shopper", "item": "FRESH-1", "event": "purchase"},
              {"user": "live-shopper", "item": str(service.data.items[ds.ITEM_ID].iloc[0]), "event": "view"}]
    assert staff_client.post("/events", events, format="json").status_code == 201
    data, from_database = training_snapshot()
    assert from_database and data.fingerprint != before.fingerprint
    assert len(data.interactions) == len(before.interactions) + 2
    assert data.report["live_interactions"] == 2
    assert data.report["last_interaction_id"] == Interaction.objects.order_by("-id").first().id > before.report[
        "last_interaction_id"]
    mine = data.interactions[data.interactions[ds.USER_ID] == "live-shopper"]
    assert sorted(mine[ds.ITEM_ID]) == sorted(["FRESH-1", str(service.data.items[ds.ITEM_ID].iloc[0])])
    assert "FRESH-1" in set(data.items[ds.ITEM_ID])
    assert training_data().fingerprint == data.fingerprint  # the same database, the same fingerprint


def test_the_training_window_keeps_the_latest_days(service: Pipeline, settings) -> None:
    newest = Interaction.objects.order_by("-occurred_at").first().occurred_at
    settings.RECO_TRAIN_SINCE_DAYS = 30
    data, from_database = training_snapshot()
    assert from_database
    expected = Interaction.objects.filter(occurred_at__gte=newest - timedelta(days=30)).count()
    assert len(data.interactions) == expected < Interaction.objects.count()
    oldest = datetime.fromtimestamp(int(data.interactions[ds.TIMESTAMP].min()), tz=UTC)
    assert oldest >= newest - timedelta(days=30, seconds=1)


def test_an_empty_database_is_a_clear_error(db, settings, tmp_path) -> None:
    settings.RECO_PROCESSED_DIR = tmp_path
    with pytest.raises(ApplicationError, match="Nothing to train on"):
        training_snapshot()


def test_rows_an_earlier_version_stored_do_not_stop_training(service: Pipeline) -> None:
    """A shopper id with a comma (POST /events took it before) is refused where it is written now; already in the
    database, training still reads it as it is. (An infinite price an earlier importer stored is cleared by the
    migrations: see tests/api/test_price_constraint.py.)"""
    from recoapi.catalog.models import Shopper

    product = str(service.data.items[ds.ITEM_ID].iloc[0])
    Shopper.objects.create(id="smith,john")
    Interaction.objects.create(shopper_id="smith,john", product_id=product, event="view", weight=1.0,
                               occurred_at=datetime.now(UTC) - timedelta(days=1), source=Interaction.LIVE)
    data, from_database = training_snapshot()
    assert from_database and "smith,john" in set(data.interactions[ds.USER_ID])


def test_a_training_window_too_small_to_train_on_leaves_the_embeddings_as_they_were(service: Pipeline, settings,
                                                                                    tmp_path) -> None:
    """RECO_TRAIN_SINCE_DAYS=0.001: the run rebuilt the shared embeddings for its one shopper, then failed ("need
    at least 2 users"); the next plain training then failed too ("The embeddings were built from other data")."""
    import shutil

    from modeling.embeddings import read_manifest
    from modeling.two_tower import TwoTowerParams
    from recoapi.recommendations.services import model_train

    settings.RECO_EMBEDDINGS_DIR = tmp_path / "embeddings"
    shutil.copytree(service.embeddings, settings.RECO_EMBEDDINGS_DIR)
    before = read_manifest(settings.RECO_EMBEDDINGS_DIR)
    settings.RECO_TRAIN_SINCE_DAYS = 0.001
    with pytest.raises(ApplicationError, match=r"need at least 2 users and 2 items, got 1 users and \d+ items in "
                                               r"what is left after the RECO_TRAIN_SINCE_DAYS window \(the "
                                               r"interactions of the last 0.001 day\(s\) before the newest one\): "
                                               r"widen it"):
        model_train(params=TwoTowerParams(epochs=1))
    assert read_manifest(settings.RECO_EMBEDDINGS_DIR) == before


def test_training_on_the_database_encodes_with_the_configured_text_model(service: Pipeline, settings,
                                                                        tmp_path) -> None:
    """Training on live events rebuilt the embeddings with the bundled model whatever RECO_TEXT_MODEL_PATH said
    (serving encodes text queries with the configured one)."""
    import shutil

    from modeling.errors import ArtifactError
    from modeling.two_tower import TwoTowerParams
    from recoapi.recommendations.services import model_train

    settings.RECO_EMBEDDINGS_DIR = tmp_path / "embeddings"
    shutil.copytree(service.embeddings, settings.RECO_EMBEDDINGS_DIR)
    Interaction.objects.create(shopper_id=str(service.data.users[ds.USER_ID].iloc[0]),
                               product_id=str(service.data.items[ds.ITEM_ID].iloc[0]), event="view", weight=1.0,
                               occurred_at=datetime.now(UTC), source=Interaction.LIVE)
    settings.RECO_TEXT_MODEL_PATH = str(tmp_path / "nowhere" / "model")
    with pytest.raises(ArtifactError, match="nowhere/model does not exist"):
        model_train(params=TwoTowerParams(epochs=1))


def test_retrain_names_its_held_out_days_when_too_little_is_left_to_train_on(settings) -> None:
    # The hint named only RECO_TRAIN_SINCE_DAYS; in `retrain` the held-out days can be what empties the training part.
    import pandas as pd

    from recoapi.recommendations.services import check_trainable

    settings.RECO_TRAIN_SINCE_DAYS = 0
    items = pd.DataFrame({ds.ITEM_ID: ["a", "b"]})
    interactions = pd.DataFrame({ds.USER_ID: ["u", "u"], ds.ITEM_ID: ["a", "b"], ds.TIMESTAMP: [1, 2]})
    one_shopper = ds.finish_tables(items, interactions, report={}, fingerprint="f", source_name="database",
                                   keep_items="all", from_files=False)
    with pytest.raises(ApplicationError, match=r"got 1 users and 2 items in what is left after the last 2 day\(s\) "
                                               r"held out to measure the candidate: retrain with a shorter "
                                               r"--holdout-days\.$"):
        check_trainable(one_shopper, holdout_days=2)
    with pytest.raises(ApplicationError, match=r"got 1 users and 2 items\.$"):  # nothing cut: no hint
        check_trainable(one_shopper)
