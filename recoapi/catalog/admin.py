"""Admin pages for shoppers, products and interactions.

List pages stay fast on large tables: no full COUNT(*) for unfiltered lists (an
estimate from the database statistics instead), related rows fetched in the same
query, and no per-row queries.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.core.paginator import Paginator
from django.db import connection
from django.utils.functional import cached_property
from django.utils.html import format_html, format_html_join

from recoapi.catalog.models import Interaction, Product, Shopper
from recoapi.catalog.selectors import shopper_activity
from recoapi.exceptions import ApplicationError

HISTORY_LIMIT = 50


class EstimatedCountPaginator(Paginator):
    """Never counts a whole large table.

    Unfiltered lists on PostgreSQL use the planner's row estimate; any other list counts at
    most ``COUNT_CAP`` rows (a filter matching more shows that many, i.e. the first pages).
    """

    COUNT_CAP = 100_000

    @cached_property
    def count(self) -> int:  # type: ignore[override]
        query = getattr(self.object_list, "query", None)
        if query is None:
            return super().count
        if not query.where and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT reltuples::bigint FROM pg_class WHERE relname = %s",
                               [self.object_list.model._meta.db_table])
                row = cursor.fetchone()
            if row and row[0] > self.COUNT_CAP:
                return int(row[0])
        return int(self.object_list.order_by()[: self.COUNT_CAP].count())


def _items_table(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> str:
    head = format_html_join("", "<th>{}</th>", ((h,) for h in header))
    body = format_html_join("", "<tr>{}</tr>",
                            ((format_html_join("", "<td>{}</td>", ((c,) for c in row)),) for row in rows))
    return format_html('<table class="reco-table"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>', head, body)


class ShopperChangeList(ChangeList):
    """The shopper list, with each listed shopper's interaction count and last activity.

    The figures come from one grouped query over the shown page's shoppers only, so a page
    costs the same whatever the size of the interaction table.
    """

    def get_results(self, request: Any) -> None:
        super().get_results(request)
        shoppers = list(self.result_list)  # evaluates the page once; the template reuses the cache
        activity = shopper_activity(ids=[shopper.id for shopper in shoppers])
        for shopper in shoppers:
            shopper.activity = activity.get(shopper.id, (0, None))


def _activity(shopper: Shopper) -> tuple[int, Any]:
    """(interaction count, last interaction time or None), as the list page computed it."""
    activity = getattr(shopper, "activity", None)
    if activity is None:  # not from the list page: count this one shopper
        activity = shopper_activity(ids=[shopper.id]).get(shopper.id, (0, None))
    return activity


@admin.register(Shopper)
class ShopperAdmin(admin.ModelAdmin):
    search_fields = ("id",)
    search_help_text = "Search by shopper id (prefix)."
    list_display = ("id", "created_at", "interaction_count", "last_activity")
    list_per_page = 50
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    readonly_fields = ("id", "created_at", "current_recommendations", "history")
    fields = readonly_fields

    def get_changelist(self, request: Any, **kwargs: Any) -> type[ChangeList]:
        return ShopperChangeList

    @admin.display(description="Interactions")
    def interaction_count(self, obj: Shopper) -> int:
        return _activity(obj)[0]

    @admin.display(description="Last activity")
    def last_activity(self, obj: Shopper) -> Any:
        return _activity(obj)[1]

    def get_search_results(self, request, queryset, search_term):  # type: ignore[no-untyped-def]
        if not search_term:
            return queryset, False
        return queryset.filter(id__startswith=search_term.strip()), False

    @admin.display(description="Current top-10 (active model)")
    def current_recommendations(self, obj: Shopper) -> str:
        from recoapi.recommendations.services import recommendation_list

        try:
            result = recommendation_list(user_ids=[obj.id], k=10, explain=True, record=False)  # staff only: not shown
        except ApplicationError as exc:
            return exc.message
        entry = result["recommendations"][obj.id]
        rows = [(rank, item["item_id"], item["title"] or "(no title)", item["category"], f"{item['score']:.4f}",
                 _reason(item["reason"])) for rank, item in enumerate(entry["items"], start=1)]
        return format_html('<p id="reco-strategy">Model {}, strategy <b>{}</b></p>{}', result["model_version"],
                           entry["strategy"],
                           _items_table(rows, ("#", "product", "title", "category", "score", "because of")))

    @admin.display(description=f"History (latest {HISTORY_LIMIT})")
    def history(self, obj: Shopper) -> str:
        events = (Interaction.objects.filter(shopper=obj).select_related("product")
                  .order_by("-occurred_at")[:HISTORY_LIMIT])
        rows = [(e.occurred_at.strftime("%Y-%m-%d %H:%M"), e.event, e.product_id, e.product.title or "(no title)",
                 "" if e.rating is None else e.rating) for e in events]
        if not rows:
            return "No interactions."
        return _items_table(rows, ("time", "event", "product", "title", "rating"))


def _reason(reason: dict[str, str]) -> str:
    """The "because of" cell of a recommended item: the shopper's product it comes from, or why else."""
    if reason["kind"] == "history":
        return f"{reason['item_id']} ({reason['title'] or 'no title'})"
    return {"popular": "popular now", "text": "the text", "model": "the trained profile"}[reason["kind"]]


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    search_fields = ("=id", "title", "brand")
    search_help_text = "Search by exact id, or words of the title or brand."
    list_display = ("id", "title", "brand", "category", "price", "available")
    list_filter = ("available", "category", "brand")
    list_per_page = 50
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    readonly_fields = ("nearest_products",)

    @admin.display(description="Nearest products (active model)")
    def nearest_products(self, obj: Product) -> str:
        from recoapi.recommendations.services import similar_item_list

        try:
            result = similar_item_list(item_id=obj.id, k=10, record=False)  # a preview: shown to no shopper
        except ApplicationError as exc:
            return exc.message
        rows = [(item["item_id"], item["title"] or "(no title)", item["category"], f"{item['score']:.4f}")
                for item in result["items"]]
        return _items_table(rows, ("product", "title", "category", "similarity"))


@admin.register(Interaction)
class InteractionAdmin(admin.ModelAdmin):
    list_display = ("occurred_at", "shopper", "event", "product", "rating")
    list_filter = ("event", "source", "occurred_at")
    list_select_related = ("shopper", "product")
    list_per_page = 50
    paginator = EstimatedCountPaginator
    show_full_result_count = False
    raw_id_fields = ("shopper", "product")
    ordering = ("-occurred_at",)
    date_hierarchy = None
