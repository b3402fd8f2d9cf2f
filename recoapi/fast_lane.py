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
for (``settings.MIDDLEWARE`` as shipped) and the routes and views it knows (:func:`enabled` turns the lane off
otherwise); and it answers only a 200. Whatever would be an error is Django's to answer, error body and all: a
throttled caller or an invalid parameter is handed to Django before anything is written (the throttles'
verdicts go with it, :data:`recoapi.throttling.DECIDED`, so a request is counted once); an answer that raised (an
unknown product, no model, the database down, parameters that need a token) is handed over with its exception
(:data:`recoapi.recommendations.apis.ANSWER_RAISED`), which the view raises again instead of answering a second
time; the request keeps its id (:data:`recoapi.middleware.REQUEST_ID`).

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
from django.core.handlers.wsgi import WSGIHandler, WSGIRequest, get_script_name
from django.http import HttpResponse
from django.http.request import HttpHeaders
from django.middleware.clickjacking import XFrameOptionsMiddleware
from django.middleware.security import SecurityMiddleware
from django.urls import Resolver404, resolve, set_script_prefix
from rest_framework.authentication import SessionAuthentication, TokenAuthentication
from rest_framework.permissions import AllowAny
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from recoapi.middleware import REQUEST_ID, log_answered, request_id_of, request_id_var, request_refusal
from recoapi.recommendations import apis
from recoapi.recommendations import serializers as s
from recoapi.renderers import FastJSONRenderer
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

_JSON_ACCEPTS = (None, "*/*", "application/json")  # no Accept header at all, or one of these (DRF refuses "")


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


#: The paths the lane answers (as ``urls.py`` routes them: checked by :func:`enabled`).
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
        """The WSGI environ (Django's ``request.META``)."""
        return self._request.META

    @property
    def headers(self) -> HttpHeaders:
        """The request's headers, as Django reads them."""
        return self._request.headers


class _Body(list[bytes]):
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
    if api_settings.URL_FORMAT_OVERRIDE != "format":
        return "REST_FRAMEWORK's URL_FORMAT_OVERRIDE is not format"
    for path, route in ROUTES.items():
        problem = _route_problem(path, route)
        if problem is not None:
            return problem
    return None


def _route_problem(path: str, route: Route) -> str | None:
    """What in the URL conf or the view keeps the lane from giving the view's answers at ``path``, or None."""
    try:
        match = resolve(path)
    except Resolver404:
        return f"{path} is not routed"
    view = route.view
    if getattr(match.func, "view_class", None) is not view or match.url_name != route.name:
        return f"{path} is not routed to {view.__name__} as {route.name!r}"
    if list(view.permission_classes) != [AllowAny] or list(view.renderer_classes) != [FastJSONRenderer]:
        return f"{view.__name__} has other permissions or renderers than AllowAny and FastJSONRenderer"
    if view.versioning_class is not None:
        return f"{view.__name__} is versioned"
    if not all(issubclass(authentication, (TokenAuthentication, SessionAuthentication))
               for authentication in view.authentication_classes):
        return f"{view.__name__} reads credentials other than a token's header and a session's cookie"
    return None


