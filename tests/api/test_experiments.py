"""A/B tests: a stable split, answers that name their arm, results computed by hand, start and stop in the admin."""

from __future__ import annotations

import math
import re
import shutil
from datetime import UTC, datetime

import pytest
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient

from modeling import artifacts
from modeling import datasets as ds
from recoapi.catalog.models import Interaction, Product, Shopper
from recoapi.exceptions import ApplicationError, Conflict
from recoapi.recommendations import experiments, impressions, retraining
from recoapi.recommendations.experiments import Arm, Plan, bucket
from recoapi.recommendations.models import Experiment, ExperimentArm, RecommendationList
from recoapi.recommendations.services import (
    experiment_start,
    experiment_stop,
    model_reload,
    model_version_sync,
    recommendation_batch,
)
from tests.conftest import Pipeline


@pytest.fixture(autouse=True)
def _fresh_plan():  # noqa: ANN202
    experiments.forget()
    yield
    experiments.forget()


def _experiment(name: str = "exp", *arms: tuple[str, int, str, str]) -> Experiment:
    experiment = Experiment.objects.create(name=name)
    for arm_name, share, version, setting in arms or (("control", 50, "", "served"), ("pop", 50, "", "popular")):
        ExperimentArm.objects.create(experiment=experiment, name=arm_name, share=share, model_version=version,
                                     setting=setting)
    return experiment


def _users(service: Pipeline, n: int = 40) -> list[str]:
    return sorted(service.data.interactions[ds.USER_ID].astype(str).unique())[:n]


def _second_version(service: Pipeline, settings) -> str:
    other = "20990101T000000Z"
    shutil.copytree(settings.RECO_MODELS_DIR / service.version, settings.RECO_MODELS_DIR / other)
    model_version_sync()
    return other


# --------------------------------------------------------------------------- the split


def test_the_bucket_is_a_fixed_function_of_salt_and_shopper() -> None:
    """Known answers: the split is the same in every process and on every host (not Python's salted hash)."""
    assert bucket("salt", "shopper-1") == pytest.approx(0.17929479650786356, abs=1e-15)
    assert bucket("salt", "shopper-2") == pytest.approx(0.7353222958705362, abs=1e-15)
    assert bucket("other", "shopper-1") != bucket("salt", "shopper-1")


def test_shares_split_shoppers_in_proportion_and_each_experiment_anew() -> None:
    arms = (Arm(1, "a", 80, "", "served"), Arm(2, "b", 20, "", "popular"))
    ids = [f"shopper-{i}" for i in range(10_000)]
    first = [Plan(experiment_id=1, salt="one", arms=arms).arm_for(i).name for i in ids]
    assert abs(first.count("a") / len(ids) - 0.8) < 0.02
    assert first == [Plan(experiment_id=1, salt="one", arms=arms).arm_for(i).name for i in ids]  # stable
    second = [Plan(experiment_id=2, salt="two", arms=arms).arm_for(i).name for i in ids]
    moved = sum(x != y for x, y in zip(first, second, strict=True)) / len(ids)
    assert abs(moved - 2 * 0.8 * 0.2) < 0.03  # independent of the first split: 0.32 move
    assert Plan().arm_for("anyone") is None


# --------------------------------------------------------------------------- serving


def test_answers_name_their_arm_and_each_arm_serves_its_setting(service: Pipeline, client: APIClient,
                                                               shown: impressions.ImpressionBuffer) -> None:
    experiment = experiment_start(experiment=_experiment())
    users = _users(service)
    first = client.get("/recommendations", {"users": ",".join(users), "k": 5}).json()["recommendations"]
    arms = {user: first[user]["experiment"]["arm"] for user in users}
    assert set(arms.values()) == {"control", "pop"}
    assert all(first[u]["experiment"]["name"] == "exp" for u in users)
    assert all(first[u]["strategy"] == "popular" for u in users if arms[u] == "pop")
    assert any(first[u]["strategy"] != "popular" for u in users if arms[u] == "control")
    again = client.get("/recommendations", {"users": ",".join(reversed(users)), "k": 5}).json()["recommendations"]
    assert {u: again[u]["experiment"]["arm"] for u in users} == arms  # a shopper stays in one arm

    item = str(service.data.items[ds.ITEM_ID].iloc[0])
    visitor = client.get("/recommendations", {"items": item, "k": 5}).json()["recommendations"]["anonymous"]
    assert "experiment" not in visitor

    shown.flush()
    rows = {r.shopper_id: r for r in RecommendationList.objects.filter(experiment_id=experiment.pk)}
    assert {user: rows[user].arm for user in users} == arms
    assert RecommendationList.objects.get(shopper_id="").experiment_id is None  # the visitor's list


