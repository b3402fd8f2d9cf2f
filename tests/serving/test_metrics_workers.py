"""GET /metrics under gunicorn: every worker's counts summed, each server with its own metrics directory.

gunicorn.conf.py makes a fresh Prometheus multi-process directory when the server starts and removes
it when the server stops; a worker that exits leaves the live gauges but keeps its counts.
"""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from modeling import datasets as ds
from tests.conftest import Pipeline
from tests.serving.live import Service, get

pytestmark = pytest.mark.slow


def _metrics(service: Service) -> dict[tuple[str, tuple], float]:
    req = urllib.request.Request(f"{service.base}/metrics", headers={"Authorization": f"Bearer {service.token}"})
    with urllib.request.urlopen(req, timeout=30) as response:  # noqa: S310  (loopback)
        text = response.read().decode()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def _count(samples: dict, name: str, **labels: str) -> float:
    return sum(value for (sample, got), value in samples.items()
               if sample == name and set(labels.items()) <= set(got))


def _workers(service: Service) -> list[int]:
    return service.worker_pids()


def test_every_worker_s_requests_are_summed_and_the_directory_is_removed(service_sqlite: Service,
                                                                          pipeline: Pipeline) -> None:
    service = service_sqlite
    service.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    scratch = service.root / "tmp"  # where the server makes its metrics directory
    scratch.mkdir()
    service.env["TMPDIR"] = str(scratch)
    service.start()
    user = str(pipeline.data.interactions[ds.USER_ID].iloc[0])
    with ThreadPoolExecutor(8) as pool:  # concurrent requests: both workers answer some
        answered = list(pool.map(lambda _: get(f"{service.base}/recommendations?users={user}&k=5", timeout=60),
                                 range(60)))
    pids = {int(body.get("process", 0)) for body in [get(f"{service.base}/health") for _ in range(20)]}
    assert all(body["recommendations"][user]["strategy"] for body in answered)
    samples = _metrics(service)
    assert _count(samples, "recoapi_requests_total", endpoint="recommendations", status="200") == 60
    assert _count(samples, "recoapi_recommendations_total") == 60
    version = answered[0]["model_version"]
    assert _count(samples, "recoapi_active_model", version=version) == 1.0
    assert _count(samples, "recoapi_model_loads_total", result="ok") >= 1  # loads are counted (a worker that
    # answered nothing yet may still be retrying a load its start could not make)
    assert pids <= set(_workers(service))

    (directory,) = scratch.glob("recoapi-metrics-*")
    assert any(directory.glob("*.db"))

    # A worker replaced by gunicorn: its counts stay in the sums.
    os.kill(_workers(service)[0], signal.SIGKILL)
    deadline = time.monotonic() + 60
    while len(_workers(service)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _count(_metrics(service), "recoapi_requests_total", endpoint="recommendations", status="200") == 60

    service.stop()
    assert not directory.exists()
