"""The request log's batched writes (recoapi.request_log): every line written once, in order, within the
interval or at exit, and rotated files no larger than with one write per line."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from recoapi.request_log import BatchedRotatingFileHandler

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def make_logger(tmp_path: Path) -> Iterator:
    made: list[tuple[logging.Logger, BatchedRotatingFileHandler]] = []

    def make(**settings: object) -> tuple[logging.Logger, BatchedRotatingFileHandler, Path]:
        path = tmp_path / "requests.log"
        handler = BatchedRotatingFileHandler(str(path), **{"maxBytes": 0, "backupCount": 3, **settings})
        handler.setFormatter(logging.Formatter("%(message)s"))
        log = logging.getLogger(f"test.request_log.{len(made)}.{id(handler)}")
        log.propagate, log.level = False, logging.INFO
        log.addHandler(handler)
        made.append((log, handler))
        return log, handler, path

    yield make
    for log, handler in made:
        log.removeHandler(handler)
        handler.close()


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_lines_wait_for_the_interval_and_are_written_once_in_order(make_logger) -> None:
    log, handler, path = make_logger(flush_seconds=30.0)
    for i in range(10):
        log.info("GET /recommendations %d", i)
    assert handler.pending() == 10 and _lines(path) == []
    handler.flush()
    assert handler.pending() == 0
    assert _lines(path) == [f"GET /recommendations {i}" for i in range(10)]
    handler.flush()  # nothing waits: nothing more is written
    assert len(_lines(path)) == 10


def test_a_full_batch_and_a_warning_are_written_at_once(make_logger) -> None:
    log, handler, path = make_logger(flush_seconds=30.0, capacity=5)
    for i in range(7):
        log.info("line %d", i)
    assert _lines(path) == [f"line {i}" for i in range(5)] and handler.pending() == 2
    log.warning("slow request")
    assert _lines(path) == [*(f"line {i}" for i in range(7)), "slow request"]


def test_the_timer_writes_a_batch_when_no_later_line_comes(make_logger) -> None:
    log, handler, path = make_logger(flush_seconds=0.2)
    log.info("the last request of a burst")
    deadline = time.monotonic() + 20  # generous: a busy machine
    while not _lines(path) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _lines(path) == ["the last request of a burst"]


def test_closing_writes_the_batch_and_ends_the_timer(make_logger) -> None:
    log, handler, path = make_logger(flush_seconds=0.2)
    log.info("last")
    timer = handler._timer
    assert timer is not None and timer.is_alive()
    handler.close()
    assert _lines(path) == ["last"]
    timer.join(timeout=20)  # generous: it wakes every 0.2 s
    assert not timer.is_alive()


def test_zero_seconds_writes_every_line_at_once(make_logger) -> None:
    log, handler, path = make_logger(flush_seconds=0)
    log.info("first")
    assert _lines(path) == ["first"] and handler.pending() == 0


def test_rotated_files_pass_the_maximum_by_less_than_a_line(make_logger, tmp_path: Path) -> None:
    log, handler, path = make_logger(flush_seconds=30.0, capacity=1000, maxBytes=1000, backupCount=10)
    sent = [f"GET /recommendations?users=shopper-{i:04d} 200 2.5ms" for i in range(200)]  # 50 bytes each
    for line in sent:
        log.info(line)
    handler.flush()
    rotated = sorted(tmp_path.glob("requests.log.*"), key=lambda p: -int(p.suffix[1:]))  # oldest first
    assert 5 <= len(rotated) <= 10
    for file in rotated:
        assert 1000 <= file.stat().st_size < 1000 + 51, (file.name, file.stat().st_size)
    assert [line for file in [*rotated, path] for line in _lines(file)] == sent


def test_a_process_that_exits_writes_its_waiting_lines(tmp_path: Path) -> None:
    path = tmp_path / "requests.log"
    code = (f"import logging\nfrom recoapi.request_log import BatchedRotatingFileHandler\n"
            f"h = BatchedRotatingFileHandler({str(path)!r}, maxBytes=0, backupCount=1, flush_seconds=60)\n"
            f"log = logging.getLogger('x'); log.addHandler(h); log.setLevel(logging.INFO)\n"
            f"for i in range(3): log.info('line %d', i)\nassert h.pending() == 3\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert _lines(path) == ["line 0", "line 1", "line 2"]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_a_forked_worker_does_not_write_its_parents_lines(make_logger) -> None:
    log, handler, path = make_logger(flush_seconds=30.0)
    log.info("parent")
    child = os.fork()
    if child == 0:  # pragma: no cover  (the child)
        try:
            handler.flush()  # at a child's exit before it logs anything: nothing of its parent's
            log.info("child")
            handler.flush()
        finally:
            os._exit(0)
    os.waitpid(child, 0)
    handler.flush()
    assert sorted(_lines(path)) == ["child", "parent"]
