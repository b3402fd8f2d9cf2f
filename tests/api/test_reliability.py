"""Faults, bounds and logs, in process: every failure is a clear JSON answer with a request id."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator

import pytest
from django.db import OperationalError
from django.http import JsonResponse
from django.middleware.csrf import _get_new_csrf_string
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle

from modeling import artifacts
from recoapi.recommendations import services
from recoapi.recommendations.engine import registry
from recoapi.throttling import FixedWindowRateThrottle
from tests.api.test_endpoints import a_known_user, assert_error
from tests.conftest import Pipeline


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def request_log() -> Iterator[_Records]:
    """Records of the per-request logger (it does not propagate to the root logger)."""
    handler = _Records()
    logger = logging.getLogger("recoapi.requests")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


# --------------------------------------------------------------------------- request ids and logs


def test_every_response_carries_a_request_id(service: Pipeline, client: APIClient) -> None:
    first, second = client.get("/health"), client.get("/health")
    assert len(first["X-Request-ID"]) == 32 and first["X-Request-ID"] != second["X-Request-ID"]
    echoed = client.get("/health", HTTP_X_REQUEST_ID="shop-frontend-1234")
    assert echoed["X-Request-ID"] == "shop-frontend-1234"
    # Anything that is not a short token is replaced, so log lines cannot be forged.
    forged = client.get("/health", HTTP_X_REQUEST_ID="x\nERROR fake line")
    assert forged["X-Request-ID"] != "x\nERROR fake line" and len(forged["X-Request-ID"]) == 32


def test_one_log_line_per_request_with_users_strategies_and_model(service: Pipeline, client: APIClient,
                                                                  request_log: _Records) -> None:
    response = client.get("/recommendations", {"users": f"{a_known_user(service)},stranger-1,stranger-2", "k": 3})
    assert response.status_code == 200
    [record] = request_log.records
    line = record.getMessage()
    assert line.startswith("GET /recommendations 200 ")
    assert "users=3" in line and "strategies=popular:2,two_tower:1" in line
    assert f"model={service.version}" in line
    assert record.request_id == response["X-Request-ID"]


def test_an_unexpected_error_is_a_json_500_with_request_id_and_no_internals(
    service: Pipeline, client: APIClient, monkeypatch, caplog
) -> None:
    def explode(**kwargs):
        raise RuntimeError("secret detail at /srv/app/modeling/recommender.py line 12")

    monkeypatch.setattr(services, "recommendation_list", explode)
    with caplog.at_level(logging.ERROR, logger="recoapi"):
        response = client.get("/recommendations", {"users": "a"})
    assert_error(response, 500, "server_error")
    assert b"secret" not in response.content and b"/srv" not in response.content
    assert b"Traceback" not in response.content
    request_id = response.json()["error"]["request_id"]
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and all(r.request_id == request_id for r in errors)
    assert "secret detail" in errors[0].exc_text


# --------------------------------------------------------------------------- database unavailable


def test_database_errors_answer_503_json(service: Pipeline, client: APIClient, monkeypatch) -> None:
    from recoapi.catalog import selectors

    def refused(**kwargs):
        raise OperationalError('connection to server at "127.0.0.1", port 5432 failed: Connection refused')

    monkeypatch.setattr(selectors, "shopper_histories", refused)
    response = client.get("/recommendations", {"users": "a"})
    assert_error(response, 503, "database_unavailable")
    assert response["Retry-After"] == "5"
    assert "5432" not in response.json()["error"]["message"]  # the random request id may hold any digits
    monkeypatch.undo()
    assert client.get("/recommendations", {"users": "a"}).status_code == 200


# --------------------------------------------------------------------------- bounds


def test_oversized_body_is_refused_before_parsing(service: Pipeline, staff_client: APIClient) -> None:
    body = json.dumps({"user": "u", "item": "i", "event": "view", "text": "x" * 1_100_000})
    assert_error(staff_client.post("/events", body, content_type="application/json"), 413, "request_too_large")


def test_overlong_query_string_is_refused(service: Pipeline, client: APIClient) -> None:
    assert_error(client.get("/recommendations", {"users": "u" * 20_000}), 414, "uri_too_long")


@pytest.mark.parametrize("query", ["users=%FF%FE", "users=a,%ED%A0%80", "users=%C3", "users=ok&k=%FF"])
def test_a_query_string_that_is_not_utf8_is_refused(service: Pipeline, client: APIClient, query: str) -> None:
    """Django would read ``%FF`` as U+FFFD without a word: a shopper "\ufffd" would be answered and recorded."""
    for path in ("/recommendations", "/check_users"):
        response = client.get(f"{path}?{query}")
        assert_error(response, 400, "bad_request")
        assert "UTF-8" in response.json()["error"]["message"]


def test_utf8_query_strings_are_read_as_before(service: Pipeline, client: APIClient) -> None:
    response = client.get("/check_users?users=%C3%A9t%C3%A9,b+c%2Cd")
    assert response.status_code == 200 and response.json() == {"été": False, "b c": False, "d": False}


def test_the_query_check_reads_wsgi_and_asgi_strings_as_each_gives_them() -> None:
    """WSGI hands the raw bytes as latin-1 text (PEP 3333); Django's ASGI request has decoded them as UTF-8."""
    from recoapi.middleware import _is_utf8_query

    raw = "users=" + "été,中".encode().decode("latin-1")
    assert _is_utf8_query(raw) and _is_utf8_query("users=été,中", wsgi=False)
    assert not _is_utf8_query("users=\xe9")  # one latin-1 byte: not UTF-8
    assert _is_utf8_query("users=a%2Cb%20c&k=10") and _is_utf8_query("users=100%") and _is_utf8_query("x=%2")
    assert not _is_utf8_query("users=%ff") and not _is_utf8_query("users=%C0%80", wsgi=False)


