"""The worker class leaves a new connection to an idle worker before taking it (kept-alive connections spread)."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from gunicorn.config import Config

from recoapi import gunicorn_worker
from recoapi.gunicorn_worker import ACCEPT_DEFER_SECONDS, JsonErrorWorker


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A non-blocking listening socket, as gunicorn's workers share it, with one connection waiting."""
    server = socket.create_server(("127.0.0.1", 0))
    server.setblocking(False)
    client = socket.create_connection(server.getsockname())
    yield server
    client.close()
    server.close()


def _worker(connections: int) -> JsonErrorWorker:
    """The worker's accept path only, without a running gunicorn (no arbiter, poller or thread pool)."""
    worker = object.__new__(JsonErrorWorker)
    worker.cfg, worker.nr_conns, worker.enqueued = Config(), connections, []
    worker.enqueue_req = worker.enqueued.append
    return worker


def _close(worker: JsonErrorWorker) -> None:
    for conn in worker.enqueued:
        conn.sock.close()


def test_an_idle_worker_accepts_at_once(listener: socket.socket, monkeypatch: pytest.MonkeyPatch) -> None:
    waits: list[float] = []
    monkeypatch.setattr(gunicorn_worker.time, "sleep", waits.append)
    worker = _worker(0)
    worker.accept(listener)
    assert waits == [] and len(worker.enqueued) == 1 and worker.nr_conns == 1
    _close(worker)


def test_a_busy_worker_waits_and_leaves_the_connection_to_an_idle_one(listener: socket.socket,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    idle = _worker(0)
    waits: list[float] = []

    def meanwhile(seconds: float) -> None:  # the idle worker, woken by the same readiness, takes it
        waits.append(seconds)
        idle.accept(listener)

    monkeypatch.setattr(gunicorn_worker.time, "sleep", meanwhile)
    busy = _worker(1)
    busy.accept(listener)
    assert waits == [ACCEPT_DEFER_SECONDS]
    assert busy.enqueued == [] and busy.nr_conns == 1  # nothing left to accept: no error, nothing taken
    assert len(idle.enqueued) == 1
    _close(idle)


def test_a_busy_worker_takes_the_connection_when_no_one_else_does(listener: socket.socket,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gunicorn_worker.time, "sleep", lambda seconds: None)
    busy = _worker(2)
    busy.accept(listener)
    assert len(busy.enqueued) == 1 and busy.nr_conns == 3
    _close(busy)
