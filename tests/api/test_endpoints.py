"""Every endpoint through the Django test client, including bad input and unknown shoppers."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

import pytest
from rest_framework.test import APIClient

from modeling import artifacts
from modeling import datasets as ds
from recoapi.catalog.models import Interaction, Product, Shopper
from tests.conftest import Pipeline

ITEM_FIELDS = {"item_id", "score", "title", "brand", "category", "price"}


def assert_error(response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "request_id"}
    assert body["error"]["message"]
    assert body["error"]["request_id"] == response["X-Request-ID"]
    if code:
        assert body["error"]["code"] == code


def without_ids(body: dict) -> dict:
    """A recommendations answer (or its "recommendations" part) without the recommendation ids, which are new
    in every answer: to compare two answers."""
    def strip(lists: dict) -> dict:
        return {user: {k: v for k, v in entry.items() if k != "recommendation_id"} for user, entry in lists.items()}

    if "recommendations" in body:
        return {**body, "recommendations": strip(body["recommendations"])}
    return strip(body)


def a_known_user(service: Pipeline) -> str:
    return str(service.data.interactions[ds.USER_ID].iloc[0])


# --------------------------------------------------------------------------- random_users


def test_random_users_returns_distinct_known_shoppers(service: Pipeline, client: APIClient) -> None:
    response = client.get("/random_users", {"n": 7})
    assert response.status_code == 200
    users = response.json()["users"]
    assert len(users) == len(set(users)) == 7
    assert Shopper.objects.filter(id__in=users).count() == 7


def test_random_users_defaults_to_five(service: Pipeline, client: APIClient) -> None:
    assert len(client.get("/random_users").json()["users"]) == 5


@pytest.mark.parametrize("n", ["-1", "0", "101", "abc", "2.5"])
def test_random_users_rejects_bad_n(service: Pipeline, client: APIClient, n: str) -> None:
    assert_error(client.get("/random_users", {"n": n}), 400, "invalid")


# --------------------------------------------------------------------------- check_users


def test_check_users_tells_known_from_unknown(service: Pipeline, client: APIClient) -> None:
    known = a_known_user(service)
    response = client.get("/check_users", {"users": f"{known},nobody"})
    assert response.status_code == 200
    assert response.json() == {known: True, "nobody": False}


@pytest.mark.parametrize("users", [None, "", ",,", ",".join(f"u{i}" for i in range(101))])
def test_check_users_rejects_missing_empty_or_too_many(service: Pipeline, client: APIClient, users) -> None:
    params = {} if users is None else {"users": users}
    assert_error(client.get("/check_users", params), 400, "invalid")


# --------------------------------------------------------------------------- recommendations


def test_known_user_gets_two_tower_items_without_already_seen(service: Pipeline, client: APIClient) -> None:
    user = a_known_user(service)
    response = client.get("/recommendations", {"users": user, "k": 5})
    assert response.status_code == 200
    body = response.json()
    assert body["model_version"] == service.version
    entry = body["recommendations"][user]
    assert entry["strategy"] == "two_tower"
    assert len(entry["items"]) == 5
    assert all(set(item) == ITEM_FIELDS | {"position"} for item in entry["items"])
    scores = [item["score"] for item in entry["items"]]
    assert scores == sorted(scores, reverse=True)
    seen = set(Interaction.objects.filter(shopper_id=user).values_list("product_id", flat=True))
    assert not seen & {item["item_id"] for item in entry["items"]}
    first = entry["items"][0]
    product = Product.objects.get(id=first["item_id"])
    assert (first["title"], first["brand"], first["category"]) == (product.title, product.brand, product.category)


def test_unknown_user_gets_popular_items(service: Pipeline, client: APIClient) -> None:
    response = client.get("/recommendations", {"users": "never-seen-before", "k": 3})
    assert response.status_code == 200
    entry = response.json()["recommendations"]["never-seen-before"]
    assert entry["strategy"] == "popular"
    # Recent popularity: each interaction's weight halves every 180 days before the latest one.
    inter = service.data.interactions
    age_days = (inter[ds.TIMESTAMP].max() - inter[ds.TIMESTAMP]) / 86_400
    recent = (inter[ds.WEIGHT] * 0.5 ** (age_days / 180)).groupby(inter[ds.ITEM_ID]).sum()
    assert [i["item_id"] for i in entry["items"]] == list(recent.sort_values(ascending=False).index[:3])


def test_shopper_added_after_training_gets_content_strategy(service: Pipeline, client: APIClient) -> None:
    shopper = Shopper.objects.create(id="late-arrival")
    products = list(Product.objects.order_by("id")[:2])
    for product in products:
        Interaction.objects.create(shopper=shopper, product=product, event="review",
                                   occurred_at=datetime(2024, 1, 1, tzinfo=UTC))
    response = client.get("/recommendations", {"users": "late-arrival", "k": 4})
    entry = response.json()["recommendations"]["late-arrival"]
    assert entry["strategy"] == "content"
    assert len(entry["items"]) == 4
    assert not {p.id for p in products} & {item["item_id"] for item in entry["items"]}


def test_several_users_in_one_call_keep_their_order(service: Pipeline, client: APIClient) -> None:
    user = a_known_user(service)
    body = client.get("/recommendations", {"users": f"x1,{user},x2,x1", "k": 2}).json()
    assert list(body["recommendations"]) == ["x1", user, "x2"]


def test_category_filter_keeps_only_that_category(service: Pipeline, client: APIClient) -> None:
    category = Product.objects.order_by("id").values_list("category", flat=True).first().split(" > ")[0]
    body = client.get("/recommendations", {"users": f"{a_known_user(service)},nobody", "k": 5,
                                           "category": category.lower()}).json()
    for entry in body["recommendations"].values():
        assert entry["items"]
        assert all(item["category"].startswith(category) for item in entry["items"])


def test_category_filter_ignores_case_at_every_level(service: Pipeline, client: APIClient) -> None:
    """Issue 12: `category` matches the start of the path whatever its case."""
    full = Product.objects.order_by("id").values_list("category", flat=True).first()
    top, sub = full.split(" > ")[:2]
    partial = f" {top.upper()} > {sub[:3].lower()}"
    body = client.get("/recommendations", {"users": "nobody", "k": 5, "category": partial}).json()
    items = body["recommendations"]["nobody"]["items"]
    assert items and all(item["category"].lower().startswith(partial.strip().lower()) for item in items)


def test_unknown_category_is_a_404_listing_the_top_level_categories(service: Pipeline, client: APIClient) -> None:
    """Issue 12: an unknown category says so instead of answering empty lists."""
    response = client.get("/recommendations", {"users": "nobody", "k": 5, "category": "Garden Furniture"})
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "unknown_category"
    assert "No product's category starts with 'Garden Furniture'" in error["message"]
    tops = sorted({c.split(" > ")[0] for c in Product.objects.values_list("category", flat=True)})
    assert f"Top-level categories: {', '.join(tops)}." in error["message"] and "It is a level of" not in error[
        "message"]
    # A level further down (a RetailRocket category id, 108 of "1003 > 108"): the message names its path.
    path = next(c for c in Product.objects.values_list("category", flat=True) if " > " in c)
    top, second = [part.strip() for part in path.split(" > ")][:2]
    error = client.get("/recommendations", {"users": "nobody", "category": second.upper()}).json()["error"]
    assert f"It is a level of '{top} > {second}': give the path from its start." in error["message"]


@pytest.mark.parametrize("params", [
    {},
    {"users": ""},
    {"users": "a", "k": 0},
    {"users": "a", "k": 1000},
    {"users": "a", "k": "ten"},
    {"users": ",".join(f"u{i}" for i in range(101))},
])
def test_recommendations_reject_bad_input(service: Pipeline, client: APIClient, params) -> None:
    assert_error(client.get("/recommendations", params), 400, "invalid")


def test_recommendations_without_a_model_answer_503(settings, service: Pipeline, client: APIClient,
                                                      tmp_path) -> None:
    from recoapi.recommendations.engine import registry

    settings.RECO_MODELS_DIR = tmp_path / "empty"
    registry.reset()
    assert_error(client.get("/recommendations", {"users": "a"}), 503, "no_model")


# --------------------------------------------------------------------------- similar_items


def test_similar_items_returns_other_products(service: Pipeline, client: APIClient) -> None:
    item = str(service.data.items[ds.ITEM_ID].iloc[0])
    response = client.get("/similar_items", {"item": item, "k": 4})
    assert response.status_code == 200
    items = response.json()["items"]
    assert len(items) == 4 and item not in {i["item_id"] for i in items}


def test_similar_items_of_unknown_product_is_404(service: Pipeline, client: APIClient) -> None:
    response = client.get("/similar_items", {"item": "no-such-product"})
    assert_error(response, 404, "unknown_item")
    assert response.json()["error"]["message"] == "Product 'no-such-product' is not in the catalogue."
    assert_error(client.get("/similar_items", {"k": 3}), 400, "invalid")


def test_similar_items_of_a_product_removed_from_the_catalogue_is_404(service: Pipeline, client: APIClient) -> None:
    """The model keeps a removed product's vector: it answered 200 with its neighbours, as if it were still sold."""
    from recoapi.recommendations.engine import registry

    removed, out_of_stock = (str(i) for i in service.data.items[ds.ITEM_ID].iloc[:2])
    Product.objects.filter(id=out_of_stock).update(available=False)
    Interaction.objects.filter(product_id=removed).delete()
    Product.objects.filter(id=removed).delete()
    registry.reset()  # as a reload of the data rebuilds the engine
    response = client.get("/similar_items", {"item": removed})
    assert_error(response, 404, "unknown_item")
    assert response.json()["error"]["message"] == f"Product {removed!r} is not in the catalogue."
    assert client.get("/similar_items", {"item": out_of_stock, "k": 3}).status_code == 200  # alternatives to it


