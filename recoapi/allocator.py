"""The C allocator in web workers: fewer malloc arenas, and the memory a model load freed handed back.

glibc's malloc gives each new thread that allocates an arena of its own (up to eight per core) and keeps
each arena at its largest size. numpy's arrays are allocated with malloc, so
in a gunicorn worker with two request threads each thread's arena grows to the largest batch it has
scored (a request for 100 shoppers gathers tens of MB of candidate features) and stays there. With the
worker's arenas limited to two (:func:`limit_arenas`; ``RECO_MALLOC_ARENAS``) the request threads share
one. ``benchmarks/serving.py`` at 100,000 products measured each worker's anonymous memory after every
scenario at 217 to 227 MB with two arenas against 247 to 276 MB with glibc's default
(docs/performance.md; ``benchmarks/results/serving-arenas-ab.json``). After each model load the worker hands the
free memory at the top of its heap and in its arenas back to the system (:func:`release_free_memory`):
loading reads every product row from the database, which malloc would otherwise keep. After requests for many
shoppers it does the same once they stop coming (:class:`QuietRelease`).

Why ``ctypes``: glibc reads its tunables (``GLIBC_TUNABLES``, ``MALLOC_ARENA_MAX``) only when a process
starts, and gunicorn's workers are forked from the master after ``gunicorn.conf.py`` has run, so only
``mallopt`` can change them in a worker; no maintained Python package wraps ``mallopt`` and
``malloc_trim`` (the alternative, jemalloc or tcmalloc through ``LD_PRELOAD``, needs a system package
and a different launcher). Off glibc (musl, macOS) both functions do nothing and say so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
import time
from functools import cache
from typing import Any

logger = logging.getLogger(__name__)

M_ARENA_MAX = -8
"""``mallopt``'s parameter for the largest number of arenas (glibc's ``malloc.h``)."""


@cache
def _glibc() -> Any | None:
    """The C library when it is glibc (it has ``mallopt`` and ``malloc_trim``), else None."""
    name = ctypes.util.find_library("c")
    try:
        library = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    if library is None or not hasattr(library, "mallopt") or not hasattr(library, "malloc_trim"):
        return None
    library.mallopt.argtypes, library.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    library.malloc_trim.argtypes, library.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    return library


def limit_arenas(count: int) -> bool:
    """Let malloc create at most ``count`` arenas in this process from now on (0: leave glibc's default).

    Call it before the threads that should share arenas first allocate. Returns whether it was applied.

    Raises:
        ValueError: for a negative ``count``.
    """
    if count < 0:
        raise ValueError(f"the number of malloc arenas must be 0 or more, not {count}")
    library = _glibc()
    if count == 0 or library is None:
        if count and library is None:
            logger.info("not glibc: the malloc arena limit (%d) is not applied", count)
        return False
    return bool(library.mallopt(M_ARENA_MAX, count))


def release_free_memory() -> bool:
    """Hand the free memory of every malloc arena back to the system (``malloc_trim(0)``).

    Returns whether any was released (False off glibc).
    """
    library = _glibc()
    return bool(library.malloc_trim(0)) if library is not None else False


class QuietRelease:
    """Hands the free memory back (:func:`release_free_memory`) once ``delay`` seconds have passed without another
    :meth:`request` for it, from a thread of its own (one per process, started on the first request).

    Trimming after each large request cost the next one more than the trim: malloc had to take the pages back
    from the system and fault them in again. 100 shoppers per call at 100,000 products, in one process, alternately
    with and without a trim after each call (measured ad hoc): 61.2 against 54.3 ms per call (median of 160 calls
    each), besides the trim's own 0.8 ms; over HTTP see docs/performance.md. Under a steady stream of large
    requests the memory they reuse is kept; once they stop, it is handed back.

    Args:
        delay: seconds without a request before the release.
        release: what is called then (default :func:`release_free_memory`, looked up at each call).
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(self, delay: float, *, release: Any = None, clock: Any = time.monotonic) -> None:
        self.delay = delay
        self._release = release
        self._clock = clock
        self._due: float | None = None
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self.checks = 0  # how many times the thread has looked at the time (tests wait on it)

    def request(self) -> None:
        """Release ``delay`` seconds from now, unless another request comes first (it moves the release on)."""
        with self._wake:
            self._due = self._clock() + self.delay
            if self._thread is None or not self._thread.is_alive() or self._pid != os.getpid():
                self._pid = os.getpid()  # a forked process starts its own thread
                self._thread = threading.Thread(target=self._run, name="memory-release", daemon=True)
                self._thread.start()
            self._wake.notify()

    def wake(self) -> None:
        """Make the thread look at the time now (tests that move their clock)."""
        with self._wake:
            self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while self._due is None:
                    self._wake.wait()
                remaining = self._due - self._clock()
                self.checks += 1
                if remaining > 0:
                    self._wake.wait(remaining)
                    continue
                self._due = None
            try:
                (self._release or release_free_memory)()
            except Exception:  # never let the thread die: the next request starts the wait again
                logger.exception("handing free memory back failed")
