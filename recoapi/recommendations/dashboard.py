"""What the staff dashboard shows: counts, traffic, CTR, offline metrics and coverage, read from the database.

Each function answers one panel with plain data (the view plots it with :mod:`recoapi.recommendations.charts`).
Time series are per calendar day (UTC) over the last ``days`` days that hold data: imported events may be
years old, so their window ends at the newest event, not today.

A list counts as clicked when a view, cart or purchase sent with its ``recommendation_id`` by the shopper it was
shown to is of a product it showed (the attribution of :mod:`recoapi.recommendations.feedback`); only lists that
received such an event are read whole, the rest are counted in SQL.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from django.db.models import Count, Max, QuerySet
from django.db.models.functions import TruncDate

from recoapi import metrics
from recoapi.catalog.models import Interaction, Product, Shopper
from recoapi.recommendations import feedback
from recoapi.recommendations.models import SIMILAR_ITEMS, Experiment, ModelVersion, RecommendationList

logger = logging.getLogger(__name__)

COVERAGE_LISTS = 20_000
"""Coverage is measured over the most recent lists, at most this many (each list's items are read)."""


@dataclass(frozen=True)
class Series:
    """Daily values per group: ``days`` (n,) and ``values[group]`` (n,) aligned with them."""

    days: list[date]
    values: dict[str, list[float | None]]


def overview() -> dict[str, Any]:
    """Headline counts: products (available), shoppers, events (live), lists shown, the active model."""
    active = ModelVersion.objects.filter(is_active=True).values_list("version", flat=True).first()
    return {"products": Product.objects.count(), "available_products": Product.objects.filter(available=True).count(),
            "shoppers": Shopper.objects.count(), "events": Interaction.objects.count(),
            "live_events": Interaction.objects.filter(source=Interaction.LIVE).count(),
            "lists": RecommendationList.objects.count(), "active_model": active or "none"}


def _window(latest: date | None, days: int) -> list[date]:
    if latest is None:
        return []
    return [latest - timedelta(days=days - 1 - i) for i in range(days)]


def _daily(rows: list[tuple[date, str, int]], days: int) -> Series:
    """Rows ``(day, group, count)`` -> a :class:`Series` over the ``days`` days ending at the newest row."""
    window = _window(max((row[0] for row in rows), default=None), days)
    position = {day: i for i, day in enumerate(window)}
    values: dict[str, list[float | None]] = defaultdict(lambda: [0.0] * len(window))
    for day, group, count in rows:
        if day in position:
            values[group][position[day]] += count
    return Series(window, dict(sorted(values.items())))


def events_per_day(days: int = 60) -> Series:
    """Interactions per day and event type, over the ``days`` days ending at the newest interaction."""
    latest = Interaction.objects.aggregate(latest=Max("occurred_at"))["latest"]
    if latest is None:
        return Series([], {})
    since = latest - timedelta(days=days)
    rows = (Interaction.objects.filter(occurred_at__gt=since).annotate(day=TruncDate("occurred_at"))
            .values_list("day", "event").annotate(n=Count("id")))
    return _daily(list(rows), days)


def _lists_since(days: int) -> QuerySet[RecommendationList] | None:
    latest = RecommendationList.objects.aggregate(latest=Max("created_at"))["latest"]
    return None if latest is None else RecommendationList.objects.filter(created_at__gt=latest - timedelta(days=days))


def lists_per_day(days: int = 30) -> Series:
    """Recommendation lists shown per day and strategy (the strategy mix of the traffic)."""
    lists = _lists_since(days)
    if lists is None:
        return Series([], {})
    rows = lists.annotate(day=TruncDate("created_at")).values_list("day", "strategy").annotate(n=Count("id"))
    return _daily(list(rows), days)


def ctr_per_day(days: int = 30, *, by: str = "strategy", experiment: Experiment | None = None) -> Series:
    """Share of the lists shown each day that were clicked, per strategy (``by="strategy"``) or per arm of
    ``experiment`` (``by="arm"``); None on days without lists of a group.

    Lists are counted in SQL; only those that received an event are read (a subquery, however many)."""
    lists = _lists_since(days)
    if lists is None:
        return Series([], {})
    if by == "arm":
        if experiment is None:
            return Series([], {})
        lists = lists.filter(experiment_id=experiment.pk)
    shown = list(lists.annotate(day=TruncDate("created_at")).values_list("day", by).annotate(n=Count("id")))
    events = feedback.attributable_events(lists.values("id"))
    shoppers: dict[tuple[str, str], set[str]] = defaultdict(set)  # (list, product) -> the shoppers of its events
    for rid, product, shopper in events.values_list("recommendation_id", "product_id", "shopper_id"):
        shoppers[(rid, product)].add(shopper)
    clicked: Counter = Counter()
    for rid, items, shown_to, day, group in (lists.filter(id__in=events.values("recommendation_id"))
                                             .annotate(day=TruncDate("created_at"))
                                             .values_list("id", "items", "shopper_id", "day", by)):
        if any(feedback.credited(list_shopper=shown_to, event_shopper=shopper)
               for product in items for shopper in shoppers.get((rid, product), ())):
            clicked[(day, group)] += 1
    totals = _daily(shown, days)
    return Series(totals.days, {
        group: [None if n == 0 else clicked.get((day, group), 0) / n for day, n in zip(totals.days, counts,
                                                                                        strict=True)]
        for group, counts in totals.values.items()})


def latest_experiment() -> Experiment | None:
    """The running experiment, else the one stopped last."""
    running = Experiment.objects.filter(status=Experiment.RUNNING).first()
    return running or Experiment.objects.filter(status=Experiment.STOPPED).order_by("-stopped_at").first()


def offline_metrics(metric: str = "ndcg@10", last: int = 20) -> tuple[list[str], dict[str, list[float | None]]]:
    """``metric`` of the last ``last`` model versions as measured at training (held-out test items), per model
    (``hybrid``: served, ``two_tower``, ``popularity``), oldest version first."""
    versions = list(ModelVersion.objects.order_by("-version")[:last])[::-1]
    models = ("hybrid", "two_tower", "popularity")
    return [v.version for v in versions], {
        model: [v.metrics.get(model, {}).get(metric) for v in versions] for model in models}


def coverage() -> dict[str, Any]:
    """Of the most recent :data:`COVERAGE_LISTS` recommendation lists (a product page's ``similar_items`` lists left
    out: they show what is near one product, not what the recommendations cover): the distinct products shown
    against the available catalogue, and how often each shown product was shown (most shown first)."""
    lists = RecommendationList.objects.exclude(strategy=SIMILAR_ITEMS)
    items = lists.order_by("-created_at").values_list("items", flat=True)[:COVERAGE_LISTS]
    shows = Counter(product for listed in items for product in listed)
    available = Product.objects.filter(available=True).count()
    return {"lists": min(lists.count(), COVERAGE_LISTS), "shown_products": len(shows),
            "available_products": available,
            "coverage": len(shows) / available if available else None,
            "shows": sorted(shows.values(), reverse=True)}


def latency(endpoint: str = "recommendations") -> dict[str, Any]:
    """The request-time histogram of ``endpoint`` since the server started (every worker's): bucket upper
    bounds in seconds, requests per bucket and approximate quantiles (the upper bound of the bucket that
    holds them)."""
    buckets = metrics.latency_buckets(endpoint)
    total = buckets[-1][1] if buckets else 0
    counts = [count - (buckets[i - 1][1] if i else 0) for i, (_, count) in enumerate(buckets)]

    def quantile(q: float) -> float | None:
        return next((bound for bound, count in buckets if count >= q * total), None) if total else None

    return {"bounds": [bound for bound, _ in buckets], "counts": counts, "requests": total,
            "p50": quantile(0.5), "p95": quantile(0.95), "p99": quantile(0.99)}
