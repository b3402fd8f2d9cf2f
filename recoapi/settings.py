"""Django settings of the recommendation service.

Everything that differs between machines comes from environment variables
(see README "Configuration"); defaults suit a local demo.
"""

from __future__ import annotations

from modeling import runtime as _runtime  # noqa: F401  (first: environment for TensorFlow)

import time  # noqa: E402
from pathlib import Path  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import dj_database_url  # noqa: E402
from django.core.exceptions import ImproperlyConfigured  # noqa: E402

from modeling.datasets import FilterError, InteractionFilters  # noqa: E402
from modeling.index import ANN_MIN_ITEMS  # noqa: E402
from modeling.sources import SOURCES  # noqa: E402
from recoapi.env import (  # noqa: E402
    RETENTION_MAX_DAYS,
    env_bool,
    env_choice,
    env_dir,
    env_float,
    env_int,
    env_list,
    env_query_string_bound,
    env_rate,
    env_str,
    env_time,
)

BASE_DIR = Path(__file__).resolve().parent.parent

DEBUG = env_bool("DJANGO_DEBUG", False)
PRODUCTION = env_bool("RECO_PRODUCTION", False)
if PRODUCTION:
    SECRET_KEY = env_str("DJANGO_SECRET_KEY")
    if len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5 or SECRET_KEY.startswith("django-insecure-") \
            or "do-not-use-in-production" in SECRET_KEY:  # Django's own test (W009), and this file's development key
        raise ImproperlyConfigured("DJANGO_SECRET_KEY must be at least 50 random characters in production (not the "
                                   "development key, nor a key of few distinct characters): python -c \"import "
                                   "secrets; print(secrets.token_urlsafe(50))\"")
    if DEBUG:
        raise ImproperlyConfigured("DJANGO_DEBUG must be off when RECO_PRODUCTION is on")
    ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "")
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS is required when RECO_PRODUCTION is on")
    if "*" in ALLOWED_HOSTS:
        raise ImproperlyConfigured("DJANGO_ALLOWED_HOSTS must name the service's hosts when RECO_PRODUCTION is on, "
                                   "not '*' (which accepts any Host header)")
    # HTTPS only. Behind a TLS-terminating proxy, set RECO_PROXY_SSL_HEADER=1 so Django trusts X-Forwarded-Proto.
    SECURE_SSL_REDIRECT = env_bool("RECO_SSL_REDIRECT", True)
    SECURE_HSTS_SECONDS = env_int("RECO_HSTS_SECONDS", 3600)
    if SECURE_HSTS_SECONDS < 0:
        raise ImproperlyConfigured(f"RECO_HSTS_SECONDS must be 0 (no HSTS header) or a number of seconds, got "
                                   f"{SECURE_HSTS_SECONDS}")
    # Django's deploy checks ask for both; turn them off if a subdomain must stay reachable over plain HTTP.
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("RECO_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("RECO_HSTS_PRELOAD", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    if env_bool("RECO_PROXY_SSL_HEADER", False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
else:
    SECRET_KEY = env_str("DJANGO_SECRET_KEY", "insecure-local-development-key-do-not-use-in-production")
    ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "recoapi.catalog",
    "recoapi.recommendations",
]

