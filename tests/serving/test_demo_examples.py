"""The printed examples follow RECO_BIND: every curl line `demo_examples` prints works as printed (issue 12)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.core.management.base import CommandError

from recoapi.recommendations.management.commands.demo_examples import address_for_bind
from tests.serving.live import ROOT, Service, free_port

CURL = shutil.which("curl")


@pytest.mark.parametrize(("bind", "base", "socket"), [
    ("127.0.0.1:8000", "http://127.0.0.1:8000", None),
    ("0.0.0.0:9000", "http://127.0.0.1:9000", None),
    (":7000", "http://127.0.0.1:7000", None),
    ("tcp://shop.example:80", "http://shop.example:80", None),
    ("[::]:8080", "http://[::1]:8080", None),
    ("[::1]:8081", "http://[::1]:8081", None),
    ("localhost", "http://localhost:8000", None),
    ("unix:/run/reco.sock", "http://localhost", "/run/reco.sock"),
    ("unix:///run/reco.sock", "http://localhost", "/run/reco.sock"),
])
def test_address_follows_the_bind(bind: str, base: str, socket: str | None) -> None:
    address = address_for_bind(bind)
    assert (address.base_url, address.unix_socket) == (base, socket)


@pytest.mark.parametrize(("bind", "message"), [
    ("fd://3", "inherited file descriptor"), ("127.0.0.1:http", "not a port number"),
    ("127.0.0.1:70000", "out of range"), ("unix:", "needs a path"),
])
def test_unusable_bind_is_a_command_error(bind: str, message: str) -> None:
    with pytest.raises(CommandError, match=message):
        address_for_bind(bind)


def _serve_and_print_examples(service: Service, bind: str) -> list[str]:
    """Start gunicorn on ``bind``; returns the lines `make demo` prints for it, once /health answers."""
    service.env["RECO_BIND"] = bind
    service.env["RECO_WORKERS"] = "1"
    lines = service.manage("demo_examples", "--banner", "--username", "ops").stdout.splitlines()
    health = next(line for line in lines if line.endswith("/health'"))
    log = open(service.root / f"gunicorn-{free_port()}.log", "w")  # noqa: SIM115  (closed by the fixture)
    service._log = log
    service.process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")],
                                       env=service.env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while subprocess.run(f"{health} -sf -o /dev/null", shell=True, check=False).returncode != 0:  # noqa: S602
        assert service.process.poll() is None, Path(log.name).read_text()[-3000:]
        assert time.monotonic() < deadline, "the service did not answer /health as printed"
        time.sleep(0.5)
    return lines


def _run_every_curl_line(lines: list[str]) -> dict[str, str]:
    """Each printed curl line, run by the shell exactly as printed: {line: HTTP status}."""
    statuses = {}
    for line in (line for line in lines if line.startswith("curl ")):
        done = subprocess.run(f"{line} -sS -o /dev/null -w '%{{http_code}}'", shell=True,  # noqa: S602
                              capture_output=True, text=True, timeout=120, check=False)
        statuses[line] = done.stdout or done.stderr
    return statuses


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
@pytest.mark.parametrize("kind", ["every interface", "unix socket"])
def test_printed_banner_and_curl_lines_reach_the_service_on_reco_bind(service_sqlite: Service, kind: str) -> None:
    if kind == "unix socket":
        bind = f"unix:{service_sqlite.root / 'reco.sock'}"
    else:
        bind = f"0.0.0.0:{free_port()}"  # noqa: S104  (what a user binding every interface sets)
    lines = _serve_and_print_examples(service_sqlite, bind)
    banner = lines[0]
    if kind == "unix socket":
        assert banner.startswith(f"==> Serving on {service_sqlite.root / 'reco.sock'} ")
        assert "--unix-socket" in banner
    else:
        assert banner.startswith(f"==> Serving on http://127.0.0.1:{bind.split(':')[1]} ")
    statuses = _run_every_curl_line(lines)
    assert len(statuses) == 11
    assert all(status in {"200", "201"} for status in statuses.values()), statuses
