"""Two API hosts on one PostgreSQL database and one shared model store (RECO_MODEL_STORE), each with its own models/
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
from tests.conftest import Pipeline
from tests.serving.live import POSTGRES, Service, get, post, prepare_service, scratch_postgres_database

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


@pytest.fixture
def service_postgres(pipeline: Pipeline, tmp_path) -> Service:  # noqa: ANN201
    """The tiny shop in a scratch PostgreSQL database (skipped without a server), not started yet."""
    with scratch_postgres_database() as name:
        service = prepare_service(pipeline, tmp_path, f"postgres://{POSTGRES['user']}@{POSTGRES['host']}:"
                                                      f"{POSTGRES['port']}/{name}")
        try:
            yield service
        finally:
            service.stop()


def test_two_hosts_follow_one_active_version_from_the_store(service_postgres: Service) -> None:
    host_a = service_postgres
    root = host_a.root
    (root / "store").mkdir()
    host_a.env["RECO_MODEL_STORE"] = str(root / "store")
    first_version = (host_a.models / "ACTIVE").read_text().strip()
    host_a.manage("shell", "-c", "from recoapi.recommendations.services import model_reload; "
                                         f"model_reload(version='{first_version}')")  # into the store and database
    host_b = Service(root=root, env={**host_a.env, "RECO_MODELS_DIR": str(root / "models-b")},
                     token=host_a.token, models=root / "models-b")
    try:
        a, b = host_a.start(), host_b.start()
        assert get(f"{b}/health")["model_version"] == first_version  # fetched from the store at start
        assert (root / "models-b" / first_version / "checksums.json").is_file()

        second = "20990101T000000Z"
        _new_version(host_a, first_version, second)
        status, body = post(f"{a}/reload_model", host_a.token, {"version": second})
        assert status == 200, body
        reached_a, reached_b = _wait_for(a, second), _wait_for(b, second)
        print(f"activation reached host A after {reached_a:.2f} s and host B after {reached_b:.2f} s")
        assert max(reached_a, reached_b) < 10  # about a second: each worker looks every second

        third = "20990102T000000Z"  # host B's own copy of it is damaged before it is activated
        _new_version(host_a, first_version, third)
        DirectoryStore(root / "store").publish(host_a.models / third)
        damaged = DirectoryStore(root / "store").fetch(third, root / "models-b")
        vectors = bytearray((damaged / "item_vectors.npy").read_bytes())
        vectors[-1] ^= 0xFF
        (damaged / "item_vectors.npy").write_bytes(bytes(vectors))
        status, body = post(f"{a}/reload_model", host_a.token, {"version": third})
        assert status == 200, body
        _wait_for(a, third)
        time.sleep(2)
        kept = {get(f"{b}/health")["model_version"] for _ in range(20)}  # each worker keeps the model it had
        assert third not in kept and kept <= {first_version, second}, kept
        assert "copy of model 20990102T000000Z is damaged" in (root / "gunicorn.log").read_text()

        with ThreadPoolExecutor(4) as pool:  # host A dies while host B answers
            answers = [pool.submit(get, f"{b}/recommendations?users=u&k=3") for _ in range(200)]
            host_a.process.send_signal(signal.SIGKILL)
            assert all(future.result()["model_version"] in {first_version, second} for future in answers)
        host_a.process.wait(timeout=30)

        host_b.stop()  # B restarts while the store is away: it serves its cached copy and says so
        (root / "store").rename(root / "store-unmounted")
        b = host_b.start()
        health = get(f"{b}/health")
        assert health["model_version"] in {first_version, second} and health["status"] == "ok"
        assert health["model_store"] == {"store": "unreachable", "active_from": "database", "active_version": third}
    finally:
        host_b.stop()
