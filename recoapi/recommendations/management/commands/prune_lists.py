"""Delete stored recommendation lists older than the retention period."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser


class Command(BaseCommand):
    help = ("Delete the recommendation lists the API answered more than --days days ago (default "
            "RECO_LIST_RETENTION_DAYS), except the lists of an experiment that still exists. Events sent with their "
            "recommendation_id stay; they are no longer attributed to a list. run_scheduler does this at each check.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--days", type=float, default=None,
                            help=f"Keep the lists of the last this many days (default RECO_LIST_RETENTION_DAYS, "
                                 f"{settings.RECO_LIST_RETENTION_DAYS:g}; 0 there keeps every list).")
        parser.add_argument("--dry-run", action="store_true", help="Only say how many lists would be deleted.")

    def handle(self, *args: Any, **options: Any) -> None:
        from tqdm import tqdm

        from recoapi.recommendations.services import PRUNE_MAX_DAYS, recommendation_lists_prune

        days = options["days"]
        if days is None:
            days = settings.RECO_LIST_RETENTION_DAYS
            if days == 0:
                self.stdout.write("RECO_LIST_RETENTION_DAYS is 0: every list is kept (pass --days N to delete the "
                                  "lists older than N days).")
                return
        try:
            if options["dry_run"]:
                count = recommendation_lists_prune(days=days, dry_run=True)
                self.stdout.write(f"{count} recommendation list(s) answered more than {days:g} days ago would be "
                                  f"deleted.")
                return
            with tqdm(desc="deleting lists", unit="list", disable=None) as bar:
                deleted = recommendation_lists_prune(days=days, progress=bar.update)
        except ValueError as exc:  # the service's own bound on days
            raise CommandError(f"--days must be a positive number of days up to {PRUNE_MAX_DAYS}, got "
                               f"{days:g}") from exc
        self.stdout.write(f"Deleted {deleted} recommendation list(s) answered more than {days:g} days ago.")
