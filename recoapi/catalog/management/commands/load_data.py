"""Import a data source into the database (one transaction) and write its parquet snapshot."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError
from tqdm.auto import tqdm

from modeling.datasets import FilterError, InteractionFilters
from modeling.sources import SOURCES
from recoapi.catalog.services import data_import, import_filters_from_settings
from recoapi.exceptions import ApplicationError, database_error_parts


def _date(value: str) -> int:
    """A YYYY-MM-DD date or unix seconds, as unix seconds (UTC)."""
    if value.isdigit():
        return int(value)
    try:
        moment = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date (YYYY-MM-DD) or unix seconds") from exc
    return int(moment.timestamp())


def _database_error(exc: DatabaseError) -> CommandError:
    """What to tell about a database error of the import: that its tables are missing (a new ``DATABASE_URL``:
    "no such table" deep in the transaction, which wrote nothing; told as the API tells it, see
    :func:`recoapi.exceptions.database_error_parts`), or the error itself."""
    code, message, _ = database_error_parts(exc)
    if code == "database_not_migrated":  # no tables, or an earlier version's
        reason = message.split(": run ")[0]  # the API's words, without its advice for a server
        return CommandError(f"{reason[0].lower()}{reason[1:]}: run `.venv/bin/python manage.py migrate` first")
    return CommandError(f"the database cannot be used: {exc}")


class Command(BaseCommand):
    help = "Import shoppers, products and interactions from a data source. Unchanged files are skipped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--source", choices=SOURCES, default=settings.RECO_DATA_SOURCE,
                            help="Source format (default: RECO_DATA_SOURCE).")
        parser.add_argument("--path", default=str(settings.RECO_DATA_PATH),
                            help="File or directory of the source (default: RECO_DATA_PATH).")
        parser.add_argument("--force", action="store_true", help="Import even when the files are unchanged.")
        shop = parser.add_mutually_exclusive_group()
        shop.add_argument("--replace", action="store_true",
                          help="A fresh start with this shop: remove the products and shoppers that are not in the "
                               "new data, with their interactions (live events too), in the same transaction.")
        shop.add_argument("--merge", action="store_true",
                          help="Keep the products and shoppers already in the database beside the new data, even "
                               "when it looks like another shop (which is refused otherwise).")
        defaults = import_filters_from_settings()
        group = parser.add_argument_group("filters (off by default; RECO_FILTER_* settings give the defaults)")
        group.add_argument("--min-user-interactions", type=int, default=defaults.min_user_interactions,
                           help="Drop shoppers with fewer interactions.")
        group.add_argument("--outlier-std", type=float, default=defaults.outlier_std,
                           help="Drop shoppers above mean + N standard deviations of per-shopper counts (e.g. 2; "
                                "0: off).")
        group.add_argument("--min-distinct-items", type=int, default=defaults.min_distinct_items,
                           help="Drop shoppers with fewer distinct products.")
        group.add_argument("--start", type=_date, default=defaults.start,
                           help="Keep interactions from this date (YYYY-MM-DD or unix seconds).")
        group.add_argument("--end", type=_date, default=defaults.end,
                           help="Keep interactions before this date (YYYY-MM-DD or unix seconds).")

    def handle(self, *args: Any, **options: Any) -> None:
        bars: dict[str, tqdm] = {}

        def progress(table: str, done: int, total: int) -> None:
            if options["verbosity"] == 0:
                return
            bar = bars.get(table)
            if bar is None:
                for previous in bars.values():
                    previous.close()
                bar = bars[table] = tqdm(total=total, desc=f"import {table}", unit="row")
            bar.update(done - bar.n)

        try:
            filters = InteractionFilters(
                min_user_interactions=options["min_user_interactions"], outlier_std=options["outlier_std"],
                min_distinct_items=options["min_distinct_items"], start=options["start"], end=options["end"],
            )
        except FilterError as exc:
            if exc.field == "end":  # told in the dates the user wrote, not unix seconds
                raise CommandError(f"--end must be after --start: the window from {_day(options['start'])} to "
                                   f"{_day(options['end'])} keeps no interaction") from exc
            raise CommandError(f"--{exc.field.replace('_', '-')} {exc.problem}") from exc
        self.stdout.write(f"Reading {options['source']} data from {options['path']} ...")
        try:
            result = data_import(source=options["source"], path=options["path"], force=options["force"],
                                 filters=filters, progress=progress, replace=options["replace"],
                                 merge=options["merge"], on_wait=lambda: self.stdout.write(
                                     "Another import is running: waiting for it to finish ..."))
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        except DatabaseError as exc:
            raise _database_error(exc) from exc
        finally:
            for bar in bars.values():
                bar.close()
        counts = result.counts
        summary = f"{counts['users']} shoppers, {counts['items']} products, {counts['interactions']} interactions"
        if result.skipped:
            self.stdout.write(self.style.SUCCESS(f"Data unchanged, import skipped ({summary})."))
        else:
            extras = ", ".join(f"{k}={v}" for k, v in result.report.items())
            self.stdout.write(self.style.SUCCESS(f"Imported {summary} ({extras})."))
        replaced = result.report.get("earlier_imported_interactions_replaced", 0)
        if replaced and not result.skipped:
            self.stdout.write(f"The {replaced} interactions imported before were replaced by these files' (--merge "
                              "keeps them beside the new ones; live events are kept either way).")
        for note in result.notes:
            self.stdout.write(self.style.WARNING(f"Note: {note}."))
        if options["replace"]:
            self.stdout.write(f"Removed {result.removed['products']} products and {result.removed['shoppers']} "
                              "shoppers that are not in the new data.")


def _day(unix: int) -> str:
    """A unix time as the date (and time, when not midnight UTC) it stands for."""
    moment = datetime.fromtimestamp(unix, tz=UTC)
    return moment.date().isoformat() if moment == moment.replace(hour=0, minute=0, second=0) else moment.isoformat()