def test_an_arm_with_another_model_version_is_answered_by_it(service: Pipeline, client: APIClient, settings) -> None:
    other = _second_version(service, settings)
    experiment_start(experiment=_experiment("versions", ("old", 50, "", "served"), ("new", 50, other, "served")))
    answer = client.get("/recommendations", {"users": ",".join(_users(service)), "k": 5}).json()
    assert answer["model_version"] == service.version  # the active model
    by_arm = {entry["experiment"]["arm"]: entry["experiment"]["model_version"]
              for entry in answer["recommendations"].values()}
    assert by_arm == {"old": service.version, "new": other}


def test_stopping_sends_all_traffic_to_the_winner(service: Pipeline, client: APIClient, settings) -> None:
    other = _second_version(service, settings)
    experiment = experiment_start(experiment=_experiment(
        "stop", ("control", 50, "", "served"), ("pop-new", 50, other, "popular")))
    experiment_stop(experiment=experiment, winner=experiment.arms.get(name="pop-new"))
    assert artifacts.read_active(settings.RECO_MODELS_DIR) == other
    answer = client.get("/recommendations", {"users": ",".join(_users(service)), "k": 5}).json()
    assert answer["model_version"] == other
    assert all("experiment" not in e and e["strategy"] == "popular" for e in answer["recommendations"].values())
    assert Experiment.objects.get(pk=experiment.pk).status == Experiment.STOPPED

    experiment_start(experiment=_experiment("next"))  # the next experiment ends the promoted setting
    answer = client.get("/recommendations", {"users": ",".join(_users(service)), "k": 5}).json()
    assert {e["experiment"]["arm"] for e in answer["recommendations"].values()} == {"control", "pop"}


def _strategies(client: APIClient, users: str) -> set[str]:
    """The strategies the API answers ``users`` (comma-separated) with now (the plan read again)."""
    experiments.forget()
    return {e["strategy"] for e in client.get("/recommendations", {"users": users}).json()["recommendations"].values()}


def test_the_winners_setting_ends_when_another_model_is_activated(service: Pipeline, client: APIClient,
                                                                   settings) -> None:
    """A stopped experiment's "retrieval" winner went on ordering every later model (retrained, reloaded, rolled
    back to) without its learned ranking, with nothing saying so."""
    other = _second_version(service, settings)
    experiment = experiment_start(experiment=_experiment(
        "order", ("control", 50, "", "served"), ("plain", 50, other, "popular")))
    experiment_stop(experiment=experiment, winner=experiment.arms.get(name="plain"))
    assert Experiment.objects.get(pk=experiment.pk).winner_version == other
    users = ",".join(_users(service))

    assert _strategies(client, users) == {"popular"}
    model_reload(version=other)  # the winner's version again, while it is active: nothing changes
    assert _strategies(client, users) == {"popular"}
    model_reload(version=service.version)  # e.g. a reload
    assert "popular" not in _strategies(client, users)
    # Back to the winner's version (a rollback, the admin): a later activation, served with both stages (before:
    # the winner's setting came back, and a rollback made to get personal lists back gave every shopper the
    # popular products).
    assert retraining.model_rollback()["model_version"] == other
    assert "popular" not in _strategies(client, users)