def _added_headers(secure: bool) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The headers the clickjacking and the security middleware add to a JSON answer (``secure``: to an HTTPS
    request), each middleware's in the order Django's answer has them, read from those middlewares themselves."""
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
    return framing, [(name, value) for name, value in response.items() if name not in before]


class FastLane:
    """WSGI application: the fast lane in front of ``django`` (Django's WSGI handler), which answers every
    request the lane does not take."""

    def __init__(self, django: Callable[..., Iterable[bytes]]) -> None:
        self.django = django
        self.renderer = FastJSONRenderer()
        self._headers: dict[tuple[str, bool], tuple[list[tuple[str, str]], list[tuple[str, str]]]] = {}

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """The WSGI call: the lane's answer, or Django's."""
        route = ROUTES.get(environ.get("PATH_INFO", ""))
        if route is not None and _plain(environ):
            answered = self._answer(route, environ)
            if answered is not None:
                status, headers, body = answered
                start_response(status, headers)
                return body
        return self.django(environ, start_response)

    def _answer(self, route: Route, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], _Body] | None:
        """``(status, headers, body)`` of a 200, or None: Django answers. Before the answer is asked for, nothing
        is written but the throttles' counts (handed to Django with their verdicts); an answer that raised is
        handed to Django too (:data:`recoapi.recommendations.apis.ANSWER_RAISED`): it is answered as the view's
        error, and not computed again."""
        try:  # Django's answers: a host not allowed (400), too many fields, the middleware's refusals...
            request = WSGIRequest(environ)
            request.get_host()
            secure = request.is_secure()
            if (settings.SECURE_SSL_REDIRECT and not secure) or request_refusal(request) is not None:
                return None
            params = request.GET
            if "format" in params:
                return None
            before, after = self._static(route, secure)
        except Exception:  # noqa: BLE001
            return None
        request_id = request_id_of(environ.get("HTTP_X_REQUEST_ID", ""))
        environ[REQUEST_ID] = request_id  # Django's answer, if it answers, keeps the id the lane's log lines carry
        token = request_id_var.set(request_id)
        try:
            started = time.perf_counter()
            caller = _Caller(request)
            try:
                if not _throttles_allow(route, caller, environ):
                    return None
                validated = s.validated_query(route.query, params)
            except Exception:  # noqa: BLE001  (an invalid parameter, say: Django's answer)
                return None
            set_script_prefix(get_script_name(environ))
            signals.request_started.send(sender=WSGIHandler, environ=environ)  # as Django's handler: connections
            try:
                data = route.answer(caller, validated)
                body = self.renderer.render(data, "application/json", {})
            except Exception as exc:  # noqa: BLE001  (no model, the database down, an unknown product...)
                environ[apis.ANSWER_RAISED] = exc
                return None
            log_answered("GET", request.path, 200, time.perf_counter() - started, data, route.name)
        finally:
            request_id_var.reset(token)
        headers = [*before, ("Content-Length", str(len(body))), *after, ("X-Request-ID", request_id)]
        return "200 OK", headers, _Body([body])

    def _static(self, route: Route, secure: bool) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
        """The headers of the route's answers before and after ``Content-Length`` (and the request id)."""
        key = (route.name, secure)
        if key not in self._headers:
            framing, security = _added_headers(secure)
            # The session middleware's Vary: the view's session authentication reads the (empty) session.
            reads_session = any(issubclass(authentication, SessionAuthentication)
                                for authentication in route.view.authentication_classes)
            self._headers[key] = ([("Content-Type", "application/json"), ("Allow", route.allow), *framing],
                                  [*([("Vary", "Cookie")] if reads_session else []), *security])
        return self._headers[key]


def _throttles_allow(route: Route, caller: _Caller, environ: dict[str, Any]) -> bool:
    """Count the request with each of the view's throttles (every one, as DRF does) and keep their verdicts in
    ``environ`` for Django, should it answer; whether every throttle allows it."""
    decided: dict[str, tuple[bool, float, float]] = {}
    environ[DECIDED] = decided
    for throttle in (throttle_class() for throttle_class in route.view.throttle_classes):
        decided[throttle.scope] = (throttle.allow_request(caller, None), getattr(throttle, "_window_end", 0.0),
                                   getattr(throttle, "now", 0.0))
    return all(allowed for allowed, _, _ in decided.values())


def _plain(environ: dict[str, Any]) -> bool:
    """Whether a request is one the lane may take: a GET without credentials or a body, for JSON."""
    return (environ.get("REQUEST_METHOD") == "GET" and "HTTP_AUTHORIZATION" not in environ
            and "HTTP_COOKIE" not in environ and environ.get("CONTENT_LENGTH", "") in ("", "0")
            and "HTTP_TRANSFER_ENCODING" not in environ and environ.get("HTTP_ACCEPT") in _JSON_ACCEPTS)


def wrap(django: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """``django`` behind the fast lane where the settings allow it (:func:`enabled`), else ``django`` itself."""
    why_not = enabled()
    if why_not is not None:
        logger.info("the read endpoints' fast lane is off: %s", why_not)
        return django
    return FastLane(django)
