"""Request middleware: request ids, size bounds, undecodable query strings and the one-line-per-request log.

Every request gets an id (the client's ``X-Request-ID`` when it is a short token, a new
one otherwise). The id is sent back in the ``X-Request-ID`` response header and in every
error body, and it is on every log record written while the request runs, so a shopper's
complaint can be matched to the log line of its request.

One line per API request goes to the ``recoapi.requests`` logger (``logs/requests.log``):
method, path, status, time in milliseconds, and for recommendation responses the number
of shoppers, the count of each strategy and the model version.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any
from urllib.parse import unquote_to_bytes

from django.conf import settings
from django.core.handlers.wsgi import WSGIRequest
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse, JsonResponse

from recoapi import metrics
from recoapi.exceptions import database_error_response, error_body

logger = logging.getLogger("recoapi.requests")

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")
REQUEST_ID = "recoapi.request_id"
"""The WSGI environ's key of a request's id when it was given before the middleware (by :mod:`recoapi.fast_lane`,
which hands the requests it does not answer to Django): the middleware keeps it."""
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{8,64}$")
_HIGH_ESCAPE = re.compile(r"%[89A-Fa-f]")  # an escaped byte from 0x80 on: part of a multi-byte sequence, or not


def current_request_id() -> str:
    """The id of the request being handled in this thread, or ``"-"`` outside a request."""
    return request_id_var.get()


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every log record (used by the log format)."""

    def filter(self, record: logging.LogRecord) -> bool:
        # django.request logs after the middleware has returned; its records carry the request itself.
        record.request_id = getattr(getattr(record, "request", None), "request_id", None) or request_id_var.get()
        return True


class ClientErrorFilter(logging.Filter):
    """Logs a client's mistake as one warning line: Django logs a request with a ``Host`` header outside
    ``ALLOWED_HOSTS`` as an error with a stack trace, although the client got its 400 and nothing failed here."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.levelno, record.levelname = logging.WARNING, logging.getLevelName(logging.WARNING)
        record.exc_info, record.exc_text = None, None
        return True


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def one_line(text: str) -> str:
    """``text`` with control characters written as escapes (``\\n``, ``\\x1b``): a request's path or an echoed id
    cannot start a fake line in the request log (``GET /x%0a... POST /reload_model 200``) or move a terminal."""
    return _CONTROL.sub(lambda found: repr(found.group())[1:-1], text)


def _summary(data: Any) -> str:
    """Users, strategy counts and model version of a response body, as ``key=value`` pairs."""
    if not isinstance(data, dict):
        return ""
    parts = []
    recommendations = data.get("recommendations")
    if isinstance(recommendations, dict):
        strategies = Counter(entry.get("strategy", "?") for entry in recommendations.values()
                             if isinstance(entry, dict))
        parts.append(f"users={len(recommendations)}")
        parts.append("strategies=" + ",".join(f"{name}:{count}" for name, count in sorted(strategies.items())))
    if data.get("model_version"):
        parts.append(f"model={data['model_version']}")
    error = data.get("error")
    if isinstance(error, dict) and error.get("code"):
        parts.append(f"error={error['code']}")
    return " ".join(parts)


def _endpoint(request: HttpRequest) -> str:
    """The route's name for the metrics' label: "admin" for every admin page, "unmatched" without a route."""
    if request.path.startswith("/admin/"):
        return "admin"
    match = getattr(request, "resolver_match", None)
    return (match.url_name if match is not None else None) or "unmatched"


def request_id_of(offered: str) -> str:
    """A request's id: the client's ``X-Request-ID`` (``offered``) when it is a short token, a new one otherwise."""
    return offered if _CLIENT_ID.match(offered) else uuid.uuid4().hex


def log_answered(method: str, path: str, status: int, seconds: float, data: Any, endpoint: str) -> None:
    """The request log's line of one answered request and its metrics (``data``: the response's data, for the
    line's summary; ``endpoint``: the route's name)."""
    logger.info("%s %s %d %.1fms %s", method, one_line(path), status, seconds * 1000.0, one_line(_summary(data)))
    metrics.request_answered(endpoint, method, status, seconds)


class RequestMiddleware:
    """Assigns the request id, refuses oversized requests and query strings that are not UTF-8, and logs one line
    per request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = request.META.get(REQUEST_ID) or request_id_of(request.headers.get("X-Request-ID", ""))
        request.request_id = request_id  # type: ignore[attr-defined]
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        try:
            response = request_refusal(request) or self.get_response(request)
            response["X-Request-ID"] = request_id
            if request.method == "HEAD" and not response.streaming and response.content:
                # A HEAD answer has the GET's headers and no body (gunicorn warns of every body sent with one).
                response["Content-Length"] = str(len(response.content))
                response.content = b""
            if not request.path.startswith(("/static/", "/admin/jsi18n")):
                log_answered(request.method or "", request.path, response.status_code, time.perf_counter() - started,
                             getattr(response, "data", None), _endpoint(request))
            return response
        finally:
            request_id_var.reset(token)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """A database error outside the API's views (the admin, its login) is the API's 503, not a 500."""
        if not isinstance(exception, DatabaseError):
            return None
        logger.error("database error at %s: %s", request.path, exception)
        body, headers = database_error_response(exception)
        response = JsonResponse(body, status=503)
        for name, value in headers.items():
            response[name] = value
        return response

def request_refusal(request: HttpRequest) -> HttpResponse | None:
    """413/414 JSON for a body or query string above the configured bounds, 411 for a chunked body, 400 for a
    query string with more parameters than Django reads or that is not UTF-8 (checked before any parsing)."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return JsonResponse(error_body("bad_request", "Content-Length is not a number."), status=400)
    if "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
        # Django reads a body by its Content-Length: a chunked one was read as empty, without a word (and the
        # size bound above never applied to it).
        return JsonResponse(error_body(
            "length_required", "A chunked request body is not read: send the body with a Content-Length."),
            status=411)
    if length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        return JsonResponse(error_body(
            "request_too_large",
            f"The request body is {length} bytes; at most {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} are accepted.",
        ), status=413)
    query = request.META.get("QUERY_STRING", "")
    if len(query) > settings.RECO_MAX_QUERY_STRING:
        return JsonResponse(error_body(
            "uri_too_long", f"The query string is longer than {settings.RECO_MAX_QUERY_STRING} characters."
        ), status=414)
    fields = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
    if fields is not None and query and 1 + query.count("&") > fields:  # Django's count; it raised, a 500 for DRF
        return JsonResponse(error_body(
            "bad_request", f"The query string has more than {fields} parameters."), status=400)
    if not _is_utf8_query(query, wsgi=isinstance(request, WSGIRequest)):
        return JsonResponse(error_body(
            "bad_request", "The query string is not valid UTF-8 once percent-decoded."), status=400)
    return None


def _is_utf8_query(query: str, *, wsgi: bool = True) -> bool:
    """Whether a query string percent-decodes to valid UTF-8.

    Django decodes an invalid sequence to U+FFFD without a word, so ``users=%FF`` would ask for a shopper named
    "\ufffd" and record a list for it. ``query`` is a WSGI query string (its bytes as latin-1 text, PEP 3333), or
    with ``wsgi`` False an ASGI one (Django has decoded its bytes as UTF-8 already). ASCII whose escapes are all
    ASCII (``%00`` to ``%7F``: every usual query, commas sent as ``%2C`` included) is valid as it stands."""
    if query.isascii() and not _HIGH_ESCAPE.search(query):
        return True
    try:
        unquote_to_bytes(query.encode("latin-1" if wsgi else "utf-8")).decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return False
    return True
