"""benchmarks/kernel_versions.py: the other version's source, the paired comparison and its equality check."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from benchmarks.kernel_versions import KERNEL, ROOT, compare, other_source, same
from modeling import native
from modeling.reranker import synthetic_proposals


def test_the_other_versions_source_is_that_commits_file(tmp_path: Path) -> None:
    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip("not a git checkout: there is no other version to read")
    path = other_source("HEAD", tmp_path)
    committed = subprocess.run(["git", "-C", str(ROOT), "show", f"HEAD:{KERNEL}"], capture_output=True, check=True)
    assert path.read_bytes() == committed.stdout
    with pytest.raises(SystemExit, match="is not a commit"):
        other_source("no-such-version-anywhere", tmp_path)


def test_both_functions_are_timed_on_the_same_calls_and_their_outputs_compared() -> None:
    function = native.stage_function()
    if function is None:
        pytest.skip("no C compiler here: the stage's native code is not built")
    calls = [(synthetic_proposals(seed), lambda *names: True) for seed in range(3)]
    report = compare(function, function, calls, rounds=3)
    assert report["calls"] == 3 and report["same_outputs"] is True
    assert len(report["rounds_ms"]["other"]) == len(report["rounds_ms"]["this"]) == 3
    assert report["paired"]["rounds"] == 3 and report["shoppers_per_call"] == 5
    assert all(np.isfinite(value) and value >= 0 for value in report["rounds_ms"]["this"])


def test_outputs_that_differ_in_one_value_are_not_the_same() -> None:
    rows, items = np.array([0, 0]), np.array([3, 5])
    features = np.array([[1.0, np.nan], [2.0, 0.5]], dtype=np.float32)
    changed = features.copy()
    changed[1, 1] = np.nextafter(np.float32(0.5), np.float32(1.0))
    assert same([(rows, items, features)], [(rows, items, features.copy())])  # NaN equals NaN
    assert not same([(rows, items, features)], [(rows, items, changed)])
    assert not same([(rows, items, features)], [None])
    assert not same([(rows, items, features)], [])
