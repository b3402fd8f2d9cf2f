"""Build the item and user text embeddings from the imported data."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from modeling import datasets as ds
from modeling.embeddings import build_embeddings, check_model_dir, check_output_dir
from modeling.errors import ModelingError


class Command(BaseCommand):
    help = "Encode product and review texts with the sentence-transformers model. Skipped when inputs are unchanged."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--force", action="store_true", help="Rebuild even when current.")
        parser.add_argument("--batch-size", type=int, default=128, help="Texts per encoder batch.")
        parser.add_argument("--processes", type=int, default=1, metavar="N",
                            help="Encode on N processes of this machine (sentence-transformers' multi-process pool, "
                                 "the cores shared between them); worth it for thousands of texts (default 1).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["processes"] < 1:
            raise CommandError(f"--processes must be 1 or more, got {options['processes']}")
        if options["batch_size"] < 1:
            raise CommandError(f"--batch-size must be 1 or more, got {options['batch_size']}")
        try:  # before reading the data: neither setting depends on it
            check_output_dir(settings.RECO_EMBEDDINGS_DIR)
        except ModelingError as exc:
            raise CommandError(f"RECO_EMBEDDINGS_DIR: {exc}") from exc
        if settings.RECO_TEXT_MODEL_PATH:
            try:
                check_model_dir(settings.RECO_TEXT_MODEL_PATH)
            except ModelingError as exc:
                raise CommandError(f"RECO_TEXT_MODEL_PATH: {exc}") from exc
        try:
            data = ds.read_snapshot(settings.RECO_PROCESSED_DIR)
            self.stdout.write(f"Encoding texts of {len(data.items)} products and {len(data.interactions)} "
                              f"interactions ...")
            manifest = build_embeddings(
                data, settings.RECO_EMBEDDINGS_DIR, model_path=settings.RECO_TEXT_MODEL_PATH,
                force=options["force"], progress=options["verbosity"] > 0, batch_size=options["batch_size"],
                processes=options["processes"],
            )
        except ModelingError as exc:
            raise CommandError(str(exc)) from exc
        counts = ", ".join(f"{k}={v}" for k, v in manifest["counts"].items())
        verb = "Embeddings are current" if manifest["skipped"] else "Embeddings written"
        self.stdout.write(self.style.SUCCESS(f"{verb} ({manifest['model_name']}, dim {manifest['dim']}; {counts})."))
