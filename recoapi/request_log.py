"""The request log's file handler: lines written in batches, each batch under one file lock.

Every gunicorn worker appends to the same ``logs/requests.log``, so each write is made under
concurrent-log-handler's file lock, after its check for a rotation by another process: a lock taken and
released, two ``stat`` calls, a seek and a flush per line. On the hot path that was about 3% of a
one-shopper request's time holding the interpreter's lock (py-spy under wrk, docs/performance.md).
:class:`BatchedRotatingFileHandler` formats each line when it is logged (its time and request id are the
request's) and writes the lines waiting at most ``flush_seconds`` after the first of them, or once
``capacity`` wait, in one write under one lock; a warning or worse is written at once with those before it.
A worker's graceful exit writes what is left (``logging.shutdown`` flushes every handler); a killed worker
loses at most ``flush_seconds`` of lines. nginx's ``access_log ... buffer= flush=`` does the same for its log.

Written here because concurrent-log-handler writes line by line and the standard library's
``MemoryHandler`` hands its target one record at a time (one lock each): neither batches the writes.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from concurrent_log_handler import ConcurrentRotatingFileHandler

logger = logging.getLogger(__name__)

DEFAULT_CAPACITY = 256
"""Lines that wait at most before they are written."""


class BatchedRotatingFileHandler(ConcurrentRotatingFileHandler):
    """:class:`ConcurrentRotatingFileHandler` that writes its lines in batches (see the module docstring).

    ``flush_seconds`` 0 writes every line at once, as the parent does.
    """

    def __init__(self, filename: str, *args: object, flush_seconds: float = 1.0, capacity: int = DEFAULT_CAPACITY,
                 **kwargs: object) -> None:
        super().__init__(filename, *args, **kwargs)  # type: ignore[arg-type]
        if flush_seconds < 0 or capacity < 1:
            raise ValueError(f"flush_seconds must be 0 or more and capacity 1 or more, got {flush_seconds}, "
                             f"{capacity}")
        self.flush_seconds = float(flush_seconds)
        self.capacity = int(capacity)
        self._pending: list[str] = []
        self._first_at = 0.0  # when the oldest waiting line was logged (time.monotonic)
        self._pid = os.getpid()  # the process the waiting lines were logged in
        self._timer: threading.Thread | None = None  # its timer thread, once started (a forked worker starts its own)
        self._closed_here = False  # closed: the timer thread ends

    def emit(self, record: logging.LogRecord) -> None:
        """Format ``record`` now; write it with the others waiting when the batch is due (called under
        :attr:`lock`, as every handler's ``emit``)."""
        if self.flush_seconds <= 0:
            super().emit(record)
            return
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self._own_lines()
        if not self._pending:
            self._first_at = time.monotonic()
        self._pending.append(line)
        if (record.levelno >= logging.WARNING or len(self._pending) >= self.capacity
                or time.monotonic() - self._first_at >= self.flush_seconds):
            self._write_pending()
        else:
            self._ensure_timer()

    def pending(self) -> int:
        """How many lines wait to be written."""
        with self.lock:  # type: ignore[union-attr]
            return len(self._pending)

    def flush(self) -> None:
        """Write the waiting lines now (``logging.shutdown`` calls it at a process's exit)."""
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()
        super().flush()

    def close(self) -> None:
        """Write the waiting lines, then close the file; the timer thread ends."""
        with self.lock:  # type: ignore[union-attr]
            self._write_pending()
            self._closed_here = True
        super().close()

    def _write_pending(self) -> None:
        """Write every waiting line under one file lock (the caller holds :attr:`lock`).

        As the parent checks the file's size before each line, a file is rotated before the line that finds it at
        ``maxBytes`` or more: a batch is written in as many writes as the rotations it makes, and a rotated file
        passes the maximum by less than one line, as before.
        """
        self._own_lines()
        if not self._pending:
            return
        lines, self._pending = self._pending, []
        try:
            self._do_lock()
            try:
                self._check_stream()  # the file another process rotated is reopened
                while lines:
                    if self.shouldRollover(None):  # type: ignore[arg-type]  (the parent's check reads the file alone)
                        self.doRollover()
                    fitting = self._fitting(lines)
                    self.do_write(self.terminator.join(lines[:fitting]))  # do_write adds the last terminator
                    lines = lines[fitting:]
            finally:
                self._do_unlock()
        except Exception:
            self.handleError(logging.makeLogRecord({"msg": f"{len(lines)} request log lines not written"}))

    def _own_lines(self) -> None:
        """In a forked process (a gunicorn worker), forget the lines its parent logged: they are the parent's to
        write (the caller holds :attr:`lock`)."""
        if self._pid != os.getpid():
            self._pid, self._pending, self._timer = os.getpid(), [], None

    def _fitting(self, lines: list[str]) -> int:
        """How many of ``lines`` go into the current file before it reaches ``maxBytes`` (at least 1)."""
        if self.maxBytes <= 0:
            return len(lines)
        if self.stream is None or self.stream.closed:
            self.stream = self.do_open()
        self.stream.seek(0, os.SEEK_END)
        size, count = self.stream.tell(), 0
        for line in lines:
            if size >= self.maxBytes and count:
                break
            size += len(line.encode("utf-8", "replace")) + len(self.terminator)
            count += 1
        return count

    def _ensure_timer(self) -> None:
        """Start this process's timer thread, which writes a batch once it is due when no later line does."""
        if self._timer is None:
            self._timer = threading.Thread(target=self._write_when_due, name="request-log-writer", daemon=True)
            self._timer.start()

    def _write_when_due(self) -> None:
        while True:
            with self.lock:  # type: ignore[union-attr]
                if self._closed_here:
                    return
                due = self._first_at + self.flush_seconds - time.monotonic() if self._pending else self.flush_seconds
                if due <= 0:
                    self._write_pending()
                    due = self.flush_seconds
            time.sleep(max(due, 0.01))
