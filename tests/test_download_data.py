"""download_data.sh: clear failure offline, verified downloads, safe re-runs (against a loopback server)."""

from __future__ import annotations

import functools
import gzip
import http.server
import json
import subprocess
import threading
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "download_data.sh"


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


@pytest.fixture
def server(tmp_path: Path):
    root = tmp_path / "remote"
    (root / "categoryFilesSmall").mkdir(parents=True)
    (root / "metaFiles2").mkdir()
    with gzip.open(root / "categoryFilesSmall" / "Software_5.json.gz", "wt") as handle:
        handle.write(json.dumps({"reviewerID": "u1", "asin": "a1", "overall": 5.0, "unixReviewTime": 1}) + "\n")
    with gzip.open(root / "metaFiles2" / "meta_Software.json.gz", "wt") as handle:
        handle.write(json.dumps({"asin": "a1", "title": "Editor"}) + "\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_unreachable_source_fails_fast_and_leaves_nothing(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run("Gift_Cards", env={"AMAZON2018_BASE_URL": "http://127.0.0.1:9", "DATA_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert "could not download" in result.stderr
    assert time.monotonic() - started < 60
    assert list(tmp_path.iterdir()) == []


def test_unknown_category_is_refused(tmp_path: Path) -> None:
    result = run("Nope", env={"DATA_DIR": str(tmp_path)})
    assert result.returncode == 1 and "unknown category 'Nope'" in result.stderr
    assert "Gift_Cards" in run("--list", env={}).stdout


def test_download_verifies_and_reruns_skip(tmp_path: Path, server) -> None:
    root, url = server
    env = {"AMAZON2018_BASE_URL": url, "DATA_DIR": str(tmp_path)}
    first = run("Software", env=env)
    assert first.returncode == 0, first.stderr
    target = tmp_path / "Software"
    assert sorted(p.name for p in target.iterdir()) == ["SHA256SUMS", "Software_5.json.gz", "meta_Software.json.gz"]
    second = run("Software", env=env)
    assert second.returncode == 0 and second.stdout.count("already downloaded and verified") == 2
    # A damaged local file fails its recorded checksum and is fetched again.
    (target / "Software_5.json.gz").write_bytes(b"broken")
    third = run("Software", env=env)
    assert third.returncode == 0, third.stderr
    assert gzip.decompress((target / "Software_5.json.gz").read_bytes())
    from modeling.sources import load_source

    assert load_source("amazon2018", target).counts() == {"items": 1, "users": 1, "interactions": 1}


def test_corrupt_download_is_removed(tmp_path: Path, server) -> None:
    root, url = server
    (root / "metaFiles2" / "meta_Software.json.gz").write_bytes(b"not gzip at all")
    result = run("Software", env={"AMAZON2018_BASE_URL": url, "DATA_DIR": str(tmp_path)})
    assert result.returncode != 0 and "failed verification" in result.stderr
    assert not (tmp_path / "Software" / "meta_Software.json.gz").exists()
