"""gunicorn settings for `make serve` / `make demo` (override with GUNICORN_CMD_ARGS)."""

import os
import re
import stat
import sys

# The service's own parsing of variables (recoapi.env needs Django's exception class only, not its settings), from
# this file's folder: gunicorn reads this file before it adds --pythonpath to the import path.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from django.core.exceptions import ImproperlyConfigured  # noqa: E402

from recoapi.env import REQUEST_LINE_ROOM, env_bool, env_float, env_int, env_query_string_bound  # noqa: E402
from recoapi.gunicorn_worker import KEEPALIVE_LINGER_SECONDS, JsonErrorWorker  # noqa: E402

try:
    _WORKERS = env_int("RECO_WORKERS", 2)
    _THREADS = env_int("RECO_THREADS", 2)
    _BLAS_THREADS = env_int("RECO_BLAS_THREADS", 1)
    _MAX_QUERY_STRING = env_query_string_bound()
    _ACCESS_LOG = env_bool("RECO_ACCESS_LOG", False)
    _KEEPALIVE_LINGER_MS = env_float("RECO_KEEPALIVE_LINGER_MS", KEEPALIVE_LINGER_SECONDS * 1000)
    if not 0 <= _KEEPALIVE_LINGER_MS <= 1000:
        raise ImproperlyConfigured(f"environment variable RECO_KEEPALIVE_LINGER_MS={_KEEPALIVE_LINGER_MS:g} must be "
                                   "from 0 (off) to 1000 milliseconds")
    # empty: the default (on), as before; otherwise a boolean
    _TEXT_PROCESS = env_bool("RECO_TEXT_PROCESS", True) if os.environ.get("RECO_TEXT_PROCESS", "").strip() else True
    for _variable, _value in (("RECO_WORKERS", _WORKERS), ("RECO_THREADS", _THREADS),
                              ("RECO_BLAS_THREADS", _BLAS_THREADS)):
        if _value < 1:
            raise ImproperlyConfigured(f"environment variable {_variable}={_value} must be at least 1")
except ImproperlyConfigured as _exc:  # one line, not gunicorn's "Failed to read config file" and a traceback
    sys.exit(f"ImproperlyConfigured: {_exc}")

def _settings_refusal() -> str | None:
    """The one line a setting the workers would refuse is refused with (None: they read every setting), from the
    service's settings read in a process of its own (about 0.15 s): read by the workers, such a value printed a
    traceback from every worker gunicorn started (140 to 190 lines); read here, in the master, the settings module
    would stay what every later worker gets, also after a reload (HUP) meant to load new code, and a check in each
    worker before its signal handlers are set lost a stop sent meanwhile (the worker then ran on for the whole
    graceful timeout)."""
    import subprocess

    script = ("import sys\nfrom django.core.exceptions import ImproperlyConfigured\ntry:\n    import recoapi.settings\n"
              "except ImproperlyConfigured as exc:\n    sys.exit(f'ImproperlyConfigured: {exc}')\n")
    try:
        done = subprocess.run([sys.executable, "-c", script], cwd=os.path.dirname(os.path.abspath(__file__)),
                              capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired):  # not checked here: the workers say it as before
        return None
    lines = done.stderr.strip().splitlines()
    return lines[-1] if done.returncode != 0 and lines and lines[-1].startswith("ImproperlyConfigured: ") else None


_refused = _settings_refusal()
if _refused:
    sys.exit(_refused)

bind = os.environ.get("RECO_BIND", "127.0.0.1:8000")
if not bind.strip():  # gunicorn listened on nothing and answered nothing
    sys.exit("ImproperlyConfigured: environment variable RECO_BIND is empty: give HOST:PORT or unix:/path/to.sock "
             "(default 127.0.0.1:8000)")
workers = _WORKERS
threads = _THREADS
timeout = 120
# logs/requests.log already has a line per request (with its id, strategies and model version).
accesslog = "-" if _ACCESS_LOG else None
wsgi_app = "recoapi.wsgi:application"
# gunicorn's own answers (request line or headers over the limits below, unparseable requests) are JSON
# errors in the service's shape; this worker also lifts gunicorn's 8,190-byte cap on limit_request_line.
worker_class = "recoapi.gunicorn_worker.JsonErrorWorker"
# How long a thread that answered on a kept-alive connection waits for that connection's next request and answers
# it itself, instead of handing the connection back to the worker's main thread (see recoapi/gunicorn_worker.py).
JsonErrorWorker.keepalive_linger = _KEEPALIVE_LINGER_MS / 1000

# Request bounds. The service refuses a query string over RECO_MAX_QUERY_STRING with its own JSON 414, so
# the request line (method, path, query and protocol) must fit that bound plus room for the rest; a longer
# line is refused by gunicorn, also as a JSON 414. Headers keep gunicorn's defaults (100 fields of at most
# 8,190 bytes each: a token or a session cookie is far below); bodies are bounded by the service
# (RECO_MAX_BODY_BYTES, 413).
limit_request_line = _MAX_QUERY_STRING + REQUEST_LINE_ROOM  # at most recoapi.gunicorn_worker's 1 MiB ceiling
limit_request_fields = 100
limit_request_field_size = 8190


