"""gunicorn settings for `make serve` / `make demo` (override with GUNICORN_CMD_ARGS)."""

import os

bind = os.environ.get("RECO_BIND", "127.0.0.1:8000")
workers = int(os.environ.get("RECO_WORKERS", "2"))
threads = int(os.environ.get("RECO_THREADS", "2"))
timeout = 120
# logs/requests.log already has a line per request (with its id, strategies and model version).
accesslog = "-" if os.environ.get("RECO_ACCESS_LOG", "0").lower() in ("1", "true", "yes", "on") else None
wsgi_app = "recoapi.wsgi:application"

# One BLAS thread per worker: the workers already use the cores, and a request's matrix products
# are small; several BLAS threads per worker only fight each other (set before numpy loads).
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, os.environ.get("RECO_BLAS_THREADS", "1"))
