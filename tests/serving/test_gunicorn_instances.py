"""Several gunicorn instances on one machine, each with its own control socket (issue 12, item 7).

gunicorn (25.1 and later) opens a control socket for ``gunicornc``. Its default path is one per
user, so a second instance used to replace the first one's socket and, on exit, delete it.
gunicorn.conf.py names the socket after the bind address (``RECO_CONTROL_SOCKET=auto``), takes a
path, or opens none (``off``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.serving.live import ROOT, Service, get

GUNICORN = [sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")]


def _print_config(**env: str) -> dict[str, str]:
    """gunicorn's own view of gunicorn.conf.py under ``env`` (``--print-config``: nothing is started)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RECO_CONTROL", "RECO_BIND", "XDG_RUNTIME"))}
    # Reading the configuration makes a metrics directory unless one is named: name one, reused.
    clean["PROMETHEUS_MULTIPROC_DIR"] = str(Path(tempfile.gettempdir()) / "recoapi-metrics-print-config")
    result = subprocess.run([*GUNICORN, "--print-config"], env={**clean, **env}, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    settings = {}
    for line in result.stdout.splitlines():
        name, sep, value = line.partition("=")
        if sep:
            settings[name.strip()] = value.strip()
    return settings


@pytest.fixture
def runtime_dir() -> Iterator[Path]:
    """A short, private directory standing in for $XDG_RUNTIME_DIR (Unix socket paths are limited to 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="reco-run-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_control_socket_is_named_after_the_bind_address_or_given_or_off(runtime_dir: Path) -> None:
    auto = _print_config(RECO_BIND="127.0.0.1:8123", XDG_RUNTIME_DIR=str(runtime_dir))
    assert auto["control_socket"] == str(runtime_dir / "recoapi-127.0.0.1-8123.ctl")
    assert auto["control_socket_disable"] == "False"
    home = _print_config(RECO_BIND="[::1]:9000", HOME=str(runtime_dir))
    assert home["control_socket"] == str(runtime_dir / ".gunicorn" / "recoapi-1-9000.ctl")
    given = _print_config(RECO_CONTROL_SOCKET=str(runtime_dir / "shop.ctl"))
    assert given["control_socket"] == str(runtime_dir / "shop.ctl")
    assert _print_config(RECO_CONTROL_SOCKET="off")["control_socket_disable"] == "True"


def _control(socket: Path, command: str, deadline_s: float = 60) -> dict:
    """``gunicornc -s socket -c command -j``, retried until it answers (the arbiter re-opens it around forks)."""
    deadline = time.monotonic() + deadline_s
    while True:
        result = subprocess.run([sys.executable, "-m", "gunicorn.ctl.cli", "-s", str(socket), "-c", command, "-j"],
                                capture_output=True, text=True, timeout=60)
        if result.returncode == 0:
            return json.loads(result.stdout)
        if time.monotonic() > deadline:
            raise AssertionError(f"no answer on {socket}: {result.stdout}{result.stderr}")
        time.sleep(0.5)


def _sockets(directory: Path) -> set[Path]:
    return {path for path in directory.rglob("*") if path.is_socket()}


def _second_instance(first: Service, root: Path, **env: str) -> Service:
    """Another gunicorn instance of the same prepared shop (same database, models and logs), not started yet."""
    root.mkdir()
    return Service(root=root, env={**first.env, **env}, token=first.token, models=first.models)


@pytest.mark.slow
def test_two_instances_started_at_once_keep_their_own_control_sockets(service_sqlite: Service,
                                                                       runtime_dir: Path) -> None:
    first = service_sqlite
    first.env.update(XDG_RUNTIME_DIR=str(runtime_dir), RECO_WORKERS="1")
    first.env.pop("RECO_CONTROL_SOCKET", None)  # the default, as a user gets it
    second = _second_instance(first, first.root / "second")
    try:
        with ThreadPoolExecutor(2) as pool:
            bases = list(pool.map(Service.start, (first, second)))
        first_socket, second_socket = (runtime_dir / f"recoapi-127.0.0.1-{base.rsplit(':', 1)[1]}.ctl"
                                       for base in bases)
        assert _control(first_socket, "show stats")["pid"] == first.process.pid
        assert _control(second_socket, "show stats")["pid"] == second.process.pid
        assert _sockets(runtime_dir) == {first_socket, second_socket}
        assert f"Control socket listening at {first_socket}" in (first.root / "gunicorn.log").read_text()
        worker = _control(first_socket, "show workers")["workers"][0]["pid"]
        assert get(f"{bases[0]}/health")["process"] == worker

        first.stop()
        assert first.process.returncode == 0
        assert _sockets(runtime_dir) == {second_socket}, "stopping one instance removed only its own socket"
        assert _control(second_socket, "show stats")["pid"] == second.process.pid
        assert get(f"{bases[1]}/health")["status"] == "ok"
        second.stop()
        assert second.process.returncode == 0
        assert _sockets(runtime_dir) == set()
    finally:
        second.stop()


@pytest.mark.slow
def test_no_control_socket_when_turned_off(service_sqlite: Service, runtime_dir: Path) -> None:
    service_sqlite.env.update(XDG_RUNTIME_DIR=str(runtime_dir), HOME=str(runtime_dir), RECO_WORKERS="1",
                              RECO_CONTROL_SOCKET="off", GUNICORN_CMD_ARGS="--log-level debug")
    base = service_sqlite.start()
    assert get(f"{base}/health")["status"] == "ok"
    # gunicorn decides about the socket right after forking the workers: the line is waited for (60 s at
    # most) rather than assumed written by the time a worker answers.
    log_file = service_sqlite.root / "gunicorn.log"
    deadline = time.monotonic() + 60
    while "Control socket disabled" not in log_file.read_text() and time.monotonic() < deadline:
        time.sleep(0.2)
    log = log_file.read_text()
    assert "Control socket disabled" in log and "Control socket listening" not in log
    assert _sockets(runtime_dir) == set()
    service_sqlite.stop()
    assert service_sqlite.process.returncode == 0
