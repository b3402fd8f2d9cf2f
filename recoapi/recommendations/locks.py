"""One training at a time across processes and hosts.

PostgreSQL: a session-level advisory lock (every host sharing the database sees it). SQLite: an
exclusive ``flock`` on ``<database file>.training.lock`` (SQLite serves one host; an in-memory database
gets a file in the temporary directory). Both are released by
the operating system or the database server when the holder dies, even by SIGKILL, so a killed run
never leaves the lock taken.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.db import connection

logger = logging.getLogger(__name__)

ADVISORY_KEY = 0x7265636F  # "reco": the advisory lock's key


def lock_path() -> Path:
    """The SQLite lock file: beside the database file, or in the temporary directory for one in memory.

    A database in memory belongs to one process, so its lock is that process's own (the process id is in its
    name): every process with such a database (test processes side by side, each with its own) had the same
    name and path, and one's training refused another's."""
    name = str(connection.settings_dict["NAME"])
    if Path(name).is_absolute():
        return Path(name + ".training.lock")
    digest = hashlib.sha1(name.encode()).hexdigest()[:12]
    in_memory = name == ":memory:" or "mode=memory" in name
    return Path(tempfile.gettempdir()) / (f"recoapi-{digest}-{os.getpid()}.training.lock" if in_memory
                                          else f"recoapi-{digest}.training.lock")


@contextmanager
def training_lock() -> Iterator[bool]:
    """Try to take the training lock without waiting; yields whether this process holds it."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [ADVISORY_KEY])
            held = bool(cursor.fetchone()[0])
        try:
            yield held
        finally:
            if held:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [ADVISORY_KEY])
        return
    descriptor = os.open(lock_path(), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
        except BlockingIOError:
            held = False
        try:
            yield held
        finally:
            if held:
                fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)
