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
        parser.add_argument("--username", help="Default: RECO_ADMIN_USERNAME, else admin.")
        parser.add_argument("--password", help="Default: RECO_ADMIN_PASSWORD, else a generated one for a new user.")

    def handle(self, *args: Any, **options: Any) -> None:
        model = get_user_model()
        # Errors name where the value came from: the option, or the environment variable that stood in for it.
        username, username_from = _given(options["username"], "--username", "RECO_ADMIN_USERNAME", "admin")
        if not username:
            raise CommandError(f"{username_from} may not be empty")
        try:  # the field's own checks: its characters and its length (the database would refuse a longer one)
            model._meta.get_field(model.USERNAME_FIELD).clean(username, None)
        except ValidationError as exc:
            raise CommandError(f"{username_from} {username!r}: {' '.join(exc.messages)}") from exc
        user = model.objects.filter(username=username).first()
        password, password_from = _given(options["password"], "--password", "RECO_ADMIN_PASSWORD", None)
        if password:
            try:  # the same rules as the admin's password form (AUTH_PASSWORD_VALIDATORS)
                validate_password(password, user)
            except ValidationError as exc:
                raise CommandError(f"{password_from}: {' '.join(exc.messages)}") from exc
        created = user is None
        if user is None:
            password = password or secrets.token_urlsafe(12)
            user = model.objects.create_superuser(username=username, email="", password=password)
        elif password:
            user.set_password(password)
            user.is_staff = user.is_superuser = True
            user.save()
        token, _ = Token.objects.get_or_create(user=user)
        if created or password:
            self.stdout.write(self.style.SUCCESS(f"Staff user: {username} / password: {password}"))
        else:
            self.stdout.write(self.style.SUCCESS(
                f"Staff user {username} exists (password unchanged; pass --password to reset it)."))
        self.stdout.write(f"API token: {token.key}")


def _given(option: str | None, option_name: str, variable: str, default: str | None) -> tuple[str | None, str]:
    """The value of ``option``, else of the environment ``variable``, else ``default``; with the name to give in
    a message about it (the option's, or the variable's when the value came from it)."""
    if option is not None:
        return option, option_name
    if variable in os.environ:
        return os.environ[variable], variable
    return default, option_name
