"""Print ready-to-paste curl lines for a running service."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from rest_framework.authtoken.models import Token

from recoapi.catalog.models import Product
from recoapi.catalog.selectors import shopper_random_ids


class Command(BaseCommand):
    help = "Print example curl commands (with real shopper ids and the staff token) for the API."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--base-url", default="http://127.0.0.1:8000", help="Where the API listens.")
        parser.add_argument("--username", default="admin", help="Staff user whose token the POST examples use.")

    def handle(self, *args: Any, **options: Any) -> None:
        base = options["base_url"].rstrip("/")
        users = shopper_random_ids(n=2, seed=0) or ["A0000001"]
        item = Product.objects.order_by("id").values_list("id", flat=True).first() or "B000000001"
        user = get_user_model().objects.filter(username=options["username"]).first()
        token = Token.objects.filter(user=user).values_list("key", flat=True).first() if user else None
        token = token or "<token from `python manage.py create_staff_user`>"
        lines = [
            f"curl '{base}/health'",
            f"curl '{base}/random_users?n=5'",
            f"curl '{base}/check_users?users={users[0]},someone-new'",
            f"curl '{base}/recommendations?users={','.join(users)},someone-new&k=5'",
            f"curl '{base}/recommendations?users={users[0]}&k=5&include_history=true&max_price=100'",
            f"curl '{base}/recommendations?text=espresso%20coffee%20grinder&k=5'",
            f"curl '{base}/recommendations?items={item}&k=5'",
            f"curl '{base}/similar_items?item={item}&k=5'",
            f"curl -X POST -H 'Authorization: Token {token}' -H 'Content-Type: application/json' "
            f"-d '{{\"user\": \"someone-new\", \"item\": \"{item}\", \"event\": \"view\"}}' '{base}/events'",
            f"curl -X POST -H 'Authorization: Token {token}' '{base}/reload_model'",
            f"curl -X POST -H 'Authorization: Token {token}' '{base}/reload_data'",
            f"# Swagger UI: {base}/api/docs   Admin: {base}/admin/",
        ]
        self.stdout.write("\n".join(lines))
