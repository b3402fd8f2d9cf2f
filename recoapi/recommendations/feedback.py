"""Attributed feedback: the events shoppers sent with a recommendation_id, matched to the list that showed them.

An event counts for a list when it is a view, cart or purchase (:data:`EVENTS`; ``POST /events`` refuses a
``recommendation_id`` with a review or a rating, and one stored before that is not attributed), the list's
``recommendation_id`` came with it, its product is one of the list's items and its shopper is the one the list was
shown to (any shopper for a visitor's list, see :func:`credited`); it is attributed to the list's strategy, model
version and the product's position.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, QuerySet

from recoapi.catalog.models import Interaction
from recoapi.recommendations.models import VISITOR, RecommendationList

EVENTS = ("view", "cart", "purchase")
"""The events attributed to the list whose recommendation_id came with them (what a shopper did with a shown product;
a review or a rating is not a response to the list)."""


@dataclass(frozen=True)
class Attribution:
    """One event attributed to the list that showed its product (``position`` 1 = first)."""

    interaction_id: int
    recommendation_id: str
    strategy: str
    model_version: str
    position: int
    event: str


def credited(*, list_shopper: str | None, event_shopper: str) -> bool:
    """Whether an event of ``event_shopper`` may be credited to a list shown to ``list_shopper``: the same
    shopper, or anyone for a visitor's list (who the visitor turned out to be).

    ``POST /events`` refuses another shopper's event for a stored list, but a list is written a moment after
    its answer, and an event sent meanwhile is stored unchecked: this keeps such an event off the list.
    """
    return list_shopper in (event_shopper, VISITOR)


def attributable_events(recommendation_ids: Any = None) -> QuerySet[Interaction]:
    """The interactions that may be attributed to a list: views, carts and purchases (:data:`EVENTS`) sent with a
    recommendation_id, of one of ``recommendation_ids`` (a list of ids or a subquery) when given. Whether the list
    showed the product to that shopper is :func:`attributions`' (and its callers') part."""
    events = Interaction.objects.filter(recommendation_id__isnull=False, event__in=EVENTS)
    return events if recommendation_ids is None else events.filter(recommendation_id__in=recommendation_ids)


def attributions(*, recommendation_ids: list[str] | None = None) -> list[Attribution]:
    """Every view, cart or purchase (:data:`EVENTS`) sent with a recommendation_id whose list is stored, shows the
    event's product and was shown to the event's shopper (:func:`credited`).

    Events whose list is unknown (never answered, or not written yet), does not show the product or was shown
    to another shopper are left out, and so are other events. ``recommendation_ids`` restricts the answer to those
    lists.
    """
    events = attributable_events(recommendation_ids)
    rows = list(events.values_list("id", "recommendation_id", "product_id", "event", "shopper_id"))
    lists = {row.id: row for row in RecommendationList.objects.filter(id__in={r[1] for r in rows})}
    out = []
    for interaction_id, recommendation_id, product_id, event, shopper_id in rows:
        shown = lists.get(recommendation_id)
        if shown is None or product_id not in shown.items or not credited(list_shopper=shown.shopper_id,
                                                                           event_shopper=shopper_id):
            continue
        out.append(Attribution(interaction_id, recommendation_id, shown.strategy, shown.model_version,
                               shown.items.index(product_id) + 1, event))
    return out


def summary() -> list[dict[str, Any]]:
    """Per strategy and model version: lists shown, and the attributed views, carts and purchases.

    Returns:
        Rows ``{"strategy", "model_version", "lists", "view", "cart", "purchase"}``, most lists first.
    """
    shown = (RecommendationList.objects.values("strategy", "model_version").annotate(lists=Count("id"))
             .order_by("-lists"))
    counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
    for attribution in attributions():
        counts[(attribution.strategy, attribution.model_version)][attribution.event] += 1
    return [{**row, **{event: counts[(row["strategy"], row["model_version"])][event] for event in EVENTS}}
            for row in shown]
