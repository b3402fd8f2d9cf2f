"""Two API hosts on one database and one shared model store (RECO_MODEL_STORE), each with its own models/
cache: an activation reaches both; a host whose copy is damaged keeps its model; a host that starts while
the store is unreachable serves its cached copy and says so; killing one host loses nothing sent to the
other."""

from __future__ import annotations

import shutil
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from modeling.store import DirectoryStore
from tests.serving.live import Service, get, post

pytestmark = pytest.mark.slow


def _wait_for(host: str, version: str, seconds: float = 30.0) -> float:
    """Seconds until ``host`` serves ``version`` (fails after ``seconds``)."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if get(f"{host}/health")["model_version"] == version:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"{host} did not serve {version} within {seconds} s: {get(f'{host}/health')}")


def _new_version(service: Service, source: str, name: str) -> None:
    """A second bundle on host A (a copy under a new version name), as a training run would publish it."""
    shutil.copytree(service.models / source, service.models / name)
    (service.models / name / "checksums.json").unlink(missing_ok=True)


def test_two_hosts_follow_one_active_version_from_the_store(service_sqlite: Service) -> None:
    root = service_sqlite.root
    (root / "store").mkdir()
    service_sqlite.env["RECO_MODEL_STORE"] = str(root / "store")
    first_version = (service_sqlite.models / "ACTIVE").read_text().strip()
    service_sqlite.manage("shell", "-c", "from recoapi.recommendations.services import model_reload; "
                                         f"model_reload(version='{first_version}')")  # into the store and database
    host_b = Service(root=root, env={**service_sqlite.env, "RECO_MODELS_DIR": str(root / "models-b")},
                     token=service_sqlite.token, models=root / "models-b")
    try:
        a, b = service_sqlite.start(), host_b.start()
        assert get(f"{b}/health")["model_version"] == first_version  # fetched from the store at start
        assert (root / "models-b" / first_version / "checksums.json").is_file()

        second = "20990101T000000Z"
        _new_version(service_sqlite, first_version, second)
        status, body = post(f"{a}/reload_model", service_sqlite.token, {"version": second})
        assert status == 200, body
        reached_a, reached_b = _wait_for(a, second), _wait_for(b, second)
        print(f"activation reached host A after {reached_a:.2f} s and host B after {reached_b:.2f} s")
        assert max(reached_a, reached_b) < 10  # about a second: each worker looks every second

        third = "20990102T000000Z"  # host B's own copy of it is damaged before it is activated
        _new_version(service_sqlite, first_version, third)
        DirectoryStore(root / "store").publish(service_sqlite.models / third)
        damaged = DirectoryStore(root / "store").fetch(third, root / "models-b")
        vectors = bytearray((damaged / "item_vectors.npy").read_bytes())
        vectors[-1] ^= 0xFF
        (damaged / "item_vectors.npy").write_bytes(bytes(vectors))
        status, body = post(f"{a}/reload_model", service_sqlite.token, {"version": third})
        assert status == 200, body
        _wait_for(a, third)
        time.sleep(2)
        kept = {get(f"{b}/health")["model_version"] for _ in range(20)}  # each worker keeps the model it had
        assert third not in kept and kept <= {first_version, second}, kept
        assert "copy of model 20990102T000000Z is damaged" in (root / "gunicorn.log").read_text()

        with ThreadPoolExecutor(4) as pool:  # host A dies while host B answers
            answers = [pool.submit(get, f"{b}/recommendations?users=u&k=3") for _ in range(200)]
            service_sqlite.process.send_signal(signal.SIGKILL)
            assert all(future.result()["model_version"] in {first_version, second} for future in answers)
        service_sqlite.process.wait(timeout=30)

        host_b.stop()  # B restarts while the store is away: it serves its cached copy and says so
        (root / "store").rename(root / "store-unmounted")
        b = host_b.start()
        health = get(f"{b}/health")
        assert health["model_version"] in {first_version, second} and health["status"] == "ok"
        assert health["model_store"] == {"store": "unreachable", "active_from": "database", "active_version": third}
    finally:
        host_b.stop()