def test_a_winner_named_without_a_version_keeps_its_setting_until_a_model_is_activated(
        service: Pipeline, client: APIClient, settings) -> None:
    other = _second_version(service, settings)
    experiment = experiment_start(experiment=_experiment(
        "blank", ("control", 50, "", "served"), ("pop", 50, "", "popular")))
    experiment_stop(experiment=experiment, winner=experiment.arms.get(name="pop"))  # the active version stays
    users = ",".join(_users(service))
    assert _strategies(client, users) == {"popular"}
    model_reload(version=other)
    model_reload(version=service.version)  # the winner's version again, by a later activation
    assert "popular" not in _strategies(client, users)


def test_the_winners_setting_ends_at_a_later_activation_whatever_the_hosts_clocks(service: Pipeline,
                                                                                   client: APIClient) -> None:
    """Activations are told apart by the order they were recorded in: a host whose clock is behind recorded a later
    activation with a time before the stop, and the winner's setting went on (times were compared)."""
    from datetime import timedelta

    from recoapi.recommendations.models import ModelActivation

    experiment = experiment_start(experiment=_experiment(
        "clocks", ("control", 50, "", "served"), ("pop", 50, "", "popular")))
    experiment_stop(experiment=experiment, winner=experiment.arms.get(name="pop"))
    users = ",".join(_users(service))

    assert _strategies(client, users) == {"popular"}
    stopped = Experiment.objects.get(pk=experiment.pk)
    ModelActivation.objects.create(version="20990101T000000Z", activated_at=stopped.stopped_at - timedelta(minutes=5))
    assert "popular" not in _strategies(client, users)


def test_batch_lists_follow_a_stopped_experiments_winner_as_the_api_does(service: Pipeline, client: APIClient,
                                                                         settings) -> None:
    """`recommend_batch` wrote both stages' lists while the API answered every shopper the winner's popular ones."""
    settings.RECO_PREWARM = False  # no text encoder loading on past the test's folder (the batch needs none)
    experiment = experiment_start(experiment=_experiment(
        "batch", ("control", 50, "", "served"), ("pop", 50, "", "popular")))
    experiment_stop(experiment=experiment, winner=experiment.arms.get(name="pop"))
    experiments.forget()
    users = _users(service)
    answer = client.get("/recommendations", {"users": ",".join(users), "k": 5}).json()["recommendations"]
    assert {e["strategy"] for e in answer.values()} == {"popular"}
    _, rows = recommendation_batch(user_ids=users, k=5)
    assert {u: [item for user, _, item, _ in rows if user == u] for u in users} == {
        u: [i["item_id"] for i in answer[u]["items"]] for u in users}


def test_experiments_that_cannot_run_are_refused(service: Pipeline, settings) -> None:
    with pytest.raises(ApplicationError, match="at least two arms"):
        experiment_start(experiment=_experiment("single", ("only", 100, "", "served")))
    with pytest.raises(ApplicationError, match="unknown model version"):
        experiment_start(experiment=_experiment("ghost", ("a", 50, "", "served"), ("b", 50, "nope", "served")))
    broken = _second_version(service, settings)
    (settings.RECO_MODELS_DIR / broken / "item_vectors.npy").write_bytes(b"garbage")
    with pytest.raises(ApplicationError, match="cannot be loaded"):
        experiment_start(experiment=_experiment("broken", ("a", 50, "", "served"), ("b", 50, broken, "served")))
    running = experiment_start(experiment=_experiment("first"))
    with pytest.raises(Conflict, match="is running"):
        experiment_start(experiment=_experiment("second"))
    with pytest.raises(ApplicationError, match="only a draft"):
        experiment_start(experiment=running)
    stranger = _experiment("stranger").arms.first()
    with pytest.raises(ApplicationError, match="not an arm"):
        experiment_stop(experiment=running, winner=stranger)


# --------------------------------------------------------------------------- results


