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
    ({"RECO_REQUEST_LOG_FLUSH_SECONDS": "-1"}, "RECO_REQUEST_LOG_FLUSH_SECONDS=-1.0 must be 0 (every line at once)"),
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


@pytest.mark.parametrize("env, message", [
    # every /recommendations and /similar_items answered 500 (FAISS's nprobe is unsigned)
    ({"RECO_ANN_NPROBE": "-1"}, "RECO_ANN_NPROBE must be 0 (the value tuned at publishing) or a positive number"),
    # every request answered 414, 400 or (POST) 413
    ({"RECO_MAX_QUERY_STRING": "-5"}, "RECO_MAX_QUERY_STRING=-5 must be from 256 to 1047552 characters"),
    ({"RECO_MAX_QUERY_STRING": "2000000"}, "RECO_MAX_QUERY_STRING=2000000 must be from 256 to 1047552 characters"),
    ({"RECO_MAX_USERS": "0"}, "RECO_MAX_USERS must be 1 or more, got 0"),
    ({"RECO_MAX_USERS": "-3"}, "RECO_MAX_USERS must be 1 or more, got -3"),
    ({"RECO_MAX_BODY_BYTES": "-1"}, "RECO_MAX_BODY_BYTES must be at least 1024"),
    ({"RECO_MAX_BODY_BYTES": "0"}, "RECO_MAX_BODY_BYTES must be at least 1024"),
    # prune_lists and run_scheduler ended in OverflowError: date value out of range
    ({"RECO_LIST_RETENTION_DAYS": "1000000"}, "RECO_LIST_RETENTION_DAYS must be 0 (keep every list) or a number of "
                                              "days up to 36500, got 1e+06"),
    # an in-memory database: migrate said OK, then every other command found no tables
    ({"DATABASE_URL": "sqlite://"}, "DATABASE_URL names an in-memory SQLite database"),
    ({"DATABASE_URL": "sqlite:///"}, "DATABASE_URL names an in-memory SQLite database"),
    ({"DATABASE_URL": "sqlite://:memory:"}, "DATABASE_URL names an in-memory SQLite database"),
    # throttling turned itself off, as during a Redis outage
    ({"RECO_REDIS_URL": "http://nope"}, "RECO_REDIS_URL='http://nope' is not a Redis URL"),
    ({"RECO_REDIS_URL": "redis://:badport"}, "RECO_REDIS_URL='redis://:badport' cannot be read: Port could not be "
                                            "cast to integer value as 'badport'"),
    # every catalogue searched approximately, the demo's 500 products too
    ({"RECO_ANN_MIN_ITEMS": "-1"}, "RECO_ANN_MIN_ITEMS must be 0 (never) or a number of products, got -1"),
    ({"RECO_REDIS_URL": "redis://127.0.0.1:6379/0", "RECO_REDIS_TIMEOUT": "-1"},
     "RECO_REDIS_TIMEOUT must be a positive number of seconds, got -1"),
    ({"RECO_REDIS_URL": "redis://127.0.0.1:6379/0", "RECO_REDIS_TIMEOUT": "0"},
     "RECO_REDIS_TIMEOUT must be a positive number of seconds, got 0"),
    # POST /events answered 500 (a time beyond pandas' dates), or no event time was plausible
    ({"RECO_EVENT_MIN_TIME": "99999999999999999"}, "RECO_EVENT_MIN_TIME must be a moment in the past"),
    ({"RECO_EVENT_MIN_TIME": "2100-01-01"}, "RECO_EVENT_MIN_TIME must be a moment in the past"),
    ({"RECO_CACHE_MAX_ENTRIES": "-1"}, "RECO_CACHE_MAX_ENTRIES must be 1 or more, got -1"),
    ({"RECO_ACTIVE_CHECK_SECONDS": "-1"}, "RECO_ACTIVE_CHECK_SECONDS must be 0 (at every request) or more, got -1"),
    ({**GOOD, "RECO_HSTS_SECONDS": "-1"}, "RECO_HSTS_SECONDS must be 0 (no HSTS header) or a number of seconds"),
])
def test_values_that_would_break_the_service_are_refused_at_start(env: dict[str, str], message: str,
                                                                  tmp_path: Path) -> None:
    done = manage("check", env={**env, "RECO_LOGS_DIR": str(tmp_path)})
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_the_bounds_themselves_are_accepted(tmp_path: Path) -> None:
    env = {"RECO_ANN_NPROBE": "0", "RECO_MAX_QUERY_STRING": "1047552", "RECO_MAX_USERS": "1",
           "RECO_MAX_BODY_BYTES": "1024", "RECO_LIST_RETENTION_DAYS": "36500", "RECO_EVENT_MIN_TIME": "1900-01-01",
           "RECO_CACHE_MAX_ENTRIES": "1", "RECO_ACTIVE_CHECK_SECONDS": "0", "RECO_LOGS_DIR": str(tmp_path)}
    done = manage("check", env=env)
    assert done.returncode == 0, done.stderr


