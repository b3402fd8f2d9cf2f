"""benchmarks/engine_versions.py's paired summary of two versions' rounds."""

from __future__ import annotations

import pytest

from benchmarks.engine_versions import paired


def test_paired_ratios_are_taken_round_by_round_not_from_each_versions_median() -> None:
    # The machine's speed moved from round to round: the ratio of the two medians (1.9 / 2.0) is not the median
    # of the rounds' ratios (0.9, 0.95 and 0.75).
    summary = paired([1.0, 2.0, 4.0], [0.9, 1.9, 3.0])
    assert summary == {"median_ratio": 0.9, "faster_rounds": 3, "rounds": 3}
    assert paired([2.0, 1.0], [1.0, 3.0]) == {"median_ratio": 1.75, "faster_rounds": 1, "rounds": 2}
    assert paired([1.0], [1.0])["faster_rounds"] == 0  # a tie is not faster


def test_paired_refuses_rounds_that_do_not_pair() -> None:
    with pytest.raises(ValueError, match="as many rounds"):
        paired([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="at least one"):
        paired([], [])
