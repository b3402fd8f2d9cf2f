"""What the API showed: each answered list is written to the database in the background.

A recommendation request must not wait for a write, so :func:`record` only appends the list to a
bounded in-memory buffer; a writer thread of the process stores the buffer every
``RECO_IMPRESSIONS_FLUSH_SECONDS`` (or sooner once ``RECO_IMPRESSIONS_BATCH`` lists are waiting) in
one transaction. While the database refuses writes the lists stay buffered and are retried; beyond
``RECO_IMPRESSIONS_MAX_BUFFERED`` the oldest are dropped (and counted by the
``recoapi_impressions_dropped_total`` metric) rather than growing without bound. A graceful stop
(a worker's exit: the interpreter runs :func:`flush_at_exit`) writes what is left.

This is the standard library's queue-and-thread pattern, written here because it needs the database:
a task queue (Celery, RQ) would add a broker and a worker process for one bulk insert per second.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from operator import attrgetter
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, DatabaseError, close_old_connections, connection, connections, transaction
from django.db.models import QuerySet
from django.db.models.constants import OnConflict

from recoapi import metrics
from recoapi.recommendations.models import Experiment, RecommendationList

logger = logging.getLogger(__name__)


def new_list_id() -> str:
    """A new list's ``recommendation_id``: a UUID version 7 (RFC 9562) as 32 hex digits, the time in milliseconds
    first, then 74 random bits.

    Lists written later sort after earlier ones, so each insert adds to the end of the table's primary-key index
    instead of a random page of it: with random ids (version 4), storing a batch of lists read and rewrote a page
    of that index per list (docs/performance.md, "Time-ordered list ids"). Python 3.14's ``uuid.uuid7()`` makes
    the same layout; this one works on every supported Python.
    """
    bits = int.from_bytes(os.urandom(10), "big")  # 80 random bits: 12 for rand_a, 62 for rand_b, 6 unused
    value = ((time.time_ns() // 1_000_000 & (1 << 48) - 1) << 80 | 0x7 << 76 | (bits >> 62 & 0xFFF) << 64
             | 0b10 << 62 | bits & (1 << 62) - 1)
    return f"{value:032x}"


@dataclass(frozen=True)
class Shown:
    """One list as answered: its id, for whom, how, and the product ids in order."""

    id: str
    created_at: datetime
    shopper_id: str
    strategy: str
    model_version: str
    items: list[str]
    experiment_id: int | None = None
    arm: str = ""


class ImpressionBuffer:
    """A bounded buffer of answered lists and the thread that writes them (one per process)."""

    def __init__(self) -> None:
        self._pending: deque[tuple[Any, ...]] = deque()  # lists as rows of adapted values (adapted())
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._write_lock = threading.Lock()  # one writer at a time: the thread or a final flush
        self._thread: threading.Thread | None = None
        self._pid: int | None = None
        self._dropped = 0  # lists dropped from the front so far (a flush in progress must not remove newer ones)

    def record(self, shown: list[Shown]) -> None:
        """Buffer lists to write (never blocks on the database)."""
        if not settings.RECO_IMPRESSIONS:
            return
        try:
            rows = adapted(shown)  # here, a little per answer, not in the writer's batch (see adapted())
        except Exception:  # a value its field refuses: the answer stands, the lists are not recorded
            logger.exception("%d recommendation lists could not be recorded", len(shown))
            metrics.impressions_dropped(len(shown))
            return
        with self._lock:
            before = len(self._pending)
            self._pending.extend(rows)
            dropped = len(self._pending) - settings.RECO_IMPRESSIONS_MAX_BUFFERED
            for _ in range(max(0, dropped)):
                self._pending.popleft()
            self._dropped += max(0, dropped)
            waiting = len(self._pending)
        if dropped > 0:
            metrics.impressions_dropped(dropped)
            logger.warning("impression buffer full: %d oldest lists dropped", dropped)
        self._ensure_writer()
        if before < settings.RECO_IMPRESSIONS_BATCH <= waiting:  # a batch is ready: write it before the interval
            self._wake.set()  # (once: while the database refuses, the writer keeps its interval)

    def pending(self) -> int:
        """How many lists wait to be written."""
        with self._lock:
            return len(self._pending)

    def flush(self) -> int | None:
        """Write every buffered list now; returns how many were written (None when the database refused)."""
        with self._write_lock:
            with self._lock:
                batch = list(self._pending)
                dropped_before = self._dropped
            if not batch:
                return 0
            try:
                _insert(batch)
            except DatabaseError as exc:
                logger.warning("cannot write %d recommendation lists yet (kept for the next try): %s",
                               len(batch), exc)
                return None
            with self._lock:  # the written ones are the oldest; newer ones may have arrived meanwhile, and
                # a full buffer may have dropped some of the written ones from the front already
                still_here = len(batch) - (self._dropped - dropped_before)
                for _ in range(max(0, min(still_here, len(self._pending)))):
                    self._pending.popleft()
            return len(batch)

    def _ensure_writer(self) -> None:
        if settings.RECO_IMPRESSIONS_WRITER != "thread":
            return
        if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._pid == os.getpid() and self._thread is not None and self._thread.is_alive():
                return
            self._pid = os.getpid()  # a forked process starts its own writer
            self._thread = threading.Thread(target=self._run, name="impressions-writer", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        refused = False
        while True:
            if refused:  # the database refused: the whole interval before the next try, whatever arrives
                time.sleep(settings.RECO_IMPRESSIONS_FLUSH_SECONDS)
            else:
                self._wake.wait(settings.RECO_IMPRESSIONS_FLUSH_SECONDS)
            self._wake.clear()
            refused = self.write_due()

    def write_due(self) -> bool:
        """One write of the writer thread: every buffered list, on the thread's own connection. Returns whether the
        database refused them (or the write failed: logged, the lists kept for the next try).

        The connection stays open between writes, as a request thread's does, until it is older than
        ``CONN_MAX_AGE`` or an error left it unusable: opening one for each write (its settings, SQLite's schema
        read again, the INSERT prepared again) cost 0.6 to 0.9 ms of CPU a write on SQLite, about a third of a
        write of 100 lists (``benchmarks/impression_writer.py``). After a refusal it is closed, so the next try opens a
        fresh one (a database restarted meanwhile)."""
        close_old_connections()
        try:
            refused = self.flush() is None
        except Exception:  # never let the writer die: log, keep the lists, try again
            logger.exception("the impression writer failed; retrying")
            refused = True
        if refused:
            connection.close()
        return refused


_COLUMNS = ("id", "created_at", "shopper_id", "strategy", "model_version", "items", "experiment_id", "arm")
_UNIQUE_COLUMNS = frozenset({"id", "shopper_id", "items"})  # adapted per list (the others repeat)


def adapted(shown: list[Shown]) -> list[tuple[Any, ...]]:
    """Each list as its row of the INSERT :func:`_insert` runs, every value adapted by its model field as
    ``bulk_create`` would write it (the database's own adapters: SQLite's text for a time, PostgreSQL's JSON
    wrapper...).

    Called by :meth:`ImpressionBuffer.record` in the request's thread, so that the adapting is spread over the
    answers (about 10 µs a list) instead of done for a whole batch by the writer thread: the writer shares each web
    worker's interpreter lock with its requests, and a batch's adapting (a few milliseconds for 350 lists) held it
    in one piece, delaying the requests that came meanwhile (one known shopper per request at 2 connections, p99
    with impressions against without: 7.8 to 8.9 against 4.0 to 6.3 ms before, 5.7 to 6.0 against 3.9 to 5.9 ms
    since; docs/performance.md). The answer's time, strategy, model, experiment and arm repeat across its lists
    (one time for the 100 lists of a 100-shopper answer): each distinct value is adapted once.
    """
    if not shown:
        return []
    # This thread's own connection wrapper, looked up once: the module's ``connection`` finds it again (a
    # thread-local lookup) at each attribute the fields' adapters read, several per value: two thirds of the
    # adapting's time (9.5 against 25 µs a list, ad hoc). Adapting needs no open connection.
    database = connections[DEFAULT_DB_ALIAS]
    prepare = [field.get_db_prep_save for field in _fields()]
    known: dict[tuple[int, Any], Any] = {}

    def adapt(column: int, value: Any) -> Any:
        if not _SHARED[column]:
            return prepare[column](value, database)
        key = (column, value)
        if key not in known:
            known[key] = prepare[column](value, database)
        return known[key]

    return [tuple(adapt(column, value) for column, value in enumerate(_values(s))) for s in shown]


_values = attrgetter(*_COLUMNS)
"""A :class:`Shown`'s values in :data:`_COLUMNS`' order (its attributes are named as the columns)."""

_SHARED = tuple(name not in _UNIQUE_COLUMNS for name in _COLUMNS)
"""Per column of :data:`_COLUMNS`: whether its values repeat across an answer's lists (adapted once per distinct
value)."""


@cache
def _fields() -> tuple[Any, ...]:
    """The model's fields of :data:`_COLUMNS`, in order (read once: every answer's lists are adapted by them)."""
    meta = RecommendationList._meta
    return tuple(meta.get_field(name) for name in _COLUMNS)


def _insert(rows: list[tuple[Any, ...]]) -> None:
    """Insert the :func:`adapted` rows in one transaction, lists already written (the same id) left as they are.

    One prepared INSERT executed per row (``executemany``): ``bulk_create`` built a model instance per list and
    one statement of every row's placeholders, which took more than half of the write's time (500 lists of 100
    shoppers' answers: 19 ms against 8 ms, ad hoc), in a thread that shares each web worker's interpreter lock
    with its requests. The statement comes from the database backend's own operations (``INSERT OR IGNORE`` on
    SQLite, ``ON CONFLICT DO NOTHING`` on PostgreSQL).
    """
    database = connections[DEFAULT_DB_ALIAS]
    fields = _fields()
    ops, quote = database.ops, database.ops.quote_name
    suffix = ops.on_conflict_suffix_sql(fields, OnConflict.IGNORE, None, None)
    sql = (f"{ops.insert_statement(on_conflict=OnConflict.IGNORE)} {quote(RecommendationList._meta.db_table)} "
           f"({', '.join(quote(field.column) for field in fields)}) VALUES ({', '.join(['%s'] * len(fields))})"
           f"{' ' + suffix if suffix else ''}")
    with transaction.atomic(using=database.alias), database.cursor() as cursor:
        cursor.executemany(sql, rows)


buffer = ImpressionBuffer()


def record(shown: list[Shown]) -> None:
    """Buffer answered lists for writing (see the module docstring)."""
    buffer.record(shown)


def flush_at_exit() -> None:
    """Write what is left before the process ends (registered with atexit: a gunicorn worker's graceful exit).

    Only where the writer is a thread: in "manual" mode (the test process) only explicit flushes write.
    """
    if settings.RECO_IMPRESSIONS_WRITER != "thread":
        return
    try:
        written = buffer.flush()
        if written:
            logger.info("wrote %d recommendation lists at exit", written)
    except Exception:
        logger.exception("could not write the remaining recommendation lists at exit")
    finally:
        connection.close()


atexit.register(flush_at_exit)

PRUNE_CHUNK = 900
"""Lists deleted per statement and transaction (below SQLite's oldest limit of 999 values in one statement)."""


def prunable(older_than: datetime) -> QuerySet[RecommendationList]:
    """The stored lists answered before ``older_than``, except those of an experiment that still exists (its
    results are computed from its lists)."""
    return (RecommendationList.objects.filter(created_at__lt=older_than)
            .exclude(experiment_id__in=Experiment.objects.values("pk")))


def prune(older_than: datetime, *, progress: Callable[[int], None] | None = None) -> int:
    """Delete the :func:`prunable` lists, :data:`PRUNE_CHUNK` at a time, each chunk in its own transaction: one
    transaction over millions of rows would hold SQLite's write lock against the writer thread and ``POST
    /events`` until it ends. Events keep their ``recommendation_id``; they are no longer attributed to a list.

    Args:
        older_than: lists answered before this moment go.
        progress: called with the number deleted after each chunk.

    Returns:
        How many lists were deleted.
    """
    deleted = 0
    while True:
        ids = list(prunable(older_than).order_by().values_list("id", flat=True)[:PRUNE_CHUNK])
        if ids:
            with transaction.atomic():
                count, _ = RecommendationList.objects.filter(id__in=ids).delete()
            deleted += count
            if progress is not None:
                progress(count)
        if len(ids) < PRUNE_CHUNK:
            return deleted