MIDDLEWARE = [
    "recoapi.middleware.RequestMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "recoapi.urls"
CSRF_FAILURE_VIEW = "recoapi.exceptions.json_csrf_failure"  # JSON, as every other error
WSGI_APPLICATION = "recoapi.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "recoapi" / "templates"],  # admin/index.html: the link to the dashboard
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

_DATABASE_EXAMPLES = "e.g. postgres://user:password@host:5432/name or sqlite:////absolute/path.db"
_DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{BASE_DIR / 'db.sqlite3'}")
if not _DATABASE_URL.strip():  # a deployment's unfilled template: not silently the local SQLite file
    raise ImproperlyConfigured(f"DATABASE_URL is empty: unset it for the SQLite file db.sqlite3 beside manage.py, "
                               f"or give a database URL ({_DATABASE_EXAMPLES})")
try:
    DATABASES = {"default": dj_database_url.parse(_DATABASE_URL.strip(), conn_max_age=60)}
except dj_database_url.UnknownSchemeError as _exc:  # postgress://, mysql-connector://...
    if not _exc.scheme:  # "foo", "postgres//host/shop": no scheme at all (it was called '://')
        raise ImproperlyConfigured(f"DATABASE_URL has no scheme (not shown: it may hold a password): it starts with "
                                   f"postgres://, postgresql:// or sqlite:// ({_DATABASE_EXAMPLES})") from _exc
    raise ImproperlyConfigured(f"DATABASE_URL's scheme {_exc.scheme + '://'!r} is not one this service can use: "
                               f"postgres://, postgresql:// or sqlite:// ({_DATABASE_EXAMPLES})") from _exc
except ValueError as _exc:  # a malformed URL
    raise ImproperlyConfigured(f"DATABASE_URL is not a database URL this service can use ({_exc}); "
                               f"{_DATABASE_EXAMPLES}") from _exc
if DATABASES["default"]["ENGINE"] not in ("django.db.backends.sqlite3", "django.db.backends.postgresql"):
    raise ImproperlyConfigured(f"DATABASE_URL names a {DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]} database; "
                               "this service runs on SQLite or PostgreSQL only (its queries and migrations are tested "
                               "on those two): e.g. postgres://user:password@host:5432/name or "
                               "sqlite:////absolute/path.db")
if not DATABASES["default"].get("NAME"):
    raise ImproperlyConfigured("DATABASE_URL names no database: give it after the host, "
                               "e.g. postgres://user@host:5432/shop")
if DATABASES["default"]["NAME"] == ":memory:":  # sqlite://, sqlite:///: each process would have its own, empty one
    raise ImproperlyConfigured("DATABASE_URL names an in-memory SQLite database, which every process (each command, "
                               "each worker) would have to itself, empty: give a file, e.g. "
                               "sqlite:////absolute/path.db")
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Write-ahead logging: readers (the serving workers) never wait for an import's transaction; writers wait
    # up to 20 s for each other instead of failing with "database is locked".
    # IMMEDIATE: a transaction takes the write lock when it begins, so a writer waits its turn (up to the
    # timeout) instead of failing at once with "database is locked" when it reads first and then finds
    # that another writer committed since (SQLite cannot upgrade such a stale read to a write).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;", "timeout": 20,
         "transaction_mode": "IMMEDIATE"}
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

_TRUSTED_PROXIES = env_int("RECO_TRUSTED_PROXIES", 0)
if _TRUSTED_PROXIES < 0:
    raise ImproperlyConfigured(f"RECO_TRUSTED_PROXIES must be 0 or more, got {_TRUSTED_PROXIES}")
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "recoapi.authentication.BearerTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_RENDERER_CLASSES": ["recoapi.renderers.FastJSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["recoapi.parsers.SafeJSONParser"],
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "recoapi.negotiation.FormatNegotiation",
    "DEFAULT_SCHEMA_CLASS": "recoapi.schema.AutoSchema",
    "EXCEPTION_HANDLER": "recoapi.exceptions.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # Per client IP (anonymous) or per token/login; "off" disables. Counted per worker process (local memory
    # cache), so with N workers a client can reach N times the rate.
    "DEFAULT_THROTTLE_CLASSES": [
        "recoapi.throttling.AnonRateThrottle",
        "recoapi.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {"anon": env_rate("RECO_THROTTLE_ANON", "100/second"),
                               "user": env_rate("RECO_THROTTLE_USER", "1000/second")},
    # The client's address for the anonymous rate: the connection's, unless N proxies in front of the service are
    # trusted, each appending to X-Forwarded-For (then the address the outermost trusted proxy saw). DRF's default
    # (None) used the whole header as the client's key, so a client that sent a new X-Forwarded-For with every
    # request was never throttled.
    "NUM_PROXIES": _TRUSTED_PROXIES,
}
# The local-memory cache of each worker holds the throttle counters (one per client and window): room for
# many clients (Django's default keeps 300 entries).
# Throttle counts live in this cache. Each process has its own unless RECO_REDIS_URL names a Redis server,
# which every worker and every host then shares (django-redis; short socket timeouts, since a request
# waits for it: while Redis is unreachable the throttles let requests through, see recoapi/throttling.py).
# A URL the client cannot use, or a timeout that fails every call, would otherwise look like an outage at every
# request (the throttles then let everything through), so both are refused here.
RECO_REDIS_URL = env_str("RECO_REDIS_URL", "")
_CACHE_MAX_ENTRIES = env_int("RECO_CACHE_MAX_ENTRIES", 10_000)
if _CACHE_MAX_ENTRIES < 1:
    raise ImproperlyConfigured(f"RECO_CACHE_MAX_ENTRIES must be 1 or more, got {_CACHE_MAX_ENTRIES}")