def test_an_empty_or_unknown_database_url_is_one_line(tmp_path: Path) -> None:
    """An empty DATABASE_URL was a KeyError: 'ENGINE' traceback; an unknown scheme's message listed MySQL and
    others that the service refuses anyway."""
    empty = manage("check", env={"DATABASE_URL": "", "RECO_LOGS_DIR": str(tmp_path)})
    assert empty.returncode == 1 and "Traceback" not in empty.stderr, empty.stderr
    assert "DATABASE_URL is empty: unset it for the SQLite file db.sqlite3" in empty.stderr
    unknown = manage("check", env={"DATABASE_URL": "postgress://user@host:5432/shop", "RECO_LOGS_DIR": str(tmp_path)})
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr, unknown.stderr
    assert ("DATABASE_URL's scheme 'postgress://' is not one this service can use: postgres://, postgresql:// or "
            "sqlite://") in unknown.stderr
    assert "mysql" not in unknown.stderr and "mssql" not in unknown.stderr


@pytest.mark.parametrize("variable", ["RECO_LOGS_DIR", "RECO_PROCESSED_DIR", "RECO_MODELS_DIR"])
def test_a_directory_setting_that_is_a_file_or_empty_is_one_line(variable: str, tmp_path: Path) -> None:
    """Before: a FileExistsError or NotADirectoryError traceback (at start for logs, from load_data or train for the
    others), and an empty RECO_LOGS_DIR was the current directory."""
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    logs = {"RECO_LOGS_DIR": str(tmp_path / "logs")}
    for value, said in [(str(a_file), f"{variable}='{a_file}' must name a directory: it exists and is not one"),
                        (str(a_file / "below"), f"must name a directory: '{a_file}' above it is not one"),
                        ("", f"environment variable {variable} is empty: unset it for the default")]:
        done = manage("check", env={**logs, variable: value})
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert said in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_logs_directory_that_cannot_be_made_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from recoapi.env import env_dir

    monkeypatch.setenv("RECO_LOGS_DIR", "/proc/no-such-process/logs")  # /proc takes no new directory
    with pytest.raises(ImproperlyConfigured, match="RECO_LOGS_DIR='/proc/no-such-process/logs': the directory cannot "
                                                   "be created"):
        env_dir("RECO_LOGS_DIR", str(tmp_path), create=True)
    monkeypatch.setenv("RECO_LOGS_DIR", str(tmp_path / "new" / "logs"))
    assert env_dir("RECO_LOGS_DIR", str(tmp_path), create=True).is_dir()


def _gunicorn_conf(env: dict[str, str]) -> dict[str, object]:
    """gunicorn.conf.py's settings under ``env`` (its metrics folder a temporary one, removed after)."""
    import runpy
    import tempfile
    from unittest import mock

    with tempfile.TemporaryDirectory() as metrics, mock.patch.dict(
            os.environ, {"PROMETHEUS_MULTIPROC_DIR": metrics, **env}):  # the file sets BLAS and metrics variables
        return runpy.run_path(str(ROOT / "gunicorn.conf.py"))


@pytest.mark.parametrize("env, message", [
    ({"RECO_WORKERS": "abc"}, "RECO_WORKERS='abc' is not an integer"),
    ({"RECO_WORKERS": "0"}, "RECO_WORKERS=0 must be at least 1"),  # gunicorn started no worker: requests hung
    ({"RECO_THREADS": ""}, "RECO_THREADS='' is not an integer"),
    ({"RECO_BLAS_THREADS": "abc"}, "RECO_BLAS_THREADS='abc' is not an integer"),
    ({"RECO_TEXT_PROCESS": "maybe"}, "RECO_TEXT_PROCESS='maybe' is not a boolean"),  # was on
    ({"RECO_ACCESS_LOG": "maybe"}, "RECO_ACCESS_LOG='maybe' is not a boolean"),  # was off
    ({"RECO_KEEPALIVE_LINGER_MS": "soon"}, "RECO_KEEPALIVE_LINGER_MS='soon' is not a number"),
    ({"RECO_KEEPALIVE_LINGER_MS": "-1"}, "RECO_KEEPALIVE_LINGER_MS=-1 must be from 0 (off) to 1000 milliseconds"),
    # gunicorn's own "Invalid value for limit_request_line: -976", which does not name the variable
    ({"RECO_MAX_QUERY_STRING": "-2000"}, "RECO_MAX_QUERY_STRING=-2000 must be from 256 to 1047552 characters"),
])
def test_gunicorn_conf_refuses_values_it_cannot_use(env: dict[str, str], message: str) -> None:
    with pytest.raises(SystemExit) as stopped:
        _gunicorn_conf(env)
    assert str(stopped.value.code).startswith(f"ImproperlyConfigured: environment variable {message}")


