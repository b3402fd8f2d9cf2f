"""gunicorn settings for `make serve` / `make demo` (override with GUNICORN_CMD_ARGS)."""

import os

bind = os.environ.get("RECO_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("RECO_WORKERS", "2"))
threads = int(os.environ.get("RECO_THREADS", "2"))
timeout = 120
accesslog = "-"
wsgi_app = "recoapi.wsgi:application"
