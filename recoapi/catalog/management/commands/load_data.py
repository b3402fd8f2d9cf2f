"""Import a data source into the database (one transaction) and write its parquet snapshot."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm.auto import tqdm

from modeling.datasets import SOURCES
from recoapi.catalog.services import data_import
from recoapi.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Import shoppers, products and interactions from a data source. Unchanged files are skipped."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--source", choices=SOURCES, default=settings.RECO_DATA_SOURCE,
                            help="Source format (default: RECO_DATA_SOURCE).")
        parser.add_argument("--path", default=str(settings.RECO_DATA_PATH),
                            help="File or directory of the source (default: RECO_DATA_PATH).")
        parser.add_argument("--force", action="store_true", help="Import even when the files are unchanged.")

    def handle(self, *args: Any, **options: Any) -> None:
        bars: dict[str, tqdm] = {}

        def progress(table: str, done: int, total: int) -> None:
            if options["verbosity"] == 0:
                return
            bar = bars.get(table)
            if bar is None:
                bar = bars[table] = tqdm(total=total, desc=f"import {table}", unit="row")
            bar.update(done - bar.n)

        self.stdout.write(f"Reading {options['source']} data from {options['path']} ...")
        try:
            result = data_import(source=options["source"], path=options["path"], force=options["force"],
                                 progress=progress)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
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
