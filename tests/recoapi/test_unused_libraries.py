"""The web application loads without the optional libraries its configuration never uses (recoapi.unused_libraries)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import sys
from recoapi import wsgi
from django.test import Client
status = Client().get("/health").status_code
print(status, sorted(name for name in ("psycopg", "psycopg2", "redis", "requests") if name in sys.modules))
import requests  # hidden while the application loaded only: importable now
print("requests" in sys.modules)
"""


def _load(tmp_path: Path, **env: str) -> list[str]:
    variables = {**os.environ, "DJANGO_SETTINGS_MODULE": "recoapi.settings", "RECO_LOGS_DIR": str(tmp_path / "logs"),
                 "RECO_MODELS_DIR": str(tmp_path / "models"), **env}
    variables.pop("RECO_REDIS_URL", None)
    variables.update(env)
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=variables, capture_output=True, text=True,
                          timeout=120, check=True)
    return done.stdout.strip().splitlines()[-2:]


@pytest.mark.parametrize(("env", "loaded"), [
    ({"DATABASE_URL": "sqlite:///{tmp}/db.sqlite3"}, "[]"),
    ({"DATABASE_URL": "postgres://postgres@127.0.0.1:5432/unused"}, "['psycopg']"),
    ({"DATABASE_URL": "sqlite:///{tmp}/db.sqlite3", "RECO_REDIS_URL": "redis://127.0.0.1:6379/0"}, "['redis']"),
])
def test_the_application_loads_only_the_optional_libraries_its_configuration_uses(tmp_path: Path, env: dict[str, str],
                                                                                 loaded: str) -> None:
    answered, after = _load(tmp_path, **{name: value.format(tmp=tmp_path) for name, value in env.items()})
    status, modules = answered.split(" ", 1)
    assert status in ("200", "503")  # answered (503: no model in this empty folder), not a failed import
    assert modules == loaded
    assert after == "True"
