"""Reads of the catalogue."""

from __future__ import annotations

import random
from collections import defaultdict

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


def shopper_histories(*, ids: list[str]) -> dict[str, list[tuple[str, int, float, str]]]:
    """Each shopper's interactions as ``(product_id, unix_seconds, weight, event)``, oldest first.

    Shoppers without interactions are absent from the result.
    """
    rows = (Interaction.objects.filter(shopper_id__in=ids)
            .order_by("shopper_id", "occurred_at")
            .values_list("shopper_id", "product_id", "occurred_at", "weight", "event"))
    histories: dict[str, list[tuple[str, int, float, str]]] = defaultdict(list)
    for shopper_id, product_id, occurred_at, weight, event in rows.iterator(chunk_size=5000):
        histories[shopper_id].append((product_id, int(occurred_at.timestamp()), float(weight), event))
    return dict(histories)