# --------------------------------------------------------------------------- reloads


def test_reloads_require_authentication(service: Pipeline, client: APIClient) -> None:
    assert_error(client.post("/reload_model"), 401, "not_authenticated")
    assert_error(client.post("/reload_data"), 401, "not_authenticated")


def test_reloads_require_staff(service: Pipeline, shopper_client: APIClient) -> None:
    assert_error(shopper_client.post("/reload_model"), 403, "permission_denied")
    assert_error(shopper_client.post("/reload_data"), 403, "permission_denied")


def test_reload_model_activates_the_newest_version(service: Pipeline, staff_client: APIClient, settings) -> None:
    newer = "20990101T000000Z"
    shutil.copytree(settings.RECO_MODELS_DIR / service.version, settings.RECO_MODELS_DIR / newer)
    response = staff_client.post("/reload_model", format="json")
    assert response.status_code == 200, response.content
    assert response.json()["model_version"] == newer
    assert artifacts.read_active(settings.RECO_MODELS_DIR) == newer
    assert staff_client.get("/recommendations", {"users": "a"}).json()["model_version"] == newer
    back = staff_client.post("/reload_model", {"version": service.version}, format="json")
    assert back.json() == {"model_version": service.version, "previous_version": newer}
    # A number is no version name (it was read as the text "20990101"), as for every other body field.
    number = staff_client.post("/reload_model", {"version": 20990101}, format="json")
    assert_error(number, 400)
    assert ('version: Not a valid string; numbers are not read as text: send "20990101" (in quotes), not 20990101.'
            in number.json()["error"]["message"])


