"""Shoppers, products and their interactions: the system of record."""

from __future__ import annotations

import sys

from django.core.validators import MinValueValidator
from django.db import models

from modeling.datasets import BRAND, CATEGORY, EVENT_TYPES, ITEM_ID, MAX_LENGTHS, USER_ID

MAX_PRICE = sys.float_info.max
"""The largest price the database holds: every finite one (and no infinity)."""


class Shopper(models.Model):
    """A shop's customer, identified by the shop's own id (not a login account)."""

    id = models.CharField(primary_key=True, max_length=MAX_LENGTHS[USER_ID], help_text="The shop's shopper id.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.id


class Product(models.Model):
    """A product of the catalogue, identified by the shop's own id."""

    id = models.CharField(primary_key=True, max_length=MAX_LENGTHS[ITEM_ID], help_text="The shop's product id.")
    title = models.TextField(blank=True, default="")
    description = models.TextField(blank=True, default="")
    brand = models.CharField(max_length=MAX_LENGTHS[BRAND], blank=True, default="", db_index=True)
    category = models.CharField(max_length=MAX_LENGTHS[CATEGORY], blank=True, default="", db_index=True,
                                help_text="Breadcrumb path, levels separated by ' > '.")
    price = models.FloatField(null=True, blank=True, validators=[MinValueValidator(0.0)],
                              help_text="Empty: no price. Never negative nor infinite.")
    available = models.BooleanField(default=True, help_text="Out-of-stock products are never recommended.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True, db_index=True,
                                      help_text="Last change; serving workers pick up changed products by it.")

    class Meta:
        ordering = ["id"]
        indexes = [
            # Serving reads the (few) unavailable products often.
            models.Index(fields=["available"], condition=models.Q(available=False), name="catalog_product_unavail_idx"),
        ]
        constraints = [
            # What every importer and POST /products refuse (modeling.datasets.unpriceable), held by the database too:
            # an infinite price cannot be shown in JSON. NaN fails it as well (PostgreSQL sorts it above every number;
            # SQLite stores it as NULL).
            models.CheckConstraint(
                condition=models.Q(price__isnull=True) | models.Q(price__gte=0.0, price__lte=MAX_PRICE),
                name="catalog_product_price_finite"),
        ]

    def __str__(self) -> str:
        return f"{self.id} {self.title[:60]}".strip()


class Interaction(models.Model):
    """One event of a shopper with a product (a view, a purchase, a review...)."""

    EVENT_CHOICES = [(event, event) for event in EVENT_TYPES]
    IMPORTED = "import"
    LIVE = "live"
    SOURCE_CHOICES = [(IMPORTED, "imported from data files"), (LIVE, "recorded through POST /events")]

    shopper = models.ForeignKey(Shopper, on_delete=models.CASCADE, related_name="interactions")
    product = models.ForeignKey(Product, on_delete=models.CASCADE, related_name="interactions")
    occurred_at = models.DateTimeField(db_index=True)
    event = models.CharField(max_length=16, choices=EVENT_CHOICES)
    weight = models.FloatField(default=1.0)
    rating = models.FloatField(null=True, blank=True)
    text = models.TextField(null=True, blank=True)
    source = models.CharField(max_length=8, choices=SOURCE_CHOICES, default=IMPORTED,
                              help_text="A data reload replaces imported interactions and keeps live ones.")
    event_id = models.CharField(max_length=64, null=True, blank=True, unique=True,
                                help_text="The client's id of a live event: the same id sent again is stored once.")
    recommendation_id = models.CharField(max_length=32, null=True, blank=True, db_index=True,
                                         help_text="The recommendation list that showed the product, if the "
                                                   "client sent its id: the event is attributed to it.")

    class Meta:
        ordering = ["shopper_id", "occurred_at"]
        indexes = [
            models.Index(fields=["shopper", "occurred_at"]),
            # Filter by event and list newest first without sorting the table (admin).
            models.Index(fields=["event", "occurred_at"], name="catalog_int_event_time_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.shopper_id} {self.event} {self.product_id}"
