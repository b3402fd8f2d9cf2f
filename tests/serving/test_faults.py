"""Faults against the real service: the database going away, processes killed mid-work, the log files.

- The database unavailable: PostgreSQL behind a TCP proxy that the test cuts. Requests get a
  503 JSON answer (never a 500 or a hang) and the service recovers by itself when it is back.
- A process killed (SIGKILL) during an import or a training run: the database, the data
  snapshot and models/ are exactly as they were.
- Logs: logs/requests.log has one line per request, with the id returned to the client.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import nullcontext
from pathlib import Path

import pytest

from modeling import artifacts
from tests.conftest import Pipeline
from tests.serving.live import (
    POSTGRES,
    ROOT,
    Service,
    TcpProxy,
    prepare_service,
    request,
    scratch_postgres_database,
)

pytestmark = pytest.mark.slow


def test_request_log_has_one_line_per_request_with_the_returned_id(service_sqlite: Service) -> None:
    base = service_sqlite.start()
    ids = []
    for users in ("A0000001,stranger", "A0000002"):
        status, _, headers = request(f"{base}/recommendations?users={users}&k=3")
        assert status == 200
        ids.append(headers["X-Request-ID"])
    status, body, headers = request(f"{base}/similar_items?item=no-such-product")
    assert status == 404 and body["error"]["request_id"] == headers["X-Request-ID"]
    ids.append(headers["X-Request-ID"])
    service_sqlite.stop()
    lines = (service_sqlite.root / "logs" / "requests.log").read_text().splitlines()
    for request_id in ids:
        [line] = [line for line in lines if request_id in line]
        assert re.search(r"GET /(recommendations|similar_items) (200|404) [0-9.]+ms", line), line
    first = next(line for line in lines if ids[0] in line)
    assert "users=2" in first and "strategies=" in first and "model=" in first
    assert "error=unknown_item" in next(line for line in lines if ids[2] in line)


def test_database_outage_answers_503_json_and_recovers(pipeline: Pipeline, tmp_path: Path) -> None:
    with scratch_postgres_database() as name:
        proxy = TcpProxy((POSTGRES["host"], POSTGRES["port"]))
        proxy.start()
        service = prepare_service(pipeline, tmp_path,
                                  f"postgres://{POSTGRES['user']}@127.0.0.1:{proxy.port}/{name}")
        try:
            base = service.start()
            url = f"{base}/recommendations?users=A0000001,stranger&k=3"
            answers = [request(url)[:2] for _ in range(6)]
            assert all(status == 200 for status, _ in answers), answers

            proxy.cut()
            started = time.monotonic()
            for _ in range(8):  # both workers, each more than once
                status, body, headers = request(url, timeout=30)
                assert status == 503, body
                assert body["error"]["code"] == "database_unavailable"
                assert body["error"]["request_id"] == headers["X-Request-ID"]
                # The request id is random hex and may contain any digits; the rest must not leak
                # the database address.
                leaked = {key: value for key, value in body["error"].items() if key != "request_id"}
                assert "5432" not in str(leaked) and str(proxy.port) not in str(leaked)
            status, health, _ = request(f"{base}/health")
            assert status == 503 and health["database"] == "unavailable"
            assert time.monotonic() - started < 30, "requests must fail fast, not hang"

            proxy.start()
            # Recovered means every worker answers again: wait for 6 answers in a row (a worker that has
            # not served a request since the outage may still be loading its model).
            deadline = time.monotonic() + 60
            statuses: list[int] = []
            while statuses[-6:] != [200] * 6:
                assert time.monotonic() < deadline, f"the service did not recover: {statuses}"
                statuses.append(request(url)[0])
                if statuses[-1] != 200:
                    time.sleep(0.2)
            assert request(f"{base}/health")[1]["database"] == "ok"
        finally:
            service.stop()
            proxy.cut()


def _state(service: Service) -> dict:
    """Everything a killed process could have half-written."""
    counts = service.manage("shell", "-c", (
        "from recoapi.catalog.models import Interaction, Product, Shopper;"
        "from recoapi.recommendations.models import ModelVersion;"
        "print(Interaction.objects.count(), Product.objects.count(), Shopper.objects.count(),"
        " sorted(ModelVersion.objects.values_list('version', flat=True)))"
    )).stdout.strip()
    processed = service.root / "processed"
    return {
        "database": counts,
        "snapshot": sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in processed.iterdir()),
        "models": sorted(p.name for p in service.models.iterdir()),
        "active": artifacts.read_active(service.models),
    }


def _kill_when(service: Service, args: list[str], marker: str, timeout: float = 300) -> str:
    """Run a manage.py command, SIGKILL it once ``marker`` appears in its output; returns the output."""
    env = {**service.env, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, str(ROOT / "manage.py"), *args], env=env, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    seen = threading.Event()

    def read() -> None:
        for chunk in iter(lambda: process.stdout.read(1), ""):
            output.append(chunk)
            if marker in "".join(output[-200:]) or marker in chunk:
                seen.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not seen.is_set():
        assert process.poll() is None, f"finished before it could be killed:\n{''.join(output)[-2000:]}"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.3)
    assert process.poll() is None, "finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    return "".join(output)


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_import_killed_midway_leaves_everything_as_it_was(pipeline: Pipeline, tmp_path: Path, database: str) -> None:
    scratch = scratch_postgres_database() if database == "postgres" else nullcontext(None)
    with scratch as name:
        url = (f"postgres://{POSTGRES['user']}@127.0.0.1:{POSTGRES['port']}/{name}" if name
               else f"sqlite:///{tmp_path / 'db.sqlite3'}")
        service = prepare_service(pipeline, tmp_path, url)
        bigger = tmp_path / "bigger"
        service.manage("generate_demo_data", "--output", str(bigger), "--users", "4000", "--items", "800",
                       "--interactions", "120000", "--seed", "5")
        before = _state(service)
        output = _kill_when(service, ["load_data", "--path", str(bigger)], "import interactions")
        assert "import interactions" in output
        assert _state(service) == before
        # The next import sees consistent data: the tiny shop's files are recognised as already imported.
        assert "import skipped" in service.manage("load_data").stdout


def test_training_killed_midway_leaves_models_as_they_were(service_sqlite: Service) -> None:
    before = _state(service_sqlite)
    _kill_when(service_sqlite, ["train", "--force", "--activate", "--epochs", "30"], "epoch 1/30")
    assert _state(service_sqlite) == before


def test_retraining_killed_midway_leaves_everything_as_it_was(service_sqlite: Service, tmp_path: Path) -> None:
    embeddings = tmp_path / "own-embeddings"  # retraining brings the embeddings up to date: not the shared ones
    shutil.copytree(service_sqlite.env["RECO_EMBEDDINGS_DIR"], embeddings)
    service_sqlite.env["RECO_EMBEDDINGS_DIR"] = str(embeddings)
    service_sqlite.manage("shell", "-c", (
        "from datetime import timedelta;"
        "from recoapi.catalog.models import Interaction, Product;"
        "from recoapi.catalog.services import interaction_record;"
        "newest = Interaction.objects.order_by('-occurred_at').first().occurred_at;"
        "product = Product.objects.order_by('id').first().id;"
        "interaction_record(user_id='late-1', item_id=product, event='view', occurred_at=newest + timedelta(days=2));"
        "interaction_record(user_id='late-1', item_id=product, event='cart', occurred_at=newest + timedelta(days=4))"
    ))  # one new event to train on, one newer to hold out
    before = _state(service_sqlite)
    _kill_when(service_sqlite, ["retrain", "--budget", "0"], "training on")
    assert _state(service_sqlite) == before
    runs = service_sqlite.manage("shell", "-c", "from recoapi.recommendations.models import TrainingRun;"
                                 "print('runs', TrainingRun.objects.count())").stdout.split("runs ")[-1]
    assert int(runs) == 0  # a run is recorded when it ends
