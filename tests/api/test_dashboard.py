"""The staff dashboard: each panel's numbers on data built by hand, the preview box, and who may see it."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from django.test import Client

from recoapi import metrics
from recoapi.catalog.models import Interaction, Product, Shopper
from recoapi.recommendations import dashboard, impressions
from recoapi.recommendations.models import Experiment, ExperimentArm, ModelVersion, RecommendationList
from recoapi.recommendations.services import model_version_sync
from tests.api.test_endpoints import a_known_user
from tests.conftest import Pipeline


@pytest.fixture
def staff(service: Pipeline, admin_client: Client) -> Client:
    model_version_sync()
    return admin_client


def _traffic(experiment: Experiment | None = None) -> list[str]:
    """Lists on 2024-03-01 (4 two_tower, 2 popular) and 2024-03-03 (2 two_tower); clicks on 3 of them.

    Returns the products shown."""
    products = [p.id for p in Product.objects.order_by("id")[:6]]
    shopper = Shopper.objects.order_by("id").first()
    day1, day3 = datetime(2024, 3, 1, 12, tzinfo=UTC), datetime(2024, 3, 3, 12, tzinfo=UTC)
    rows = [("a", day1, "two_tower", products[:3], "control"), ("b", day1, "two_tower", products[:3], "control"),
            ("c", day1, "two_tower", products[1:4], "treatment"), ("d", day1, "two_tower", products[1:4], "treatment"),
            ("e", day1, "popular", products[:2], "control"), ("f", day1, "popular", products[:2], "treatment"),
            ("g", day3, "two_tower", products[2:5], "control"), ("h", day3, "two_tower", products[2:5], "treatment")]
    RecommendationList.objects.bulk_create([
        RecommendationList(id=rid * 32, created_at=at, shopper_id=shopper.id, strategy=strategy, model_version="v",
                           items=items, experiment_id=experiment.pk if experiment else None,
                           arm=arm if experiment else "") for rid, at, strategy, items, arm in rows])
    clicks = [("a", products[0]), ("a", products[1]), ("c", products[3]), ("e", products[1]),
              ("g", products[5])]  # the last: a product list g did not show (not a click)
    Interaction.objects.bulk_create([
        Interaction(shopper=shopper, product_id=product, occurred_at=day1, event="view", source="live",
                    recommendation_id=rid * 32) for rid, product in clicks])
    return products[:5]


def test_ctr_per_strategy_and_per_arm_by_hand(service: Pipeline) -> None:
    experiment = Experiment.objects.create(name="e", status=Experiment.STOPPED)
    _traffic(experiment)
    ctr = dashboard.ctr_per_day(days=3)
    assert ctr.days == [date(2024, 3, 1), date(2024, 3, 2), date(2024, 3, 3)]
    assert ctr.values == {"popular": [0.5, None, None], "two_tower": [0.5, None, 0.0]}
    arms = dashboard.ctr_per_day(days=3, by="arm", experiment=experiment)
    assert arms.values == {"control": [2 / 3, None, 0.0], "treatment": [1 / 3, None, 0.0]}
    mix = dashboard.lists_per_day(days=3)
    assert mix.values == {"popular": [2, 0, 0], "two_tower": [4, 0, 2]}


def test_coverage_offline_metrics_and_latency(service: Pipeline) -> None:
    shown = _traffic()
    cover = dashboard.coverage()
    available = Product.objects.filter(available=True).count()
    assert (cover["lists"], cover["shown_products"], cover["available_products"]) == (8, 5, available)
    assert cover["coverage"] == pytest.approx(5 / available)
    assert cover["shows"] == sorted(cover["shows"], reverse=True) and sum(cover["shows"]) == 22
    assert len(shown) == 5
    # A product page's similar items show what is near one product: not what the recommendations cover.
    others = list(Product.objects.exclude(id__in=shown).values_list("id", flat=True)[:3])
    RecommendationList.objects.create(id=uuid.uuid4().hex, created_at=datetime.now(UTC), shopper_id="",
                                      strategy="similar_items", model_version="v", items=others)
    assert dashboard.coverage() == cover

    ModelVersion.objects.create(version="v1", created_at=datetime(2024, 1, 1, tzinfo=UTC),
                                metrics={"hybrid": {"ndcg@10": 0.2}, "popularity": {"ndcg@10": 0.1}})
    ModelVersion.objects.create(version="v2", created_at=datetime(2024, 2, 1, tzinfo=UTC),
                                metrics={"hybrid": {"ndcg@10": 0.3}})
    labels, values = dashboard.offline_metrics()
    assert labels[-2:] == ["v1", "v2"]  # oldest first (the service's own version sorts before "v")
    assert values["hybrid"][-2:] == [0.2, 0.3] and values["popularity"][-2:] == [0.1, None]

    endpoint = f"dashboard-test-{uuid.uuid4().hex}"  # the process's metrics outlive a test
    before = dashboard.latency(endpoint)
    assert before["requests"] == 0 and before["p50"] is None
    for seconds in (0.002, 0.003, 0.004, 0.2):  # three in the 5 ms bucket, one in the 250 ms bucket
        metrics.request_answered(endpoint, "GET", 200, seconds)
    got = dashboard.latency(endpoint)
    assert got["requests"] == 4 and got["p50"] == 0.005 and got["p99"] == 0.25
    assert sum(got["counts"]) == 4


def test_the_page_plots_every_panel_without_a_cdn(staff: Client, service: Pipeline) -> None:
    experiment = Experiment.objects.create(name="e", status=Experiment.RUNNING)
    ExperimentArm.objects.create(experiment=experiment, name="control")
    _traffic(experiment)
    page = staff.get("/admin/dashboard/").content.decode()
    for panel in ("events", "strategies", "ctr", "arms", "offline", "coverage"):
        section = page[page.index(f'id="chart-{panel}"'):]
        assert section.index("<svg") < section.index("</section>"), panel
    for remote in ('src="http', "src='http", 'href="http', "href='http", "url(http", "@import"):
        assert remote not in page  # nothing loaded from elsewhere: the plots are inline SVG
    assert "Dashboard: traffic" in staff.get("/admin/").content.decode()  # linked from the admin's index


def test_an_empty_shop_says_so(staff: Client, service: Pipeline) -> None:
    page = staff.get("/admin/dashboard/").content.decode()
    assert "No list shown yet." in page and "No experiment has shown a list yet." in page


def test_the_preview_box_answers_like_the_api_without_recording(staff: Client, service: Pipeline) -> None:
    user = a_known_user(service)
    pending = impressions.buffer.pending()
    page = staff.get("/admin/dashboard/", {"users": user, "k": "4"}).content.decode()
    table = page[page.index('class="preview-answer"'):]
    assert table[:table.index("</table>")].count("<tr>") == 5  # header and 4 products
    assert impressions.buffer.pending() == pending  # a preview is not a list shown to anybody
    assert "k: Ensure this value is less than or equal to 100." in staff.get(
        "/admin/dashboard/", {"users": user, "k": "500"}).content.decode()
    assert "None of the given products is known" in staff.get(
        "/admin/dashboard/", {"items": "no-such-product"}).content.decode()


def test_a_preview_is_not_counted_as_a_shopper_answered_in_the_metrics(staff: Client, service: Pipeline) -> None:
    """Each preview added its shoppers to recoapi_recommendations_total, the count of shoppers answered by
    GET/POST /recommendations, so the traffic a scrape showed included the staff's previews."""
    from prometheus_client import REGISTRY

    def answered() -> float:
        return sum(REGISTRY.get_sample_value("recoapi_recommendations_total", {"strategy": strategy}) or 0.0
                   for strategy in ("two_tower", "content", "popular"))

    before = answered()
    page = staff.get("/admin/dashboard/", {"users": f"{a_known_user(service)},nobody-at-all", "k": "3"})
    assert 'class="preview-answer"' in page.content.decode()
    assert answered() == before


def test_the_dashboard_is_for_staff_only(service: Pipeline, client: Client, django_user_model) -> None:
    assert client.get("/admin/dashboard/")["Location"].startswith("/admin/login/")
    django_user_model.objects.create_user(username="shopper", password="shopper-pass-1")
    client.login(username="shopper", password="shopper-pass-1")
    assert client.get("/admin/dashboard/")["Location"].startswith("/admin/login/")


def test_events_per_day_ends_at_the_newest_event(service: Pipeline) -> None:
    latest = Interaction.objects.order_by("-occurred_at").values_list("occurred_at", flat=True).first()
    series = dashboard.events_per_day(days=10)
    assert series.days[-1] == latest.date() and series.days[0] == latest.date() - timedelta(days=9)
    in_window = Interaction.objects.filter(occurred_at__date__gt=latest.date() - timedelta(days=10)).count()
    assert sum(sum(v) for v in series.values.values()) == in_window
