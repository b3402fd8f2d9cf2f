"""The read endpoints' fast lane (recoapi.fast_lane) answers what Django would, and hands Django everything else."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections
from prometheus_client import REGISTRY

from modeling import datasets as ds
from recoapi import fast_lane
from recoapi.throttling import FixedWindowRateThrottle
from tests.api.test_endpoints import a_known_user
from tests.conftest import Pipeline


class _Counted:
    """Django's WSGI handler, counting the requests it answers."""

    def __init__(self) -> None:
        self.handler = WSGIHandler()
        self.calls = 0

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        self.calls += 1
        return self.handler(environ, start_response)


@pytest.fixture
def lanes(service: Pipeline, shown: Any) -> Iterator[tuple[fast_lane.FastLane, _Counted]]:
    """``(the fast lane in front of a counted Django handler, that handler)``. The connections' upkeep of Django's
    request signals is left out, as Django's test client does (it would end the test's transaction)."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    django = _Counted()
    try:
        yield fast_lane.FastLane(django), django
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


def _call(app: Any, path: str, query: str = "", **headers: Any) -> tuple[str, list[tuple[str, str]], bytes]:
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1",
               "SERVER_PORT": "8000", "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:8000",
               "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""),
               "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": True,
               "wsgi.run_once": False, "wsgi.version": (1, 0), **headers}
    started: list[tuple[str, list[tuple[str, str]]]] = []
    body = app(environ, lambda status, response_headers, *_: started.append((status, response_headers)))
    try:
        content = b"".join(body)
    finally:
        getattr(body, "close", lambda: None)()
    status, response_headers = started[0]
    return status, list(response_headers), content


def _comparable(answer: tuple[str, list[tuple[str, str]], bytes]) -> tuple[str, list[tuple[str, str]], Any]:
    """An answer without what differs between two answers to one request: the request and list ids."""
    status, all_headers, content = answer
    body = json.loads(content) if content else None
    request_id = dict(all_headers)["X-Request-ID"]
    headers = [(name, value) for name, value in all_headers if name != "X-Request-ID"]
    if body is None:
        return status, headers, body
    if "error" in body:
        assert body["error"].pop("request_id") == request_id
    for entry in body.get("recommendations", {}).values():
        assert len(entry.pop("recommendation_id")) == 32
    if "recommendation_id" in body:
        assert len(body.pop("recommendation_id")) == 32
    return status, headers, body


def _queries(service: Pipeline) -> list[tuple[str, str]]:
    user = a_known_user(service)
    item = str(service.data.items[ds.ITEM_ID].iloc[0])
    category = str(service.data.items[ds.CATEGORY].dropna().iloc[0]).split(" > ")[0]
    return [
        ("/recommendations", f"users={user}&k=5"),
        ("/recommendations", f"users={user},nobody-known,{user}x&k=3"),
        ("/recommendations", f"users={user}&k=10&category={category}&min_price=1"),
        ("/recommendations", f"items={item}&k=4"),
        ("/recommendations", "users=somebody%20new&k=2"),
        ("/similar_items", f"item={item}&k=4"),
        ("/similar_items", f"item={item}"),
    ]


def test_the_lane_answers_plain_reads_as_django_does(service: Pipeline, lanes: Any, shown: Any) -> None:
    lane, django = lanes
    finished: list[Any] = []

    def ended(**_: Any) -> None:
        finished.append(1)

    signals.request_finished.connect(ended)
    try:
        for path, query in _queries(service):
            before = shown.pending()
            fast = _call(lane, path, query)
            assert django.calls == 0, (path, query)
            recorded = shown.pending() - before  # the lists shown, one per shopper or product asked for
            assert len(finished) == 1  # the request ended as Django ends one (its connections' upkeep)
            slow = _call(django, path, query)
            assert fast[0] == "200 OK" and _comparable(fast) == _comparable(slow), (path, query)
            assert recorded >= 1 and shown.pending() - before == 2 * recorded
            django.calls = 0
            finished.clear()
    finally:
        signals.request_finished.disconnect(ended)


@pytest.mark.parametrize(("path", "query", "headers", "status"), [
    ("/recommendations", "users={user}&bad=1", {}, "400"),  # an invalid parameter
    ("/recommendations", "users={user}&k=0", {}, "400"),
    ("/recommendations", "", {}, "400"),  # nothing to answer for
    ("/similar_items", "item=no-such-product", {}, "404"),  # an error of the service
    ("/recommendations", "users={user}&category=no-such-category", {}, "404"),
    ("/recommendations", "users={user}&include_history=true", {}, "401"),  # needs a token
    ("/recommendations", "users={user}&format=json", {}, "200"),  # DRF's negotiation
    ("/recommendations", "users={user}", {"HTTP_ACCEPT": "text/html"}, "406"),
    ("/recommendations", "users={user}", {"HTTP_ACCEPT": "application/json; indent=2"}, "200"),
    ("/recommendations", "users={user}", {"HTTP_AUTHORIZATION": "Token nothing"}, "401"),  # credentials
    ("/recommendations", "users={user}", {"HTTP_COOKIE": "sessionid=x"}, "200"),
    ("/recommendations", "users={user}", {"HTTP_HOST": "elsewhere.example"}, "400"),  # a host not allowed
    ("/recommendations", "users=%FF", {}, "400"),  # not UTF-8
    ("/recommendations", "users={user}", {"CONTENT_LENGTH": "3", "wsgi.input": io.BytesIO(b"abc")}, "200"),
    ("/recommendations/", "users={user}", {}, "404"),  # not the lane's path
    ("/recommendations", "users={user}", {"HTTP_ACCEPT": ""}, "406"),  # an empty Accept: DRF refuses it
    ("/recommendations", "users={user}&" + "&".join(f"p{n}=1" for n in range(1001)), {}, "400"),  # too many fields
    ("/recommendations", "users={user}", {"REQUEST_METHOD": "HEAD"}, "200"),
])
def test_what_the_lane_does_not_take_is_django_s_whole(service: Pipeline, lanes: Any, path: str, query: str,
                                                        headers: dict[str, str], status: str) -> None:
    lane, django = lanes
    query = query.format(user=a_known_user(service))
    fast = _call(lane, path, query, **headers)
    assert django.calls == 1 and fast[0].startswith(status), fast
    if "wsgi.input" in headers:
        headers = {**headers, "wsgi.input": io.BytesIO(b"abc")}
    assert _comparable(fast) == _comparable(_call(django, path, query, **headers))


def test_behind_an_https_proxy_the_lane_answers_as_django_does(service: Pipeline, lanes: Any, settings) -> None:
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 3600
    django = _Counted()  # its middlewares read these settings when made
    lane = fast_lane.FastLane(django)
    query = f"users={a_known_user(service)}"
    secure = _call(lane, "/recommendations", query, HTTP_X_FORWARDED_PROTO="https")
    assert django.calls == 0 and dict(secure[1])["Strict-Transport-Security"] == "max-age=3600"
    assert _comparable(secure) == _comparable(_call(django, "/recommendations", query, HTTP_X_FORWARDED_PROTO="https"))
    plain = _call(lane, "/recommendations", query)  # redirected to https, by Django
    assert django.calls == 2 and plain[0].startswith("301") and dict(plain[1])["Location"].startswith("https://")


def test_an_answer_that_raised_is_answered_by_django_without_asking_again(service: Pipeline, lanes: Any,
                                                                         monkeypatch) -> None:
    from django.db import DatabaseError

    from recoapi.recommendations import services

    lane, django = lanes
    asked: list[list[str]] = []

    def down(*, ids: list[str]) -> dict:
        asked.append(ids)
        raise DatabaseError("the database is down")

    monkeypatch.setattr(services.catalog_selectors, "shopper_histories", down)
    query = f"users={a_known_user(service)}"
    fast = _call(lane, "/recommendations", query, HTTP_X_REQUEST_ID="outage-request-01")
    assert fast[0].startswith("503") and django.calls == 1 and len(asked) == 1  # the service was asked once
    assert json.loads(fast[2])["error"]["request_id"] == "outage-request-01"
    assert _comparable(fast) == _comparable(_call(django, "/recommendations", query,
                                                  HTTP_X_REQUEST_ID="outage-request-01"))


def test_a_throttled_caller_is_counted_once_and_answered_by_django(service: Pipeline, lanes: Any,
                                                                   monkeypatch) -> None:
    from django.core.cache import cache
    from rest_framework.throttling import SimpleRateThrottle

    lane, django = lanes
    cache.clear()
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"anon": "3/minute", "user": None})
    monkeypatch.setattr(FixedWindowRateThrottle, "timer", staticmethod(lambda: 1_000_050.0))  # 30 s to go
    before = REGISTRY.get_sample_value("recoapi_throttled_requests_total", {"scope": "anon"}) or 0.0
    query = f"users={a_known_user(service)}"
    try:
        answers = [_call(lane, "/recommendations", query) for _ in range(5)]
    finally:
        cache.clear()
    assert [status for status, _, _ in answers] == ["200 OK"] * 3 + ["429 Too Many Requests"] * 2
    assert django.calls == 2  # only the throttled ones
    assert [dict(headers).get("Retry-After") for _, headers, _ in answers[3:]] == ["30", "30"]
    assert all(json.loads(content)["error"]["code"] == "throttled" for _, _, content in answers[3:])
    after = REGISTRY.get_sample_value("recoapi_throttled_requests_total", {"scope": "anon"}) or 0.0
    assert after == before + 2


def test_the_lane_logs_and_counts_its_answers(service: Pipeline, lanes: Any, caplog) -> None:
    lane, _ = lanes
    labels = {"endpoint": "recommendations", "method": "GET", "status": "200"}
    before = REGISTRY.get_sample_value("recoapi_requests_total", labels) or 0.0
    with caplog.at_level(logging.INFO, logger="recoapi.requests"):
        _, headers, _ = _call(lane, "/recommendations", f"users={a_known_user(service)}",
                              HTTP_X_REQUEST_ID="my-request-0001")
    assert dict(headers)["X-Request-ID"] == "my-request-0001"
    lines = [record.getMessage() for record in caplog.records if record.name == "recoapi.requests"]
    assert len(lines) == 1 and lines[0].startswith("GET /recommendations 200 ") and "users=1" in lines[0]
    assert caplog.records[-1].request_id == "my-request-0001"
    assert (REGISTRY.get_sample_value("recoapi_requests_total", labels) or 0.0) == before + 1


def test_the_lane_is_off_where_its_answers_could_differ(settings) -> None:
    assert fast_lane.enabled() is None
    handler = WSGIHandler()
    assert isinstance(fast_lane.wrap(handler), fast_lane.FastLane)
    settings.RECO_FAST_LANE = False
    assert fast_lane.wrap(handler) is handler and "RECO_FAST_LANE" in fast_lane.enabled()
    settings.RECO_FAST_LANE = True
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "django.middleware.gzip.GZipMiddleware"]
    assert fast_lane.wrap(handler) is handler and "MIDDLEWARE" in fast_lane.enabled()


def test_the_served_application_has_the_lane(service: Pipeline) -> None:
    from recoapi import wsgi

    assert isinstance(wsgi.application, fast_lane.FastLane)
