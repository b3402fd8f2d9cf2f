"""One error shape for every API response: ``{"error": {"code": ..., "message": ...}}``.

Services raise :class:`ApplicationError` subclasses; DRF's own exceptions and
``modeling`` errors are translated here, at the edge. No stack trace or file
path reaches a client.
"""

from __future__ import annotations

import logging
from typing import Any

from django.core.exceptions import DisallowedHost
from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler

from recoapi.renderers import FastJSONRenderer

logger = logging.getLogger(__name__)


class ApplicationError(Exception):
    """Base of the service's expected errors."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code


class NotFound(ApplicationError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class Conflict(ApplicationError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


class ServiceUnavailable(ApplicationError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "unavailable"


def error_body(code: str, message: str) -> dict[str, Any]:
    """The JSON body of every error response; ``request_id`` matches the request's log lines."""
    from recoapi.middleware import current_request_id

    return {"error": {"code": code, "message": message, "request_id": current_request_id()}}


def database_error_parts(exc: DatabaseError) -> tuple[str, str, bool]:
    """``(code, message, worth retrying)`` of the 503 a database error gets.

    A database that is not set up (no tables: ``migrate`` was not run; PostgreSQL: no such database) is told
    as such: "try again shortly" would send clients and operators waiting for an outage to pass. Told apart by
    the drivers' messages (SQLite "no such table", "no such column" and "has no column named", PostgreSQL
    "relation ... does not exist", "column ... (of relation ...) does not exist" (tables of an earlier version: an
    upgrade without ``migrate``), "database ... does not exist", and SQLite's "unable to open database file"), without
    another query: while the server is
    unreachable a second attempt would wait as long."""
    text = str(exc).lower()
    if ("no such column" in text or "has no column named" in text
            or ("column" in text and "does not exist" in text)):  # before "relation": PostgreSQL names both
        return ("database_not_migrated", "The database's tables are those of an earlier version (an upgrade "
                "without migrate): run `manage.py migrate` on the server.", False)
    if "no such table" in text or ("relation" in text and "does not exist" in text):
        return ("database_not_migrated", "The database lacks tables of this version (none yet, or an upgrade "
                "without migrate): run `manage.py migrate` on the server.", False)
    if "database" in text and "does not exist" in text:
        return ("database_missing", "The database named in DATABASE_URL does not exist: create it, then run "
                "`manage.py migrate`.", False)
    if "unable to open database file" in text or "lock file beside the sqlite database" in text:
        # SQLite's file in a folder that does not exist (or that this user cannot enter): waiting changes nothing
        return ("database_missing", "The SQLite database file named in DATABASE_URL cannot be opened: its folder does "
                "not exist or cannot be written by the service; check DATABASE_URL, then run `manage.py migrate`.",
                False)
    return "database_unavailable", "The database is unavailable; try again shortly.", True


def database_error_response(exc: DatabaseError) -> tuple[dict[str, Any], dict[str, str]]:
    """The 503 body of a database error and its headers (``Retry-After`` where waiting may help)."""
    code, message, retry = database_error_parts(exc)
    return error_body(code, message), ({"Retry-After": "5"} if retry else {})


def _flatten(detail: Any, prefix: str = "") -> list[str]:
    if isinstance(detail, dict):
        out: list[str] = []
        for key, value in detail.items():
            name = "" if key == "non_field_errors" else str(key)
            out.extend(_flatten(value, f"{prefix}.{name}" if prefix and name else name or prefix))
        return out
    if isinstance(detail, list):
        return [m for item in detail for m in _flatten(item, prefix)]
    return [f"{prefix}: {detail}" if prefix else str(detail)]


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF exception handler rendering every error in the one shape."""
    if isinstance(exc, ApplicationError):
        return Response(error_body(exc.code, exc.message), status=exc.status_code)
    if isinstance(exc, DatabaseError):
        # Connection refused, database locked, server restarting...: the client may retry; Django drops the
        # broken connection at the end of the request, so the next request reconnects.
        logger.error("database error in %s: %s", context.get("view").__class__.__name__, exc)
        body, headers = database_error_response(exc)
        return Response(body, status=status.HTTP_503_SERVICE_UNAVAILABLE, headers=headers)
    response = exception_handler(exc, context)
    if response is None:
        logger.exception("unhandled error in %s", context.get("view").__class__.__name__, exc_info=exc)
        return Response(error_body("server_error", "Internal server error."),
                        status=status.HTTP_500_INTERNAL_SERVER_ERROR)
    if isinstance(exc, exceptions.ValidationError):
        code, message = "invalid", "; ".join(_flatten(exc.detail))
    elif isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        code = codes if isinstance(codes, str) else exc.default_code
        message = "; ".join(_flatten(exc.detail))
    else:  # Http404, PermissionDenied from Django
        code, message = ("not_found", "Not found.") if response.status_code == 404 else ("error", str(exc))
    response.data = error_body(str(code), message)
    if isinstance(exc, exceptions.NotAcceptable) and context.get("request") is not None:
        # No renderer was agreed on: DRF would render the error with the view's first one (the schema view's is
        # YAML). Errors are JSON everywhere.
        request = context["request"]
        request.accepted_renderer, request.accepted_media_type = FastJSONRenderer(), FastJSONRenderer.media_type
    return response


def json_404(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """Django handler404: unknown URLs answer JSON too."""
    return JsonResponse(error_body("not_found", f"No endpoint at {request.path}."), status=404)


def json_500(request: HttpRequest) -> JsonResponse:
    """Django handler500."""
    return JsonResponse(error_body("server_error", "Internal server error."), status=500)


def json_400(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """Django handler400 (a ``Host`` header outside ``ALLOWED_HOSTS`` says so)."""
    if isinstance(exception, DisallowedHost):
        return JsonResponse(error_body("bad_request", "This server does not answer to the request's Host header "
                                       "(see DJANGO_ALLOWED_HOSTS)."), status=400)
    return JsonResponse(error_body("bad_request", "Bad request."), status=400)


def json_403(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """Django handler403."""
    return JsonResponse(error_body("permission_denied", "Permission denied."), status=403)


def json_csrf_failure(request: HttpRequest, reason: str = "") -> JsonResponse:
    """Django's CSRF_FAILURE_VIEW: a form posted without its CSRF token (the admin's login, a session's unsafe
    request) gets the API's JSON 403, not Django's HTML page."""
    return JsonResponse(error_body("csrf_failed", f"CSRF verification failed ({reason or 'no token'}): reload the "
                                   "page and send the form again."), status=403)