@pytest.mark.parametrize(("path", "query", "name"), [("/recommendations", "users=a&users=b", "users"),
                                                      ("/recommendations", "users=a&k=5&k=20", "k"),
                                                      ("/check_users", "users=a&users=b", "users"),
                                                      ("/similar_items", "item=a&item=b", "item"),
                                                      ("/random_users", "n=2&n=3", "n")])
def test_a_parameter_given_twice_is_refused(service: Pipeline, client: APIClient, path: str, query: str,
                                            name: str) -> None:
    """Django reads the last of a repeated parameter: ``users=a&users=b`` answered b alone, without a word."""
    response = client.get(f"{path}?{query}")
    assert_error(response, 400, "invalid")
    message = response.json()["error"]["message"]
    assert name in message and "more than once" in message, message


@pytest.mark.parametrize(("path", "query", "name"), [("/recommendations", "users=A0000001&max_prcie=10", "max_prcie"),
                                                      ("/recommendations", "users=A0000001&K=3", "K"),
                                                      ("/similar_items", "item=B000000001&category=Pets", "category"),
                                                      ("/check_users", "users=a&user=b", "user"),
                                                      ("/random_users", "count=3", "count"),
                                                      ("/random_users", "=3", "(a parameter without a name)")])
def test_a_parameter_the_endpoint_does_not_have_is_refused(service: Pipeline, client: APIClient, path: str,
                                                           query: str, name: str) -> None:
    """A misspelt filter (``max_prcie=10``) answered 200 with the unfiltered list, without a word."""
    response = client.get(f"{path}?{query}")
    assert_error(response, 400, "invalid")
    message = response.json()["error"]["message"]
    assert f"{name}: unknown parameter" in message and "parameters are:" in message, message
    good = {"/recommendations": "users=A0000001", "/similar_items": "item=B000000001", "/check_users": "users=a",
            "/random_users": "n=2"}[path]
    assert client.get(f"{path}?{good}&format=json").status_code == 200, "format= is DRF's, on every endpoint"
    assert client.get(f"{path}?{good}&_=1733390000000").status_code == 200, "a browser client's cache-buster"


def test_a_query_parameter_on_the_post_form_is_refused(service: Pipeline, client: APIClient,
                                                       staff_client: APIClient) -> None:
    """``POST /recommendations?k=50`` answered 10 products, without a word: the body holds the parameters."""
    user = a_known_user(service)
    response = client.post("/recommendations?k=50&category=Pets", {"users": [user]}, format="json")
    assert_error(response, 400, "invalid")
    message = response.json()["error"]["message"]
    assert "k: a query parameter; this endpoint reads its parameters from the JSON body" in message, message
    assert "category:" in message
    assert client.post("/recommendations?format=json&_=1", {"users": [user]}, format="json").status_code == 200
    # The staff endpoints alike, once the caller is known (401 first for anybody else).
    assert_error(client.post("/reload_model?version=x", {}, format="json"), 401)
    refused = staff_client.post("/reload_model?version=x", {}, format="json")
    assert_error(refused, 400, "invalid")
    assert "version: a query parameter" in refused.json()["error"]["message"]


