"""What the API showed: recommendation ids and positions, lists written in the background, attributed events."""

from __future__ import annotations

import time
import uuid

import pytest
from rest_framework.test import APIClient

from modeling import datasets as ds
from recoapi.catalog.models import Interaction
from recoapi.recommendations import feedback, impressions
from recoapi.recommendations.models import RecommendationList
from tests.api.test_endpoints import a_known_user, assert_error
from tests.conftest import Pipeline


def test_each_list_has_an_id_positions_and_is_written_as_shown(service: Pipeline, client: APIClient,
                                                                shown: impressions.ImpressionBuffer) -> None:
    user = a_known_user(service)
    body = client.get("/recommendations", {"users": f"{user},nobody-at-all", "k": 5}).json()
    lists = body["recommendations"]
    ids = {lists[user]["recommendation_id"], lists["nobody-at-all"]["recommendation_id"]}
    assert len(ids) == 2 and all(len(i) == 32 and uuid.UUID(i).version == 7 for i in ids)
    assert [item["position"] for item in lists[user]["items"]] == [1, 2, 3, 4, 5]
    again = client.get("/recommendations", {"users": user, "k": 5}).json()["recommendations"][user]
    assert again["recommendation_id"] not in ids  # every answer is a new list

    assert RecommendationList.objects.count() == 0 and shown.pending() == 3  # buffered, not yet written
    assert shown.flush() == 3
    row = RecommendationList.objects.get(id=lists[user]["recommendation_id"])
    assert (row.shopper_id, row.strategy, row.model_version) == (user, lists[user]["strategy"], body["model_version"])
    assert row.items == [item["item_id"] for item in lists[user]["items"]]
    assert shown.pending() == 0 and shown.flush() == 0


