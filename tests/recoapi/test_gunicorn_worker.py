"""The worker class leaves a new connection to an idle worker before taking it (kept-alive connections spread), and
answers a kept-alive connection's next request in the thread that answered the last one when it comes at once."""

from __future__ import annotations

import io
import socket
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
from gunicorn.config import Config
from gunicorn.workers.gthread import ThreadWorker

from recoapi import gunicorn_worker
from recoapi.gunicorn_worker import ACCEPT_DEFER_SECONDS, JsonErrorWorker, next_request_ready


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


@pytest.fixture
def connection() -> Iterator[tuple[SimpleNamespace, socket.socket]]:
    """(gunicorn's connection as the worker reads it: a socket and its parser's read-ahead buffer, the client's end)."""
    server, client = socket.socketpair()
    yield SimpleNamespace(sock=server, parser=SimpleNamespace(unreader=SimpleNamespace(buf=io.BytesIO()))), client
    server.close()
    client.close()


def test_the_next_request_is_ready_once_the_client_sends_it(connection: tuple[SimpleNamespace, socket.socket]) -> None:
    conn, client = connection
    started = time.monotonic()
    assert not next_request_ready(conn, 0.05)
    assert time.monotonic() - started >= 0.04  # it waited (about) the time it was given, no more is asserted
    client.sendall(b"GET / HTTP/1.1\r\n")
    assert next_request_ready(conn, 0.05)


def test_bytes_the_parser_read_ahead_are_a_ready_request(connection: tuple[SimpleNamespace, socket.socket]) -> None:
    conn, _ = connection
    conn.parser.unreader.buf.write(b"GET / HTTP/1.1\r\n")  # read behind a body: the socket itself is not readable
    assert next_request_ready(conn, 0)


def test_a_closed_connection_is_handed_to_the_parser(connection: tuple[SimpleNamespace, socket.socket]) -> None:
    conn, client = connection
    client.close()  # the parser meets the end of the connection and the worker closes it
    assert next_request_ready(conn, 0.05)


def _lingering(monkeypatch: pytest.MonkeyPatch, answers: list[bool], ready: list[bool], *, linger: float = 0.002,
               alive: bool = True, connections: int = 2) -> tuple[JsonErrorWorker, list[str]]:
    """A worker of 2 threads holding ``connections`` whose gunicorn ``handle`` answers with ``answers`` in turn (True:
    kept alive) and whose connection has its next request ready or not as ``ready`` says, in turn."""
    worker = object.__new__(JsonErrorWorker)
    worker.cfg, worker.nr_conns = Config(), connections
    worker.cfg.set("threads", 2)
    worker.alive, worker.keepalive_linger = alive, linger
    calls: list[str] = []
    answers, ready = list(answers), list(ready)

    def handle(self: ThreadWorker, conn: object) -> bool:
        calls.append("answered")
        return answers.pop(0)

    def next_ready(conn: object, timeout: float) -> bool:
        assert timeout == linger
        calls.append("waited")
        return ready.pop(0)

    monkeypatch.setattr(ThreadWorker, "handle", handle)
    monkeypatch.setattr(gunicorn_worker, "next_request_ready", next_ready)
    return worker, calls


def test_a_thread_answers_its_connections_next_requests_while_they_come_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    worker, calls = _lingering(monkeypatch, [True, True, True], [True, True, False])
    assert worker.handle(object()) is True  # then handed back to the main thread, kept alive, as gunicorn does
    assert calls == ["answered", "waited", "answered", "waited", "answered", "waited"]


def test_a_closed_connection_is_not_waited_on(monkeypatch: pytest.MonkeyPatch) -> None:
    worker, calls = _lingering(monkeypatch, [True, False], [True])
    assert worker.handle(object()) is False
    assert calls == ["answered", "waited", "answered"]


@pytest.mark.parametrize("setting", [{"linger": 0.0}, {"alive": False}, {"connections": 3}],
                         ids=["off", "stopping", "more connections than threads"])
def test_the_connection_goes_back_at_once(monkeypatch: pytest.MonkeyPatch, setting: dict) -> None:
    worker, calls = _lingering(monkeypatch, [True], [], **setting)
    assert worker.handle(object()) is True
    assert calls == ["answered"]