@pytest.mark.parametrize("body", [{"users": ["\ud800"]}, {"users": "A0000001,\udfff"},
                                  {"items": ["ok", "x\ud83d"]}])
def test_surrogates_in_ids_are_refused(service: Pipeline, client: APIClient, body: dict) -> None:
    """A lone surrogate cannot be encoded for the database: it was a 500 in the history query."""
    response = client.post("/recommendations", json.dumps(body), content_type="application/json")
    assert_error(response, 400, "invalid")
    assert "Surrogate" in response.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/recommendations", "/events", "/reload_model", "/products", "/reload_data"])
def test_json_nested_too_deeply_is_a_400(service: Pipeline, staff_client: APIClient, path: str) -> None:
    """The json module reads nesting by recursion; DRF's parser let its RecursionError through as a 500."""
    response = staff_client.post(path, "[" * 100_000, content_type="application/json")
    assert_error(response, 400, "parse_error")
    assert "nested too deeply" in response.json()["error"]["message"]


@pytest.mark.parametrize("path", ["/recommendations", "/events"])
def test_a_key_given_twice_in_a_json_object_is_a_400(service: Pipeline, staff_client: APIClient, path: str) -> None:
    """The last one won: {"users": ["a"], "users": ["b"]} answered b alone."""
    response = staff_client.post(path, '{"users": ["a"], "k": 3, "users": ["b"]}', content_type="application/json")
    assert_error(response, 400, "parse_error")
    assert "the key 'users' is given twice" in response.json()["error"]["message"]
    nested = staff_client.post(path, '[{"user": "a", "user": "b"}]', content_type="application/json")
    assert_error(nested, 400, "parse_error")
    strict = staff_client.post(path, '{"users": ["a"], "k": NaN}', content_type="application/json")
    assert_error(strict, 400, "parse_error")  # still DRF's strict JSON


def test_an_unknown_format_is_a_json_406_naming_the_formats(service: Pipeline, client: APIClient) -> None:
    response = client.get("/recommendations", {"users": "a", "format": "api"})
    assert_error(response, 406, "not_acceptable")
    assert "'api'" in response.json()["error"]["message"] and "json" in response.json()["error"]["message"]
    schema = client.get("/api/schema", {"format": "xml"})  # the schema view's first renderer is YAML: errors are JSON
    assert_error(schema, 406, "not_acceptable")
    assert client.get("/api/schema", {"format": "json"}).status_code == 200
    assert client.get("/recommendations", {"users": "a", "format": "json"}).status_code == 200


def test_a_host_outside_allowed_hosts_is_named_and_logged_as_one_warning(service: Pipeline, client: APIClient,
                                                                         caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="django.security.DisallowedHost"):
        response = client.get("/health", HTTP_HOST="not-this-server.example")
    assert_error(response, 400, "bad_request")
    assert "Host header" in response.json()["error"]["message"]
    records = [r for r in caplog.records if r.name == "django.security.DisallowedHost"]
    assert records and all(r.levelno == logging.WARNING and r.exc_info is None for r in records)


def test_a_head_answer_has_the_get_answers_headers_and_no_body(service: Pipeline) -> None:
    """Called as gunicorn calls it (Django's test client drops a HEAD body by itself, as its runserver does)."""
    from django.test import RequestFactory

    from recoapi.middleware import RequestMiddleware

    def view(request):  # what the view answers to GET and HEAD alike
        return JsonResponse({"status": "ok", "padding": "x" * 100})

    answer = RequestMiddleware(view)(RequestFactory().head("/health"))
    assert answer.status_code == 200 and answer.content == b""
    assert int(answer["Content-Length"]) == len(view(None).content)
    assert RequestMiddleware(view)(RequestFactory().get("/health")).content == view(None).content


def test_public_endpoints_are_throttled(service: Pipeline, client: APIClient, monkeypatch) -> None:
    from django.core.cache import cache

    cache.clear()
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"anon": "3/minute", "user": "5/minute"})
    monkeypatch.setattr(FixedWindowRateThrottle, "timer", staticmethod(lambda: 1_000_000.0))  # one window
    for _ in range(3):
        assert client.get("/random_users").status_code == 200
    response = client.get("/random_users")
    assert_error(response, 429, "throttled")
    assert int(response["Retry-After"]) > 0
    cache.clear()