def test_gunicorn_conf_is_read_from_any_folder_without_the_project_on_the_import_path(tmp_path: Path) -> None:
    # gunicorn reads its config before it adds --pythonpath: a deployment naming the project that way (no editable
    # install) failed with "No module named 'recoapi'" once the file read variables with recoapi.env.
    import site

    script = ("import runpy, sys; sys.path.extend(sys.argv[2:]); conf = runpy.run_path(sys.argv[1]); "
              "print(conf['workers'], conf['threads'])")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "RECO_WORKERS": "3"}
    done = subprocess.run([sys.executable, "-S", "-c", script, str(ROOT / "gunicorn.conf.py"),
                           *site.getsitepackages()], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)  # -S: no .pth file puts the project on the path
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["3", "2"]


def test_an_empty_text_process_variable_keeps_the_text_process() -> None:
    # before the variables were checked, an empty value meant on (the default); it silently meant off for a while
    assert _gunicorn_conf({"RECO_TEXT_PROCESS": ""})["dirty_threads"] == 2
    assert _gunicorn_conf({"RECO_TEXT_PROCESS": " "})["dirty_threads"] == 2


def test_gunicorn_conf_reads_booleans_and_numbers_as_the_settings_do() -> None:
    conf = _gunicorn_conf({"RECO_WORKERS": "3", "RECO_THREADS": "4", "RECO_ACCESS_LOG": "yes",
                           "RECO_TEXT_PROCESS": "off", "RECO_MAX_QUERY_STRING": "1047552"})
    assert (conf["workers"], conf["threads"], conf["accesslog"]) == (3, 4, "-")
    assert "dirty_apps" not in conf and conf["limit_request_line"] == 1024 * 1024
    assert _gunicorn_conf({"RECO_TEXT_PROCESS": "1"})["dirty_threads"] == 2


def test_gunicorn_conf_sets_how_long_a_thread_waits_for_a_kept_alive_connections_next_request() -> None:
    from recoapi.gunicorn_worker import KEEPALIVE_LINGER_SECONDS, JsonErrorWorker

    try:
        assert _gunicorn_conf({"RECO_KEEPALIVE_LINGER_MS": "0"})["JsonErrorWorker"].keepalive_linger == 0
        _gunicorn_conf({"RECO_KEEPALIVE_LINGER_MS": "0.5"})
        assert JsonErrorWorker.keepalive_linger == 0.0005
        _gunicorn_conf({})
        assert JsonErrorWorker.keepalive_linger == KEEPALIVE_LINGER_SECONDS == 0.002
    finally:
        JsonErrorWorker.keepalive_linger = KEEPALIVE_LINGER_SECONDS


def test_gunicorn_says_what_is_wrong_in_one_line() -> None:
    env = {**os.environ, "RECO_WORKERS": "abc"}
    done = subprocess.run([str(Path(sys.executable).with_name("gunicorn")), "-c", "gunicorn.conf.py",
                           "--check-config"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip() == "ImproperlyConfigured: environment variable RECO_WORKERS='abc' is not an integer"


@pytest.mark.parametrize("env, message", [
    ({"RECO_BIND": " "}, "RECO_BIND is empty"),  # gunicorn listened on nothing and answered nothing
    ({"RECO_CONTROL_SOCKET": "/nonexistent-folder/x.ctl"}, "RECO_CONTROL_SOCKET='/nonexistent-folder/x.ctl': its "
                                                           "folder /nonexistent-folder does not exist"),
])
def test_gunicorn_conf_refuses_an_address_it_cannot_use(env: dict[str, str], message: str) -> None:
    with pytest.raises(SystemExit) as stopped:
        _gunicorn_conf(env)
    assert str(stopped.value.code).startswith(f"ImproperlyConfigured: environment variable {message}")


def test_a_control_socket_path_naming_a_file_is_refused_and_the_file_kept(tmp_path: Path) -> None:
    """gunicorn removes what is at the control socket's path before it listens there: a file named by mistake
    (README.md) was deleted."""
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me\n")
    with pytest.raises(SystemExit) as stopped:
        _gunicorn_conf({"RECO_CONTROL_SOCKET": str(precious)})
    assert "names something that is not a socket, which gunicorn would delete" in str(stopped.value.code)
    assert precious.read_text() == "keep me\n"
    assert _gunicorn_conf({"RECO_CONTROL_SOCKET": str(tmp_path / "free.ctl")})["control_socket"] == str(
        tmp_path / "free.ctl")


def test_a_setting_the_workers_would_refuse_stops_gunicorn_in_one_line(tmp_path: Path) -> None:
    """Each worker printed a traceback through Django's settings (2 to 4 of them, 140 to 190 lines)."""
    env = {**os.environ, "RECO_LOG_LEVEL": "LOUD", "RECO_BIND": f"unix:{tmp_path / 'reco.sock'}",
           "RECO_CONTROL_SOCKET": "off", "RECO_TEXT_PROCESS": "0", "RECO_WORKERS": "1",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    done = subprocess.run([str(Path(sys.executable).with_name("gunicorn")), "-c", "gunicorn.conf.py"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]  # refused before any worker starts
    assert done.stderr.strip() == ("ImproperlyConfigured: environment variable RECO_LOG_LEVEL='LOUD' must be one of "
                                   "DEBUG, INFO, WARNING, ERROR")
