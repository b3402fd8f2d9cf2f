"""Create (or update) a staff user for the admin and the POST endpoints, with an API token."""

from __future__ import annotations

import os
import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = ("Create a staff superuser (username/password from --username/--password, or the environment "
            "variables RECO_ADMIN_USERNAME / RECO_ADMIN_PASSWORD; a password is generated when none is given) "
            "and print its credentials and API token.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default=os.environ.get("RECO_ADMIN_USERNAME", "admin"))
        parser.add_argument("--password", default=os.environ.get("RECO_ADMIN_PASSWORD"))

    def handle(self, *args: Any, **options: Any) -> None:
        model = get_user_model()
        username = options["username"]
        if not username:
            raise CommandError("--username may not be empty")
        try:  # the field's own checks: its characters and its length (the database would refuse a longer one)
            model._meta.get_field(model.USERNAME_FIELD).clean(username, None)
        except ValidationError as exc:
            raise CommandError(f"--username {username!r}: {' '.join(exc.messages)}") from exc
        user = model.objects.filter(username=username).first()
        password = options["password"]
        if password:
            try:  # the same rules as the admin's password form (AUTH_PASSWORD_VALIDATORS)
                validate_password(password, user)
            except ValidationError as exc:
                raise CommandError(f"--password: {' '.join(exc.messages)}") from exc
        created = user is None
        if user is None:
            password = password or secrets.token_urlsafe(12)
            user = model.objects.create_superuser(username=username, email="", password=password)
        elif password:
            user.set_password(password)
            user.is_staff = user.is_superuser = True
            user.save()
        token, _ = Token.objects.get_or_create(user=user)
        if created or options["password"]:
            self.stdout.write(self.style.SUCCESS(f"Staff user: {username} / password: {password}"))
        else:
            self.stdout.write(self.style.SUCCESS(
                f"Staff user {username} exists (password unchanged; pass --password to reset it)."))
        self.stdout.write(f"API token: {token.key}")