def _wilson(count: int, total: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = count / total
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z / (1 + z * z / total) * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
    return centre - half, centre + half


def test_results_per_arm_match_a_computation_by_hand(service: Pipeline) -> None:
    """Simulated traffic: 200 lists per arm; the treatment's lists are clicked 40 times, the control's 20."""
    experiment = _experiment("hand", ("control", 50, "", "served"), ("treatment", 50, "", "retrieval"))
    experiment.status = Experiment.RUNNING
    experiment.save()
    products = list(Product.objects.order_by("id")[:12])
    Product.objects.filter(pk=products[0].pk).update(price=12.5)
    shopper = Shopper.objects.order_by("id").first()
    items = [p.id for p in products[:10]]
    now = timezone.now()
    lists, events = [], []
    for arm, clicked, bought in (("control", 20, 2), ("treatment", 40, 6)):
        for i in range(200):
            rid = f"{arm[0]}{i:031x}"
            lists.append(RecommendationList(id=rid, created_at=now, shopper_id=shopper.id, strategy="two_tower",
                                            model_version="v", items=items, experiment_id=experiment.pk, arm=arm))
            if i < clicked:
                events.append((rid, products[i % 10], "view"))
            if i < bought:
                events.append((rid, products[0], "purchase"))
        # not counted: an event on a product the list did not show, and one past the first k places
        events.append((f"{arm[0]}{199:031x}", products[11], "view"))
    RecommendationList.objects.bulk_create(lists)
    experiment.k = 9
    experiment.save()
    events.append((f"t{199:031x}", products[9], "view"))  # position 10: a view, but not a click within k = 9
    Interaction.objects.bulk_create([
        Interaction(shopper=shopper, product=product, occurred_at=datetime(2024, 1, 1, tzinfo=UTC), event=event,
                    source="live", recommendation_id=rid) for rid, product, event in events])

    report = experiments.results(Experiment.objects.get(pk=experiment.pk))
    control, treatment = report["arms"]
    assert report["control"] == "control" and report["k"] == 9
    # clicks on list i at position i % 10 + 1: those at position 10 (i = 9, 19, ...) are past k = 9
    assert (control["lists"], control["clicked_lists"], control["ctr"]) == (200, 18, 0.09)
    assert (treatment["lists"], treatment["clicked_lists"]) == (200, 36)
    assert (treatment["views"], treatment["purchases"], treatment["converted_lists"]) == (41, 6, 6)
    assert control["revenue"] == 25.0 and treatment["revenue"] == 75.0
    assert control["ctr_difference"] is None

    p1, p2 = 36 / 200, 18 / 200
    (l1, u1), (l2, u2) = _wilson(36, 200), _wilson(18, 200)
    low = (p1 - p2) - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = (p1 - p2) + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    pooled = 54 / 400
    z = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (2 / 200))
    got = treatment["ctr_difference"]
    assert got["value"] == pytest.approx(0.09, abs=1e-12)
    assert (got["low"], got["high"]) == (pytest.approx(low, abs=1e-9), pytest.approx(high, abs=1e-9))
    assert got["p_value"] == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), abs=1e-9)
    assert low > 0  # this much more clicking is told apart from chance
    conversion = treatment["conversion_difference"]
    assert conversion["value"] == pytest.approx(0.02) and conversion["low"] < 0 < conversion["high"]


