"""Each request reads the shoppers' most recent interactions only: a crawler's long history costs no more."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from recoapi.catalog.models import Interaction, Product, Shopper
from recoapi.catalog.selectors import shopper_histories


@pytest.mark.django_db
def test_shopper_histories_keep_the_most_recent_oldest_first(settings) -> None:
    Product.objects.bulk_create([Product(id=f"p{n}") for n in range(40)])
    Shopper.objects.bulk_create([Shopper(id="crawler"), Shopper(id="a")])
    start = datetime(2026, 1, 1, tzinfo=UTC)
    # 30 events; every third pair shares its time (equal times keep the order they were stored in)
    times = [start + timedelta(minutes=n - n % 3) for n in range(30)]
    Interaction.objects.bulk_create([Interaction(shopper_id="crawler", product_id=f"p{n}", event="view",
                                                 occurred_at=times[n], weight=1.0) for n in range(30)])
    Interaction.objects.bulk_create([Interaction(shopper_id="a", product_id=f"p{n}", event="purchase",
                                                 occurred_at=start + timedelta(days=n), weight=3.0) for n in range(3)])
    got = shopper_histories(ids=["crawler", "a", "nobody", "a"], limit=10)
    assert set(got) == {"crawler", "a"}
    assert [row[0] for row in got["crawler"]] == [f"p{n}" for n in range(20, 30)]  # the 10 newest, oldest first
    assert [row[1] for row in got["crawler"]] == [int(times[n].timestamp()) for n in range(20, 30)]
    assert got["a"] == [(f"p{n}", int((start + timedelta(days=n)).timestamp()), 3.0, "purchase") for n in range(3)]
    settings.RECO_HISTORY_LIMIT = 25
    assert len(shopper_histories(ids=["crawler"])["crawler"]) == 25
    assert len(shopper_histories(ids=["crawler"], limit=1000)["crawler"]) == 30
