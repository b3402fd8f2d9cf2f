"""API fixtures: the tiny pipeline imported into the test database and wired into settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from recoapi.catalog.services import data_import
from recoapi.recommendations import impressions
from recoapi.recommendations.engine import registry
from tests.conftest import Pipeline


@pytest.fixture
def service(settings, db, pipeline: Pipeline, models_copy: Path, tmp_path: Path) -> Pipeline:
    """Settings point at a private copy of the tiny pipeline; its data is in the database."""
    settings.RECO_DATA_SOURCE = "amazon2018"
    settings.RECO_DATA_PATH = pipeline.raw
    settings.RECO_PROCESSED_DIR = tmp_path / "processed"
    settings.RECO_EMBEDDINGS_DIR = pipeline.embeddings
    settings.RECO_MODELS_DIR = models_copy
    settings.RECO_ACTIVE_CHECK_SECONDS = 0.0
    settings.RECO_AVAILABILITY_SECONDS = 0.0
    data_import(source="amazon2018", path=pipeline.raw, processed_dir=tmp_path / "processed")
    registry.reset()
    yield pipeline
    registry.reset()


@pytest.fixture
def shown(service: Pipeline):  # noqa: ANN201
    """The impression buffer, emptied before and after the test (other tests leave lists in it)."""
    with impressions.buffer._lock:
        impressions.buffer._pending.clear()
    yield impressions.buffer
    with impressions.buffer._lock:
        impressions.buffer._pending.clear()


@pytest.fixture
def client() -> APIClient:
    return APIClient()


@pytest.fixture
def staff_client(db) -> APIClient:
    user = get_user_model().objects.create_user(username="staff", password="pw-123456", is_staff=True)
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return api


@pytest.fixture
def shopper_client(db) -> APIClient:
    user = get_user_model().objects.create_user(username="shopper", password="pw-123456")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return api