def test_reload_model_without_a_version_passes_over_candidates_the_gate_refused(service: Pipeline,
                                                                               staff_client: APIClient,
                                                                               settings) -> None:
    """`retrain` publishes its candidate before the gate measures it: a refused candidate is the newest bundle, and
    `POST /reload_model` (the README's own line) activated the model judged worse."""
    from django.utils import timezone

    from recoapi.recommendations.models import TrainingRun

    refused = "20990101T000000Z"
    shutil.copytree(settings.RECO_MODELS_DIR / service.version, settings.RECO_MODELS_DIR / refused)
    TrainingRun.objects.create(started_at=timezone.now(), seconds=1.0, decision=TrainingRun.REFUSED,
                               reason="below the active model", candidate_version=refused,
                               previous_version=service.version, tolerance=0.01)
    response = staff_client.post("/reload_model", format="json")
    assert response.json() == {"model_version": service.version, "previous_version": service.version}
    assert artifacts.read_active(settings.RECO_MODELS_DIR) == service.version
    named = staff_client.post("/reload_model", {"version": refused}, format="json")  # named: activated
    assert named.json() == {"model_version": refused, "previous_version": service.version}
    # Activated on purpose, it is a model like any other: the newest again, not skipped for an older one.
    again = staff_client.post("/reload_model", format="json")
    assert again.json() == {"model_version": refused, "previous_version": refused}
    staff_client.post("/reload_model", {"version": service.version}, format="json")
    newest = "20990102T000000Z"  # refused in turn, never activated: skipped
    shutil.copytree(settings.RECO_MODELS_DIR / service.version, settings.RECO_MODELS_DIR / newest)
    TrainingRun.objects.create(started_at=timezone.now(), seconds=1.0, decision=TrainingRun.REFUSED, reason="worse",
                               candidate_version=newest, previous_version=refused, tolerance=0.01)
    assert staff_client.post("/reload_model", format="json").json()["model_version"] == refused


