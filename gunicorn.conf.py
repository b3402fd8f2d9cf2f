"""gunicorn settings for `make serve` / `make demo` (override with GUNICORN_CMD_ARGS)."""

import os

bind = os.environ.get("RECO_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("RECO_WORKERS", "2"))
threads = int(os.environ.get("RECO_THREADS", "2"))
timeout = 120
# logs/requests.log already has a line per request (with its id, strategies and model version).
accesslog = "-" if os.environ.get("RECO_ACCESS_LOG", "0").lower() in ("1", "true", "yes", "on") else None
wsgi_app = "recoapi.wsgi:application"
# gunicorn's own answers (request line or headers over the limits below, unparseable requests) are JSON
# errors in the service's shape; this worker also lifts gunicorn's 8,190-byte cap on limit_request_line.
worker_class = "recoapi.gunicorn_worker.JsonErrorWorker"

# Request bounds. The service refuses a query string over RECO_MAX_QUERY_STRING with its own JSON 414, so
# the request line (method, path, query and protocol) must fit that bound plus room for the rest; a longer
# line is refused by gunicorn, also as a JSON 414. Headers keep gunicorn's defaults (100 fields of at most
# 8,190 bytes each: a token or a session cookie is far below); bodies are bounded by the service
# (RECO_MAX_BODY_BYTES, 413).
REQUEST_LINE_ROOM = 1024
limit_request_line = int(os.environ.get("RECO_MAX_QUERY_STRING", str(16 * 1024))) + REQUEST_LINE_ROOM
limit_request_fields = 100
limit_request_field_size = 8190

# One BLAS thread per worker: the workers already use the cores, and a request's matrix products
# are small; several BLAS threads per worker only fight each other (set before numpy loads).
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, os.environ.get("RECO_BLAS_THREADS", "1"))
