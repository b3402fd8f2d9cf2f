"""One training at a time, and one import at a time, across processes and hosts.

PostgreSQL: session-level advisory locks (every host sharing the database sees them). SQLite: an
exclusive ``flock`` on ``<database file>.training.lock`` (``.import.lock``; SQLite serves one host; an in-memory
database gets a file in the temporary directory). Both are released by
the operating system or the database server when the holder dies, even by SIGKILL, so a killed run
never leaves the lock taken.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from django.db import OperationalError, connection

logger = logging.getLogger(__name__)

ADVISORY_KEY = 0x7265636F  # "reco": the training lock's advisory key
IMPORT_ADVISORY_KEY = 0x72656369  # "reci": the import lock's


def lock_path(suffix: str = ".training.lock") -> Path:
    """The SQLite lock file: beside the database file, or in the temporary directory for one in memory.

    A database in memory belongs to one process, so its lock is that process's own (the process id is in its
    name): every process with such a database (test processes side by side, each with its own) had the same
    name and path, and one's training refused another's."""
    name = str(connection.settings_dict["NAME"])
    if Path(name).is_absolute():
        return Path(name + suffix)
    digest = hashlib.sha1(name.encode()).hexdigest()[:12]
    in_memory = name == ":memory:" or "mode=memory" in name
    return Path(tempfile.gettempdir()) / (f"recoapi-{digest}-{os.getpid()}{suffix}" if in_memory
                                          else f"recoapi-{digest}{suffix}")


@contextmanager
def training_lock() -> Iterator[bool]:
    """Try to take the training lock without waiting; yields whether this process holds it."""
    with _lock(ADVISORY_KEY, ".training.lock") as held:
        yield held


@contextmanager
def import_lock(*, wait: bool, on_wait: Callable[[], None] | None = None) -> Iterator[bool]:
    """Take the import lock; yields whether this process holds it. With ``wait``, waits for another process's
    import to end (``on_wait`` is called first, once); without, yields False at once when one is running.

    Two imports at once on PostgreSQL each deleted the imported interactions before the other inserted its own:
    the same files imported twice left every interaction twice, and two shops' ``--replace`` left both."""
    with _lock(IMPORT_ADVISORY_KEY, ".import.lock", wait=wait, on_wait=on_wait) as held:
        yield held


@contextmanager
def _lock(key: int, suffix: str, *, wait: bool = False,
          on_wait: Callable[[], None] | None = None) -> Iterator[bool]:
    """An advisory lock of ``key`` (PostgreSQL) or an exclusive ``flock`` of :func:`lock_path` with ``suffix``."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(%s)", [key])
            held = bool(cursor.fetchone()[0])
            if not held and wait:
                if on_wait is not None:
                    on_wait()
                cursor.execute("SELECT pg_advisory_lock(%s)", [key])
                held = True
        try:
            yield held
        finally:
            if held:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_unlock(%s)", [key])
        return
    # Readable and writable by whoever the umask allows: the commands and the web workers may run as other users
    # (a lock file only the first one could open made every later POST /reload_data a PermissionError).
    path = lock_path(suffix)
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:  # the database's folder is missing or closed to this user: so is the database itself
        raise OperationalError(f"cannot open {path}, the lock file beside the SQLite database "
                               f"({exc.strerror or exc})") from exc
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            held = True
        except BlockingIOError:
            held = False
            if wait:
                if on_wait is not None:
                    on_wait()
                fcntl.flock(descriptor, fcntl.LOCK_EX)
                held = True
        try:
            yield held
        finally:
            if held:
                fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)
