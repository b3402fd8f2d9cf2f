"""Admin page for model versions."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from recoapi.exceptions import ApplicationError
from recoapi.recommendations.models import (
    Experiment,
    ExperimentArm,
    ModelActivation,
    ModelVersion,
    RecommendationList,
    TrainingRun,
)


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("version", "created_at", "is_active", "hr_at_10", "popularity_hr_at_10", "servable")
    list_filter = ("is_active",)
    readonly_fields = ("version", "created_at", "is_active", "metrics", "params", "counts")
    actions = ["activate", "delete_selected"]

    @admin.display(description="HR@10 (served)")
    def hr_at_10(self, obj: ModelVersion) -> str:
        """The served model's test HR@10, both stages (the two-tower alone's for versions that did not record it)."""
        metrics = obj.metrics.get("hybrid") or obj.metrics.get("two_tower", {})
        value = metrics.get("hr@10")
        return "-" if value is None else f"{value:.4f}"

    @admin.display(description="Served by this version")
    def servable(self, obj: ModelVersion) -> str:
        """"no" and why for a bundle trained by another version of the service (after an upgrade), which cannot be
        activated; "yes" otherwise (as far as its manifest and ranking stage's metadata tell)."""
        from recoapi.recommendations import model_store

        problem = model_store.incompatibility(obj.version)
        return f"no: {problem}" if problem else "yes"

    @admin.display(description="Popularity HR@10")
    def popularity_hr_at_10(self, obj: ModelVersion) -> str:
        value = obj.metrics.get("popularity", {}).get("hr@10")
        return "-" if value is None else f"{value:.4f}"

    @admin.action(description="Activate the selected version")
    def activate(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> None:
        from recoapi.recommendations.services import model_reload

        if queryset.count() != 1:
            self.message_user(request, "Select exactly one version.", messages.ERROR)
            return
        try:
            result = model_reload(version=queryset.get().version)
        except ApplicationError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return
        self.message_user(request, f"Model {result['model_version']} is active.", messages.SUCCESS)

    @admin.action(permissions=["delete"], description="Delete selected model versions")
    def delete_selected(self, request: HttpRequest, queryset: QuerySet[ModelVersion]) -> HttpResponse | None:
        """Django's bulk delete confirmation page, then the versions' bundles and rows deleted (:meth:`_delete`);
        refused when the active version is selected."""
        versions = list(queryset.values_list("version", flat=True))
        if not self._deletable(request, versions):
            return None
        if request.POST.get("post"):  # confirmed
            self._delete(request, versions)
            return None
        return django_delete_selected(self, request, queryset)

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
                    ) -> HttpResponse:
        """The change page's Delete: the active version goes back to its page with the reason; the confirmation
        deletes the bundle with the row (:meth:`_delete`)."""
        version = unquote(object_id)
        if not self._deletable(request, [version]):
            return HttpResponseRedirect(
                reverse("admin:recommendations_modelversion_change", args=[quote(version)]))
        obj = ModelVersion.objects.filter(pk=version).first()
        if request.method == "POST" and obj is not None:
            if not self.has_delete_permission(request, obj):
                raise PermissionDenied
            self._delete(request, [version])
            return HttpResponseRedirect(reverse("admin:recommendations_modelversion_changelist"))
        return super().delete_view(request, object_id, extra_context)

    def _delete(self, request: HttpRequest, versions: list[str]) -> None:
        """Delete the versions' bundles with their rows (a row deleted alone came back at the next listing of the
        bundles) and say what was done."""
        from recoapi.recommendations.services import model_version_check_deletable, model_version_delete

        try:
            model_version_check_deletable(versions=versions)
            self.log_deletions(request, ModelVersion.objects.filter(pk__in=versions))  # the admin's history
            deleted = model_version_delete(versions=versions)
        except ApplicationError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return
        self.message_user(request, f"Deleted {len(deleted)} model version{'s' if len(deleted) != 1 else ''} and "
                          f"{'their bundles' if len(deleted) != 1 else 'its bundle'}: {', '.join(deleted)}.",
                          messages.SUCCESS)

    def _deletable(self, request: HttpRequest, versions: list[str]) -> bool:
        from recoapi.recommendations.services import model_version_check_deletable

        try:
            model_version_check_deletable(versions=versions)
        except ApplicationError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            return False
        return True

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False


@admin.register(TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    """Every `manage.py retrain`, read-only: what it trained on, both models on the held-out interactions,
    the decision and why."""

    list_display = ("started_at", "decision", "candidate_version", "previous_version", "candidate_recall",
                    "previous_recall", "interactions", "seconds")
    list_filter = ("decision",)
    readonly_fields = [field.name for field in TrainingRun._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: TrainingRun | None = None) -> bool:
        return False

    @admin.display(description="candidate recall@10")
    def candidate_recall(self, obj: TrainingRun) -> str:
        value = obj.candidate_metrics.get("recall@10")
        return "-" if value is None else f"{value:.4f}"

    @admin.display(description="previous recall@10")
    def previous_recall(self, obj: TrainingRun) -> str:
        value = obj.previous_metrics.get("recall@10")
        return "-" if value is None else f"{value:.4f}"

    @admin.display(description="interactions")
    def interactions(self, obj: TrainingRun) -> str:
        value = obj.data_counts.get("interactions")
        return "-" if value is None else f"{value:,}"


@admin.register(ModelActivation)
class ModelActivationAdmin(admin.ModelAdmin):
    """When each model version became active, read-only (``rollback`` returns to the one before the active)."""

    list_display = ("activated_at", "version")
    readonly_fields = ("activated_at", "version")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: ModelActivation | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: ModelActivation | None = None) -> bool:
        return False  # the record rollback reads: not edited by hand


@admin.register(RecommendationList)
class RecommendationListAdmin(admin.ModelAdmin):
    """Every list the API answered (read-only), with the events attributed to it."""

    list_display = ("created_at", "shopper", "strategy", "model_version", "arm", "shown")
    list_filter = ("strategy", "model_version", "arm")
    search_fields = ("=id", "=shopper_id")
    search_help_text = "Search by exact recommendation id or shopper id."
    readonly_fields = ("id", "created_at", "shopper_id", "strategy", "model_version", "experiment_id", "arm", "items",
                       "attributed")
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: RecommendationList | None = None) -> bool:
        return False

    @admin.display(description="shopper id", ordering="shopper_id")
    def shopper(self, obj: RecommendationList) -> str:
        return obj.shopper_id or "(none: a visitor's, or a product page's)"

    @admin.display(description="products shown")
    def shown(self, obj: RecommendationList) -> int:
        return len(obj.items)

    @admin.display(description="attributed events (position: event product)")
    def attributed(self, obj: RecommendationList) -> str:
        from recoapi.recommendations.feedback import attributions

        rows = sorted(attributions(recommendation_ids=[obj.id]), key=lambda a: (a.position, a.interaction_id))
        return ", ".join(f"{a.position}: {a.event} {obj.items[a.position - 1]}" for a in rows) or "none"


