"""Admin page for model versions."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.actions import delete_selected as django_delete_selected
from django.contrib.admin.utils import quote, unquote
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse

from recoapi.exceptions import ApplicationError
from recoapi.recommendations.models import ModelVersion, RecommendationList, TrainingRun


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("version", "created_at", "is_active", "hr_at_10", "popularity_hr_at_10")
    list_filter = ("is_active",)
    readonly_fields = ("version", "created_at", "is_active", "metrics", "params", "counts")
    actions = ["activate", "delete_selected"]

    @admin.display(description="HR@10")
    def hr_at_10(self, obj: ModelVersion) -> str:
        value = obj.metrics.get("two_tower", {}).get("hr@10")
        return "-" if value is None else f"{value:.4f}"

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
        """Django's bulk delete (confirmation page first), refused when the active version is selected."""
        if not self._deletable(request, list(queryset.values_list("version", flat=True))):
            return None
        return django_delete_selected(self, request, queryset)

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
                    ) -> HttpResponse:
        """The change page's Delete: the active version goes back to its page with the reason."""
        if not self._deletable(request, [unquote(object_id)]):
            return HttpResponseRedirect(
                reverse("admin:recommendations_modelversion_change", args=[quote(unquote(object_id))]))
        return super().delete_view(request, object_id, extra_context)

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


@admin.register(RecommendationList)
class RecommendationListAdmin(admin.ModelAdmin):
    """Every list the API answered (read-only), with the events attributed to it."""

    list_display = ("created_at", "shopper_id", "strategy", "model_version", "shown")
    list_filter = ("strategy", "model_version")
    search_fields = ("=id", "=shopper_id")
    search_help_text = "Search by exact recommendation id or shopper id."
    readonly_fields = ("id", "created_at", "shopper_id", "strategy", "model_version", "items", "attributed")
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: RecommendationList | None = None) -> bool:
        return False

    @admin.display(description="products shown")
    def shown(self, obj: RecommendationList) -> int:
        return len(obj.items)

    @admin.display(description="attributed events (position: event product)")
    def attributed(self, obj: RecommendationList) -> str:
        from recoapi.recommendations.feedback import attributions

        rows = sorted(attributions(recommendation_ids=[obj.id]), key=lambda a: (a.position, a.interaction_id))
        return ", ".join(f"{a.position}: {a.event} {obj.items[a.position - 1]}" for a in rows) or "none"
