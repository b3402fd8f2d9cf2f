"""Reading settings from the environment, in one place.

Every setting that may differ between machines is read here from an
environment variable (a ``.env`` file is not read implicitly; export the
variables or use your process manager). Invalid values stop the start-up with
``ImproperlyConfigured`` naming the variable.
"""

from __future__ import annotations

import math
import os
from datetime import UTC, datetime
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None) -> str:
    """The variable's value, or ``default``; no default and unset raises ImproperlyConfigured."""
    value = os.environ.get(name)
    if value is None:
        if default is None:
            raise ImproperlyConfigured(f"environment variable {name} is required")
        return default
    return value


def env_bool(name: str, default: bool) -> bool:
    """A boolean variable (1/0, true/false, yes/no, on/off)."""
    value = os.environ.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"environment variable {name}={value!r} is not a boolean (use 1/0, true/false)")


def env_int(name: str, default: int) -> int:
    """An integer variable."""
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"environment variable {name}={value!r} is not an integer") from exc


def env_float(name: str, default: float) -> float:
    """A finite number variable (``inf`` and ``nan`` are refused: no setting means them)."""
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return float(default)
    try:
        number = float(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"environment variable {name}={value!r} is not a number") from exc
    if not math.isfinite(number):
        raise ImproperlyConfigured(f"environment variable {name}={value!r} is not a finite number")
    return number


def env_time(name: str, default: str) -> int:
    """A point in time (YYYY-MM-DD, an ISO 8601 date-time, or unix seconds) as unix seconds, UTC."""
    value = env_str(name, default).strip()
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ImproperlyConfigured(
            f"environment variable {name}={value!r} is not a date (YYYY-MM-DD), ISO 8601 date-time or unix seconds"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp())


def env_dir(name: str, default: str, *, create: bool = False) -> Path:
    """A directory variable: an empty value, a path that is not a directory (a file) or that lies under a file are
    refused; with ``create``, the directory is made (with its parents) when missing."""
    value = env_str(name, default)
    if not value.strip():
        raise ImproperlyConfigured(f"environment variable {name} is empty: unset it for the default ({default}) "
                                   "or name a directory")
    path = Path(value)
    try:
        existing = next((p for p in (path, *path.parents) if p.exists()), None)
    except OSError:  # a parent this user may not pass through (a web worker's, where another user trains): not
        existing = None  # refused here, as before; what it holds is read when it is used
    if existing is not None and not existing.is_dir():
        where = "it exists and is not one" if existing == path else f"{str(existing)!r} above it is not one"
        raise ImproperlyConfigured(f"environment variable {name}={value!r} must name a directory: {where}")
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ImproperlyConfigured(f"environment variable {name}={value!r}: the directory cannot be created "
                                       f"({exc.strerror or exc})") from exc
    return path


RETENTION_MAX_DAYS = 36_500
"""The longest list retention (``RECO_LIST_RETENTION_DAYS``, ``prune_lists --days``): about a century, far beyond any
list and well inside the dates Python can compute."""
REQUEST_LINE_ROOM = 1024
"""Bytes a request line holds beside its query string (method, path, protocol): gunicorn's limit_request_line is the
query-string bound plus this."""
QUERY_STRING_BOUNDS = (256, 1024 * 1024 - REQUEST_LINE_ROOM)
"""What ``RECO_MAX_QUERY_STRING`` may be: at least a request for a few shoppers, at most what fits with
:data:`REQUEST_LINE_ROOM` under recoapi.gunicorn_worker's 1 MiB request-line ceiling."""


def env_query_string_bound() -> int:
    """``RECO_MAX_QUERY_STRING`` (default 16 KiB), within :data:`QUERY_STRING_BOUNDS`: read by the settings (the
    service's 414) and by gunicorn.conf.py (gunicorn's own request-line limit), so both hold the same bound."""
    value = env_int("RECO_MAX_QUERY_STRING", 16 * 1024)
    low, high = QUERY_STRING_BOUNDS
    if not low <= value <= high:
        raise ImproperlyConfigured(f"environment variable RECO_MAX_QUERY_STRING={value} must be from {low} to {high} "
                                   f"characters")
    return value


def env_list(name: str, default: str) -> list[str]:
    """A comma-separated list variable."""
    return [part.strip() for part in env_str(name, default).split(",") if part.strip()]


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    """An enum-like variable that must be one of ``choices``."""
    value = env_str(name, default)
    if value not in choices:
        raise ImproperlyConfigured(f"environment variable {name}={value!r} must be one of {', '.join(choices)}")
    return value


_PERIODS = ("second", "minute", "hour", "day")


def env_rate(name: str, default: str) -> str | None:
    """A throttle rate ``<count>/<second|minute|hour|day>``, or None for "off"."""
    value = env_str(name, default).strip().lower()
    if value in _FALSE:
        return None
    count, _, period = value.partition("/")
    if not count.isdigit() or int(count) < 1 or not any(p.startswith(period) for p in _PERIODS if period):
        raise ImproperlyConfigured(
            f"environment variable {name}={value!r} is not a rate like 100/second, 600/minute or off"
        )
    return value
