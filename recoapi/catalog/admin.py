"""Admin pages for shoppers, products and interactions."""

from __future__ import annotations

from django.contrib import admin
from django.utils.html import format_html_join

from recoapi.catalog.models import Interaction, Product, Shopper
from recoapi.exceptions import ApplicationError


class InteractionInline(admin.TabularInline):
    model = Interaction
    fk_name = "shopper"
    fields = ("occurred_at", "event", "product", "rating")
    readonly_fields = fields
    ordering = ("-occurred_at",)
    extra = 0
    max_num = 0
    can_delete = False
    show_change_link = False

    def get_queryset(self, request):  # type: ignore[no-untyped-def]
        return super().get_queryset(request).select_related("product")


@admin.register(Shopper)
class ShopperAdmin(admin.ModelAdmin):
    search_fields = ("id",)
    list_display = ("id", "created_at")
    show_full_result_count = False
    readonly_fields = ("id", "created_at", "current_recommendations")
    inlines = [InteractionInline]

    @admin.display(description="Current top-10 (active model)")
    def current_recommendations(self, obj: Shopper) -> str:
        from recoapi.recommendations.services import recommendation_list

        try:
            result = recommendation_list(user_ids=[obj.id], k=10)
        except ApplicationError as exc:
            return exc.message
        entry = result["recommendations"][obj.id]
        rows = format_html_join(
            "", "<li>{} — {} (score {})</li>",
            ((item["item_id"], item["title"] or "(no title)", f"{item['score']:.3f}") for item in entry["items"]),
        )
        return format_html_join("", "<p>Model {}, strategy <b>{}</b></p><ol>{}</ol>",
                                [(result["model_version"], entry["strategy"], rows)])


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    search_fields = ("id", "title", "brand")
    list_display = ("id", "title", "brand", "category", "price")
    list_filter = ("category", "brand")
    show_full_result_count = False


@admin.register(Interaction)
class InteractionAdmin(admin.ModelAdmin):
    list_display = ("occurred_at", "shopper", "event", "product", "rating")
    list_filter = ("event", "occurred_at")
    list_select_related = ("shopper", "product")
    raw_id_fields = ("shopper", "product")
    show_full_result_count = False
