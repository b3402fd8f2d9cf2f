"""Production settings: refuse to start when unsafe; `check --deploy` is clean when configured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GOOD = {"RECO_PRODUCTION": "1", "DJANGO_SECRET_KEY": "k" * 20 + "-random-enough-" + "x" * 30,
        "DJANGO_ALLOWED_HOSTS": "shop.example.com"}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "RECO_PRODUCTION"))}
    return subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=300)


def test_deploy_check_is_clean_with_production_settings() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=GOOD)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.parametrize("change, message", [
    ({"DJANGO_SECRET_KEY": None}, "DJANGO_SECRET_KEY is required"),
    ({"DJANGO_SECRET_KEY": "short"}, "at least 50 random characters"),
    # the repository's development key, and a long key of one character, started in production before
    ({"DJANGO_SECRET_KEY": "insecure-local-development-key-do-not-use-in-production"}, "not the development key"),
    ({"DJANGO_SECRET_KEY": "a" * 60}, "nor a key of few distinct characters"),
    ({"DJANGO_ALLOWED_HOSTS": "*"}, "not '*'"),
    ({"DJANGO_ALLOWED_HOSTS": None}, "DJANGO_ALLOWED_HOSTS is required"),
    ({"DJANGO_DEBUG": "1"}, "DJANGO_DEBUG must be off"),
    ({"DJANGO_DEBUG": "maybe"}, "is not a boolean"),
])
def test_production_refuses_to_start_when_unsafe(change: dict[str, str | None], message: str) -> None:
    env = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    result = manage("check", env=env)
    assert result.returncode != 0
    assert message in result.stderr


def test_reco_data_source_accepts_the_clickstream_source_and_refuses_unknown_ones() -> None:
    assert manage("check", env={"RECO_DATA_SOURCE": "clickstream"}).returncode == 0
    refused = manage("check", env={"RECO_DATA_SOURCE": "clicks"})
    assert refused.returncode != 0
    assert "RECO_DATA_SOURCE='clicks' must be one of" in refused.stderr and "clickstream" in refused.stderr


@pytest.mark.parametrize("env, message", [
    ({"RECO_LOG_MAX_BYTES": "-1"}, "RECO_LOG_MAX_BYTES=-1 must be 0 (no rotation) or a size in bytes"),
    ({"RECO_LOG_MAX_BYTES": "10MB"}, "RECO_LOG_MAX_BYTES='10MB' is not an integer"),
    ({"RECO_LOG_BACKUPS": "0"}, "RECO_LOG_BACKUPS=0 must be at least 1"),
])
def test_log_rotation_settings_are_checked_at_start(env: dict[str, str], message: str, tmp_path: Path) -> None:
    result = manage("check", env={**env, "RECO_LOGS_DIR": str(tmp_path)})
    assert result.returncode != 0
    assert message in result.stderr


@pytest.mark.parametrize("value, seconds", [("1995-01-01", 788_918_400), ("1995-01-01T01:00:00Z", 788_922_000),
                                            ("788918400", 788_918_400)])
def test_event_min_time_accepts_dates_and_unix_seconds(value: str, seconds: int,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from recoapi.env import env_time

    monkeypatch.setenv("RECO_EVENT_MIN_TIME", value)
    assert env_time("RECO_EVENT_MIN_TIME", "2000-01-01") == seconds


def test_event_min_time_that_is_not_a_time_stops_the_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from recoapi.env import env_time

    monkeypatch.setenv("RECO_EVENT_MIN_TIME", "soon")
    with pytest.raises(ImproperlyConfigured, match="RECO_EVENT_MIN_TIME='soon' is not a date"):
        env_time("RECO_EVENT_MIN_TIME", "1995-01-01")


@pytest.mark.parametrize(("value", "said"), [("abc", "is not a number"), ("inf", "is not a finite number"),
                                             ("nan", "is not a finite number")])
def test_a_number_setting_that_is_not_one_stops_the_start(monkeypatch: pytest.MonkeyPatch, value: str,
                                                          said: str) -> None:
    """`float()` of the variable ended in a bare ValueError traceback that did not name it."""
    from django.core.exceptions import ImproperlyConfigured

    from recoapi.env import env_float

    monkeypatch.setenv("RECO_RETRAIN_INTERVAL", value)
    with pytest.raises(ImproperlyConfigured, match=f"RECO_RETRAIN_INTERVAL='{value}' {said}"):
        env_float("RECO_RETRAIN_INTERVAL", 3600)
    monkeypatch.setenv("RECO_RETRAIN_INTERVAL", " 60 ")
    assert env_float("RECO_RETRAIN_INTERVAL", 3600) == 60.0


def test_a_setting_that_cannot_work_is_one_line_from_manage_py(tmp_path) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "RECO_RETRAIN_INTERVAL": "abc", "RECO_LOGS_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "manage.py", "run_scheduler", "--once"], cwd=Path(__file__).parents[1],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip() == ("ImproperlyConfigured: environment variable RECO_RETRAIN_INTERVAL='abc' is not "
                                   "a number")


@pytest.mark.parametrize("env, message", [
    ({"DATABASE_URL": "mysql://root@127.0.0.1:3306/shop"}, "DATABASE_URL names a mysql database; this service runs "
                                                           "on SQLite or PostgreSQL only"),
    ({"RECO_RETRAIN_TOLERANCE": "5"}, "RECO_RETRAIN_TOLERANCE between 0 and 1"),
    ({"RECO_FILTER_OUTLIER_STD": "-2"}, "RECO_FILTER_OUTLIER_STD must be 0 (off) or a positive number"),
    ({"RECO_FILTER_MIN_USER_INTERACTIONS": "-3"}, "RECO_FILTER_MIN_USER_INTERACTIONS must be 0 (off) or more"),
    ({"RECO_FILTER_START": "1577836800", "RECO_FILTER_END": "1546300800"}, "RECO_FILTER_END must be after the start"),
])
def test_settings_this_service_cannot_use_are_one_line_at_start(env: dict[str, str], message: str,
                                                                tmp_path: Path) -> None:
    # Before: MySQL got Django's "Error loading MySQLdb module"; a tolerance of 5 was taken (any candidate passes).
    done = manage("check", env={**env, "RECO_LOGS_DIR": str(tmp_path)})
    assert done.returncode == 1 and "Traceback" not in done.stderr and message in done.stderr, done.stderr
