"""Staff pages of the admin beyond the model pages: the dashboard (plots and a preview box)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from recoapi.exceptions import ApplicationError
from recoapi.recommendations import charts, dashboard
from recoapi.recommendations.serializers import RecommendationsInput

PREVIEW_FIELDS = ("users", "items", "text", "k")


def dashboard_view(request: HttpRequest, site: Any) -> HttpResponse:
    """GET /admin/dashboard/ (staff): overview counts, the plots, and the preview box's answer."""
    overview = dashboard.overview()
    lists = dashboard.lists_per_day()
    ctr = dashboard.ctr_per_day()
    experiment = dashboard.latest_experiment()
    arms = dashboard.ctr_per_day(by="arm", experiment=experiment)
    events = dashboard.events_per_day()
    labels, offline = dashboard.offline_metrics()
    coverage = dashboard.coverage()
    latency = dashboard.latency()
    context = {
        **site.each_context(request),
        "title": "Dashboard",
        "overview": overview,
        "coverage": coverage,
        "latency": latency,
        "experiment": experiment,
        "charts": {
            "events": charts.stacked_bars(events.days, events.values, ylabel="events per day"),
            "strategies": charts.stacked_bars(lists.days, lists.values, ylabel="lists shown per day",
                                              empty="No list shown yet."),
            "latency": charts.latency(latency["bounds"], latency["counts"]),
            "ctr": charts.lines(ctr.days, ctr.values, ylabel="CTR", percent=True, empty="No list shown yet."),
            "arms": charts.lines(arms.days, arms.values, ylabel="CTR", percent=True,
                                 empty="No experiment has shown a list yet."),
            "offline": charts.versions(labels, offline, ylabel="NDCG@10 (held-out test items)"),
            "coverage": charts.long_tail(coverage["shows"], coverage["available_products"]),
        },
        "preview": _preview(request),
    }
    return TemplateResponse(request, "admin/recommendations/dashboard.html", context)


def _preview(request: HttpRequest) -> dict[str, Any]:
    """The preview box: what GET /recommendations would answer for the form's parameters (not recorded)."""
    from recoapi.recommendations.services import recommendation_list

    asked = {name: request.GET[name].strip() for name in PREVIEW_FIELDS if request.GET.get(name, "").strip()}
    # (the template reads ``product_ids``: ``asked.items`` would be the dict's method when none were asked)
    preview: dict[str, Any] = {"asked": {**asked, "product_ids": asked.get("items", "")}, "errors": [],
                               "answer": None}
    if not asked.keys() - {"k"}:
        return preview
    data = RecommendationsInput(data={**asked, "explain": True})
    if not data.is_valid():
        preview["errors"] = [f"{field}: {' '.join(map(str, errors))}" for field, errors in data.errors.items()]
        return preview
    v = data.validated_data
    try:
        preview["answer"] = recommendation_list(user_ids=v.get("users", []), k=v["k"], context_items=v.get("items"),
                                                context_text=v.get("text"), explain=True, record=False)
    except ApplicationError as exc:
        preview["errors"] = [exc.message]
    return preview