def test_broken_bundle_is_refused_and_old_model_keeps_serving(service: Pipeline, staff_client: APIClient,
                                                              settings) -> None:
    broken = "20990101T000000Z"
    shutil.copytree(settings.RECO_MODELS_DIR / service.version, settings.RECO_MODELS_DIR / broken)
    (settings.RECO_MODELS_DIR / broken / "item_vectors.npy").write_bytes(b"garbage")
    assert staff_client.get("/recommendations", {"users": "a"}).json()["model_version"] == service.version
    response = staff_client.post("/reload_model", {"version": broken}, format="json")
    assert_error(response, 422, "invalid_model")
    assert str(settings.RECO_MODELS_DIR) not in response.json()["error"]["message"]
    assert artifacts.read_active(settings.RECO_MODELS_DIR) == service.version
    assert staff_client.get("/recommendations", {"users": "a"}).json()["model_version"] == service.version


@pytest.mark.parametrize("encode_new_products", [True, False])
def test_a_model_of_another_shop_is_refused_and_the_old_model_keeps_serving(service: Pipeline,
                                                                           staff_client: APIClient, settings,
                                                                           encode_new_products: bool) -> None:
    """The demo's model reloaded over one's own shop answered 200: every shopper then got text-based lists."""
    from recoapi.recommendations.engine import registry

    settings.RECO_ENCODE_NEW_PRODUCTS = encode_new_products  # off: the engine holds no product it was not trained on
    other = "20990101T000000Z"
    shutil.copytree(settings.RECO_MODELS_DIR / service.version, settings.RECO_MODELS_DIR / other)
    Interaction.objects.all().delete()
    Product.objects.all().delete()
    Product.objects.bulk_create([Product(id=f"OWN-{n}", title=f"Own product {n}") for n in range(5)])
    response = staff_client.post("/reload_model", {"version": other}, format="json")
    assert_error(response, 409, "other_shop")
    assert "none of which is among the 5 in the database" in response.json()["error"]["message"]
    assert artifacts.read_active(settings.RECO_MODELS_DIR) == service.version
    assert registry.current().version == service.version
    Product.objects.create(id=str(service.data.items[ds.ITEM_ID].iloc[0]), title="One product the model knows")
    response = staff_client.post("/reload_model", {"version": other}, format="json")
    assert response.status_code == 200, response.content  # one shared product: the same shop, changed


def test_rollback_refuses_a_model_of_another_shop(service: Pipeline, settings) -> None:
    """After one's own data replaced the demo's, a rollback to the demo's model served every shopper text-based
    lists."""
    from recoapi.exceptions import Conflict
    from recoapi.recommendations import retraining

    other = "20000101T000000Z"  # older than the active one
    shutil.copytree(settings.RECO_MODELS_DIR / service.version, settings.RECO_MODELS_DIR / other)
    Interaction.objects.all().delete()
    Product.objects.all().delete()
    Product.objects.bulk_create([Product(id=f"OWN-{n}", title=f"Own product {n}") for n in range(5)])
    with pytest.raises(Conflict, match="none of which is among the 5 in the database: it belongs to another shop"):
        retraining.model_rollback(version=other)
    assert artifacts.read_active(settings.RECO_MODELS_DIR) == service.version
    Product.objects.create(id=str(service.data.items[ds.ITEM_ID].iloc[0]), title="One product the model knows")
    assert retraining.model_rollback(version=other)["model_version"] == other  # the same shop, changed


def test_reload_model_with_unknown_version_is_404(service: Pipeline, staff_client: APIClient) -> None:
    assert_error(staff_client.post("/reload_model", {"version": "nope"}, format="json"), 404, "unknown_version")