def test_a_forwarded_for_header_does_not_evade_the_anonymous_rate(service: Pipeline, client: APIClient,
                                                                  monkeypatch) -> None:
    """DRF took the whole X-Forwarded-For header as the client's address: a new value per request was never
    throttled. Without trusted proxies (the default) the connection's address counts; with N trusted, the address
    the outermost trusted proxy appended."""
    from django.core.cache import cache
    from rest_framework.settings import api_settings

    cache.clear()
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"anon": "3/minute", "user": "5/minute"})
    monkeypatch.setattr(FixedWindowRateThrottle, "timer", staticmethod(lambda: 1_000_000.0))  # one window
    assert api_settings.NUM_PROXIES == 0
    codes = [client.get("/random_users", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}").status_code for n in range(4)]
    assert codes == [200, 200, 200, 429]
    cache.clear()
    monkeypatch.setattr(api_settings, "NUM_PROXIES", 1)  # one proxy in front: it appends the client's address
    spoofed = [client.get("/random_users", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}, 192.0.2.7").status_code
               for n in range(4)]
    assert spoofed == [200, 200, 200, 429]  # what the client put before the proxy's entry is not its address
    assert client.get("/random_users", HTTP_X_FORWARDED_FOR="192.0.2.8").status_code == 200  # another client
    cache.clear()


def test_health_ignores_credentials(service: Pipeline, client: APIClient) -> None:
    """A probe sent with a stale or wrong token got 401 (and /health, never throttled, could test tokens)."""
    assert client.get("/health", HTTP_AUTHORIZATION="Token not-a-token").status_code == 200


def test_health_is_never_throttled(service: Pipeline, client: APIClient, monkeypatch) -> None:
    from django.core.cache import cache

    cache.clear()
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"anon": "1/minute", "user": "1/minute"})
    monkeypatch.setattr(FixedWindowRateThrottle, "timer", staticmethod(lambda: 1_000_000.0))  # one window
    assert [client.get("/health").status_code for _ in range(5)] == [200] * 5  # probes from one address
    assert client.get("/random_users").status_code == 200
    assert_error(client.get("/random_users"), 429, "throttled")  # the limit itself still holds
    cache.clear()


def test_throttle_rates_come_from_the_environment(monkeypatch) -> None:
    from django.core.exceptions import ImproperlyConfigured

    from recoapi.env import env_rate

    monkeypatch.setenv("RATE", "20/minute")
    assert env_rate("RATE", "1/second") == "20/minute"
    monkeypatch.setenv("RATE", "off")
    assert env_rate("RATE", "1/second") is None
    monkeypatch.setenv("RATE", "lots")
    with pytest.raises(ImproperlyConfigured, match="RATE"):
        env_rate("RATE", "1/second")


def test_csrf_is_enforced_for_session_logins(service: Pipeline, django_user_model) -> None:
    django_user_model.objects.create_user(username="ops", password="ops-pass-123", is_staff=True)
    browser = APIClient(enforce_csrf_checks=True)
    assert browser.login(username="ops", password="ops-pass-123")
    refused = browser.post("/reload_model", {}, format="json")
    assert_error(refused, 403, "permission_denied")
    assert "CSRF" in refused.json()["error"]["message"]
    token = _get_new_csrf_string()
    browser.cookies["csrftoken"] = token
    accepted = browser.post("/reload_model", {"version": service.version}, format="json", HTTP_X_CSRFTOKEN=token)
    assert accepted.status_code == 200, accepted.content


# --------------------------------------------------------------------------- broken model files


def _copy_version(settings, service: Pipeline, name: str = "20990101T000000Z"):
    target = settings.RECO_MODELS_DIR / name
    shutil.copytree(settings.RECO_MODELS_DIR / service.version, target)
    return target


def _truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _other_dim(path) -> None:
    manifest = json.loads(path.read_text())
    manifest["dim"] = manifest["dim"] * 2
    path.write_text(json.dumps(manifest))


def _other_text_dim(path) -> None:
    manifest = json.loads(path.read_text())
    manifest["text_dim"] = 768
    path.write_text(json.dumps(manifest))


