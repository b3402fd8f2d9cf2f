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


def test_a_comparison_s_summary_pairs_the_rounds_and_gives_the_p95_beside_the_p99() -> None:
    def run(value: str, turn: int, connections: int, rps: float, p95: float, p99: float) -> dict:
        return {"scenario": "one known shopper", "value": value, "round": turn, "connections": connections,
                "rps": rps, "p50_ms": 1.0, "p95_ms": p95, "p99_ms": p99, "cpu_ms_per_request": 2.0}

    runs = [run("a", 0, 2, 100, 5.0, 9.0), run("b", 0, 2, 120, 6.0, 8.0),
            run("b", 1, 2, 90, 4.0, 7.0), run("a", 1, 2, 110, 5.0, 10.0),
            run("a", 2, 2, 100, 5.0, 9.0), run("b", 2, 2, 130, 4.5, 9.5),
            run("a", 0, 8, 50, 20.0, 30.0), run("b", 0, 8, 40, 25.0, 35.0)]
    two, eight = serving.compare_summary(runs, ("a", "b"))
    assert (two["scenario"], two["connections"]) == ("one known shopper", 2)
    assert two["a"] == {"rps": 100.0, "p50_ms": 1.0, "p95_ms": 5.0, "p99_ms": 9.0, "cpu_ms_per_request": 2.0}
    assert two["b"]["rps"] == 120.0 and two["b"]["p95_ms"] == 4.5 and two["b"]["p99_ms"] == 8.0
    assert (two["rounds_with_more_req_s_for_b"], two["rounds_with_lower_p95_for_b"],
            two["rounds_with_lower_p99_for_b"]) == (2, 2, 2)
    assert (eight["connections"], eight["rounds_with_more_req_s_for_b"], eight["rounds_with_lower_p95_for_b"],
            eight["rounds_with_lower_p99_for_b"]) == (8, 0, 0, 0)
    assert [row["connections"] for row in serving.compare_summary(runs[:6], ("a", "b"))] == [2]


def test_each_compared_value_gets_a_log_of_its_own() -> None:
    assert serving._log_name("RECO_FAST_LANE", "0") == "gunicorn-RECO_FAST_LANE-0.log"  # plain values as before
    first = serving._log_name("RECO_MODELS_DIR", "bench/models a")
    second = serving._log_name("RECO_MODELS_DIR", "bench/models:a")  # the same once the characters are replaced
    assert first != second and "/" not in first + second and " " not in first
    assert first == serving._log_name("RECO_MODELS_DIR", "bench/models a")
