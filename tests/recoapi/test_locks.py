"""The training lock's file on SQLite."""

from __future__ import annotations

import os
from pathlib import Path

from recoapi import locks


def test_a_database_in_memory_has_a_lock_of_its_own_process(monkeypatch) -> None:
    """Every process with a database in memory (test processes side by side) had the same lock file, so one's
    training was refused as "another training is running" while another's ran."""
    from django.db import connection

    monkeypatch.setitem(connection.settings_dict, "NAME", "file:memorydb_default?mode=memory&cache=shared")
    path = locks.lock_path()
    assert f"-{os.getpid()}.training.lock" in path.name
    monkeypatch.setitem(connection.settings_dict, "NAME", "/srv/shop/db.sqlite3")
    assert locks.lock_path() == Path("/srv/shop/db.sqlite3.training.lock")  # a file: shared by its processes
