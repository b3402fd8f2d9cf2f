"""Log rotation with several processes writing the same files (issue 12, item 9).

Every gunicorn worker writes logs/requests.log. With the standard library's RotatingFileHandler
each worker rotated the file on its own, so a worker went on writing into a file another had
already rotated, rotated files came out at a fraction of the maximum size, and lines were lost
once too many files were made. The handler now takes a lock shared by all processes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.conftest import Pipeline
from tests.serving.live import Service, prepare_service, request

pytestmark = pytest.mark.slow

MAX_BYTES = 16 * 1024
BACKUPS = 40  # enough that nothing this test writes is deleted
BATCH = 200  # requests sent together, 4 at a time
ENOUGH = 1200  # about 120 KB of request lines: 7 rotations
AT_MOST = 3000
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \[(\d+)\] (\S+) GET /health 200 [0-9.]+ms model=\S+$")


def _health(base: str, request_id: str) -> int:
    """Sends GET /health with our own request id; returns the worker process that answered."""
    status, body, headers = request(f"{base}/health", headers={"X-Request-ID": request_id})
    assert status == 200 and headers["X-Request-ID"] == request_id
    return int(body["process"])


@pytest.fixture
def small_logs_service(pipeline: Pipeline, tmp_path: Path) -> Iterator[Service]:
    """The tiny shop behind gunicorn (two workers) with logs rotated at MAX_BYTES."""
    service = prepare_service(pipeline, tmp_path, f"sqlite:///{tmp_path / 'db.sqlite3'}",
                              RECO_LOG_MAX_BYTES=str(MAX_BYTES), RECO_LOG_BACKUPS=str(BACKUPS))
    yield service
    service.stop()


def test_two_workers_rotating_the_request_log_lose_no_line(small_logs_service: Service) -> None:
    service = small_logs_service
    base = service.start()
    sent: list[str] = []
    workers: set[int] = set()
    with ThreadPoolExecutor(4) as pool:
        # Until both workers have answered and enough lines were written for several rotations (bounded).
        while (len(sent) < ENOUGH or len(workers) < 2) and len(sent) < AT_MOST:
            ids = [f"rotation-{len(sent) + i:06d}" for i in range(BATCH)]
            workers.update(pool.map(lambda request_id: _health(base, request_id), ids))
            sent += ids
    assert len(workers) == 2, f"both workers should have answered {len(sent)} requests: {workers}"
    service.stop()  # every worker has flushed and closed its files
    assert service.process.returncode == 0

    logs = service.root / "logs"
    rotated = sorted(logs.glob("requests.log.*"), key=lambda path: int(path.suffix[1:]))
    assert [path.name for path in rotated] == [f"requests.log.{n}" for n in range(1, len(rotated) + 1)]
    assert 3 <= len(rotated) < BACKUPS, [path.name for path in rotated]

    found: dict[str, int] = {}
    pids: set[int] = set()
    for path in [logs / "requests.log", *rotated]:
        for line in path.read_text().splitlines():
            if " rotation-" not in line:
                continue  # the start-up's own /health polls
            match = LINE.match(line)
            assert match, f"{path.name}: a broken or interleaved line: {line!r}"
            pids.add(int(match.group(1)))
            found[match.group(2)] = found.get(match.group(2), 0) + 1
    assert set(found) == set(sent), f"{len(set(sent) - set(found))} of {len(sent)} request lines are missing"
    assert set(found.values()) == {1}, "a request line was written more than once"
    assert pids == workers
    print(f"{len(sent)} requests, {len(rotated)} rotations, rotated files of "
          f"{min(p.stat().st_size for p in rotated)}-{max(p.stat().st_size for p in rotated)} bytes")
    # The size is checked under the lock before each write, so only the current file is below the maximum.
    for path in rotated:
        assert MAX_BYTES <= path.stat().st_size < MAX_BYTES + 1024, (path.name, path.stat().st_size)