def test_another_shoppers_event_sent_before_the_list_is_written_is_not_credited_to_it(
        service: Pipeline, client: APIClient, shown: impressions.ImpressionBuffer) -> None:
    """POST /events checks a list's shopper only once the list is written, a moment after its answer: another
    shopper's purchase sent meanwhile was stored and credited to the list (its arm's purchases, conversion and
    CTR, the dashboard's CTR and the list's attributed events in the admin)."""
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from recoapi.recommendations import dashboard, feedback

    staff = get_user_model().objects.create_user(username="ops", password="pw-123456", is_staff=True)
    staff_client = APIClient()
    staff_client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=staff).key}")
    experiment = experiment_start(experiment=_experiment())
    owner, other = _users(service, 2)
    entry = client.get("/recommendations", {"users": owner, "k": 5}).json()["recommendations"][owner]
    rid, first, second = entry["recommendation_id"], entry["items"][0]["item_id"], entry["items"][1]["item_id"]
    assert shown.pending() == 1  # not written yet: the event below is not checked
    stolen = staff_client.post("/events", {"user": other, "item": first, "event": "purchase",
                                           "recommendation_id": rid}, format="json")
    assert stolen.status_code == 201, stolen.content
    shown.flush()
    own = staff_client.post("/events", {"user": owner, "item": second, "event": "view", "recommendation_id": rid},
                            format="json")
    assert own.status_code == 201, own.content

    arm = next(row for row in experiments.results(experiment)["arms"] if row["name"] == entry["experiment"]["arm"])
    assert (arm["lists"], arm["clicked_lists"], arm["views"], arm["purchases"]) == (1, 1, 1, 0)
    assert (arm["converted_lists"], arm["revenue"]) == (0, None)
    assert [(a.position, a.event) for a in feedback.attributions(recommendation_ids=[rid])] == [(2, "view")]
    assert feedback.credited(list_shopper="", event_shopper=other)  # a visitor's list takes anyone's
    assert not feedback.credited(list_shopper="anonymous", event_shopper=other)  # a shopper of that id: their own

    Interaction.objects.filter(recommendation_id=rid, shopper_id=owner).delete()  # only the other's event is left
    assert experiments.results(experiment)["arms"][0]["clicked_lists"] + \
        experiments.results(experiment)["arms"][1]["clicked_lists"] == 0
    by_arm = dashboard.ctr_per_day(days=1, by="arm", experiment=experiment)
    assert by_arm.values == {entry["experiment"]["arm"]: [0.0]}


# --------------------------------------------------------------------------- admin


@pytest.fixture
def staff(service: Pipeline, admin_client: Client) -> Client:
    model_version_sync()
    return admin_client


def test_start_results_and_stop_from_the_admin(staff: Client, service: Pipeline, client: APIClient,
                                               shown: impressions.ImpressionBuffer) -> None:
    experiment = _experiment("admin-exp")
    url = f"/admin/recommendations/experiment/{experiment.pk}/change/"
    page = staff.get(url).content.decode()
    assert "Start the experiment" in page

    response = staff.post(f"/admin/recommendations/experiment/{experiment.pk}/start/", follow=True)
    assert "Experiment admin-exp is running." in response.content.decode()
    client.get("/recommendations", {"users": ",".join(_users(service)), "k": 5})
    shown.flush()
    page = staff.get(url).content.decode()
    assert "experiment-results" in page and "Stop: all traffic to pop" in page
    assert staff.get(f"/admin/recommendations/experiment/{experiment.pk}/start/").status_code == 405

    pop = experiment.arms.get(name="pop")
    response = staff.post(f"/admin/recommendations/experiment/{experiment.pk}/stop/{pop.pk}/", follow=True)
    assert "all traffic goes to arm pop" in response.content.decode()
    assert Experiment.objects.get(pk=experiment.pk).winner == pop
    experiments.forget()
    answer = client.get("/recommendations", {"users": ",".join(_users(service, 5)), "k": 5}).json()
    assert all(e["strategy"] == "popular" for e in answer["recommendations"].values())

    again = staff.post(f"/admin/recommendations/experiment/{experiment.pk}/start/", follow=True)
    assert "only a draft can start" in again.content.decode()


def test_the_admin_does_not_call_an_arm_without_lists_the_control(staff: Client, service: Pipeline) -> None:
    """Before the treatment's first list, its "minus control" cells read "control", as if it were the control."""
    experiment = experiment_start(experiment=_experiment("quiet"))
    RecommendationList.objects.create(id="c" * 32, created_at=timezone.now(), shopper_id="s", strategy="two_tower",
                                      model_version="v1", items=["p"], experiment_id=experiment.pk, arm="control")
    page = staff.get(f"/admin/recommendations/experiment/{experiment.pk}/change/").content.decode()
    rows = re.findall(r"<tr>(.*?)</tr>", page.split('class="experiment-results"')[1].split("</table>")[0], re.S)
    cells = [re.findall(r"<td>(.*?)</td>", row) for row in rows[1:]]
    assert [(row[0], row[8], row[13]) for row in cells] == [("control", "control", "control"), ("pop", "-", "-")]


