"""poetry.lock and constraints.txt name the same versions (tools/poetry_lock.py writes the lock from them)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("poetry_lock", ROOT / "tools" / "poetry_lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_lock_and_the_constraints_agree() -> None:
    tool = _tool()
    assert tool.differences(tool.lock_versions(), tool.pins()) == []


def test_a_changed_pin_is_caught(tmp_path: Path) -> None:
    tool = _tool()
    pins = tool.pins()
    changed = {**pins, "numpy": "0.0.1"}
    assert tool.differences(tool.lock_versions(), changed) == ["numpy: poetry.lock " + pins["numpy"]
                                                               + ", constraints.txt 0.0.1"]
    assert tool.differences(tool.lock_versions(), {**pins, "left-pad": "1.0"}) == [
        "left-pad: constraints.txt 1.0, not in poetry.lock"]
    (tmp_path / "constraints.txt").write_text("# comment\nNumPy==2.0.0  # why\n\n")
    assert tool.pins(tmp_path / "constraints.txt") == {"numpy": "2.0.0"}
