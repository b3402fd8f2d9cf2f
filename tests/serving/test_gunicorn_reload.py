"""Reloads under gunicorn with two worker processes on loopback.

After POST /reload_model every worker serves the new version within 2 seconds; a broken
bundle is refused and the old version keeps serving, also when models/ACTIVE is pointed
at it behind the service's back.
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ThreadPoolExecutor

from modeling import artifacts
from tests.conftest import Pipeline
from tests.serving.live import get, post


def _one_round(base: str) -> tuple[str, int, str]:
    health = get(f"{base}/health")
    body = get(f"{base}/recommendations?users=A0000001,stranger&k=3")
    return health["model_version"], health["process"], body["model_version"]


def versions_seen(base: str, n: int, workers: int = 2) -> tuple[set[str], set[int]]:
    """Versions answered by at least ``n`` rounds of requests, sent 4 at a time until every worker has answered.

    Sequential requests may all land on one worker (whichever accepts first), so the rounds run
    concurrently and continue (up to 20 times ``n``) until ``workers`` different processes answered.
    """
    versions: set[str] = set()
    processes: set[int] = set()
    with ThreadPoolExecutor(4) as pool:
        for _ in range(20):
            for health_version, process, body_version in pool.map(lambda _: _one_round(base), range(n)):
                versions |= {health_version, body_version}
                processes.add(process)
            if len(processes) >= workers:
                break
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
