"""Admin pages: content, search, and a bounded number of queries per page."""

from __future__ import annotations

import pytest
from django.test import Client

from modeling import datasets as ds
from recoapi.catalog.models import Interaction
from recoapi.recommendations.models import ModelActivation, ModelVersion
from recoapi.recommendations.services import model_version_sync
from tests.conftest import Pipeline


@pytest.fixture
def staff(service: Pipeline, admin_client: Client) -> Client:
    model_version_sync()
    return admin_client


@pytest.mark.parametrize("url", ["/admin/catalog/shopper/", "/admin/catalog/product/",
                                 "/admin/catalog/interaction/", "/admin/recommendations/modelversion/",
                                 "/admin/recommendations/modelactivation/"])
def test_list_pages_use_a_fixed_number_of_queries(staff: Client, url: str, django_assert_max_num_queries) -> None:
    with django_assert_max_num_queries(12):
        response = staff.get(url)
    assert response.status_code == 200


def test_shopper_page_shows_history_and_top_10(staff: Client, service: Pipeline) -> None:
    shopper = str(service.data.interactions[ds.USER_ID].iloc[0])
    page = staff.get(f"/admin/catalog/shopper/{shopper}/change/").content.decode()
    assert "strategy <b>two_tower</b>" in page
    assert page.count("<tr>") >= 10 + Interaction.objects.filter(shopper_id=shopper).count()
    # Each recommended product says which of the shopper's products it comes from (explain=true).
    top = page.split('<table class="reco-table">')[1].split("</table>")[0]
    assert "<th>because of</th>" in top
    history = set(Interaction.objects.filter(shopper_id=shopper).values_list("product_id", flat=True))
    cells = [row.split("<td>")[-1].split(" (")[0] for row in top.split("<tbody>")[1].split("</tr>") if "<td>" in row]
    assert len(cells) == 10 and set(cells) <= history


def test_shopper_search_by_id_prefix(staff: Client, service: Pipeline) -> None:
    shopper = str(service.data.interactions[ds.USER_ID].iloc[0])
    page = staff.get("/admin/catalog/shopper/", {"q": shopper[:-1]}).content.decode()
    assert shopper in page


def test_product_page_lists_nearest_products_and_search_finds_titles(staff: Client, service: Pipeline) -> None:
    item = service.data.items.iloc[0]
    page = staff.get(f"/admin/catalog/product/{item[ds.ITEM_ID]}/change/").content.decode()
    assert "Nearest products" in page and "similarity" in page
    found = staff.get("/admin/catalog/product/", {"q": item[ds.TITLE].split()[0]}).content.decode()
    assert item[ds.ITEM_ID] in found


def test_interactions_filter_by_event(staff: Client) -> None:
    assert staff.get("/admin/catalog/interaction/", {"event__exact": "review"}).status_code == 200


def test_model_version_action_activates(staff: Client, service: Pipeline, settings) -> None:
    import shutil

    from modeling import artifacts

    other = "20990101T000000Z"
    shutil.copytree(settings.RECO_MODELS_DIR / service.version, settings.RECO_MODELS_DIR / other)
    model_version_sync()
    response = staff.post("/admin/recommendations/modelversion/",
                          {"action": "activate", "_selected_action": [other]}, follow=True)
    assert f"Model {other} is active." in response.content.decode()
    assert artifacts.read_active(settings.RECO_MODELS_DIR) == other
    assert ModelVersion.objects.get(version=other).is_active
    assert not ModelVersion.objects.get(version=service.version).is_active
    assert ModelActivation.objects.values_list("version", flat=True).first() == other  # what rollback reads
    page = staff.get("/admin/recommendations/modelactivation/").content.decode()
    assert other in page and "Delete selected" not in page
    record = ModelActivation.objects.first()
    assert staff.get(f"/admin/recommendations/modelactivation/{record.pk}/delete/").status_code == 403


