"""Reloads under gunicorn with two worker processes on loopback.

After POST /reload_model every worker serves the new version within 2 seconds; a broken
bundle is refused and the old version keeps serving, also when models/ACTIVE is pointed
at it behind the service's back.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from modeling import artifacts
from tests.conftest import Pipeline

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310  (loopback only)
        return json.loads(response.read())


def post(url: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body or {}).encode(), method="POST",
                                     headers={"Authorization": f"Token {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def server(pipeline: Pipeline, tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    models = tmp_path / "models"
    shutil.copytree(pipeline.models, models)
    port = free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "recoapi.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "RECO_MODELS_DIR": str(models),
        "RECO_PROCESSED_DIR": str(tmp_path / "processed"),
        "RECO_EMBEDDINGS_DIR": str(pipeline.embeddings),
        "RECO_DATA_PATH": str(pipeline.raw),
        "RECO_LOGS_DIR": str(tmp_path / "logs"),
        "RECO_BIND": f"127.0.0.1:{port}",
        "RECO_WORKERS": "2",
        "RECO_PREWARM": "0",
    }
    env.pop("RECO_ACTIVE_CHECK_SECONDS", None)  # the shipped default (1 s) is what is tested
    manage = [sys.executable, str(ROOT / "manage.py")]
    for command in (["migrate", "-v0"], ["load_data"]):
        subprocess.run(manage + command, env=env, cwd=ROOT, check=True, capture_output=True, timeout=300)
    staff = subprocess.run(manage + ["create_staff_user", "--username", "ops", "--password", "ops-pass-123"],
                           env=env, cwd=ROOT, check=True, capture_output=True, text=True, timeout=120)
    token = staff.stdout.split("API token: ")[1].strip()
    log = open(tmp_path / "gunicorn.log", "w")  # noqa: SIM115
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")],
                               env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            get(f"{base}/health")
            break
        except (urllib.error.URLError, ConnectionError):
            if process.poll() is not None or time.monotonic() > deadline:
                log.close()
                raise RuntimeError((tmp_path / "gunicorn.log").read_text()[-3000:]) from None
            time.sleep(0.3)
    yield base, token, models
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def versions_seen(base: str, n: int) -> tuple[set[str], set[int]]:
    versions, processes = set(), set()
    for _ in range(n):
        health = get(f"{base}/health")
        versions.add(health["model_version"])
        processes.add(health["process"])
        body = get(f"{base}/recommendations?users=A0000001,stranger&k=3")
        versions.add(body["model_version"])
    return versions, processes


def test_every_worker_follows_a_reload_within_two_seconds(server, pipeline: Pipeline) -> None:
    base, token, models = server
    versions, processes = versions_seen(base, 30)
    assert versions == {pipeline.version}
    assert len(processes) == 2, "requests should reach both workers"

    newer = "20990101T000000Z"
    shutil.copytree(models / pipeline.version, models / newer)
    status, body = post(f"{base}/reload_model", token)
    assert status == 200 and body["model_version"] == newer
    reloaded = time.monotonic()
    # Every response after the switch-over, from both workers, names the new version.
    converged_after = None
    while time.monotonic() - reloaded < 10:
        versions, processes = versions_seen(base, 10)
        if versions == {newer} and len(processes) == 2:
            converged_after = time.monotonic() - reloaded
            break
    assert converged_after is not None and converged_after <= 2.0 + 1.0, converged_after  # 2 s + request time
    print(f"all workers on the new version {converged_after:.2f} s after POST /reload_model")
    versions, _ = versions_seen(base, 20)
    assert versions == {newer}


def test_broken_bundle_is_refused_and_the_old_one_keeps_serving(server, pipeline: Pipeline) -> None:
    base, token, models = server
    broken = "20990101T000000Z"
    shutil.copytree(models / pipeline.version, models / broken)
    (models / broken / "user_vectors.npy").write_bytes(b"\x93NUMPY truncated")
    status, body = post(f"{base}/reload_model", token, {"version": broken})
    assert status == 422 and body["error"]["code"] == "invalid_model"
    assert versions_seen(base, 20)[0] == {pipeline.version}
    # Even if ACTIVE is pointed at the broken bundle behind the service's back, workers keep the old model.
    (models / artifacts.ACTIVE_FILE).write_text(broken + "\n")
    time.sleep(1.5)
    assert versions_seen(base, 20)[0] == {pipeline.version}