@pytest.mark.parametrize(("file", "damage"), [
    ("item_vectors.npy", _truncate),
    ("user_ids.npy", _truncate),
    ("popularity.npy", lambda p: p.unlink()),
    ("query_tower/saved_model.pb", lambda p: p.unlink()),
    ("manifest.json", _other_dim),
    ("manifest.json", _other_text_dim),
    ("manifest.json", lambda p: p.write_text("{")),
])
def test_damaged_bundle_is_refused_and_the_old_model_keeps_serving(service: Pipeline, staff_client: APIClient,
                                                                   settings, file: str, damage) -> None:
    broken = _copy_version(settings, service)
    damage(broken / file)
    assert staff_client.get("/recommendations", {"users": "a"}).json()["model_version"] == service.version
    response = staff_client.post("/reload_model", {"version": broken.name}, format="json")
    assert_error(response, 422, "invalid_model")
    assert str(settings.RECO_MODELS_DIR) not in response.json()["error"]["message"]
    assert artifacts.read_active(settings.RECO_MODELS_DIR) == service.version
    # Pointed at behind the service's back, the broken version is not loaded either.
    (settings.RECO_MODELS_DIR / artifacts.ACTIVE_FILE).write_text(broken.name + "\n")
    assert staff_client.get("/recommendations", {"users": "a"}).json()["model_version"] == service.version


def test_damaged_active_bundle_at_start_gives_503_not_500(service: Pipeline, client: APIClient, settings) -> None:
    _truncate(settings.RECO_MODELS_DIR / service.version / "item_vectors.npy")
    registry.reset()
    response = client.get("/recommendations", {"users": "a"})
    assert_error(response, 503, "model_not_loaded")
    message = response.json()["error"]["message"]
    assert message.startswith(f"The active model {service.version} cannot be loaded: item_vectors.npy")
    assert str(settings.RECO_MODELS_DIR) not in message
    health = client.get("/health")
    assert health.status_code == 503 and health.json()["status"] == "degraded"
    assert health.json()["model_error"] == message


def test_a_bundle_of_another_version_says_to_train_again(service: Pipeline, client: APIClient, settings) -> None:
    """A bundle whose ranking stage reads other features (an earlier version's, after an upgrade) was refused as
    "missing or damaged ranking_stage/", and the 503 said "No active model"."""
    import json

    from modeling.reranker import FEATURES

    stage = settings.RECO_MODELS_DIR / service.version / "ranking_stage" / "stage.json"
    meta = json.loads(stage.read_text())
    meta["features"] = list(FEATURES[:-2])  # as before the sequential rules' two features
    stage.write_text(json.dumps(meta))
    registry.reset()
    response = client.get("/recommendations", {"users": "a"})
    assert_error(response, 503, "model_not_loaded")
    message = response.json()["error"]["message"]
    assert "trained by another version of the service" in message and "adds sequence, sequence_share" in message
    assert "manage.py train --activate" in message and "damaged" not in message
    assert client.get("/health").json()["model_error"] == message


def test_active_pointer_at_a_missing_version(service: Pipeline, client: APIClient, settings) -> None:
    assert client.get("/recommendations", {"users": "a"}).json()["model_version"] == service.version
    (settings.RECO_MODELS_DIR / artifacts.ACTIVE_FILE).write_text("20990101T000000Z\n")
    # A running service keeps its model...
    assert client.get("/recommendations", {"users": "a"}).json()["model_version"] == service.version
    assert client.get("/health").json()["model_error"].startswith("The active model 20990101T000000Z cannot be")
    artifacts.set_active(settings.RECO_MODELS_DIR, service.version)  # pointed back: nothing left to report
    assert "model_error" not in client.get("/health").json()
    (settings.RECO_MODELS_DIR / artifacts.ACTIVE_FILE).write_text("20990101T000000Z\n")
    # ...and a starting one answers 503 until the pointer is fixed.
    registry.reset()
    assert_error(client.get("/recommendations", {"users": "a"}), 503, "model_not_loaded")
    artifacts.set_active(settings.RECO_MODELS_DIR, service.version)
    assert client.get("/recommendations", {"users": "a"}).json()["model_version"] == service.version


@pytest.mark.parametrize(("error", "code"), [
    ("no such table: catalog_shopper", "database_not_migrated"),
    ('relation "catalog_shopper" does not exist', "database_not_migrated"),
    ('connection failed: FATAL:  database "shop" does not exist', "database_missing"),
    # Tables of an earlier version (an upgrade without migrate): was "unavailable; try again shortly"
    ("no such column: recommendations_experiment.winner_version", "database_not_migrated"),
    ('column recommendations_experiment.winner_version does not exist', "database_not_migrated"),
    # SQLite's file in a folder that does not exist: was "unavailable; try again shortly", with Retry-After
    ("unable to open database file", "database_missing"),
])
def test_a_database_that_is_not_set_up_says_so(service: Pipeline, client: APIClient, monkeypatch, error: str,
                                               code: str) -> None:
    """Not "unavailable; try again shortly": nothing changes until the operator acts."""
    from recoapi.catalog import selectors

    def failing(**kwargs):
        raise OperationalError(error)

    monkeypatch.setattr(selectors, "shopper_histories", failing)
    response = client.get("/recommendations", {"users": "a"})
    assert_error(response, 503, code)
    assert "Retry-After" not in response and "migrate" in response.json()["error"]["message"]


