"""Files written whole or not at all, with the permissions open() would give them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from modeling.atomic import atomic_file, atomic_write, default_dir_mode, default_file_mode


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask() -> object:
    """Sets the process's umask for a test and restores it."""
    before = os.umask(0o022)
    os.umask(before)

    def set_to(value: int) -> None:
        os.umask(value)

    yield set_to
    os.umask(before)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002])
def test_a_written_file_has_the_mode_open_would_give_it(tmp_path: Path, umask, mask: int) -> None:
    """mkstemp's 0600 used to survive the rename: a results file or models/ACTIVE that another user (the web
    server's) could not read."""
    umask(mask)
    (tmp_path / "plain").write_text("x")
    assert default_file_mode() == _mode(tmp_path / "plain") == 0o666 & ~mask
    (tmp_path / "folder").mkdir()
    assert default_dir_mode() == _mode(tmp_path / "folder") == 0o777 & ~mask
    (tmp_path / "folder").rmdir()
    with atomic_write(tmp_path / "text.json") as handle:
        handle.write("{}")
    with atomic_write(tmp_path / "bytes.bin", "wb") as handle:
        handle.write(b"\x00\x01")
    with atomic_file(tmp_path / "named.parquet") as tmp:
        tmp.unlink()  # a writer that replaces the file it is given (as some do)
        tmp.write_bytes(b"PAR1")
    for name in ("text.json", "bytes.bin", "named.parquet"):
        assert _mode(tmp_path / name) == 0o666 & ~mask, name
    assert (tmp_path / "text.json").read_text() == "{}" and (tmp_path / "bytes.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bytes.bin", "named.parquet", "plain", "text.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "ACTIVE"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_write(target) as handle:
        handle.write("half")
        raise RuntimeError("disk full")
    with pytest.raises(KeyboardInterrupt), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise KeyboardInterrupt
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["ACTIVE"]


def test_only_writing_modes_are_accepted(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="mode"), atomic_write(tmp_path / "x", "a"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_the_active_version_and_the_snapshot_are_readable_by_other_users(tmp_path: Path, umask) -> None:
    """The files the service's other processes read, written by training and imports."""
    import pandas as pd

    from modeling import datasets as ds
    from modeling.artifacts import MANIFEST_FILE, set_active

    umask(0o022)
    (tmp_path / "models" / "20260101T000000Z").mkdir(parents=True)
    (tmp_path / "models" / "20260101T000000Z" / MANIFEST_FILE).write_text("{}")
    set_active(tmp_path / "models", "20260101T000000Z")
    assert _mode(tmp_path / "models" / "ACTIVE") == 0o644
    data = ds.CanonicalData(
        items=pd.DataFrame({c: ["p1"] if c == ds.ITEM_ID else [None] for c in ds.ITEM_COLUMNS}),
        users=pd.DataFrame({ds.USER_ID: ["u1"]}),
        interactions=pd.DataFrame(columns=list(ds.INTERACTION_COLUMNS)))
    directory = ds.write_snapshot(data, tmp_path / "processed", source="csv")
    assert {p.name: _mode(p) for p in directory.iterdir()} == dict.fromkeys(
        [*ds.SNAPSHOT_FILES.values(), ds.SNAPSHOT_MANIFEST], 0o644)


def test_a_folder_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder, not a file to write"), atomic_write(folder) as handle:
        handle.write("never")
    assert list(tmp_path.iterdir()) == [folder] and not list(folder.iterdir())
