"""`benchmarks/request_log.py` times both handlers in turn and both write every line."""

from __future__ import annotations

from pathlib import Path

from benchmarks.request_log import compare


def test_both_handlers_are_timed_in_turn_and_write_every_line(tmp_path: Path) -> None:
    result = compare(tmp_path, lines=300, rounds=2)
    assert {name: len(values) for name, values in result["microseconds_a_line"].items()} == {
        "line_by_line": 2, "batched": 2}
    assert result["lines_written"] == {"line_by_line": [300, 300], "batched": [300, 300]}
    assert all(value > 0 for values in result["microseconds_a_line"].values() for value in values)
