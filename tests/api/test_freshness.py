"""A trained shopper's list follows what they do after training (the demo shop, through the API)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from recoapi.catalog.models import Interaction, Product
from tests.test_end_to_end import run, workdir  # noqa: F401  (workdir: a fixture)


@pytest.fixture
def demo(request: pytest.FixtureRequest, settings) -> Path:
    """The demo shop as `make demo` builds it (default generator, embeddings, default training)."""
    directory = request.getfixturevalue("workdir")  # settings point at a temporary directory
    settings.RECO_AVAILABILITY_SECONDS = 0.0
    run("generate_demo_data")
    run("load_data")
    run("build_embeddings")
    run("train", "--activate")
    return directory


def _categories(client: APIClient, user: str) -> list[str]:
    response = client.get("/recommendations", {"users": user, "k": 10})
    assert response.status_code == 200, response.content
    entry = response.json()["recommendations"][user]
    assert entry["strategy"] == "two_tower"
    return [item["category"] for item in entry["items"]]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_six_purchases_in_a_new_category_fill_half_of_the_next_top_10(demo: Path) -> None:
    staff = get_user_model().objects.create_user(username="staff", password="pw-123456", is_staff=True)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=staff).key}")
    sizes = Counter(Product.objects.values_list("category", flat=True))
    checked = 0
    for user in client.get("/random_users", {"n": 5}).json()["users"]:
        had = set(Interaction.objects.filter(shopper_id=user).values_list("product__category", flat=True))
        # a category the shopper never touched, with enough products left after six purchases
        category = next(c for c, n in sizes.most_common() if c not in had and n >= 16)
        before = _categories(client, user)
        assert before.count(category) < 5, before
        products = list(Product.objects.filter(category=category).order_by("id")
                        .values_list("id", flat=True)[:6])
        for product in products:
            response = client.post("/events", {"user": user, "item": product, "event": "purchase"}, format="json")
            assert response.status_code == 201, response.content
        after = _categories(client, user)
        assert after.count(category) >= 5, (category, before, after)
        checked += 1
    assert checked == 5
