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
"""

from __future__ import annotations

import math
import time
from typing import Any

from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from recoapi import metrics


class FixedWindowRateThrottle(SimpleRateThrottle):
    """At most ``num_requests`` per ``duration`` seconds per client, counted in fixed windows."""

    def allow_request(self, request: Request, view: Any) -> bool:
        if self.rate is None:
            return True
        ident = self.get_cache_key(request, view)
        if ident is None:
            return True
        now = self.timer()
        window = int(now // self.duration)
        key = f"{ident}:{window}"
        try:
            count = self.cache.incr(key)
        except ValueError:  # the window's first request (incr refuses a missing key)
            if self.cache.add(key, 1, self.duration + 1):
                count = 1
            else:  # another thread or worker added it first
                count = self.cache.incr(key)
        self._window_end = (window + 1) * self.duration
        self.now = now
        if count > self.num_requests:
            metrics.throttled(self.scope)
            return False
        return True

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