def test_reload_data_reimports_and_reports_counts(service: Pipeline, staff_client: APIClient) -> None:
    Interaction.objects.all().delete()
    response = staff_client.post("/reload_data", format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["skipped"] is False
    assert body["counts"] == service.data.counts()
    assert body["notes"] == []  # every column of the files read (a note names those that are not)
    assert Interaction.objects.count() == len(service.data.interactions)
    again = staff_client.post("/reload_data", format="json").json()
    assert again["skipped"] is True


def test_reload_data_with_a_broken_file_changes_nothing(service: Pipeline, staff_client: APIClient, settings,
                                                        tmp_path) -> None:
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "Shop_5.json").write_text('{"reviewerID": "u1"}\n', encoding="utf-8")
    settings.RECO_DATA_PATH = bad
    before = Interaction.objects.count()
    response = staff_client.post("/reload_data", format="json")
    assert_error(response, 400, "invalid_data")
    assert "line 1" in response.json()["error"]["message"]
    assert Interaction.objects.count() == before


def test_reload_rejects_malformed_json(service: Pipeline, staff_client: APIClient) -> None:
    response = staff_client.post("/reload_model", "{not json", content_type="application/json")
    assert_error(response, 400)


# --------------------------------------------------------------------------- misc


def test_health_reports_model_and_database(service: Pipeline, client: APIClient) -> None:
    import os

    assert client.get("/health").json() == {"status": "ok", "model_version": service.version, "database": "ok",
                                            "process": os.getpid(),
                                            "model_store": {"store": "off", "active_from": "file",
                                                            "active_version": service.version}}


def test_unknown_url_answers_json_404(service: Pipeline, client: APIClient) -> None:
    assert_error(client.get("/no/such/endpoint"), 404, "not_found")


def test_wrong_method_answers_json_405(service: Pipeline, client: APIClient) -> None:
    assert_error(client.delete("/recommendations"), 405)


def test_openapi_schema_lists_every_endpoint(service: Pipeline, client: APIClient) -> None:
    response = client.get("/api/schema", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    for path in ("/random_users", "/check_users", "/recommendations", "/similar_items", "/events", "/reload_data",
                 "/reload_model", "/health"):
        assert path in paths
    parameters = {p["name"] for p in paths["/recommendations"]["get"]["parameters"]}
    assert {"users", "items", "text", "k", "category", "min_price", "max_price", "exclude_seen",
            "include_history"} <= parameters
    assert "tokenAuth" in str(paths["/events"]["post"]["security"])


def test_swagger_ui_is_served_without_a_cdn(service: Pipeline, client: APIClient) -> None:
    page = client.get("/api/docs").content.decode()
    assert "swagger-ui" in page
    assert "static/drf_spectacular_sidecar/" in page
    assert "cdn.jsdelivr.net" not in page


@pytest.mark.parametrize(("path", "params"), [
    ("/check_users", {"users": "a\x00b"}),
    ("/recommendations", {"users": "a\x00b"}),
    ("/recommendations", {"items": "\x00"}),
    ("/similar_items", {"item": "a\x00"}),
    ("/recommendations", {"text": "espresso\x00"}),
])
def test_null_characters_are_refused_on_every_database(service: Pipeline, client: APIClient, path: str,
                                                       params: dict) -> None:
    assert_error(client.get(path, params), 400, "invalid")


def test_explain_gives_each_item_the_shopper_s_product_it_comes_from(service: Pipeline, client: APIClient,
                                                                    staff_client: APIClient) -> None:
    user = a_known_user(service)
    history = set(service.data.interactions.loc[service.data.interactions[ds.USER_ID] == user, ds.ITEM_ID]
                  .astype(str))
    # It names the shopper's own products: with a token only (a visitor's own items or text need none, below).
    assert_error(client.get("/recommendations", {"users": user, "explain": "true"}), 401, "not_authenticated")
    assert_error(client.post("/recommendations", {"users": [user], "explain": True}, format="json"), 401,
                 "not_authenticated")
    body = staff_client.get("/recommendations", {"users": f"{user},nobody-at-all", "explain": "true"}).json()
    known, unknown = body["recommendations"][user], body["recommendations"]["nobody-at-all"]
    assert known["items"] and all(item["reason"]["kind"] == "history" and item["reason"]["item_id"] in history
                                  for item in known["items"])
    assert unknown["strategy"] == "popular"
    assert all(item["reason"] == {"kind": "popular"} for item in unknown["items"])
    text = client.post("/recommendations", {"text": "a gift for a coffee lover", "explain": True},
                       format="json").json()
    assert all(item["reason"] == {"kind": "text"} for item in text["recommendations"]["anonymous"]["items"])
    plain = client.get("/recommendations", {"users": user}).json()
    assert all("reason" not in item for item in plain["recommendations"][user]["items"])
