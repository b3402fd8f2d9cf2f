"""Admin page for model versions."""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from recoapi.exceptions import ApplicationError
from recoapi.recommendations.models import ModelVersion


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ("version", "created_at", "is_active", "hr_at_10", "popularity_hr_at_10")
    list_filter = ("is_active",)
    readonly_fields = ("version", "created_at", "is_active", "metrics", "params", "counts")
    actions = ["activate"]

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

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
