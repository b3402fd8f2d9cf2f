"""The read endpoints' fast lane: ``GET /recommendations`` and ``GET /similar_items`` of anonymous callers
answered without Django's middleware stack and DRF's view machinery, with the same answers.

A read request spent about half a millisecond around its answer: nine middlewares (sessions, CSRF, messages and
authentication are for the admin), DRF's request wrapping, negotiation, authentication and finalising. It needs
none of them to be answered: :class:`FastLane`, in front of Django's WSGI handler, does only what decides such
an answer, with the service's own functions: the request id, the query string's bounds, the throttles, the
endpoint's validation (:func:`recoapi.recommendations.serializers.validated_query`), the endpoint's answer
(``RecommendationsApi.answer``, ``SimilarItemsApi.answer``), DRF's JSON renderer, the same headers, the request
log's line and metrics, and Django's request signals (the database connections' upkeep). Measured by
``benchmarks/request_path.py --compare-fast-lane`` (docs/performance.md).

Everything else is Django's, by construction: a request the lane does not take whole goes to Django untouched
and gets Django's answer. It takes only a plain ``GET`` of those two paths without credentials (no
``Authorization``, no cookie), without a body, for JSON (no ``Accept`` other than ``*/*`` or
``application/json``, no ``format``), to an allowed host, under the middleware list this module was written
for (``settings.MIDDLEWARE`` as shipped; another list turns the lane off); and it answers only a 200. Whatever
would be an error (a throttled caller, an invalid parameter, an unknown product, no model, the database
down, parameters that need a token) is handed to Django before anything is written: its answer, error body
and all, is the API's. The throttles count a request once: their verdicts go to Django with it
(:data:`recoapi.throttling.DECIDED`).

Hand-written because no library does this: Django has no per-route middleware, and DRF's costs are per view.
``RECO_FAST_LANE=0`` sends every request through Django.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core import signals
from django.core.exceptions import DisallowedHost
from django.core.handlers.wsgi import WSGIHandler, WSGIRequest, get_script_name
from django.http import HttpResponse
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware
from django.urls import set_script_prefix
from rest_framework.authentication import SessionAuthentication
from rest_framework.renderers import JSONRenderer
from rest_framework.views import APIView

from recoapi.middleware import RequestMiddleware, log_answered, request_id_of, request_id_var
from recoapi.recommendations import apis
from recoapi.recommendations import serializers as s
from recoapi.throttling import DECIDED

logger = logging.getLogger(__name__)

MIDDLEWARE = (
    "recoapi.middleware.RequestMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
)
"""The middleware list whose answers the lane gives (the service's ``settings.MIDDLEWARE``)."""

_JSON_ACCEPTS = frozenset(("", "*/*", "application/json"))


@dataclass(frozen=True)
class Route:
    """A read endpoint the lane answers: its route's name (the log's and metrics' label), its view (throttles,
    methods, authentication), its query's serializer and its answer to validated parameters."""

    name: str
    view: type[APIView]
    query: type[s.QueryInput]
    answer: Callable[[Any, dict[str, Any]], dict[str, Any]]

    @property
    def allow(self) -> str:
        """The ``Allow`` header DRF gives the view's answers."""
        view = self.view()
        view.setup(None)  # as Django's as_view() does: a view with GET answers HEAD too
        return ", ".join(view.allowed_methods)


ROUTES = {
    "/recommendations": Route("recommendations", apis.RecommendationsApi, s.RecommendationsInput,
                              apis.RecommendationsApi.answer),
    "/similar_items": Route("similar-items", apis.SimilarItemsApi, s.SimilarItemsInput, apis.SimilarItemsApi.answer),
}


class _Caller:
    """What the throttles and the answers read of an anonymous GET, with the names of DRF's ``Request``."""

    method = "GET"

    def __init__(self, request: WSGIRequest) -> None:
        self._request = request
        self.user = AnonymousUser()

    @property
    def META(self) -> dict[str, Any]:  # noqa: N802  (Django's name)
        return self._request.META

    @property
    def headers(self) -> Any:
        return self._request.headers


class _Body(list):
    """The response's body; closing it ends the request as Django's response does (``request_finished``)."""

    def close(self) -> None:
        signals.request_finished.send(sender=WSGIHandler)


def enabled() -> str | None:
    """Why the lane is off under the current settings, or None when it is on."""
    if not settings.RECO_FAST_LANE:
        return "RECO_FAST_LANE is off"
    if tuple(settings.MIDDLEWARE) != MIDDLEWARE:
        return "settings.MIDDLEWARE is not the service's own list"
    if settings.DEBUG:
        return "DEBUG is on"
    if any(database.get("ATOMIC_REQUESTS") for database in settings.DATABASES.values()):
        return "a database has ATOMIC_REQUESTS"
    if settings.DISALLOWED_USER_AGENTS or settings.PREPEND_WWW:
        return "DISALLOWED_USER_AGENTS or PREPEND_WWW is set"
    return None


def _added_headers(secure: bool) -> list[tuple[str, str]]:
    """The headers the clickjacking and security middlewares add to a JSON answer (``secure``: to an HTTPS
    request), in the order Django's answer has them, read from those middlewares themselves."""
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "SERVER_NAME": "localhost", "SERVER_PORT": "443",
               "wsgi.url_scheme": "https" if secure else "http", "wsgi.input": io.BytesIO()}
    if secure and settings.SECURE_PROXY_SSL_HEADER:
        header, value = settings.SECURE_PROXY_SSL_HEADER
        environ[header] = value
    request = WSGIRequest(environ)
    response = HttpResponse(content_type="application/json")
    before = set(response.headers)
    XFrameOptionsMiddleware(lambda _: response).process_response(request, response)
    framing = [(name, value) for name, value in response.items() if name not in before]
    before = set(response.headers)
    SecurityMiddleware(lambda _: response).process_response(request, response)
    return framing + [(name, value) for name, value in response.items() if name not in before]


