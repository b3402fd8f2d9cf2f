"""Libraries that the web application's imports would load although its configuration never uses them.

Django REST framework imports PostgreSQL's driver (for ``django.contrib.postgres``'s fields) and ``requests``
(for its test client) whenever they are installed, and the rotating log handler imports Redis's client (for a
Redis lock). Each is optional to them: when its import fails they go on without it. A web worker on SQLite
without ``RECO_REDIS_URL`` uses none of them, and they cost each worker about 23 MB of private memory (psycopg
12, redis 7, requests 4; measured one import after another in a fresh process). :func:`hidden` makes their
import fail while the application loads, as :func:`modeling.reranker.lightgbm_module` does for lightgbm's
optional libraries, and makes them importable again right after, for any later import that wants them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def unused(settings: Any) -> tuple[str, ...]:
    """The optional libraries that a process with these Django ``settings`` never uses."""
    names = ["requests"]  # only DRF's test client and its old schema generator (coreapi) import it
    if "postgresql" not in str(settings.DATABASES["default"].get("ENGINE", "")):
        names += ["psycopg", "psycopg2"]
    if not getattr(settings, "RECO_REDIS_URL", ""):
        names.append("redis")
    return tuple(names)


@contextmanager
def hidden(names: tuple[str, ...]) -> Iterator[None]:
    """Within the block, ``import <name>`` raises ImportError for each of ``names`` not yet imported."""
    kept_out = [name for name in names if name not in sys.modules]
    for name in kept_out:
        sys.modules[name] = None  # type: ignore[assignment]  (None: "import <name>" raises ImportError)
    try:
        yield
    finally:
        for name in kept_out:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