def test_admin_start_and_stop_need_staff(service: Pipeline, client: Client, django_user_model) -> None:
    experiment = _experiment("guarded")
    django_user_model.objects.create_user(username="shopper", password="shopper-pass-1")
    client.login(username="shopper", password="shopper-pass-1")
    response = client.post(f"/admin/recommendations/experiment/{experiment.pk}/start/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")
    assert Experiment.objects.get(pk=experiment.pk).status == Experiment.DRAFT


def test_admin_start_and_stop_need_the_csrf_token(service: Pipeline, django_user_model) -> None:
    experiment = _experiment("forged")
    django_user_model.objects.create_superuser(username="boss", password="boss-pass-123", email="")
    browser = Client(enforce_csrf_checks=True)
    browser.login(username="boss", password="boss-pass-123")
    assert browser.post(f"/admin/recommendations/experiment/{experiment.pk}/start/").status_code == 403
    assert Experiment.objects.get(pk=experiment.pk).status == Experiment.DRAFT


def test_reviews_and_ratings_stored_with_a_list_id_are_not_attributed(service: Pipeline) -> None:
    """A review or rating stored with a list's id (POST /events refuses one now; an older version stored it) is not
    what a shopper did with the list: not a click (it counted as one), not a view, and never a crash; nor is it
    attributed on the admin's list page or counted in the dashboard's CTR."""
    from recoapi.recommendations import dashboard, feedback

    experiment = _experiment("reviews")
    product = Product.objects.order_by("id").first()
    shopper = Shopper.objects.order_by("id").first()
    RecommendationList.objects.create(id="a" * 32, created_at=timezone.now(), shopper_id=shopper.id,
                                      strategy="two_tower", model_version="v1", items=[product.id],
                                      experiment_id=experiment.pk, arm="pop")
    for event in ("review", "rating"):
        Interaction.objects.create(shopper=shopper, product=product, occurred_at=timezone.now(), event=event,
                                   source="live", recommendation_id="a" * 32)
    control, pop = experiments.results(experiment)["arms"]
    assert (pop["lists"], pop["clicked_lists"], pop["views"], pop["answered_by"]) == (1, 0, 0, ["v1"])
    assert control["lists"] == 0 and control["ctr"] is None and pop["ctr_difference"] is None
    assert feedback.attributions(recommendation_ids=["a" * 32]) == []
    assert feedback.summary()[0]["view"] == 0
    assert dashboard.ctr_per_day(days=1, by="arm", experiment=experiment).values == {"pop": [0.0]}
    Interaction.objects.create(shopper=shopper, product=product, occurred_at=timezone.now(), event="view",
                               source="live", recommendation_id="a" * 32)
    assert experiments.results(experiment)["arms"][1]["clicked_lists"] == 1  # a view of it is
    assert [a.event for a in feedback.attributions(recommendation_ids=["a" * 32])] == ["view"]
    assert dashboard.ctr_per_day(days=1, by="arm", experiment=experiment).values == {"pop": [1.0]}


def test_a_stop_whose_model_cannot_be_activated_leaves_the_experiment_running(service: Pipeline, settings) -> None:
    other = _second_version(service, settings)
    experiment = experiment_start(experiment=_experiment(
        "broken-winner", ("control", 50, "", "served"), ("new", 50, other, "served")))
    (settings.RECO_MODELS_DIR / other / "item_vectors.npy").write_bytes(b"garbage")
    with pytest.raises(ApplicationError, match="cannot be loaded"):
        experiment_stop(experiment=experiment, winner=experiment.arms.get(name="new"))
    assert Experiment.objects.get(pk=experiment.pk).status == Experiment.RUNNING
    assert artifacts.read_active(settings.RECO_MODELS_DIR) == service.version
