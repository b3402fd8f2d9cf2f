"""Migration 0008 of the recommendations: visitors' lists apart from a shopper whose id is "anonymous"."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from recoapi.recommendations.models import RecommendationList

BEFORE = ("recommendations", "0007_experiment_winner_activation")
AFTER = ("recommendations", "0008_visitor_lists")


@pytest.mark.django_db(transaction=True)
def test_lists_stored_under_anonymous_keep_reading_as_a_visitor_s() -> None:
    # Before, a visitor's list was stored under the shopper id "anonymous" and read back as a visitor's: such lists
    # (a visitor's or a shopper's of that id, which cannot be told apart) keep that meaning under the visitor's id.
    executor = MigrationExecutor(connection)
    executor.migrate([BEFORE])
    old = executor.loader.project_state([BEFORE]).apps.get_model("recommendations", "RecommendationList")
    for rid, shopper in (("a" * 32, "anonymous"), ("b" * 32, "u1")):
        old.objects.create(id=rid, created_at=timezone.now(), shopper_id=shopper, strategy="content",
                           model_version="v", items=["p1"])
    executor = MigrationExecutor(connection)  # the graph again, as `migrate` reads it
    executor.migrate([AFTER])
    assert dict(RecommendationList.objects.values_list("id", "shopper_id")) == {"a" * 32: "", "b" * 32: "u1"}
    executor = MigrationExecutor(connection)
    executor.migrate([BEFORE])  # and back
    back = executor.loader.project_state([BEFORE]).apps.get_model("recommendations", "RecommendationList")
    assert dict(back.objects.values_list("id", "shopper_id")) == {"a" * 32: "anonymous", "b" * 32: "u1"}
    MigrationExecutor(connection).migrate([AFTER])
