"""Prometheus metrics of the service, served at ``GET /metrics`` (staff only) by the official client.

Under gunicorn every worker is its own process, so the client's multi-process mode is used:
gunicorn.conf.py gives each server instance a fresh directory in ``PROMETHEUS_MULTIPROC_DIR`` before
any worker starts, each worker writes its values there, and /metrics adds them up (a worker that
exits is marked dead: its gauges leave the sum, its counts stay). Without that variable
(``manage.py runserver``, tests) the metrics are the process's own.

What is measured:

- ``recoapi_requests_total{endpoint, method, status}`` and ``recoapi_request_duration_seconds{endpoint}``:
  every API request (the endpoint is the route's name; "admin" for the admin, "unmatched" for a path
  with no route);
- ``recoapi_recommendations_total{strategy}``: shoppers answered, by the strategy that answered;
- ``recoapi_active_model{version}``: 1 for the model version a worker serves (the maximum over the
  live workers, so during a switch both versions show 1);
- ``recoapi_model_loads_total{result}``: model loads by the workers (``ok``, ``failed``);
- ``recoapi_throttled_requests_total{scope}``: requests refused with 429 (``anon``, ``user``);
- ``recoapi_impressions_dropped_total``: answered lists dropped unwritten (the impression buffer was full).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import defaultdict

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

logger = logging.getLogger(__name__)

MULTIPROCESS_DIR = "PROMETHEUS_MULTIPROC_DIR"

REQUESTS = Counter("recoapi_requests", "API requests answered, by endpoint, method and status code.",
                   ["endpoint", "method", "status"])
LATENCY = Histogram("recoapi_request_duration_seconds", "Time to answer an API request, by endpoint.", ["endpoint"],
                    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0))
ANSWERS = Counter("recoapi_recommendations", "Shoppers answered by GET/POST /recommendations, by strategy.",
                  ["strategy"])
ACTIVE_MODEL = Gauge("recoapi_active_model", "1 for the model version a worker serves.", ["version"],
                     multiprocess_mode="livemax")
MODEL_LOADS = Counter("recoapi_model_loads", "Model loads by the workers, by result.", ["result"])
IMPRESSIONS_DROPPED = Counter("recoapi_impressions_dropped", "Recommendation lists dropped unwritten (buffer full).")
THROTTLED = Counter("recoapi_throttled_requests", "Requests refused with 429, by throttle scope.", ["scope"])
THROTTLE_FAILED_OPEN = Counter("recoapi_throttle_failed_open",
                               "Requests let through unthrottled because the throttle cache (Redis) failed.")

_served: str | None = None
_served_lock = threading.Lock()


_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


def request_answered(endpoint: str, method: str, status: int, seconds: float) -> None:
    """Count one answered API request and its duration (a method outside HTTP's usual ones counts as "other",
    so a client cannot make new series at will). Never raises: a metrics failure is logged, not answered."""
    try:
        REQUESTS.labels(endpoint, method if method in _METHODS else "other", str(status)).inc()
        LATENCY.labels(endpoint).observe(seconds)
    except Exception:  # e.g. the multi-process directory removed under a running server
        logger.exception("cannot record the request metrics")


def shoppers_answered(strategies: list[str]) -> None:
    """Count the shoppers of one recommendations answer by the strategy that answered each."""
    for strategy in strategies:
        ANSWERS.labels(strategy).inc()


def model_loaded(version: str | None, ok: bool = True) -> None:
    """Record a model load by this worker; ``version`` is what it serves from now on (None: nothing)."""
    global _served
    MODEL_LOADS.labels("ok" if ok else "failed").inc()
    if not ok:
        return
    with _served_lock:
        if _served is not None and _served != version:
            ACTIVE_MODEL.labels(_served).set(0)
        if version is not None:
            ACTIVE_MODEL.labels(version).set(1)
        _served = version


def impressions_dropped(count: int) -> None:
    """Count recommendation lists dropped unwritten (the impression buffer was full)."""
    IMPRESSIONS_DROPPED.inc(count)


def throttled(scope: str) -> None:
    """Count one request refused by the throttle of ``scope``."""
    THROTTLED.labels(scope).inc()


def throttle_failed_open() -> None:
    """Count one request let through because the throttle cache could not be reached."""
    THROTTLE_FAILED_OPEN.inc()


def _registry() -> CollectorRegistry:
    """Every worker's metrics under gunicorn (the multi-process directory), else this process's."""
    if os.environ.get(MULTIPROCESS_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus's text format, and its content type (every worker's, under gunicorn)."""
    return generate_latest(_registry()), CONTENT_TYPE_LATEST


def latency_buckets(endpoint: str) -> list[tuple[float, float]]:
    """The request-duration histogram of ``endpoint``: ``(upper bound in seconds, requests at most that long)``
    per bucket, cumulative, ending with ``inf`` (the total); empty before its first request."""
    buckets: dict[float, float] = defaultdict(float)
    for family in _registry().collect():
        if family.name != LATENCY._name:
            continue
        for sample in family.samples:
            if sample.name.endswith("_bucket") and sample.labels.get("endpoint") == endpoint:
                buckets[float(sample.labels["le"])] += sample.value
    return sorted(buckets.items())
