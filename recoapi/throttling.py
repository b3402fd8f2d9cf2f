"""Request rate limits: a counter per client and fixed time window, kept in Django's cache.

DRF's own throttles keep, per client, the list of its request times in the cache and rewrite the whole
list on every request: with the default 1,000/second for tokens the list holds up to 1,000 floats, read
and written (pickled) twice per request, which made throttling the largest fixed cost of a read request.
These classes keep one integer per client and window instead, incremented with the cache's ``incr``
(atomic in Redis and in the local-memory cache), so a check costs two small cache operations whatever the
rate. The window is fixed (``<count>/second`` counts from each whole second): a client can send up to
twice the rate across a window boundary, the usual trade of fixed-window limits. A throttled request gets
the same 429 and ``Retry-After`` (the seconds left in the window) as before.

Anonymous clients are counted per IP address under the ``anon`` rate, authenticated ones per user under
the ``user`` rate; each rate may be "off" (``RECO_THROTTLE_ANON``, ``RECO_THROTTLE_USER``).

With ``RECO_REDIS_URL`` the counters are in Redis, shared by every worker and host. When the cache cannot
be reached the throttles fail open: the request is let through, a warning is logged, and for
:data:`CACHE_RETRY_SECONDS` the cache is not asked again (so a Redis that is down costs requests nothing
rather than a timeout each); answering matters more than limiting.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from typing import Any

from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from recoapi import metrics

logger = logging.getLogger(__name__)

CACHE_RETRY_SECONDS = 5.0
"""After the cache failed, how long the throttles let every request through before trying it again."""

DECIDED = "recoapi.throttles_decided"
"""The WSGI environ's key under which a request's throttle verdicts, once counted, are kept: scope ->
``(allowed, window end, time)`` (:mod:`recoapi.fast_lane` counts a request before handing it on to Django)."""

_cache_down_until = float("-inf")
_cache_state_lock = threading.Lock()


def _cache_failed(exc: Exception) -> None:
    global _cache_down_until
    with _cache_state_lock:
        first = time.monotonic() >= _cache_down_until
        _cache_down_until = time.monotonic() + CACHE_RETRY_SECONDS
    if first:
        logger.warning("the throttle cache cannot be reached (%s: %s); requests are not rate-limited for the "
                       "next %.0f s", type(exc).__name__, exc, CACHE_RETRY_SECONDS)


class FixedWindowRateThrottle(SimpleRateThrottle):
    """At most ``num_requests`` per ``duration`` seconds per client, counted in fixed windows."""

    def allow_request(self, request: Request, view: Any) -> bool:
        decided = request.META.get(DECIDED, {}).get(self.scope)
        if decided is not None:  # counted already (the read endpoints' fast lane): its verdict, not a second count
            allowed, self._window_end, self.now = decided
            return allowed
        if self.rate is None:
            return True
        ident = self.get_cache_key(request, view)
        if ident is None:
            return True
        if time.monotonic() < _cache_down_until:  # let through without asking the cache: counted all the same
            metrics.throttle_failed_open()
            return True
        now = self.timer()
        window = int(now // self.duration)
        key = f"{ident}:{window}"
        try:
            count = self._count(key)
        except Exception as exc:  # Redis down or timing out (redis-py's errors, not Django's): fail open
            _cache_failed(exc)
            metrics.throttle_failed_open()
            return True
        self._window_end = (window + 1) * self.duration
        self.now = now
        if count > self.num_requests:
            metrics.throttled(self.scope)
            return False
        return True

    def _count(self, key: str) -> int:
        """Add this request to the window's counter; returns the count."""
        try:
            return self.cache.incr(key)
        except ValueError:  # the window's first request (incr refuses a missing key)
            if self.cache.add(key, 1, self.duration + 1):
                return 1
            return self.cache.incr(key)  # another thread or worker added it first

    def wait(self) -> float:
        """Seconds until the current window ends (at least 1, as ``Retry-After`` is whole seconds)."""
        return max(1.0, math.ceil(self._window_end - self.now))

    timer = staticmethod(time.time)


class AnonRateThrottle(FixedWindowRateThrottle):
    """Anonymous requests, per client IP address (``anon`` rate)."""

    scope = "anon"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if request.user and request.user.is_authenticated:
            return None
        return f"throttle_anon_{self.get_ident(request)}"


class UserRateThrottle(FixedWindowRateThrottle):
    """Authenticated requests, per user (``user`` rate); anonymous ones are counted by :class:`AnonRateThrottle`."""

    scope = "user"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if not (request.user and request.user.is_authenticated):
            return None
        return f"throttle_user_{request.user.pk}"