@pytest.mark.parametrize("url", ["/admin/", "/admin/catalog/shopper/", "/admin/recommendations/modelversion/"])
def test_admin_needs_a_staff_login(service: Pipeline, client: Client, django_user_model, url: str) -> None:
    anonymous = client.get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/admin/login/")
    django_user_model.objects.create_user(username="shopper", password="shopper-pass-1")
    client.login(username="shopper", password="shopper-pass-1")
    not_staff = client.get(url)
    assert not_staff.status_code == 302 and not_staff["Location"].startswith("/admin/login/")


def _second_version(service: Pipeline, settings) -> str:
    import shutil

    other = "20990101T000000Z"
    shutil.copytree(settings.RECO_MODELS_DIR / service.version, settings.RECO_MODELS_DIR / other)
    model_version_sync()
    return other


def test_active_model_version_cannot_be_deleted_from_its_page(staff: Client, service: Pipeline, settings) -> None:
    """Issue 12: the change page's Delete refuses the active version and says why."""
    url = f"/admin/recommendations/modelversion/{service.version}/delete/"
    for response in (staff.get(url, follow=True), staff.post(url, {"post": "yes"}, follow=True)):
        page = response.content.decode()
        assert response.redirect_chain[-1][0].endswith(f"/modelversion/{service.version}/change/")
        assert f"Model {service.version} is the active model and cannot be deleted" in page
        assert "Activate another version first" in page
    assert ModelVersion.objects.filter(version=service.version, is_active=True).exists()


def test_active_model_version_cannot_be_bulk_deleted(staff: Client, service: Pipeline, settings) -> None:
    """Issue 12: the bulk delete action refuses a selection holding the active version; nothing is deleted."""
    other = _second_version(service, settings)
    for extra in ({}, {"post": "yes"}):  # the action, and the confirmation page's answer
        response = staff.post("/admin/recommendations/modelversion/",
                              {"action": "delete_selected", "_selected_action": [service.version, other], **extra},
                              follow=True)
        assert f"Model {service.version} is the active model and cannot be deleted" in response.content.decode()
    assert set(ModelVersion.objects.values_list("version", flat=True)) == {service.version, other}


def test_inactive_model_version_is_deleted_after_confirmation(staff: Client, service: Pipeline, settings) -> None:
    other = _second_version(service, settings)
    confirm = staff.post("/admin/recommendations/modelversion/",
                         {"action": "delete_selected", "_selected_action": [other]})
    assert "<title>Delete multiple objects" in confirm.content.decode()
    done = staff.post("/admin/recommendations/modelversion/",
                      {"action": "delete_selected", "_selected_action": [other], "post": "yes"}, follow=True)
    assert f"Deleted 1 model version and its bundle: {other}." in done.content.decode()
    assert not ModelVersion.objects.filter(version=other).exists()
    # The bundle went with the row: the next listing of the bundles does not bring the row back.
    assert not (settings.RECO_MODELS_DIR / other).exists()
    model_version_sync()
    assert not ModelVersion.objects.filter(version=other).exists()
    page = staff.post(f"/admin/recommendations/modelversion/{service.version}/delete/", follow=True)
    assert ModelVersion.objects.filter(version=service.version).exists()
    assert "cannot be deleted" in page.content.decode()


def test_change_page_delete_removes_the_bundle(staff: Client, service: Pipeline, settings) -> None:
    """A version deleted from its page stays deleted: before, only its row went, and the bundle left in models/
    brought it back at the next sync (any reload or training)."""
    from modeling import artifacts

    other = _second_version(service, settings)
    url = f"/admin/recommendations/modelversion/{other}/delete/"
    assert "Are you sure" in staff.get(url).content.decode()
    page = staff.post(url, {"post": "yes"}, follow=True)
    assert f"Deleted 1 model version and its bundle: {other}." in page.content.decode()
    assert not (settings.RECO_MODELS_DIR / other).exists()
    assert artifacts.list_versions(settings.RECO_MODELS_DIR) == [service.version]
    from django.contrib.admin.models import DELETION, LogEntry

    assert LogEntry.objects.filter(action_flag=DELETION, object_id=other).exists()  # in the admin's history
    assert (settings.RECO_MODELS_DIR / service.version / "manifest.json").is_file()
    model_version_sync()
    assert list(ModelVersion.objects.values_list("version", flat=True)) == [service.version]