class ExperimentArmInline(admin.TabularInline):
    """The arms; editable only while the experiment is a draft (a running split must not move)."""

    model = ExperimentArm
    extra = 2
    fields = ("name", "share", "model_version", "setting")

    def has_add_permission(self, request: HttpRequest, obj: Experiment | None = None) -> bool:
        return (obj is None or obj.status == Experiment.DRAFT) and super().has_add_permission(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Experiment | None = None) -> bool:
        return (obj is None or obj.status == Experiment.DRAFT) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Experiment | None = None) -> bool:
        return (obj is None or obj.status == Experiment.DRAFT) and super().has_delete_permission(request, obj)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _difference(value: dict[str, float] | None, *, control: bool) -> str:
    """An arm's difference from the control as the results table shows it: "control" on the control's row, "-"
    while either arm has no lists (no difference to compute)."""
    if value is None:
        return "control" if control else "-"
    return (f"{100 * value['value']:+.2f} pp [{100 * value['low']:+.2f}, {100 * value['high']:+.2f}], "
            f"p = {value['p_value']:.3g}")


@admin.register(Experiment)
class ExperimentAdmin(admin.ModelAdmin):
    """A/B tests: define the arms, start, read the results per arm, stop and send all traffic to the winner."""

    list_display = ("name", "status", "started_at", "stopped_at", "winner", "arm_list")
    list_filter = ("status",)
    fields = ("name", "description", "k", "status", "started_at", "stopped_at", "winner", "controls", "results")
    readonly_fields = ("status", "started_at", "stopped_at", "winner", "controls", "results")
    inlines = [ExperimentArmInline]
    save_on_top = True  # Enter in a field submits the first button of the form: Save, never Start or Stop

    def get_readonly_fields(self, request: HttpRequest, obj: Experiment | None = None) -> tuple[str, ...]:
        """``k`` is fixed once the experiment has started (CTR@k would change after the fact)."""
        fixed = obj is not None and obj.status != Experiment.DRAFT
        return (*self.readonly_fields, *(("k",) if fixed else ()))

    @admin.display(description="arms")
    def arm_list(self, obj: Experiment) -> str:
        return ", ".join(f"{arm.name} ({arm.share})" for arm in obj.arms.all())

    @admin.display(description="actions")
    def controls(self, obj: Experiment) -> str:
        """Buttons that post the page's form (and its CSRF token) to the start or stop view."""
        if obj.pk is None:
            return "Save the experiment with its arms first; then start it here."
        if obj.status == Experiment.DRAFT:
            return format_html('<button type="submit" class="button" name="start" formaction="{}">Start the '
                               'experiment</button> (save changes to the arms first)',
                               reverse("admin:recommendations_experiment_start", args=[obj.pk]))
        if obj.status == Experiment.RUNNING:
            return format_html_join(
                " ", '<button type="submit" class="button" name="stop-{}" formaction="{}">Stop: all traffic to '
                '{}</button>', ((arm.pk, reverse("admin:recommendations_experiment_stop", args=[obj.pk, arm.pk]),
                                 arm.name) for arm in obj.arms.all()))
        return f"Stopped; all traffic went to {obj.winner.name if obj.winner else 'no arm'}."

    @admin.display(description="results")
    def results(self, obj: Experiment) -> str:
        from recoapi.recommendations import experiments

        if obj.pk is None or obj.status == Experiment.DRAFT:
            return "-"
        report = experiments.results(obj)
        header = format_html("<tr><th>arm</th><th>model</th><th>answered by</th><th>setting</th><th>share</th>"
                             "<th>lists</th>"
                             "<th>shoppers</th><th>CTR@{}</th><th>CTR minus control (95% Newcombe; z-test)</th>"
                             "<th>views</th><th>carts</th><th>purchases</th><th>conversion</th>"
                             "<th>conversion minus control</th><th>revenue</th></tr>", report["k"])
        rows = format_html_join("", "<tr>" + "<td>{}</td>" * 15 + "</tr>", (
            (row["name"], row["model_version"] or "active", ", ".join(row["answered_by"]) or "-", row["setting"],
             row["share"], row["lists"],
             row["shoppers"], _percent(row["ctr"]),
             _difference(row["ctr_difference"], control=row["name"] == report["control"]), row["views"], row["carts"],
             row["purchases"], _percent(row["conversion"]),
             _difference(row["conversion_difference"], control=row["name"] == report["control"]),
             "-" if row["revenue"] is None else f"{row['revenue']:,.2f}") for row in report["arms"]))
        return format_html('<table class="experiment-results">{}{}</table>', header, rows)

    def get_urls(self) -> list[Any]:
        return [
            path("<int:object_id>/start/", self.admin_site.admin_view(self.start_view),
                 name="recommendations_experiment_start"),
            path("<int:object_id>/stop/<int:arm_id>/", self.admin_site.admin_view(self.stop_view),
                 name="recommendations_experiment_stop"),
            *super().get_urls(),
        ]

    def start_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        from recoapi.recommendations.services import experiment_start

        experiment = self._posted(request, object_id)
        if isinstance(experiment, HttpResponse):
            return experiment
        try:
            experiment_start(experiment=experiment)
        except ApplicationError as exc:
            self.message_user(request, exc.message, messages.ERROR)
        else:
            self.message_user(request, f"Experiment {experiment.name} is running.", messages.SUCCESS)
        return self._back(experiment)

    def stop_view(self, request: HttpRequest, object_id: int, arm_id: int) -> HttpResponse:
        from recoapi.recommendations.services import experiment_stop

        experiment = self._posted(request, object_id)
        if isinstance(experiment, HttpResponse):
            return experiment
        arm = get_object_or_404(ExperimentArm, pk=arm_id, experiment=experiment)
        try:
            experiment_stop(experiment=experiment, winner=arm)
        except ApplicationError as exc:
            self.message_user(request, exc.message, messages.ERROR)
        else:
            self.message_user(request, f"Experiment {experiment.name} stopped: all traffic goes to arm {arm.name}"
                              + (f" (model {arm.model_version} is active)." if arm.model_version else "."),
                              messages.SUCCESS)
        return self._back(experiment)

    def _posted(self, request: HttpRequest, object_id: int) -> Experiment | HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        experiment = get_object_or_404(Experiment, pk=object_id)
        if not self.has_change_permission(request, experiment):
            raise PermissionDenied
        return experiment

    @staticmethod
    def _back(experiment: Experiment) -> HttpResponse:
        return HttpResponseRedirect(reverse("admin:recommendations_experiment_change", args=[experiment.pk]))
