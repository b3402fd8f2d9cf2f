"""gunicorn worker whose own error answers are JSON in the service's error shape.

gunicorn answers requests it cannot parse (a request line or a header over its limits, a
malformed request line...) itself, before the application sees them, with an HTML page. This
worker answers them with ``{"error": {"code", "message", "request_id"}}`` instead, with the
same status code gunicorn chose (414, 431, 400, 501...).

gunicorn also caps ``limit_request_line`` at 8,190 bytes (any larger value is lowered to that),
which is less than the service's own query-string bound (``RECO_MAX_QUERY_STRING``, 16 KiB).
Importing this module raises that cap to :data:`REQUEST_LINE_CEILING`, so ``gunicorn.conf.py``
can set a request-line limit that fits the service's bound. Imported by gunicorn only; it
needs no Django.

It also spreads kept-alive connections over the workers. Every worker waits on the one listening
socket and gunicorn's worker accepts whatever it sees first: a client (or a proxy) opening two
connections at once often had both taken by the worker that took the first, which then answered
everything on one core while the other worker idled (about half the throughput; the serving
benchmark's request shares per worker showed it). A worker that already holds a connection now
leaves a new one to an idle worker for :data:`ACCEPT_DEFER_SECONDS` before accepting it itself.
"""

from __future__ import annotations

import json
import re
import select
import time
import uuid
from typing import Any

from gunicorn import util
from gunicorn.http import message
from gunicorn.workers.gthread import ThreadWorker

#: The largest request line gunicorn may be configured to accept (its own cap is 8,190 bytes).
REQUEST_LINE_CEILING = 1024 * 1024
if message.MAX_REQUEST_LINE < REQUEST_LINE_CEILING:
    message.MAX_REQUEST_LINE = REQUEST_LINE_CEILING

#: How long a worker that holds connections leaves a new one to an idle worker (an idle worker, woken by
#: the same readiness of the listening socket, accepts in well under this).
ACCEPT_DEFER_SECONDS = 0.001

#: How long a thread that has answered on a kept-alive connection waits for its next request by default
#: (``gunicorn.conf.py`` sets :attr:`JsonErrorWorker.keepalive_linger` from ``RECO_KEEPALIVE_LINGER_MS``).
KEEPALIVE_LINGER_SECONDS = 0.002

_CODES = {400: "bad_request", 403: "forbidden", 414: "uri_too_long", 417: "expectation_failed",
          431: "headers_too_large", 500: "internal_error", 501: "not_implemented"}
_STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3}) ([^\r\n]*)\r\n")


class _Capture:
    """Stands in for the client socket while gunicorn writes its HTML error, to learn the status it chose."""

    def __init__(self) -> None:
        self.data = b""

    def gettimeout(self) -> float:
        return 0.0

    def sendall(self, data: bytes) -> None:
        self.data += data


def error_response(status: int, reason: str, message_text: str, request_id: str) -> bytes:
    """A complete HTTP/1.1 response carrying the service's JSON error body (the connection is closed)."""
    body = json.dumps({"error": {"code": _CODES.get(status, "bad_request" if status < 500 else "internal_error"),
                                 "message": message_text, "request_id": request_id}}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nX-Request-ID: {request_id}\r\n\r\n")
    return head.encode("latin-1") + body


def _message(status: int, exc: BaseException) -> str:
    """What the client is told: the limit for size errors, gunicorn's parse message otherwise."""
    if status == 414:
        return (f"The request line is longer than the server accepts ({exc}); send long lists in the body "
                "of POST /recommendations.")
    if status == 431:
        return f"A request header is too large or there are too many ({exc})."
    if status >= 500 and status != 501:
        return "Internal server error."
    return f"The request could not be parsed: {exc}"


def next_request_ready(conn: Any, timeout: float) -> bool:
    """Whether the connection ``conn`` (gunicorn's ``TConn``) holds the start of its next request within
    ``timeout`` seconds: bytes its parser already read ahead, or its socket readable (data, or the client's close,
    which gunicorn's parser then meets as the end of the connection).

    Not gunicorn's ``TConn.wait_for_data``: its ``data_ready`` flag stays set once a connection's first request was
    readable, so it would answer True for every later one and the thread would block reading an idle connection;
    and it does not look at the read-ahead bytes."""
    if conn.parser.unreader.buf.getvalue():  # as gunicorn checks it after a body drain
        return True
    poller = select.poll()  # not select(): file descriptors above 1,023 are normal in a busy server
    poller.register(conn.sock, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


class JsonErrorWorker(ThreadWorker):
    """gunicorn's threaded worker, with its own error answers rendered as the service's JSON errors, that
    leaves new connections to idle workers first and answers a kept-alive connection's next request in the
    thread that answered the last one when it comes at once."""

    #: Seconds a thread waits for a kept-alive connection's next request (0: hand it back at once, as gunicorn does).
    keepalive_linger: float = KEEPALIVE_LINGER_SECONDS

    def handle(self, conn: Any) -> Any:
        result = super().handle(conn)
        while result is True and self._may_linger() and next_request_ready(conn, self.keepalive_linger):
            result = super().handle(conn)  # the connection is set up: the next request is read and answered
        return result

    def _may_linger(self) -> bool:
        """Whether this thread may wait for its connection's next request: on, the worker not stopping (nor past
        ``max_requests``), and holding no more connections than it has threads, so that no other connection's
        request can be waiting for this thread meanwhile (with more, a request that came on another connection
        waited for the wait's end: 8 connections over 2 workers of 2 threads lost 4% of their requests a second)."""
        return self.keepalive_linger > 0 and self.alive and self.nr_conns <= self.cfg.threads

    def accept(self, listener: Any) -> None:
        if self.nr_conns:  # another worker may be idle: give it the first chance (it may take this one)
            time.sleep(ACCEPT_DEFER_SECONDS)
        super().accept(listener)  # the listening socket is non-blocking: nothing left to accept is a no-op

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        capture = _Capture()
        super().handle_error(req, capture, addr, exc)  # gunicorn's status choice, logging and access log
        match = _STATUS_LINE.match(capture.data)
        status, reason = (int(match.group(1)), match.group(2).decode("latin-1")) if match else (500, "Error")
        try:
            util.write_nonblock(client, error_response(status, reason, _message(status, exc), uuid.uuid4().hex))
        except OSError:
            self.log.debug("Failed to send error message.")