def test_the_version_list_says_which_bundles_this_version_cannot_serve(staff: Client, service: Pipeline,
                                                                       settings) -> None:
    """After an upgrade the earlier version's bundles looked like any other; activating one said "damaged"."""
    import json

    from modeling.reranker import FEATURES

    other = _second_version(service, settings)
    stage = settings.RECO_MODELS_DIR / other / "ranking_stage" / "stage.json"
    stage.write_text(json.dumps({**json.loads(stage.read_text()), "features": list(FEATURES[:-2])}))
    page = staff.get("/admin/recommendations/modelversion/").content.decode()
    assert "Served by this version" in page and page.count("trained by another version of the service") == 1
    response = staff.post("/admin/recommendations/modelversion/",
                          {"action": "activate", "_selected_action": [other]}, follow=True)
    assert "trained by another version of the service" in response.content.decode()
    assert ModelVersion.objects.get(version=service.version).is_active


def test_a_version_in_the_running_experiment_cannot_be_deleted(staff: Client, service: Pipeline,
                                                               settings) -> None:
    from recoapi.recommendations.models import Experiment, ExperimentArm

    other = _second_version(service, settings)
    experiment = Experiment.objects.create(name="test", status=Experiment.RUNNING)
    ExperimentArm.objects.create(experiment=experiment, name="new", share=50, model_version=other)
    ExperimentArm.objects.create(experiment=experiment, name="old", share=50)
    page = staff.post("/admin/recommendations/modelversion/",
                      {"action": "delete_selected", "_selected_action": [other], "post": "yes"}, follow=True)
    assert f"Model {other} is an arm of the running experiment and cannot be deleted" in page.content.decode()
    assert (settings.RECO_MODELS_DIR / other).is_dir() and ModelVersion.objects.filter(version=other).exists()


def test_shopper_list_shows_interaction_count_and_last_activity(staff: Client, service: Pipeline,
                                                                 django_assert_max_num_queries) -> None:
    """Issue 12: the list shows each shopper's count and latest event, from one query over the page's rows."""
    from django.db.models import Count, Max

    expected = {row["shopper_id"]: row for row in Interaction.objects.values("shopper_id").order_by()
                .annotate(n=Count("id"), last=Max("occurred_at"))}
    with django_assert_max_num_queries(12):
        response = staff.get("/admin/catalog/shopper/")
    page = response.content.decode()
    assert "Interactions" in page and "Last activity" in page
    shown = response.context["cl"].result_list
    assert len(shown) == 50
    for shopper in shown:
        count, last = shopper.activity
        assert count == expected[shopper.id]["n"] and last == expected[shopper.id]["last"]
    first = shown[0]
    row = page[page.index(f">{first.id}</a>"):]
    row = row[: row.index("</tr>")]
    assert f'<td class="field-interaction_count">{expected[first.id]["n"]}</td>' in row


def test_shopper_without_interactions_shows_zero(staff: Client, service: Pipeline) -> None:
    from recoapi.catalog.models import Shopper

    Shopper.objects.create(id="0-newcomer")  # sorts first
    page = staff.get("/admin/catalog/shopper/").content.decode()
    row = page[page.index(">0-newcomer</a>"):]
    row = row[: row.index("</tr>")]
    assert '<td class="field-interaction_count">0</td>' in row
    assert '<td class="field-last_activity">-</td>' in row


def test_the_recommendation_lists_page_tells_a_visitor_s_list_from_a_shopper_s(staff: Client) -> None:
    """A visitor's list (or a product page's) is stored with an empty shopper id (no shopper has one): the page says
    it has none."""
    from django.utils import timezone

    from recoapi.recommendations.models import RecommendationList

    for rid, shopper in (("a" * 32, ""), ("b" * 32, "anonymous")):
        RecommendationList.objects.create(id=rid, created_at=timezone.now(), shopper_id=shopper, strategy="content",
                                          model_version="v", items=["p1"])
    page = staff.get("/admin/recommendations/recommendationlist/").content.decode()
    assert page.count("(none: a visitor&#x27;s, or a product page&#x27;s)") == 1 and ">anonymous<" in page
