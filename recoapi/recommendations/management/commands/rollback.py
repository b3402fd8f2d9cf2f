"""Activate an earlier model version."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from recoapi.exceptions import ApplicationError


class Command(BaseCommand):
    help = ("Activate the version that was active before the active one (without a record of activations: the "
            "one published before it), or the one given with --to.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--to", dest="version", help="The version to activate (default: the one active before "
                                                         "the active one).")

    def handle(self, *args: Any, **options: Any) -> None:
        from recoapi.recommendations.retraining import model_rollback

        try:
            result = model_rollback(version=options["version"])
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        why = {"activations": "the version active before it",
               "published": "the newest version published before it: no earlier activation is on record"}
        reason = f", {why[result['chosen_by']]}" if result["chosen_by"] in why else ""
        self.stdout.write(f"Model {result['model_version']} is active (was {result['previous_version'] or 'none'}"
                          f"{reason}).")
