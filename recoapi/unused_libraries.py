"""Libraries that the web application's imports would load although its configuration never uses them.

Django REST framework imports PostgreSQL's driver (for ``django.contrib.postgres``'s fields) and ``requests``
(for its test client) whenever they are installed, and the rotating log handler imports Redis's client (for a
Redis lock). Each is optional to them: when its import fails they go on without it. A web worker on SQLite
without ``RECO_REDIS_URL`` uses none of them: loading the application in a fresh process took 16 MB less private
memory without them (docs/performance.md). :func:`hidden` (:mod:`modeling.optional_imports`, which
:func:`modeling.reranker.lightgbm_module` also uses for lightgbm's optional libraries) makes their import fail
while the application loads, and importable again right after.
"""

from __future__ import annotations

from typing import Any

from modeling.optional_imports import hidden

__all__ = ["hidden", "unused"]


def unused(settings: Any) -> tuple[str, ...]:
    """The optional libraries that a process with these Django ``settings`` never uses."""
    names = ["requests"]  # only DRF's test client and its old schema generator (coreapi) import it
    if "postgresql" not in str(settings.DATABASES["default"].get("ENGINE", "")):
        names += ["psycopg", "psycopg2"]
    if not getattr(settings, "RECO_REDIS_URL", ""):
        names.append("redis")
    return tuple(names)