def test_a_database_error_in_the_admin_is_the_apis_503(service: Pipeline, client: APIClient, monkeypatch) -> None:
    """The admin's login page met the database outside DRF's handler: a 500."""
    from django.contrib.auth import views

    def failing(self, request, *args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(views.LoginView, "dispatch", failing)
    response = client.get("/admin/login/")
    assert_error(response, 503, "database_unavailable")
    assert response["Retry-After"] == "5"


def test_health_tells_a_database_without_the_services_tables(service: Pipeline, client: APIClient,
                                                             monkeypatch) -> None:
    from recoapi.catalog.models import Product

    assert client.get("/health").json()["database"] == "ok"
    monkeypatch.setattr(Product._meta, "db_table", "catalog_product_not_migrated")
    response = client.get("/health")
    assert response.status_code == 503 and response.json()["database"] == "not_migrated"


def test_health_tells_an_upgrade_whose_migrations_were_not_applied(service: Pipeline, client: APIClient,
                                                                   monkeypatch) -> None:
    """The earlier tables answered, so /health said "ok" and nothing else while a new table was missing (an
    activation not recorded, the admin's page of activations a 503)."""
    from recoapi.catalog import selectors

    assert "pending_migrations" not in client.get("/health").json()
    latest = selectors._latest_migrations()
    monkeypatch.setattr(selectors, "_latest_migrations", lambda: latest | {("recommendations", "9999_next_version")})
    response = client.get("/health")  # it serves: a probe that failed every host of a rolling upgrade would stop it
    assert response.status_code == 200 and response.json()["database"] == "ok"
    assert response.json()["pending_migrations"] == ["recommendations.9999_next_version"]


def test_a_worker_starting_while_the_database_is_down_keeps_saying_so(service: Pipeline, client: APIClient,
                                                                      monkeypatch, settings) -> None:
    from recoapi.recommendations import engine

    def refused(path):
        raise OperationalError("connection refused")

    settings.RECO_ACTIVE_CHECK_SECONDS = 60.0  # as in production: models/ACTIVE is not re-read on every request
    registry.reset()
    monkeypatch.setattr(engine, "build_engine", refused)
    for _ in range(3):  # not "no model" on the second request: the engine is retried on each one
        assert_error(client.get("/recommendations", {"users": "a"}), 503, "database_unavailable")
    monkeypatch.undo()
    assert client.get("/recommendations", {"users": "a"}).status_code == 200


def test_a_request_cannot_write_a_fake_line_into_the_request_log(service: Pipeline, client: APIClient,
                                                                caplog) -> None:
    """The path was logged as sent: a newline in it (%0a) started a line of the attacker's choosing."""
    import logging

    with caplog.at_level(logging.INFO, logger="recoapi.requests"):
        client.get("/x%0a2026-12-05 09:40:02,789 [1] abc POST /reload_model 200")
    lines = [record.getMessage() for record in caplog.records if record.name == "recoapi.requests"]
    assert len(lines) == 1 and "\n" not in lines[0], lines
    assert lines[0].startswith("GET /x\\n2026-12-05 09:40:02,789 [1] abc POST /reload_model 200 404"), lines


def test_a_form_posted_without_its_csrf_token_gets_json(service: Pipeline) -> None:
    """The admin's login posted without its CSRF token got Django's HTML 403 page."""
    from django.test import Client

    response = Client(enforce_csrf_checks=True).post("/admin/login/", {"username": "x", "password": "y"})
    assert_error(response, 403, "csrf_failed")
    assert response["Content-Type"].startswith("application/json")


def test_a_chunked_body_is_refused_not_read_as_empty(service: Pipeline, client: APIClient) -> None:
    """Django reads a body by its Content-Length: a chunked one came through as empty ("give users, or items...")."""
    response = client.post("/recommendations", '{"users": "a", "k": 1}', content_type="application/json",
                           HTTP_TRANSFER_ENCODING="chunked")
    assert_error(response, 411, "length_required")
    assert client.post("/recommendations", {"users": "a", "k": 1}, format="json").status_code == 200