class FastLane:
    """WSGI application: the fast lane in front of ``django`` (Django's WSGI handler), which answers every
    request the lane does not take."""

    def __init__(self, django: Callable[..., Iterable[bytes]]) -> None:
        self.django = django
        self.renderer = JSONRenderer()
        self._headers: dict[tuple[str, bool], tuple[list[tuple[str, str]], list[tuple[str, str]]]] = {}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        route = ROUTES.get(environ.get("PATH_INFO", ""))
        if route is not None and _plain(environ):
            answered = self._answer(route, environ)
            if answered is not None:
                status, headers, body = answered
                start_response(status, headers)
                return body
        return self.django(environ, start_response)

    def _answer(self, route: Route, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], _Body] | None:
        """``(status, headers, body)`` of a 200, or None: Django answers (nothing was written)."""
        set_script_prefix(get_script_name(environ))
        signals.request_started.send(sender=WSGIHandler, environ=environ)
        request = WSGIRequest(environ)
        try:
            request.get_host()
        except DisallowedHost:
            return None
        secure = request.is_secure()
        if (settings.SECURE_SSL_REDIRECT and not secure) or RequestMiddleware.refusal(request) is not None:
            return None
        params = request.GET
        if "format" in params:
            return None
        before, after = self._static(route, secure)
        request_id = request_id_of(environ.get("HTTP_X_REQUEST_ID", ""))
        token = request_id_var.set(request_id)
        try:
            started = time.perf_counter()
            caller = _Caller(request)
            decided: dict[str, tuple[bool, float, float]] = {}
            environ[DECIDED] = decided
            for throttle in (throttle_class() for throttle_class in route.view.throttle_classes):
                decided[throttle.scope] = (throttle.allow_request(caller, None), getattr(throttle, "_window_end", 0.0),
                                           getattr(throttle, "now", 0.0))
            if not all(allowed for allowed, _, _ in decided.values()):
                return None
            try:
                data = route.answer(caller, s.validated_query(route.query, params))
            except Exception:  # noqa: BLE001  (an error of any kind is Django's to answer, and to log)
                return None
            body = self.renderer.render(data, "application/json", {})
            log_answered("GET", request.path, 200, time.perf_counter() - started, data, route.name)
        finally:
            request_id_var.reset(token)
        headers = [*before, ("Content-Length", str(len(body))), *after, ("X-Request-ID", request_id)]
        return "200 OK", headers, _Body([body])

    def _static(self, route: Route, secure: bool) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """The headers of the route's answers before and after ``Content-Length`` (and the request id)."""
        key = (route.name, secure)
        if key not in self._headers:
            added = _added_headers(secure)
            framing = [(name, value) for name, value in added if name == "X-Frame-Options"]
            security = [(name, value) for name, value in added if name != "X-Frame-Options"]
            # The session middleware's Vary: the view's session authentication reads the (empty) session.
            reads_session = any(issubclass(authentication, SessionAuthentication)
                                for authentication in route.view.authentication_classes)
            self._headers[key] = ([("Content-Type", "application/json"), ("Allow", route.allow), *framing],
                                  [*([("Vary", "Cookie")] if reads_session else []), *security])
        return self._headers[key]


def _plain(environ: dict[str, Any]) -> bool:
    """Whether a request is one the lane may take: a GET without credentials or a body, for JSON."""
    return (environ.get("REQUEST_METHOD") == "GET" and "HTTP_AUTHORIZATION" not in environ
            and "HTTP_COOKIE" not in environ and environ.get("CONTENT_LENGTH", "") in ("", "0")
            and "HTTP_TRANSFER_ENCODING" not in environ and environ.get("HTTP_ACCEPT", "") in _JSON_ACCEPTS)


def wrap(django: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """``django`` behind the fast lane where the settings allow it (:func:`enabled`), else ``django`` itself."""
    why_not = enabled()
    if why_not is not None:
        logger.info("the read endpoints' fast lane is off: %s", why_not)
        return django
    return FastLane(django)
