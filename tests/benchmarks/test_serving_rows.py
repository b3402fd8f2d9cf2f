"""`benchmarks/serving.py` runs a table's row again while all of its requests went to one worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import serving


def _scripted(monkeypatch: pytest.MonkeyPatch, shares: list[list[float]]) -> list[int]:
    """wrk's runs in turn with these workers' shares (the n-th run: n * 100 requests a second); the calls made."""
    calls: list[int] = []

    def run_wrk(base: str, paths: list[str], connections: int, seconds: int, work: Path, log: Path) -> dict:
        calls.append(connections)
        n = len(calls)
        return {"rps": 100.0 * n, "p50_ms": 1.0, "p95_ms": 2.0, "p99_ms": 3.0, "worker_shares": shares[n - 1]}

    monkeypatch.setattr(serving, "run_wrk", run_wrk)
    monkeypatch.setattr(serving, "settled", lambda run: run)
    return calls


def test_a_balanced_row_is_run_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _scripted(monkeypatch, [[0.5, 0.5]])
    run = serving.balanced_run("http://x", ["/"], 2, 10, Path("."), Path("log"), workers=2)
    assert calls == [2] and run["rps"] == 100.0 and "one_worker_runs" not in run


def test_a_row_on_one_worker_is_run_again_and_the_runs_set_aside_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _scripted(monkeypatch, [[1.0], [0.51, 0.49]])
    run = serving.balanced_run("http://x", ["/"], 2, 10, Path("."), Path("log"), workers=2)
    assert calls == [2, 2] and run["rps"] == 200.0
    assert [r["rps"] for r in run["one_worker_runs"]] == [100.0]


def test_at_most_three_runs_and_one_worker_alone_is_never_run_again(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _scripted(monkeypatch, [[1.0]] * 5)
    run = serving.balanced_run("http://x", ["/"], 2, 10, Path("."), Path("log"), workers=2)
    assert len(calls) == serving.UNBALANCED_TRIES == 3 and len(run["one_worker_runs"]) == 2
    calls = _scripted(monkeypatch, [[1.0]] * 5)
    assert "one_worker_runs" not in serving.balanced_run("http://x", ["/"], 2, 10, Path("."), Path("log"), workers=1)
    assert len(calls) == 1
