"""What the API showed, under gunicorn: written by each worker's background writer, and at a graceful stop."""

from __future__ import annotations

import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from modeling import datasets as ds
from tests.conftest import Pipeline
from tests.serving.live import Service, get

pytestmark = pytest.mark.slow


def _stored(service: Service) -> set[str]:
    path = service.env["DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path, timeout=30) as db:
        return {row[0] for row in db.execute("SELECT id FROM recommendations_recommendationlist")}


def test_every_answered_list_is_written_in_the_background_and_at_a_graceful_stop(service_sqlite: Service,
                                                                                  pipeline: Pipeline) -> None:
    service = service_sqlite
    users = [str(u) for u in pipeline.data.interactions[ds.USER_ID].drop_duplicates().head(2)]

    def ask(_: int) -> list[str]:
        body = get(f"{service.base}/recommendations?users={','.join(users)}&k=3", timeout=60)
        return [entry["recommendation_id"] for entry in body["recommendations"].values()]

    # A long interval: nothing is written while serving; the graceful stop (SIGTERM) writes it all.
    service.env["RECO_IMPRESSIONS_FLUSH_SECONDS"] = "3600"
    service.start()
    with ThreadPoolExecutor(4) as pool:
        held = {rid for ids in pool.map(ask, range(20)) for rid in ids}
    assert len(held) == 40 and not _stored(service)
    service.stop()
    assert _stored(service) == held

    # A short interval: written in the background, without any stop.
    service.env["RECO_IMPRESSIONS_FLUSH_SECONDS"] = "0.5"
    service.start()
    with ThreadPoolExecutor(4) as pool:
        shown = {rid for ids in pool.map(ask, range(30)) for rid in ids}
    deadline = time.monotonic() + 30
    while not shown <= _stored(service) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _stored(service) == held | shown
