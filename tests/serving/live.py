"""Helpers for tests against the real service: gunicorn on loopback, a scratch PostgreSQL database, a TCP proxy.

The proxy stands between the service and PostgreSQL, so a test can take the database away
(every connection cut, new ones refused) and bring it back, as a crashed or restarting
database server would.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import Pipeline, copy_models

ROOT = Path(__file__).resolve().parents[2]
POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(url: str, timeout: float = 10) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310  (loopback only)
        return json.loads(response.read())


def request(url: str, *, method: str = "GET", token: str | None = None, body: dict | None = None,
            timeout: float = 60, headers: dict[str, str] | None = None) -> tuple[int, dict, dict[str, str]]:
    """(status, JSON body, headers) of one request; HTTP errors are returned, not raised."""
    headers = {"Content-Type": "application/json", **(headers or {})}
    if token:
        headers["Authorization"] = f"Token {token}"
    data = json.dumps(body or {}).encode() if method == "POST" else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:  # noqa: S310
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), dict(exc.headers)


def post(url: str, token: str, body: dict | None = None) -> tuple[int, dict]:
    status, payload, _ = request(url, method="POST", token=token, body=body)
    return status, payload


# --------------------------------------------------------------------------- PostgreSQL


def postgres_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(**POSTGRES, dbname="postgres", connect_timeout=3):
            return True
    except Exception:  # noqa: BLE001  (any failure means: not available here)
        return False


@contextmanager
def scratch_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database (dropped afterwards); skips the test without a server."""
    if not postgres_available():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    import psycopg

    name = f"reco_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(**POSTGRES, dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(**POSTGRES, dbname="postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class TcpProxy:
    """Forwards 127.0.0.1:<port> to a target; :meth:`cut` drops every connection and refuses new ones."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            try:
                listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the other thread
            except OSError:
                pass
            listener.close()
        with self._lock:
            for sock in self._sockets:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()
            self._sockets.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            # The timeout bounds the connect only: a pooled connection may idle for longer than 5 s
            # (a worker loading its model between two queries), and a timed-out recv() would close it.
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


# --------------------------------------------------------------------------- the service


@dataclass
class Service:
    """A prepared service directory: database migrated and loaded, a staff token, a private models/."""

    root: Path
    env: dict[str, str]
    token: str
    models: Path
    base: str = ""
    process: subprocess.Popen | None = None
    _log: object = field(default=None, repr=False)

    def manage(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], env=self.env, cwd=ROOT,
                              check=False, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} exited with {done.returncode}:\n{done.stderr[-3000:]}")
        return done

    def manage_many(self, *commands: tuple[str, ...], timeout: float = 600) -> subprocess.CompletedProcess:
        """Several manage.py commands, in order, in one process: Django and its libraries start once instead
        of once per command (about 1.4 s each), as ``call_command`` runs them. The first failing command
        stops the rest."""
        script = ("import json, sys; sys.path.insert(0, sys.argv[1]); from modeling import runtime; import os; "
                  "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'recoapi.settings'); import django; "
                  "django.setup(); from django.core.management import call_command; "
                  "[call_command(*command) for command in json.loads(sys.argv[2])]")
        done = subprocess.run([sys.executable, "-c", script, str(ROOT), json.dumps(commands)], env=self.env,
                              cwd=ROOT, check=False, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {commands} exited with {done.returncode}:\n{done.stderr[-3000:]}")
        return done

    def start(self) -> str:
        """Start gunicorn (two workers, as configured by gunicorn.conf.py) and wait for /health."""
        port = free_port()
        self.env["RECO_BIND"] = f"127.0.0.1:{port}"
        self._log = open(self.root / "gunicorn.log", "a")  # noqa: SIM115
        self.process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")],
                                        env=self.env, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                get(f"{self.base}/health")
                return self.base
            except (urllib.error.URLError, ConnectionError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError((self.root / "gunicorn.log").read_text()[-3000:]) from None
                time.sleep(0.3)

    def worker_pids(self) -> list[int]:
        """The web workers: the master's children that have none of their own (gunicorn's dirty pool, which
        runs the text process, is a child of the master with a worker of its own)."""
        return [pid for pid in _children(self._master()) if not _children(pid)]

    def text_process_pids(self) -> list[int]:
        """The processes that run the text encoder (the dirty pool's workers); none with RECO_TEXT_PROCESS=0."""
        return [child for pid in _children(self._master()) for child in _children(pid)]

    def _master(self) -> int:
        assert self.process is not None, "the service is not started"
        return self.process.pid

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if self._log is not None:
            self._log.close()
            self._log = None


def _children(pid: int) -> list[int]:
    try:
        return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:  # the process has just exited
        return []


def prepare_service(pipeline: Pipeline, root: Path, database_url: str, **extra_env: str) -> Service:
    """Migrate and import the tiny shop into ``database_url``; copy the models; create a staff user."""
    models = root / "models"
    copy_models(pipeline.models, models)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "recoapi.settings",
        "DATABASE_URL": database_url,
        "RECO_MODELS_DIR": str(models),
        "RECO_PROCESSED_DIR": str(root / "processed"),
        "RECO_EMBEDDINGS_DIR": str(pipeline.embeddings),
        "RECO_DATA_PATH": str(pipeline.raw),
        "RECO_LOGS_DIR": str(root / "logs"),
        "RECO_WORKERS": "2",
        "RECO_PREWARM": "0",
        "RECO_THROTTLE_ANON": "off",  # these tests send hundreds of requests a second from one address
        "RECO_IMPRESSIONS_WRITER": "thread",  # as shipped (the test process itself writes only on flush)
        **extra_env,
    }
    env.pop("RECO_ACTIVE_CHECK_SECONDS", None)  # the shipped default (1 s) is what is tested
    service = Service(root=root, env=env, token="", models=models)
    staff = service.manage_many(("migrate", "-v0"), ("load_data",),
                                ("create_staff_user", "--username", "ops", "--password", "ops-pass-123"))
    service.token = staff.stdout.split("API token: ")[1].split()[0]
    return service