if RECO_REDIS_URL:
    if urlsplit(RECO_REDIS_URL).scheme not in ("redis", "rediss", "unix"):
        raise ImproperlyConfigured(f"RECO_REDIS_URL={RECO_REDIS_URL!r} is not a Redis URL: redis://host:6379/0, "
                                   "rediss://host:6380/0 (TLS) or unix:///path/to/redis.sock")
    from redis.connection import parse_url as _parse_redis_url  # the client's own reading (here: only with Redis)

    try:  # a port that is no number passed, and every request then met the client's ValueError: throttling was off
        _parse_redis_url(RECO_REDIS_URL)
    except ValueError as _exc:
        raise ImproperlyConfigured(f"RECO_REDIS_URL={RECO_REDIS_URL!r} cannot be read: {_exc}") from _exc
    _REDIS_TIMEOUT = env_float("RECO_REDIS_TIMEOUT", 0.25)
    if _REDIS_TIMEOUT <= 0:
        raise ImproperlyConfigured(f"RECO_REDIS_TIMEOUT must be a positive number of seconds, got {_REDIS_TIMEOUT:g}")
    CACHES = {"default": {"BACKEND": "django_redis.cache.RedisCache", "LOCATION": RECO_REDIS_URL,
                          "KEY_PREFIX": env_str("RECO_REDIS_PREFIX", "recoapi"),
                          "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": _REDIS_TIMEOUT, "SOCKET_TIMEOUT": _REDIS_TIMEOUT}}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache",
                          "OPTIONS": {"MAX_ENTRIES": _CACHE_MAX_ENTRIES}}}
# Request bounds: bodies above this many bytes get 413, longer query strings 414. Under gunicorn a request line
# may hold the query string and 1 KiB more (gunicorn.conf.py), at most recoapi.gunicorn_worker's 1 MiB ceiling.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("RECO_MAX_BODY_BYTES", 1024 * 1024)
if DATA_UPLOAD_MAX_MEMORY_SIZE < 1024:
    raise ImproperlyConfigured(f"RECO_MAX_BODY_BYTES must be at least 1024 (a body of a few events), got "
                               f"{DATA_UPLOAD_MAX_MEMORY_SIZE}")
