"""Throttle counts in Redis (RECO_REDIS_URL): shared by every process that uses the same server, and a
Redis that cannot be reached lets requests through (logged) instead of failing them.

Needs the Redis server on 127.0.0.1:6379 (skipped with a message without one); each test uses its own key
prefix in database 15 and deletes its keys.
"""

from __future__ import annotations

import logging
import uuid

import pytest
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from recoapi import metrics, throttling
from recoapi.throttling import FixedWindowRateThrottle
from tests.api.test_endpoints import assert_error
from tests.conftest import Pipeline

REDIS_URL = "redis://127.0.0.1:6379/15"


def redis_available() -> bool:
    try:
        import redis

        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except Exception:
        return False


def _redis_cache(settings, url: str, prefix: str) -> None:
    settings.CACHES = {"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": url,
                                   "KEY_PREFIX": prefix,
                                   "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.25, "SOCKET_TIMEOUT": 0.25}}}


@pytest.fixture
def limited(monkeypatch) -> None:
    """3 anonymous requests per window, one frozen window, the cache's health forgotten."""
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"anon": "3/minute", "user": "5/minute"})
    monkeypatch.setattr(FixedWindowRateThrottle, "timer", staticmethod(lambda: 1_000_000.0))
    monkeypatch.setattr(throttling, "_cache_down_until", float("-inf"))


@pytest.mark.skipif(not redis_available(), reason="no Redis server on 127.0.0.1:6379")
def test_counts_are_in_redis_where_every_process_sees_them(service: Pipeline, client: APIClient, settings,
                                                           limited: None) -> None:
    import redis
    from django.core.cache import caches

    prefix = f"test-{uuid.uuid4().hex}"
    _redis_cache(settings, REDIS_URL, prefix)
    try:
        for _ in range(3):
            assert client.get("/random_users").status_code == 200
        assert_error(client.get("/random_users"), 429, "throttled")
        assert all(client.get("/health").status_code == 200 for _ in range(5))  # probes are never throttled
        raw = redis.Redis.from_url(REDIS_URL)
        keys = raw.keys(f"{prefix}:*")
        assert len(keys) == 1 and int(raw.get(keys[0])) == 4
        other = caches.create_connection("default")  # another process's client: its own connection pool
        assert other.incr(keys[0].decode().split(":", 2)[2]) == 5
    finally:
        for key in redis.Redis.from_url(REDIS_URL).scan_iter(f"{prefix}:*"):
            redis.Redis.from_url(REDIS_URL).delete(key)


def test_an_unreachable_redis_lets_requests_through_and_says_so(service: Pipeline, client: APIClient, settings,
                                                                limited: None, caplog) -> None:
    _redis_cache(settings, "redis://127.0.0.1:1/15", "down")  # nothing listens on port 1
    before = metrics.THROTTLE_FAILED_OPEN._value.get()
    with caplog.at_level(logging.WARNING, logger="recoapi.throttling"):
        for _ in range(6):  # twice the limit
            assert client.get("/random_users").status_code == 200
    warnings = [r for r in caplog.records if "throttle cache cannot be reached" in r.getMessage()]
    assert len(warnings) == 1  # once, not once per request
    # Every request let through is counted, also those not asking the cache again for a while (before: only the
    # failed call was, 1 of the 6).
    assert metrics.THROTTLE_FAILED_OPEN._value.get() == before + 6
