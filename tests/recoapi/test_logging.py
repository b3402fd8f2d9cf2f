"""Log files as management commands write them: several processes at once, rotation, logrotate (issue 12, item 9)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINES = 600
MAX_BYTES = 8192

# Waits (bounded) until every writer has started, so that they write at the same time, then logs LINES lines.
WRITER = """
import logging, pathlib, time
logs = pathlib.Path({logs!r})
(logs / "ready-{name}").touch()
deadline = time.monotonic() + 120
while len(list(logs.glob("ready-*"))) < {writers} and time.monotonic() < deadline:
    time.sleep(0.05)
log = logging.getLogger("recoapi.test_logging")
for n in range({lines}):
    log.warning("line %s-%05d", {name!r}, n)
"""


def _shell(code: str, logs: Path, **env: str) -> subprocess.Popen[str]:
    """``manage.py shell -c code`` with its logs in ``logs``."""
    full_env = {**os.environ, "RECO_LOGS_DIR": str(logs), **env}
    return subprocess.Popen([sys.executable, str(ROOT / "manage.py"), "shell", "-c", code], cwd=ROOT, env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process: subprocess.Popen[str]) -> None:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output


def test_two_commands_rotating_the_same_log_lose_no_line(tmp_path: Path) -> None:
    env = {"RECO_LOG_MAX_BYTES": str(MAX_BYTES), "RECO_LOG_BACKUPS": "100", "RECO_CONSOLE_LOG_LEVEL": "ERROR"}
    writers = [_shell(WRITER.format(logs=str(tmp_path), name=name, writers=2, lines=LINES), tmp_path, **env)
               for name in ("a", "b")]
    for process in writers:
        _finish(process)

    rotated = list(tmp_path.glob("recoapi.log.*"))
    assert len(rotated) >= 5
    assert all(path.stat().st_size >= MAX_BYTES for path in rotated), [path.stat().st_size for path in rotated]
    lines = [line for path in [tmp_path / "recoapi.log", *rotated] for line in path.read_text().splitlines()
             if "recoapi.test_logging" in line]
    written = [line.rsplit(" line ", 1)[1] for line in lines]
    assert sorted(written) == sorted(f"{name}-{n:05d}" for name in ("a", "b") for n in range(LINES))
    assert len({re.search(r" \[(\d+)\] ", line).group(1) for line in lines}) == 2, "lines of both processes"


def test_without_rotation_a_moved_log_file_is_reopened(tmp_path: Path) -> None:
    """RECO_LOG_MAX_BYTES=0 leaves rotation to logrotate, which moves the file away: the next line starts a new one."""
    code = (
        "import logging, os\n"
        "log = logging.getLogger('recoapi.test_logging')\n"
        "log.warning('before the move')\n"
        f"os.rename({str(tmp_path / 'recoapi.log')!r}, {str(tmp_path / 'recoapi.log.1')!r})\n"
        "log.warning('after the move')\n"
    )
    _finish(_shell(code, tmp_path, RECO_LOG_MAX_BYTES="0", RECO_CONSOLE_LOG_LEVEL="ERROR"))
    moved = (tmp_path / "recoapi.log.1").read_text()
    current = (tmp_path / "recoapi.log").read_text()
    assert "before the move" in moved and "after the move" not in moved
    assert "after the move" in current and "before the move" not in current
