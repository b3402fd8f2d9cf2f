"""GET /metrics: Prometheus metrics of requests, strategies, model loads and throttling, for staff only."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from rest_framework.test import APIClient

from modeling import artifacts
from recoapi.recommendations.engine import registry
from recoapi.throttling import FixedWindowRateThrottle
from tests.api.test_endpoints import a_known_user, assert_error
from tests.conftest import Pipeline


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_metrics_are_for_staff_only(service: Pipeline, client: APIClient, shopper_client: APIClient) -> None:
    assert_error(client.get("/metrics"), 401)
    assert_error(shopper_client.get("/metrics"), 403)


@pytest.mark.parametrize("accept", ["text/plain;version=0.0.4", "application/openmetrics-text;version=1.0.0",
                                    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
                                    "encoding=delimited;q=0.7,text/plain;version=0.0.4;q=0.3"])
def test_scrapers_own_accept_headers_get_the_metrics(service: Pipeline, client: APIClient,
                                                     staff_client: APIClient, accept: str) -> None:
    """Without "*/*" in them (a plain text scraper, OpenMetrics, Telegraf), they were answered 406: no renderer of
    JSON matched."""
    response = staff_client.get("/metrics", HTTP_ACCEPT=accept)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    assert "recoapi_requests_total" in response.content.decode()
    assert_error(client.get("/metrics", HTTP_ACCEPT=accept), 401)  # an error is JSON, whatever was asked


def test_requests_strategies_and_the_served_model_are_counted(service: Pipeline, client: APIClient,
                                                               staff_client: APIClient) -> None:
    user = a_known_user(service)
    before = {
        "ok": _value("recoapi_requests_total", endpoint="recommendations", method="GET", status="200"),
        "bad": _value("recoapi_requests_total", endpoint="recommendations", method="GET", status="400"),
        "timed": _value("recoapi_request_duration_seconds_count", endpoint="recommendations"),
        "two_tower": _value("recoapi_recommendations_total", strategy="two_tower"),
        "popular": _value("recoapi_recommendations_total", strategy="popular"),
        "unmatched": _value("recoapi_requests_total", endpoint="unmatched", method="GET", status="404"),
    }
    for _ in range(3):
        assert client.get("/recommendations", {"users": f"{user},nobody-at-all"}).status_code == 200
    assert client.get("/recommendations", {"k": "0", "users": user}).status_code == 400
    assert client.get("/no-such-page").status_code == 404

    response = staff_client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(response.content.decode())}
    assert {"recoapi_requests", "recoapi_request_duration_seconds", "recoapi_recommendations",
            "recoapi_active_model", "recoapi_model_loads", "recoapi_throttled_requests"} <= set(families)
    assert _value("recoapi_requests_total", endpoint="recommendations", method="GET", status="200") == before["ok"] + 3
    assert _value("recoapi_requests_total", endpoint="recommendations", method="GET", status="400") == before["bad"] + 1
    assert _value("recoapi_request_duration_seconds_count", endpoint="recommendations") == before["timed"] + 4
    assert _value("recoapi_recommendations_total", strategy="two_tower") == before["two_tower"] + 3
    assert _value("recoapi_recommendations_total", strategy="popular") == before["popular"] + 3
    assert _value("recoapi_requests_total", endpoint="unmatched", method="GET", status="404") == (
        before["unmatched"] + 1)
    assert _value("recoapi_active_model", version=registry.current().version) == 1.0


def test_model_loads_and_refusals_are_counted(service: Pipeline) -> None:
    version = artifacts.read_active(service.models)
    loaded, failed = _value("recoapi_model_loads_total", result="ok"), _value("recoapi_model_loads_total",
                                                                              result="failed")
    registry.activate(version)
    with pytest.raises(Exception):  # noqa: B017  (the reload endpoint's tests check the error itself)
        registry.activate("20000101T000000Z")
    assert _value("recoapi_model_loads_total", result="ok") == loaded + 1
    assert _value("recoapi_model_loads_total", result="failed") == failed + 1
    assert _value("recoapi_active_model", version=version) == 1.0


def test_throttled_requests_are_counted(service: Pipeline, client: APIClient, monkeypatch) -> None:
    from django.core.cache import cache
    from rest_framework.throttling import SimpleRateThrottle

    cache.clear()
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"anon": "2/minute", "user": None})
    monkeypatch.setattr(FixedWindowRateThrottle, "timer", staticmethod(lambda: 1_000_000.0))  # one window
    before = _value("recoapi_throttled_requests_total", scope="anon")
    try:
        statuses = [client.get("/random_users").status_code for _ in range(5)]
    finally:
        cache.clear()
    assert statuses == [200, 200, 429, 429, 429]
    assert _value("recoapi_throttled_requests_total", scope="anon") == before + 3