def _control_socket_path(setting: str, bind_address: str) -> str | None:
    """Where this instance's control socket (for ``gunicornc -s PATH``) goes; None for no socket.

    gunicorn's default is one path per user ($XDG_RUNTIME_DIR/gunicorn.ctl or ~/.gunicorn/gunicorn.ctl),
    so a second instance would take it over and, on exit, remove it from under the first. ``auto`` names
    the socket after the bind address (unique among running instances: two cannot share one) in that same
    directory; ``off`` opens none; anything else is the path to use.
    """
    if setting.lower() in ("off", "0", "false", "no", "none"):
        return None
    if setting.lower() not in ("", "auto"):
        # gunicorn removes whatever is at the path before it listens there (a file given by mistake was deleted),
        # and makes a missing folder for it
        if os.path.lexists(setting) and not stat.S_ISSOCK(os.lstat(setting).st_mode):
            sys.exit(f"ImproperlyConfigured: environment variable RECO_CONTROL_SOCKET={setting!r} names something that "
                     "is not a socket, which gunicorn would delete: give a free path, auto (the default) or off")
        folder = os.path.dirname(os.path.abspath(setting))
        if not os.path.isdir(folder):
            sys.exit(f"ImproperlyConfigured: environment variable RECO_CONTROL_SOCKET={setting!r}: its folder {folder} "
                     "does not exist")
        return setting
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    directory = runtime if runtime and os.path.isdir(runtime) else os.path.join(os.path.expanduser("~"), ".gunicorn")
    return os.path.join(directory, "recoapi-" + re.sub(r"[^A-Za-z0-9.]+", "-", bind_address).strip("-") + ".ctl")


# The text encoder (text queries, products added after training) runs in one process of gunicorn's dirty
# worker pool, shared by the web workers, instead of in each of them (recoapi/text_process.py): ONNX Runtime,
# the tokenizer and the encoder's weights were about 130 MB of every worker's resident memory. gunicorn starts
# it, restarts it after a crash and stops it with the server; a worker that cannot reach it encodes in
# process. RECO_TEXT_PROCESS=0: every worker loads its own encoder, as before.
if _TEXT_PROCESS:
    dirty_apps = ["recoapi.text_process:TextEncoderApp"]
    dirty_workers = 1
    dirty_threads = threads  # one encode per web worker thread at a time, at most: ONNX Runtime runs them side by side
    dirty_timeout = 60
# The process name tells instances apart: gunicorn names the dirty pool's PID file after it, and on start kills
# the process a file of the same name points to (an orphan of a crashed server, as gunicorn sees it).
proc_name = "recoapi-" + re.sub(r"[^A-Za-z0-9.]+", "-", bind).strip("-")

_control = _control_socket_path(os.environ.get("RECO_CONTROL_SOCKET", "auto").strip(), bind)
if _control is None:
    control_socket_disable = True
else:
    control_socket = _control

# One BLAS thread per worker: the workers already use the cores, and a request's matrix products
# are small; several BLAS threads per worker only fight each other (set before numpy loads).
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, str(_BLAS_THREADS))


# Memory-backed files where the machine has them (Linux's /dev/shm): every worker touches its heartbeat
# file on each turn of its loop, and on a disk-backed /tmp that touch can wait for the disk (gunicorn's
# note on worker_tmp_dir); measured at 400,000 products: up to 160-315 ms stalls of a worker's loop while
# the disk was busy. The metrics files below are written on every request, so they go there too (unless
# TMPDIR names another directory).
_MEMORY_DIR = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
if _MEMORY_DIR:
    worker_tmp_dir = _MEMORY_DIR

# Prometheus metrics of every worker, summed by GET /metrics: a fresh directory for this server, made when
# this file is read (before gunicorn could load the application, with --preload, and with it the metrics
# client, which reads the variable once), unless PROMETHEUS_MULTIPROC_DIR names one (made if missing;
# clearing it between runs is then the caller's). A reload (HUP) keeps the directory.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    import tempfile

    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="recoapi-metrics-",
                                                           dir=os.environ.get("TMPDIR") or _MEMORY_DIR)
    os.environ["RECO_METRICS_DIR_OWNER"] = str(os.getpid())
os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)


def child_exit(server, worker) -> None:  # noqa: ANN001
    """A worker that exits leaves the live gauges (its counts stay in the sums)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server) -> None:  # noqa: ANN001
    """Remove the metrics directory this server made (not one another process made or was given)."""
    import shutil

    if os.environ.get("RECO_METRICS_DIR_OWNER") == str(os.getpid()):
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def post_worker_init(worker) -> None:  # noqa: ANN001  (gunicorn's hook signature)
    """Load the active model before the worker's first request and keep full collections short."""
    from recoapi.recommendations.engine import start_worker

    start_worker()
