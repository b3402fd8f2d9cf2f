"""A price is finite and not negative, or none: what every importer and POST /products refuse, the database refuses too,
and the migrations clear such prices an earlier importer stored (an infinite price cannot be shown in JSON)."""

from __future__ import annotations

import math

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.forms import modelform_factory

from recoapi.catalog.models import Product

BEFORE = ("catalog", "0004_interaction_recommendation_id")
AFTER = ("catalog", "0006_product_price_finite")


@pytest.mark.django_db(transaction=True)
def test_the_migrations_clear_prices_no_answer_can_show_and_mark_the_products_changed() -> None:
    # Before: RetailRocket's importer stored "ninf" as an infinite price and "n-20.000" as -20, and every answer
    # holding such a product was a 500 (three guards in serving hid them since; the database now holds none).
    executor = MigrationExecutor(connection)
    executor.migrate([BEFORE])
    old = executor.loader.project_state([BEFORE]).apps.get_model("catalog", "Product")
    prices = {"inf": math.inf, "minus_inf": -math.inf, "negative": -20.0, "nan": math.nan, "zero": 0.0,
              "priced": 12.5, "none": None}
    for product, price in prices.items():
        old.objects.create(id=product, price=price)
    stamps = dict(old.objects.values_list("id", "updated_at"))
    executor = MigrationExecutor(connection)  # the graph again, as `migrate` reads it
    executor.migrate([AFTER])
    after = dict(Product.objects.values_list("id", "price"))
    assert after == {"inf": None, "minus_inf": None, "negative": None, "nan": None, "zero": 0.0, "priced": 12.5,
                     "none": None}
    changed = {p for p, stamp in Product.objects.values_list("id", "updated_at") if stamp != stamps[p]}
    # NaN: stored as NULL by SQLite (nothing to clear), as NaN by PostgreSQL (cleared).
    assert changed - {"nan"} == {"inf", "minus_inf", "negative"}


@pytest.mark.django_db
@pytest.mark.parametrize("price", [math.inf, -math.inf, -0.5])
def test_the_database_refuses_a_price_that_is_negative_or_not_finite(price: float) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        Product.objects.create(id="p", price=price)
    Product.objects.create(id="p", price=0.0)
    with pytest.raises(IntegrityError), transaction.atomic():
        Product.objects.filter(id="p").update(price=price)
    assert Product.objects.get(id="p").price == 0.0


@pytest.mark.django_db
def test_the_admin_form_says_a_negative_price_is_refused() -> None:
    # The admin's product form validates the model's field: staff get a message on the form, not the database's error.
    form = modelform_factory(Product, fields=["id", "title", "price"])(data={"id": "p", "title": "Mug", "price": "-3"})
    assert not form.is_valid() and "greater than or equal to 0" in str(form.errors["price"])
    form = modelform_factory(Product, fields=["id", "title", "price"])(data={"id": "p", "title": "Mug", "price": "inf"})
    assert not form.is_valid() and "Enter a number" in str(form.errors["price"])


@pytest.mark.django_db(transaction=True)
def test_training_on_a_database_that_has_not_run_migrate_says_to_run_it() -> None:
    # A price an earlier importer stored, in a database whose migrations have not cleared it: training refuses it
    # and names what mends it (not "import data first", which would not help).
    from datetime import UTC, datetime

    from recoapi.exceptions import ApplicationError
    from recoapi.recommendations.services import training_snapshot

    try:  # from the first step: a failure anywhere leaves the database as the tests after this one expect it
        executor = MigrationExecutor(connection)
        executor.migrate([BEFORE])
        apps = executor.loader.project_state([BEFORE]).apps
        product = apps.get_model("catalog", "Product").objects.create(id="mug", price=math.inf)
        shopper = apps.get_model("catalog", "Shopper").objects.create(id="s")
        apps.get_model("catalog", "Interaction").objects.create(shopper=shopper, product=product, event="view",
                                                                occurred_at=datetime(2024, 1, 1, tzinfo=UTC))
        with pytest.raises(ApplicationError, match=r"Cannot train on the database: .*product 'mug': price inf is "
                                                   r"not a price .*`manage.py migrate` clears such prices"):
            training_snapshot()
    finally:  # every app's latest state again, for the tests after this one
        executor = MigrationExecutor(connection)
        executor.migrate(executor.loader.graph.leaf_nodes())