RECO_MAX_QUERY_STRING = env_query_string_bound()
SPECTACULAR_SETTINGS = {
    "TITLE": "Recommendation service API",
    "DESCRIPTION": "Top-N product recommendations for known, new and anonymous shoppers.",
    "VERSION": "0.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Separate request/response components, so request bodies state their real constraints (minLength...).
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI's JavaScript and CSS come from this server, not from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# --- The service's own settings -------------------------------------------------------------
RECO_DATA_SOURCE = env_choice("RECO_DATA_SOURCE", "amazon2018", SOURCES)
RECO_DATA_PATH = Path(env_str("RECO_DATA_PATH", str(BASE_DIR / "data" / "raw" / "demo")))
RECO_PROCESSED_DIR = env_dir("RECO_PROCESSED_DIR", str(BASE_DIR / "data" / "processed"))
RECO_EMBEDDINGS_DIR = Path(env_str("RECO_EMBEDDINGS_DIR", str(BASE_DIR / "embeddings")))
RECO_MODELS_DIR = env_dir("RECO_MODELS_DIR", str(BASE_DIR / "models"))
# A directory every API host mounts: bundles are published there and the database names the active version
# (recoapi/recommendations/model_store.py); RECO_MODELS_DIR is then each host's cache of it. Empty: one host.
RECO_MODEL_STORE = env_str("RECO_MODEL_STORE", "")
# Optional clean-up of event logs at import (all off by default); see modeling.datasets.InteractionFilters.
RECO_FILTER_MIN_USER_INTERACTIONS = env_int("RECO_FILTER_MIN_USER_INTERACTIONS", 0)
RECO_FILTER_OUTLIER_STD = env_float("RECO_FILTER_OUTLIER_STD", 0) or None
RECO_FILTER_MIN_DISTINCT_ITEMS = env_int("RECO_FILTER_MIN_DISTINCT_ITEMS", 0)
RECO_FILTER_START = env_int("RECO_FILTER_START", 0) or None
RECO_FILTER_END = env_int("RECO_FILTER_END", 0) or None
try:  # the filters' own checks (modeling.datasets.InteractionFilters), at start rather than at the first import
    InteractionFilters(min_user_interactions=RECO_FILTER_MIN_USER_INTERACTIONS, outlier_std=RECO_FILTER_OUTLIER_STD,
                       min_distinct_items=RECO_FILTER_MIN_DISTINCT_ITEMS, start=RECO_FILTER_START, end=RECO_FILTER_END)
except FilterError as _problem:
    raise ImproperlyConfigured(f"RECO_FILTER_{_problem.field.upper()} {_problem.problem}") from _problem
RECO_TEXT_MODEL_PATH = env_str("RECO_TEXT_MODEL_PATH", "") or None
# Plausible event times (POST /events and every importer): not before this moment (unix seconds; the default
# 1995-01-01 precedes the earliest public shop and rating data), and at most this many seconds in the future.
_EVENT_TIME_FLOOR = -2_208_988_800  # 1900-01-01
RECO_EVENT_MIN_TIME = env_time("RECO_EVENT_MIN_TIME", "1995-01-01")
if not _EVENT_TIME_FLOOR <= RECO_EVENT_MIN_TIME <= time.time():
    raise ImproperlyConfigured(f"RECO_EVENT_MIN_TIME must be a moment in the past, from 1900-01-01 on (else no event "
                               f"time is accepted), got {RECO_EVENT_MIN_TIME} unix seconds")
RECO_EVENT_MAX_FUTURE_SECONDS = env_int("RECO_EVENT_MAX_FUTURE_SECONDS", 300)
RECO_EVENTS_MAX_BATCH = env_int("RECO_EVENTS_MAX_BATCH", 1000)
RECO_PRODUCTS_MAX_BATCH = env_int("RECO_PRODUCTS_MAX_BATCH", 500)
RECO_TRAIN_SINCE_DAYS = env_float("RECO_TRAIN_SINCE_DAYS", 0)
RECO_RETRAIN_HOLDOUT_DAYS = env_float("RECO_RETRAIN_HOLDOUT_DAYS", 1)
RECO_RETRAIN_INTERVAL = env_float("RECO_RETRAIN_INTERVAL", 3600)
RECO_RETRAIN_MIN_EVENTS = env_int("RECO_RETRAIN_MIN_EVENTS", 100)
RECO_RETRAIN_TOLERANCE = env_float("RECO_RETRAIN_TOLERANCE", 0.01)
if not (RECO_RETRAIN_HOLDOUT_DAYS > 0 and 0 <= RECO_RETRAIN_TOLERANCE <= 1):
    raise ImproperlyConfigured("RECO_RETRAIN_HOLDOUT_DAYS must be positive and RECO_RETRAIN_TOLERANCE between 0 and 1 "
                               "(a difference of recall@10; 1 accepts any candidate)")
if not RECO_TRAIN_SINCE_DAYS >= 0:
    raise ImproperlyConfigured("RECO_TRAIN_SINCE_DAYS must be 0 (all interactions) or a number of days")
# What the API shows is written to the database in the background (recoapi/recommendations/impressions.py):
# on/off, "thread" (a writer thread per worker) or "manual" (only flush() writes: tests), how often, how
# many lists at once, and at most how many wait in a worker's memory (the oldest beyond are dropped).
RECO_IMPRESSIONS = env_bool("RECO_IMPRESSIONS", True)
RECO_IMPRESSIONS_WRITER = env_choice("RECO_IMPRESSIONS_WRITER", "thread", ("thread", "manual"))
RECO_IMPRESSIONS_FLUSH_SECONDS = env_float("RECO_IMPRESSIONS_FLUSH_SECONDS", 1.0)
RECO_IMPRESSIONS_BATCH = env_int("RECO_IMPRESSIONS_BATCH", 500)
RECO_IMPRESSIONS_MAX_BUFFERED = env_int("RECO_IMPRESSIONS_MAX_BUFFERED", 20_000)
if not (RECO_IMPRESSIONS_FLUSH_SECONDS > 0 and RECO_IMPRESSIONS_BATCH >= 1 and RECO_IMPRESSIONS_MAX_BUFFERED >= 1):
    raise ImproperlyConfigured("RECO_IMPRESSIONS_FLUSH_SECONDS must be positive, RECO_IMPRESSIONS_BATCH and "
                               "RECO_IMPRESSIONS_MAX_BUFFERED 1 or more")
# Stored lists older than this many days are deleted by `prune_lists` and at each check of `run_scheduler` (0: kept
# forever); lists of an experiment are kept while the experiment exists (its results are computed from them).
RECO_LIST_RETENTION_DAYS = env_float("RECO_LIST_RETENTION_DAYS", 90.0)
if not 0 <= RECO_LIST_RETENTION_DAYS <= RETENTION_MAX_DAYS:
    raise ImproperlyConfigured(f"RECO_LIST_RETENTION_DAYS must be 0 (keep every list) or a number of days up to "
                               f"{RETENTION_MAX_DAYS}, got {RECO_LIST_RETENTION_DAYS:g}")
if RECO_PRODUCTS_MAX_BATCH < 1:
    raise ImproperlyConfigured("RECO_PRODUCTS_MAX_BATCH must be 1 or more")
if RECO_EVENTS_MAX_BATCH < 1:
    raise ImproperlyConfigured("RECO_EVENTS_MAX_BATCH must be 1 or more")
if RECO_EVENT_MAX_FUTURE_SECONDS < 0:
    raise ImproperlyConfigured("RECO_EVENT_MAX_FUTURE_SECONDS must be 0 or more")
# How often (seconds) a worker looks at models/ACTIVE for a newer version.
RECO_ACTIVE_CHECK_SECONDS = env_float("RECO_ACTIVE_CHECK_SECONDS", 1.0)
if RECO_ACTIVE_CHECK_SECONDS < 0:
    raise ImproperlyConfigured(f"RECO_ACTIVE_CHECK_SECONDS must be 0 (at every request) or more, got "
                               f"{RECO_ACTIVE_CHECK_SECONDS:g}")
RECO_MAX_K = env_int("RECO_MAX_K", 100)
# Give products added after training text-based vectors when the engine loads (needs the text model).
RECO_ENCODE_NEW_PRODUCTS = env_bool("RECO_ENCODE_NEW_PRODUCTS", True)
RECO_HISTORY_LENGTH = env_int("RECO_HISTORY_LENGTH", 10)
# Load the query tower (TensorFlow) in the background as soon as a model is loaded.
RECO_PREWARM = env_bool("RECO_PREWARM", True)
# How often (seconds) a worker re-reads which products are out of stock.
RECO_AVAILABILITY_SECONDS = env_float("RECO_AVAILABILITY_SECONDS", 5)
# A request reads each shopper's most recent interactions only (the models look at fewer: the query tower's window,
# 50 products' texts, recency-weighted item-item scores), so a shopper with a crawler's history costs what others do.
RECO_HISTORY_LIMIT = env_int("RECO_HISTORY_LIMIT", 1000)
if RECO_HISTORY_LIMIT < 1:
    raise ImproperlyConfigured(f"RECO_HISTORY_LIMIT must be at least 1, got {RECO_HISTORY_LIMIT}")
RECO_MAX_USERS = env_int("RECO_MAX_USERS", 100)
if RECO_MAX_USERS < 1:
    raise ImproperlyConfigured(f"RECO_MAX_USERS must be 1 or more, got {RECO_MAX_USERS}")
# Catalogues with at least this many products are searched with an approximate (FAISS IVF) index, built and
# tuned when the bundle is published (docs/performance.md); 0: never.
RECO_ANN_MIN_ITEMS = env_int("RECO_ANN_MIN_ITEMS", ANN_MIN_ITEMS)
if RECO_ANN_MIN_ITEMS < 0:  # searched every catalogue approximately, the demo's 500 products too
    raise ImproperlyConfigured(f"RECO_ANN_MIN_ITEMS must be 0 (never) or a number of products, got "
                               f"{RECO_ANN_MIN_ITEMS}")
# Inverted lists the approximate index scans per query; 0: the value tuned at publishing.
RECO_ANN_NPROBE = env_int("RECO_ANN_NPROBE", 0)
if not 0 <= RECO_ANN_NPROBE <= 1_000_000:  # FAISS scans at most all the index's lists (thousands)
    raise ImproperlyConfigured(f"RECO_ANN_NPROBE must be 0 (the value tuned at publishing) or a positive number of "
                               f"lists up to 1000000, got {RECO_ANN_NPROBE}")
# The C allocator's arenas in each gunicorn worker (recoapi.allocator); 0: glibc's default (8 per core).
RECO_COMPILED_RANKER = env_bool("RECO_COMPILED_RANKER", True)
# The ranking stage's candidates computed by native code compiled on first use (modeling.native, which reads the
# variable itself, as evaluate does; checked here so that a bad value stops the server at start); 0: numpy.
RECO_NATIVE = env_bool("RECO_NATIVE", True)
# GET /recommendations and /similar_items of anonymous callers answered without Django's middleware and DRF's view
# machinery, with the same answers (recoapi.fast_lane); 0: every request through Django.
RECO_FAST_LANE = env_bool("RECO_FAST_LANE", True)
RECO_MALLOC_ARENAS = env_int("RECO_MALLOC_ARENAS", 2)
if RECO_MALLOC_ARENAS < 0:
    raise ImproperlyConfigured(f"RECO_MALLOC_ARENAS must be 0 (glibc's default) or more, not {RECO_MALLOC_ARENAS}")
# A web worker hands the memory malloc keeps back to the system after answering at least this many shoppers in
# one request (recoapi.allocator); 0: never.
RECO_RELEASE_AFTER_SHOPPERS = env_int("RECO_RELEASE_AFTER_SHOPPERS", 20)
if RECO_RELEASE_AFTER_SHOPPERS < 0:
    raise ImproperlyConfigured(
        f"RECO_RELEASE_AFTER_SHOPPERS must be 0 (never) or more, not {RECO_RELEASE_AFTER_SHOPPERS}")

LOGS_DIR = env_dir("RECO_LOGS_DIR", str(BASE_DIR / "logs"), create=True)
LOG_LEVEL = env_choice("RECO_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
CONSOLE_LOG_LEVEL = env_choice("RECO_CONSOLE_LOG_LEVEL", "WARNING", ("DEBUG", "INFO", "WARNING", "ERROR"))


# Every gunicorn worker, management command and test process writes the same files, so rotation must be
# multi-process safe: concurrent-log-handler takes a file lock (logs/.__<name>.lock) around each write and
# rotation, and a process whose file was rotated by another reopens the new one. RECO_LOG_MAX_BYTES=0 turns
# rotation off (for an external tool such as logrotate; a moved file is noticed and reopened).
LOG_MAX_BYTES = env_int("RECO_LOG_MAX_BYTES", 10 * 1024 * 1024)
LOG_BACKUPS = env_int("RECO_LOG_BACKUPS", 5)
if LOG_MAX_BYTES < 0:
    raise ImproperlyConfigured(f"environment variable RECO_LOG_MAX_BYTES={LOG_MAX_BYTES} must be 0 (no rotation) "
                               "or a size in bytes")
if LOG_BACKUPS < 1:
    raise ImproperlyConfigured(f"environment variable RECO_LOG_BACKUPS={LOG_BACKUPS} must be at least 1")


# The request log's lines wait in each process at most this many seconds (or until 256 wait) and are written
# together, under one file lock (recoapi.request_log); 0: every line written at once.
REQUEST_LOG_FLUSH_SECONDS = env_float("RECO_REQUEST_LOG_FLUSH_SECONDS", 1.0)
if not 0 <= REQUEST_LOG_FLUSH_SECONDS <= 60:
    raise ImproperlyConfigured(f"environment variable RECO_REQUEST_LOG_FLUSH_SECONDS={REQUEST_LOG_FLUSH_SECONDS} "
                               "must be 0 (every line at once) to 60 seconds")


def _rotating_file(name: str, formatter: str, *, flush_seconds: float | None = None) -> dict:
    """A log file in LOGS_DIR shared safely by every process, rotated at LOG_MAX_BYTES with LOG_BACKUPS old files.

    Records carry the request id. A rotated file holds at least LOG_MAX_BYTES (the check is made before each
    write, under the lock), so the current file is the only short one. With ``flush_seconds``, lines are written
    in batches (:class:`recoapi.request_log.BatchedRotatingFileHandler`).
    """
    handler = {"class": "concurrent_log_handler.ConcurrentRotatingFileHandler", "filename": str(LOGS_DIR / name),
               "maxBytes": LOG_MAX_BYTES, "backupCount": LOG_BACKUPS, "formatter": formatter,
               "filters": ["request_id"]}
    if flush_seconds is not None:
        handler.update({"class": "recoapi.request_log.BatchedRotatingFileHandler", "flush_seconds": flush_seconds})
    return handler


LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s [%(process)d] [%(request_id)s] %(message)s"},
        "request": {"format": "%(asctime)s [%(process)d] %(request_id)s %(message)s"},
    },
    "filters": {"request_id": {"()": "recoapi.middleware.RequestIdFilter"},
                "client_error": {"()": "recoapi.middleware.ClientErrorFilter"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "level": CONSOLE_LOG_LEVEL,
                    "filters": ["request_id"]},
        "file": _rotating_file("recoapi.log", "plain"),
        "requests": _rotating_file("requests.log", "request", flush_seconds=REQUEST_LOG_FLUSH_SECONDS),
    },
    "root": {"handlers": ["console", "file"], "level": "WARNING"},
    "loggers": {
        "recoapi": {"level": LOG_LEVEL},
        "recoapi.requests": {"handlers": ["requests"], "level": "INFO", "propagate": False},
        "modeling": {"level": LOG_LEVEL},
        "django.request": {"level": "ERROR"},
        "django.security.DisallowedHost": {"filters": ["client_error"]},
        "tensorflow": {"level": "ERROR"},
    },
}
