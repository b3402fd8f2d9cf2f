"""POST /recommendations, Bearer tokens and the schema as client generators read it (issue 12, items 1 and 10)."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from modeling import datasets as ds
from recoapi.catalog.models import Shopper
from tests.api.test_endpoints import assert_error, without_ids
from tests.conftest import Pipeline

PUBLIC = [("/random_users", "get"), ("/check_users", "get"), ("/recommendations", "get"),
          ("/recommendations", "post"), ("/similar_items", "get"), ("/health", "get")]
STAFF = [("/events", "post"), ("/reload_data", "post"), ("/reload_model", "post")]


def known_users(service: Pipeline, n: int) -> list[str]:
    return list(dict.fromkeys(service.data.interactions[ds.USER_ID].astype(str)))[:n]


# --------------------------------------------------------------------------- POST /recommendations


@pytest.mark.parametrize("users", ["list", "comma"])
def test_post_recommendations_answers_exactly_like_get(service: Pipeline, staff_client: APIClient, users: str) -> None:
    client = staff_client  # include_history needs a token
    ids = [*known_users(service, 2), "nobody"]
    query = {"users": ",".join(ids), "k": 3, "exclude_seen": "false", "include_history": "true", "min_price": 1}
    body = {"users": ids if users == "list" else ",".join(ids), "k": 3, "exclude_seen": False,
            "include_history": True, "min_price": 1}
    expected = client.get("/recommendations", query)
    answer = client.post("/recommendations", body, format="json")
    assert expected.status_code == answer.status_code == 200
    assert without_ids(answer.json()) == without_ids(expected.json())
    assert list(answer.json()["recommendations"]) == ids


def test_post_recommendations_for_an_anonymous_visitor(service: Pipeline, client: APIClient) -> None:
    items = [str(i) for i in service.data.items[ds.ITEM_ID].iloc[:2]]
    expected = client.get("/recommendations", {"items": ",".join(items), "text": "espresso", "k": 4}).json()
    answer = client.post("/recommendations", {"items": items, "text": "espresso", "k": 4}, format="json")
    assert answer.status_code == 200 and without_ids(answer.json()) == without_ids(expected)
    assert answer.json()["recommendations"]["anonymous"]["strategy"] == "content"


def test_post_recommendations_takes_lists_too_long_for_a_url(service: Pipeline, client: APIClient) -> None:
    """100 ids of 128 characters: about 13 KB, far more than gunicorn's default request line (4,094 bytes)."""
    known = known_users(service, 1)[0]
    Shopper.objects.create(id="é" * 128)
    ids = [known, "é" * 128] + [f"{i:03d}".ljust(128, "x") for i in range(98)]
    response = client.post("/recommendations", {"users": ids, "k": 1}, format="json")
    assert response.status_code == 200, response.content
    recommendations = response.json()["recommendations"]
    assert list(recommendations) == ids
    assert recommendations["é" * 128]["strategy"] == "popular"  # known to the database, no history
    assert recommendations[known]["strategy"] == "two_tower"


def test_post_recommendations_needs_no_staff_token_and_no_csrf(service: Pipeline, shopper_client: APIClient) -> None:
    anonymous = APIClient(enforce_csrf_checks=True)
    assert anonymous.post("/recommendations", {"users": ["a"]}, format="json").status_code == 200
    assert shopper_client.post("/recommendations", {"users": ["a"]}, format="json").status_code == 200


@pytest.mark.parametrize("body", [
    {},
    {"k": 3},
    {"users": []},
    {"users": ""},
    {"users": [""]},
    {"users": ["a", " "]},
    {"users": 5},
    {"users": [1, 2]},
    {"users": {"a": 1}},
    {"users": [f"u{i}" for i in range(101)]},
    {"users": ["a"] * 101},
    {"users": ["a" * 129]},
    {"users": ["a\x00"]},
    {"users": ["a,b"]},  # answered as one unknown shopper "a,b", which no import or event can create
    {"items": ["a,b"]},
    {"users": ["a"], "k": "5"},
    {"users": ["a"], "k": True},
    {"users": ["a"], "k": 2.5},
    {"users": ["a"], "k": 0},
    {"users": ["a"], "k": None},
    {"users": ["a"], "exclude_seen": "false"},
    {"users": ["a"], "include_history": 1},
    {"users": ["a"], "min_price": "1"},
    {"users": ["a"], "min_price": 5, "max_price": 1},
    {"text": 5},
    {"text": "x" * 1001},
    {"users": ["a"], "category": False},
    ["a", "b"],
    "users=a",
])
def test_post_recommendations_rejects_bad_bodies(service: Pipeline, client: APIClient, body) -> None:
    assert_error(client.post("/recommendations", body, format="json"), 400)