def test_list_ids_are_uuid7_ordered_by_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Later lists sort after earlier ones (appended to the primary key's index), and ids never repeat."""
    now = time.time_ns()
    first = impressions.new_list_id()
    parsed = uuid.UUID(first)
    assert len(first) == 32 and parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert abs(int(first[:12], 16) - now // 1_000_000) < 60_000  # its first 48 bits: the time in milliseconds
    batches = []
    for millisecond in range(3):
        monkeypatch.setattr(impressions.time, "time_ns", lambda m=millisecond: now + m * 1_000_000)
        batches.append([impressions.new_list_id() for _ in range(500)])
    assert len({i for batch in batches for i in batch}) == 1500  # within one millisecond too: 74 random bits
    assert max(batches[0]) < min(batches[1]) and max(batches[1]) < min(batches[2])


def test_events_with_a_recommendation_id_are_attributed_to_the_list_and_position(
        service: Pipeline, client: APIClient, staff_client: APIClient, shown: impressions.ImpressionBuffer) -> None:
    user = a_known_user(service)
    answer = client.get("/recommendations", {"users": user, "k": 5}).json()
    entry = answer["recommendations"][user]
    rid, third, first = entry["recommendation_id"], entry["items"][2]["item_id"], entry["items"][0]["item_id"]
    shown.flush()
    response = staff_client.post("/events", [
        {"user": user, "item": third, "event": "view", "recommendation_id": rid},
        {"user": user, "item": third, "event": "purchase", "recommendation_id": rid},
        {"user": user, "item": first, "event": "cart", "recommendation_id": rid},
        {"user": user, "item": first, "event": "view"},  # no id: not attributed
    ], format="json")
    assert response.status_code == 201, response.content
    single = staff_client.post("/events", {"user": user, "item": first, "event": "view", "recommendation_id": rid},
                               format="json").json()
    assert single["recommendation_id"] == rid

    got = sorted((a.position, a.event, a.strategy, a.model_version) for a in feedback.attributions())
    version, strategy = answer["model_version"], entry["strategy"]
    assert got == [(1, "cart", strategy, version), (1, "view", strategy, version), (3, "purchase", strategy, version),
                   (3, "view", strategy, version)]
    row = next(r for r in feedback.summary() if r["strategy"] == strategy and r["model_version"] == version)
    assert (row["lists"], row["view"], row["cart"], row["purchase"]) == (1, 2, 1, 1)
    assert Interaction.objects.filter(recommendation_id=rid).count() == 4


def test_an_event_is_not_credited_to_another_shoppers_list_or_to_a_later_one(
        service: Pipeline, client: APIClient, staff_client: APIClient, shown: impressions.ImpressionBuffer) -> None:
    """Any event sent with any stored list's id was credited to it: another shopper's purchase, or one made years
    before the list was shown."""
    users = list(dict.fromkeys(service.data.interactions["user_id"].astype(str)))[:2]
    entry = client.get("/recommendations", {"users": users[0], "k": 3}).json()["recommendations"][users[0]]
    visitor = client.get("/recommendations", {"items": entry["items"][0]["item_id"], "k": 3}).json()
    shown.flush()
    rid, item = entry["recommendation_id"], entry["items"][0]["item_id"]
    other = staff_client.post("/events", {"user": users[1], "item": item, "event": "purchase",
                                          "recommendation_id": rid}, format="json")
    assert_error(other, 400, "invalid")
    assert f"shown to another shopper, not to {users[1]!r}" in other.json()["error"]["message"]
    early = staff_client.post("/events", [{"user": users[0], "item": item, "event": "view"},
                                          {"user": users[0], "item": item, "event": "purchase",
                                           "recommendation_id": rid, "timestamp": "2020-01-01T00:00:00Z"}],
                              format="json")
    assert_error(early, 400, "invalid")
    assert "events[1].recommendation_id: the event (2020-01-01" in early.json()["error"]["message"]
    assert "more than 5 minutes before that list was shown" in early.json()["error"]["message"]
    assert not Interaction.objects.filter(recommendation_id=rid).exists()  # the batch: all or none
    ok = staff_client.post("/events", {"user": users[0], "item": item, "event": "purchase", "recommendation_id": rid},
                           format="json")
    assert ok.status_code == 201, ok.content
    anonymous = visitor["recommendations"]["anonymous"]  # a visitor's list takes the events of whoever they become
    taken = staff_client.post("/events", {"user": users[1], "item": anonymous["items"][0]["item_id"],
                                          "event": "view", "recommendation_id": anonymous["recommendation_id"]},
                              format="json")
    assert taken.status_code == 201, taken.content


def test_a_shopper_whose_id_is_anonymous_keeps_their_lists_to_themselves(
        service: Pipeline, client: APIClient, staff_client: APIClient, shown: impressions.ImpressionBuffer) -> None:
    """A visitor's list was recorded under the shopper id "anonymous", and read back as a visitor's: the lists of a
    shopper whose id is "anonymous" took every other shopper's events, and counted them as clicks."""
    item = str(service.data.items[ds.ITEM_ID].iloc[0])
    assert staff_client.post("/events", {"user": "anonymous", "item": item, "event": "purchase"},
                             format="json").status_code == 201
    own = client.get("/recommendations", {"users": "anonymous", "k": 3}).json()["recommendations"]["anonymous"]
    visitor = client.get("/recommendations", {"items": item, "k": 3}).json()["recommendations"]["anonymous"]
    shown.flush()
    assert RecommendationList.objects.get(id=own["recommendation_id"]).shopper_id == "anonymous"
    assert RecommendationList.objects.get(id=visitor["recommendation_id"]).shopper_id == ""  # the visitor's
    other = str(service.data.interactions["user_id"].iloc[0])
    stolen = staff_client.post("/events", {"user": other, "item": own["items"][0]["item_id"], "event": "view",
                                           "recommendation_id": own["recommendation_id"]}, format="json")
    assert_error(stolen, 400, "invalid")
    assert "shown to another shopper, not to" in stolen.json()["error"]["message"]
    taken = staff_client.post("/events", {"user": other, "item": visitor["items"][0]["item_id"], "event": "view",
                                          "recommendation_id": visitor["recommendation_id"]}, format="json")
    assert taken.status_code == 201, taken.content
    assert staff_client.post("/events", {"user": "anonymous", "item": own["items"][1]["item_id"], "event": "cart",
                                         "recommendation_id": own["recommendation_id"]},
                             format="json").status_code == 201
    credited = {(a.recommendation_id, a.event) for a in feedback.attributions()}
    assert credited == {(own["recommendation_id"], "cart"), (visitor["recommendation_id"], "view")}


def test_an_event_may_be_timed_up_to_5_minutes_before_its_list_and_the_refusal_says_so(
        service: Pipeline, client: APIClient, staff_client: APIClient, shown: impressions.ImpressionBuffer) -> None:
    """The refusal said the event "happened before that list was shown", while an event 3 minutes before the list
    was accepted: the rule allows 5 minutes of clock skew, and the message states it."""
    from datetime import timedelta

    from recoapi.recommendations.services import LIST_CLOCK_SKEW

    assert LIST_CLOCK_SKEW == timedelta(minutes=5)
    user = a_known_user(service)
    entry = client.get("/recommendations", {"users": user, "k": 3}).json()["recommendations"][user]
    shown.flush()
    rid, item = entry["recommendation_id"], entry["items"][0]["item_id"]
    answered = RecommendationList.objects.get(id=rid).created_at

    def send(before: timedelta):  # noqa: ANN202
        when = (answered - before).isoformat().replace("+00:00", "Z")
        return staff_client.post("/events", {"user": user, "item": item, "event": "view", "recommendation_id": rid,
                                             "timestamp": when}, format="json")

    assert send(timedelta(minutes=3)).status_code == 201
    refused = send(timedelta(minutes=6))
    assert_error(refused, 400, "invalid")
    message = refused.json()["error"]["message"]
    assert "happened more than 5 minutes before that list was shown" in message, message
    assert "at most 5 minutes before its list" in message


@pytest.mark.parametrize("event", ["review", "rating"])
def test_a_review_or_rating_with_a_recommendation_id_is_refused(
        service: Pipeline, client: APIClient, staff_client: APIClient, shown: impressions.ImpressionBuffer,
        event: str) -> None:
    """Only a view, cart or purchase is attributed to a list (the README's "What was shown"): a review or a rating
    sent with a list's id was stored attributed to it, listed on the admin's list page and counted as a click."""
    user = a_known_user(service)
    entry = client.get("/recommendations", {"users": user, "k": 3}).json()["recommendations"][user]
    shown.flush()
    rid, item = entry["recommendation_id"], entry["items"][0]["item_id"]
    response = staff_client.post("/events", [{"user": user, "item": item, "event": "view", "recommendation_id": rid},
                                             {"user": user, "item": item, "event": event, "rating": 4.0,
                                              "recommendation_id": rid}], format="json")
    assert_error(response, 400)
    assert response.json()["error"]["message"] == (
        f"events[1].recommendation_id: a {event} event is not attributed to a list: only view, cart and purchase "
        "events take a recommendation_id; send this one without it.")
    assert not Interaction.objects.filter(recommendation_id=rid).exists()
    alone = staff_client.post("/events", {"user": user, "item": item, "event": event, "rating": 4.0}, format="json")
    assert alone.status_code == 201, alone.content


@pytest.mark.parametrize("bad", ["x" * 32, "ABCDEF0123456789ABCDEF0123456789", "12ab", 12345, ""])
def test_a_malformed_recommendation_id_is_refused(service: Pipeline, staff_client: APIClient, bad: object) -> None:
    user = a_known_user(service)
    item = str(service.data.items.iloc[0, 0])
    response = staff_client.post("/events", {"user": user, "item": item, "event": "view", "recommendation_id": bad},
                                 format="json")
    assert_error(response, 400)
    assert "recommendation_id" in response.json()["error"]["message"]


def test_a_full_buffer_drops_the_oldest_lists_and_counts_them(service: Pipeline, shown: impressions.ImpressionBuffer,
                                                              settings) -> None:
    from datetime import UTC, datetime

    from prometheus_client import REGISTRY

    settings.RECO_IMPRESSIONS_MAX_BUFFERED = 3
    before = REGISTRY.get_sample_value("recoapi_impressions_dropped_total") or 0.0
    now = datetime.now(UTC)
    shown.record([impressions.Shown(f"{n:032x}", now, "u", "popular", "v", ["a"]) for n in range(5)])
    assert shown.pending() == 3
    assert REGISTRY.get_sample_value("recoapi_impressions_dropped_total") == before + 2
    assert shown.flush() == 3
    assert sorted(RecommendationList.objects.values_list("id", flat=True)) == [f"{n:032x}" for n in (2, 3, 4)]


def test_lists_the_database_refuses_are_kept_for_the_next_write(service: Pipeline, shown: impressions.ImpressionBuffer,
                                                                monkeypatch) -> None:
    from datetime import UTC, datetime

    from django.db import OperationalError

    now = datetime.now(UTC)
    shown.record([impressions.Shown(f"{n:032x}", now, "u", "popular", "v", ["a"]) for n in range(2)])

    def refuse(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OperationalError("database is locked")

    with monkeypatch.context() as patched:
        patched.setattr(impressions, "_insert", refuse)
        assert shown.flush() is None
    assert shown.pending() == 2 and RecommendationList.objects.count() == 0
    assert shown.flush() == 2 and shown.pending() == 0


def test_the_writer_keeps_its_connection_between_writes_and_drops_it_after_a_refusal(
        service: Pipeline, shown: impressions.ImpressionBuffer, monkeypatch) -> None:
    from datetime import UTC, datetime

    from django.db import OperationalError

    closed: list[str] = []
    checked: list[str] = []

    class Watched:  # the module's connection, its closing counted (the writes still use the test's)
        @staticmethod
        def close() -> None:
            closed.append("closed")

    monkeypatch.setattr(impressions, "connection", Watched)
    # Counted, not run: inside the test's transaction it would close the test's connection (PostgreSQL).
    monkeypatch.setattr(impressions, "close_old_connections", lambda: checked.append("checked"))
    now = datetime.now(UTC)
    shown.record([impressions.Shown(f"{n:032x}", now, "u", "popular", "v", ["a"]) for n in range(2)])
    assert shown.write_due() is False and shown.write_due() is False
    assert closed == [] and RecommendationList.objects.count() == 2
    assert checked == ["checked", "checked"]  # each write first closes a connection too old or unusable

    def refuse(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OperationalError("database is locked")

    shown.record([impressions.Shown(f"{n:032x}", now, "u", "popular", "v", ["a"]) for n in range(2, 3)])
    with monkeypatch.context() as patched:
        patched.setattr(impressions, "_insert", refuse)
        assert shown.write_due() is True
    assert closed == ["closed"] and shown.pending() == 1
    assert shown.write_due() is False and shown.pending() == 0 and closed == ["closed"]


def test_lists_arriving_while_a_full_buffer_is_written_are_kept(service: Pipeline, shown: impressions.ImpressionBuffer,
                                                                settings, monkeypatch) -> None:
    from datetime import UTC, datetime

    settings.RECO_IMPRESSIONS_MAX_BUFFERED = 5
    now = datetime.now(UTC)

    def lists(*names: str) -> list[impressions.Shown]:
        return [impressions.Shown(name * 32, now, "u", "popular", "v", ["a"]) for name in names]

    shown.record(lists("a", "b", "c", "d", "e"))
    write = impressions._insert

    def slow_write(batch):  # noqa: ANN001, ANN202
        shown.record(lists("f", "9"))  # arrive during the write: the full buffer drops a and b
        return write(batch)

    with monkeypatch.context() as patched:
        patched.setattr(impressions, "_insert", slow_write)
        assert shown.flush() == 5
    assert shown.pending() == 2
    assert shown.flush() == 2
    assert sorted(RecommendationList.objects.values_list("id", flat=True)) == sorted(
        name * 32 for name in "abcdef9")


def test_the_admin_s_preview_is_not_recorded_as_shown(service: Pipeline, shown: impressions.ImpressionBuffer) -> None:
    from django.contrib.auth import get_user_model
    from django.test import Client

    staff = get_user_model().objects.create_user("preview", password="preview-pass-123", is_staff=True,
                                                 is_superuser=True)
    browser = Client()
    browser.force_login(staff)
    page = browser.get(f"/admin/catalog/shopper/{a_known_user(service)}/change/")
    assert page.status_code == 200 and b"because of" in page.content
    assert shown.pending() == 0
    product = browser.get(f"/admin/catalog/product/{service.data.items[ds.ITEM_ID].iloc[0]}/change/")
    assert product.status_code == 200 and b"Nearest products" in product.content  # similar items, not recorded
    assert shown.pending() == 0


def test_a_head_request_is_not_recorded_as_shown(service: Pipeline, client: APIClient,
                                                shown: impressions.ImpressionBuffer) -> None:
    """A monitor's HEAD probe of /recommendations was recorded as a list shown, inflating impressions and deflating
    the click-through rate."""
    user = a_known_user(service)
    assert client.head("/recommendations", {"users": user, "k": 4}).status_code == 200
    assert shown.pending() == 0
    item = str(service.data.items[ds.ITEM_ID].iloc[0])
    assert client.head("/similar_items", {"item": item, "k": 4}).status_code == 200
    assert shown.pending() == 0
    assert client.get("/recommendations", {"users": user, "k": 4}).status_code == 200
    assert shown.pending() == 1


def test_a_similar_items_list_is_recorded_and_its_events_attributed(
        service: Pipeline, client: APIClient, staff_client: APIClient, shown: impressions.ImpressionBuffer) -> None:
    """A product page's similar products had no recommendation_id: a shop could not tell what that list sold. It
    is recorded as a visitor's list (asked for without a shopper), so its events are attributed whoever sends them."""
    item = str(service.data.items[ds.ITEM_ID].iloc[0])
    body = client.get("/similar_items", {"item": item, "k": 4}).json()
    rid = body["recommendation_id"]
    assert len(rid) == 32 and [entry["position"] for entry in body["items"]] == [1, 2, 3, 4]
    again = client.get("/similar_items", {"item": item, "k": 4}).json()
    assert again["recommendation_id"] != rid  # every answer is a new list
    assert shown.flush() == 2
    row = RecommendationList.objects.get(id=rid)
    assert (row.shopper_id, row.strategy, row.model_version) == ("", "similar_items", body["model_version"])
    assert row.items == [entry["item_id"] for entry in body["items"]]
    shoppers = list(dict.fromkeys(service.data.interactions["user_id"].astype(str)))[:2]
    for shopper, place, event in ((shoppers[0], 3, "view"), (shoppers[1], 3, "purchase")):
        response = staff_client.post("/events", {"user": shopper, "item": body["items"][place - 1]["item_id"],
                                                 "event": event, "recommendation_id": rid}, format="json")
        assert response.status_code == 201, response.content
    got = sorted((a.position, a.event, a.strategy) for a in feedback.attributions(recommendation_ids=[rid]))
    assert got == [(3, "purchase", "similar_items"), (3, "view", "similar_items")]
    row = next(r for r in feedback.summary() if r["strategy"] == "similar_items")
    assert (row["lists"], row["view"], row["purchase"]) == (2, 1, 1)


def test_lists_are_written_with_every_field_as_given_and_an_id_written_once(
        service: Pipeline, shown: impressions.ImpressionBuffer) -> None:
    """The writer's own INSERT (not the ORM's) gives back what the ORM reads, on SQLite and PostgreSQL alike; a
    list written again (a retry after a write whose answer was lost) stays one row."""
    from datetime import UTC, datetime

    when = datetime(2026, 5, 17, 8, 30, 15, 123456, tzinfo=UTC)
    first = impressions.Shown("f" * 32, when, "shopper-ü", "two_tower", "20260101T000000Z", ["a", "b'\"c"],
                              experiment_id=None, arm="")
    second = impressions.Shown("e" * 32, when, "s2", "popular", "v", [], experiment_id=7, arm="treatment")
    shown.record([first, second])
    assert shown.flush() == 2
    shown.record([first])
    assert shown.flush() == 1
    assert RecommendationList.objects.count() == 2
    row = RecommendationList.objects.get(id=first.id)
    assert (row.created_at, row.shopper_id, row.strategy, row.model_version, row.items, row.experiment_id,
            row.arm) == (when, "shopper-ü", "two_tower", "20260101T000000Z", ["a", "b'\"c"], None, "")
    row = RecommendationList.objects.get(id=second.id)
    assert (row.items, row.experiment_id, row.arm) == ([], 7, "treatment")


def test_lists_are_adapted_where_they_are_recorded_not_by_the_writer(
        service: Pipeline, shown: impressions.ImpressionBuffer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer thread shares a web worker's interpreter lock with its requests: adapting a whole batch there held
    the lock in one piece while requests waited. Each answer's lists are adapted as they are recorded."""
    import threading
    from datetime import UTC, datetime

    from django.db.models import Field

    adapting: list[str] = []
    original = Field.get_db_prep_save

    def watched(self, value, connection):  # noqa: ANN001, ANN202
        adapting.append(threading.current_thread().name)
        return original(self, value, connection)

    monkeypatch.setattr(Field, "get_db_prep_save", watched)
    now = datetime.now(UTC)
    shown.record([impressions.Shown(f"{n:032x}", now, f"u{n}", "popular", "v", ["a", "b"]) for n in range(3)])
    recorded = len(adapting)
    assert recorded > 0 and set(adapting) == {threading.current_thread().name}
    # (the writer's flush, called here: the tests' database is this thread's)
    assert shown.flush() == 3 and shown.pending() == 0
    assert len(adapting) == recorded  # the write only inserted
    assert sorted(RecommendationList.objects.values_list("shopper_id", "items")) == [
        (f"u{n}", ["a", "b"]) for n in range(3)]


def test_a_list_that_cannot_be_adapted_is_dropped_and_counted_not_raised(
        service: Pipeline, shown: impressions.ImpressionBuffer) -> None:
    """Recording happens while the answer is built: a value its field refuses must not turn the answer into a 500."""
    from datetime import UTC, datetime

    from prometheus_client import REGISTRY

    before = REGISTRY.get_sample_value("recoapi_impressions_dropped_total") or 0.0
    now = datetime.now(UTC)
    shown.record([impressions.Shown("a" * 32, now, "u", "popular", "v", ["a"], experiment_id="x")])  # type: ignore[arg-type]
    assert shown.pending() == 0
    assert REGISTRY.get_sample_value("recoapi_impressions_dropped_total") == before + 1
    shown.record([impressions.Shown("b" * 32, now, "u", "popular", "v", ["a"])])
    assert shown.flush() == 1
