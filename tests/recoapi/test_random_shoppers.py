"""Random shopper ids from a table too large to read whole (/random_users above 2,000 shoppers)."""

from __future__ import annotations

import random

import pytest

from recoapi.catalog import selectors
from recoapi.catalog.models import Shopper

SHOPPERS = 2_500


@pytest.fixture
def shoppers(db) -> list[str]:  # noqa: ANN001
    """2,500 shoppers whose ids mix cases, lengths and digits; returned in the database's own id order."""
    rng = random.Random(3)
    ids = {f"{rng.choice('aBcD')}{rng.randrange(10 ** rng.randrange(1, 7))}-{rng.choice(['x', 'Y', ''])}"
           for _ in range(SHOPPERS * 2)}
    Shopper.objects.bulk_create([Shopper(id=i) for i in sorted(ids)[:SHOPPERS]])
    return list(Shopper.objects.order_by("id").values_list("id", flat=True))


@pytest.mark.django_db
def test_each_offset_reads_the_id_at_that_place_in_id_order(shoppers: list[str]) -> None:
    offsets = [7, 0, SHOPPERS - 1, 1234, 8, 6, SHOPPERS, 999]  # unsorted, neighbours, both ends, one past the end
    assert selectors._ids_at(offsets) == [shoppers[o] for o in offsets if o < SHOPPERS]


@pytest.mark.django_db
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_ids_are_the_seeded_draw_of_places(shoppers: list[str], seed: int) -> None:
    drawn = selectors.shopper_random_ids(n=100, seed=seed)
    places = random.Random(seed).sample(range(SHOPPERS), 100)
    assert drawn == [shoppers[place] for place in places]
    assert len(set(drawn)) == 100
