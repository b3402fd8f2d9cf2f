"""Reads of the catalogue."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import datetime

from django.db import connection
from django.db.models import Count, Max

from recoapi.catalog.models import Interaction, Shopper


def shopper_random_ids(*, n: int, seed: int | None = None) -> list[str]:
    """Up to ``n`` distinct shopper ids drawn at random (uniformly over the table)."""
    total = Shopper.objects.count()
    if total == 0:
        return []
    rng = random.Random(seed)
    if total <= 2000:
        ids = list(Shopper.objects.values_list("id", flat=True))
        return rng.sample(ids, min(n, total))
    offsets = rng.sample(range(total), min(n, total))
    ordered = Shopper.objects.order_by("id").values_list("id", flat=True)
    return [ordered[offset] for offset in offsets]


def shopper_existing_ids(*, ids: list[str]) -> set[str]:
    """The subset of ``ids`` that are shoppers in the database."""
    return set(Shopper.objects.filter(id__in=ids).values_list("id", flat=True))


# Unix seconds computed by the database: the serving hot path then builds no datetime objects.
_EPOCH_SQL = {
    "sqlite": "CAST(strftime('%%s', {column}) AS INTEGER)",
    "postgresql": "CAST(EXTRACT(EPOCH FROM {column}) AS BIGINT)",
}


def shopper_histories(*, ids: list[str]) -> dict[str, list[tuple[str, int, float, str]]]:
    """Each shopper's interactions as ``(product_id, unix_seconds, weight, event)``, oldest first.

    Shoppers without interactions are absent from the result. This runs on every
    recommendation request, so it is one hand-written indexed query (the ORM's query
    building costs more than the query itself at this size).
    """
    histories: dict[str, list[tuple[str, int, float, str]]] = defaultdict(list)
    if not ids:
        return {}
    epoch = _EPOCH_SQL.get(connection.vendor)
    if epoch is None:  # another database: the portable ORM query
        rows = (Interaction.objects.filter(shopper_id__in=ids).order_by("shopper_id", "occurred_at")
                .values_list("shopper_id", "product_id", "occurred_at", "weight", "event"))
        for shopper_id, product_id, occurred_at, weight, event in rows.iterator(chunk_size=5000):
            histories[shopper_id].append((product_id, int(occurred_at.timestamp()), float(weight), event))
        return dict(histories)
    meta, quote = Interaction._meta, connection.ops.quote_name
    shopper, product, occurred, weight, event = (
        quote(meta.get_field(name).column) for name in ("shopper", "product", "occurred_at", "weight", "event"))
    sql = (f"SELECT {shopper}, {product}, {epoch.format(column=occurred)}, {weight}, {event} "
           f"FROM {quote(meta.db_table)} WHERE {shopper} IN ({', '.join(['%s'] * len(ids))}) "
           f"ORDER BY {shopper}, {occurred}")
    with connection.cursor() as cursor:
        cursor.execute(sql, list(ids))
        for shopper_id, product_id, seconds, w, e in cursor.fetchall():
            histories[shopper_id].append((product_id, int(seconds), float(w), e))
    return dict(histories)


def shopper_activity(*, ids: list[str]) -> dict[str, tuple[int, datetime]]:
    """Interaction count and latest interaction time of each of a few shoppers (e.g. one admin page).

    One grouped query over those shoppers' rows only (the ``(shopper, occurred_at)`` index
    answers it), never a count over the whole interaction table. Shoppers without
    interactions are absent from the result.
    """
    if not ids:
        return {}
    rows = (Interaction.objects.filter(shopper_id__in=ids).order_by().values("shopper_id")
            .annotate(n=Count("id"), last=Max("occurred_at")).values_list("shopper_id", "n", "last"))
    return {shopper_id: (int(n), last) for shopper_id, n, last in rows}
