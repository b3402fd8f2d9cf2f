"""Writes under gunicorn (two workers): concurrent events are never refused, lost or stored twice, and a
product marked unavailable through POST /products is gone from every worker's next answer.

Before SQLite transactions began IMMEDIATE, 6 clients posting single events while 6 read
recommendations got 503 "database is locked" for about one event in eight: a transaction that read
first could not take the write lock once another writer had committed. The same load runs here, then
12 writers alone, on SQLite and on PostgreSQL; every event carries an event_id and is posted once.
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import pytest

from modeling import datasets as ds
from tests.conftest import Pipeline
from tests.serving.live import Service, prepare_service, request, scratch_postgres_database

pytestmark = pytest.mark.slow

SECONDS = 6.0  # per phase; the old code refused events within the first second or two of such load


def _load(service: Service, items: list[str], writers: int, readers: int, seconds: float,
          start: int) -> dict[str, list]:
    """Run ``writers`` clients posting single events of ``items`` and ``readers`` asking for recommendations."""
    base = service.base
    numbers = itertools.count(start)
    lock = threading.Lock()
    outcome: dict[str, list] = {"written": [], "refused": [], "reads": []}
    deadline = time.monotonic() + seconds

    def write(worker: int) -> None:
        while time.monotonic() < deadline:
            with lock:
                n = next(numbers)
            body = {"user": f"load-{worker}", "item": items[n % len(items)], "event": "view",
                    "event_id": f"load-{n}"}
            status, payload, _ = request(f"{base}/events", method="POST", token=service.token, body=body,
                                         timeout=60)
            with lock:
                outcome["written" if status == 201 else "refused"].append((status, payload))

    def read(worker: int) -> None:
        while time.monotonic() < deadline:
            status, _, _ = request(f"{base}/recommendations?users=A000000{worker % 9 + 1},load-0&k=5", timeout=60)
            with lock:
                outcome["reads"].append(status)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    threads += [threading.Thread(target=read, args=(r,)) for r in range(readers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 120)
    return outcome


def _live_events(service: Service) -> tuple[int, int]:
    """(live events stored, distinct event ids among them)."""
    rows, ids = service.manage("shell", "-c", (
        "from recoapi.catalog.models import Interaction;"
        "live = Interaction.objects.filter(source='live');"
        "print('live', live.count(), live.values('event_id').distinct().count())"
    )).stdout.split("live ")[-1].split()
    return int(rows), int(ids)


def _check(service: Service, pipeline: Pipeline) -> None:
    items = pipeline.data.items[ds.ITEM_ID].astype(str).tolist()[:20]
    base = service.start()
    assert request(f"{base}/recommendations?users=A0000001&k=3")[0] == 200  # both workers load their model
    mixed = _load(service, items, writers=6, readers=6, seconds=SECONDS, start=0)
    writers_only = _load(service, items, writers=12, readers=0, seconds=SECONDS, start=1_000_000)
    for outcome in (mixed, writers_only):
        assert not outcome["refused"], outcome["refused"][:3]
        assert outcome["written"], "no event was posted"
    assert set(mixed["reads"]) == {200}
    posted = len(mixed["written"]) + len(writers_only["written"])

    url = f"{base}/recommendations?users=A0000001&k=5"
    top = request(url)[1]["recommendations"]["A0000001"]["items"][0]["item_id"]
    status, _, _ = request(f"{base}/products", method="POST", token=service.token,
                           body={"id": top, "available": False})
    assert status == 200
    answers = [request(url)[1]["recommendations"]["A0000001"] for _ in range(8)]  # both workers, more than once
    assert all(top not in {item["item_id"] for item in answer["items"]} for answer in answers)
    service.stop()
    assert _live_events(service) == (posted, posted)


def test_concurrent_writers_on_sqlite_lose_nothing(pipeline: Pipeline, tmp_path: Path) -> None:
    service = prepare_service(pipeline, tmp_path, f"sqlite:///{tmp_path / 'db.sqlite3'}")
    try:
        _check(service, pipeline)
    finally:
        service.stop()


def test_concurrent_writers_on_postgresql_lose_nothing(pipeline: Pipeline, tmp_path: Path) -> None:
    from tests.serving.live import POSTGRES

    with scratch_postgres_database() as name:
        service = prepare_service(pipeline, tmp_path, f"postgres://{POSTGRES['user']}@{POSTGRES['host']}:"
                                                      f"{POSTGRES['port']}/{name}")
        try:
            _check(service, pipeline)
        finally:
            service.stop()