def test_post_recommendations_refuses_malformed_json_and_other_media_types(service: Pipeline,
                                                                         client: APIClient) -> None:
    assert_error(client.post("/recommendations", "{not json", content_type="application/json"), 400)
    assert_error(client.post("/recommendations", "users=a", content_type="application/x-www-form-urlencoded"),
                 415)


# --------------------------------------------------------------------------- tokens


@pytest.fixture
def staff_token(db) -> str:
    user = get_user_model().objects.create_user(username="staff", password="pw-123456", is_staff=True)
    return Token.objects.create(user=user).key


@pytest.mark.parametrize("prefix", ["Token", "Bearer"])
def test_staff_calls_accept_token_and_bearer_prefixes(service: Pipeline, staff_token: str, prefix: str) -> None:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"{prefix} {staff_token}")
    response = api.post("/reload_model", {"version": service.version}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["model_version"] == service.version


@pytest.mark.parametrize("prefix", ["Token", "Bearer"])
def test_a_wrong_token_is_401_with_either_prefix(service: Pipeline, staff_token: str, prefix: str) -> None:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"{prefix} {'0' * 40}")
    assert_error(api.post("/reload_model", format="json"), 401, "authentication_failed")


def test_public_calls_accept_a_bearer_token(service: Pipeline, staff_token: str) -> None:
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {staff_token}")
    assert api.get("/check_users", {"users": "a"}).json() == {"a": False}


# --------------------------------------------------------------------------- the schema, as generators read it


@pytest.fixture
def schema(service: Pipeline, client: APIClient) -> dict:
    response = client.get("/api/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def test_public_operations_declare_no_security_and_staff_ones_both_token_forms(schema: dict) -> None:
    for path, method in PUBLIC:
        assert "security" not in schema["paths"][path][method], (path, method)
    for path, method in STAFF:
        security = schema["paths"][path][method]["security"]
        assert {} not in security
        assert {"tokenAuth": []} in security and {"bearerAuth": []} in security
    assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"
    assert "security" not in schema  # no global requirement either


def test_check_users_answer_is_declared_a_map_of_booleans(schema: dict) -> None:
    body = schema["paths"]["/check_users"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert body["type"] == "object" and body["additionalProperties"] == {"type": "boolean"}


def test_post_recommendations_is_in_the_schema_with_its_body(schema: dict) -> None:
    post = schema["paths"]["/recommendations"]["post"]
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    fields = schema["components"]["schemas"][ref]["properties"]
    get_parameters = {p["name"] for p in schema["paths"]["/recommendations"]["get"]["parameters"]}
    assert set(fields) == get_parameters
    assert {variant["type"] for variant in fields["users"]["oneOf"]} == {"array", "string"}
    assert post["responses"]["200"] == schema["paths"]["/recommendations"]["get"]["responses"]["200"]


def test_post_recommendations_shares_the_anonymous_throttle_with_get(service: Pipeline, client: APIClient,
                                                                    monkeypatch) -> None:
    from django.core.cache import cache
    from rest_framework.throttling import SimpleRateThrottle

    from recoapi.throttling import FixedWindowRateThrottle

    cache.clear()
    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"anon": "3/minute", "user": "5/minute"})
    monkeypatch.setattr(FixedWindowRateThrottle, "timer", staticmethod(lambda: 1_000_000.0))  # one window
    try:
        assert client.get("/recommendations", {"users": "a"}).status_code == 200
        for _ in range(2):
            assert client.post("/recommendations", {"users": ["a"]}, format="json").status_code == 200
        assert_error(client.post("/recommendations", {"users": ["a"]}, format="json"), 429, "throttled")
    finally:
        cache.clear()
