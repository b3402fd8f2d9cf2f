"""Fixtures of the serving tests: the tiny shop behind gunicorn on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Pipeline
from tests.serving.live import Service, prepare_service


@pytest.fixture
def service_sqlite(pipeline: Pipeline, tmp_path: Path) -> Iterator[Service]:
    """The tiny shop in a SQLite file, served by gunicorn with two workers (not started yet)."""
    service = prepare_service(pipeline, tmp_path, f"sqlite:///{tmp_path / 'db.sqlite3'}")
    yield service
    service.stop()


@pytest.fixture
def server(service_sqlite: Service) -> Iterator[tuple[str, str, Path]]:
    """(base URL, staff token, models dir) of the running service."""
    yield service_sqlite.start(), service_sqlite.token, service_sqlite.models


@pytest.fixture(scope="module")
def live(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """The tiny shop under gunicorn as shipped (gunicorn.conf.py), started once for the tests of a module."""
    root = tmp_path_factory.mktemp("live")
    service = prepare_service(pipeline, root, f"sqlite:///{root / 'db.sqlite3'}")
    service.start()
    yield service
    service.stop()
