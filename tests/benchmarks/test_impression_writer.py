"""`benchmarks/impression_writer.py` times the writer's writes both ways in turn, and every list is written."""

from __future__ import annotations

import pytest

from benchmarks.impression_writer import compare
from recoapi.recommendations import impressions


@pytest.mark.django_db(transaction=True)  # as the writer runs: outside any transaction of the test's
def test_both_ways_are_timed_in_turn_and_every_list_is_written() -> None:
    with impressions.buffer._lock:  # lists other tests left: not this benchmark's
        impressions.buffer._pending.clear()
    result = compare((3,), writes=2, rounds=2)
    assert result["lists_written"] == 3 * 2 * 4 and impressions.buffer.pending() == 0
    assert [run["mode"] for run in result["runs"]] == ["kept", "opened", "opened", "kept"]
    assert set(result["summary"]) == {"3 lists, connection kept", "3 lists, connection opened"}
    assert all(len(figures["cpu_ms_a_write"]) == 2 and min(figures["wall_ms_a_write"]) > 0
               for figures in result["summary"].values())
