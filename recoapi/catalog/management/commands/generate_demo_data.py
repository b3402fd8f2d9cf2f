"""Write the built-in demo shop (Amazon Reviews 2018 file format)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from modeling.synthetic import DemoParams, generate_demo_data


class Command(BaseCommand):
    help = "Generate the demo data set: shoppers with hidden tastes reviewing products (deterministic by seed)."

    def add_arguments(self, parser: CommandParser) -> None:
        defaults = DemoParams()
        parser.add_argument("--output", default=str(settings.RECO_DATA_PATH),
                            help="Directory for the reviews and meta files (default: RECO_DATA_PATH).")
        parser.add_argument("--users", type=int, default=defaults.n_users, help="Number of shoppers.")
        parser.add_argument("--items", type=int, default=defaults.n_items, help="Number of products.")
        parser.add_argument("--interactions", type=int, default=defaults.n_interactions,
                            help="Number of reviews.")
        parser.add_argument("--seed", type=int, default=defaults.seed, help="Random seed.")
        parser.add_argument("--force", action="store_true", help="Regenerate even if the files are current.")

    def handle(self, *args: Any, **options: Any) -> None:
        params = DemoParams(n_users=options["users"], n_items=options["items"],
                            n_interactions=options["interactions"], seed=options["seed"])
        try:
            result = generate_demo_data(Path(options["output"]), params, force=options["force"],
                                        progress=options["verbosity"] > 0)
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        except OSError as exc:  # not a folder, not writable...
            raise CommandError(f"cannot write the demo data to {options['output']}: {exc.strerror or exc}") from exc
        verb = "Demo data is current" if result["skipped"] else "Demo data written"
        self.stdout.write(self.style.SUCCESS(
            f"{verb}: {result['users']} shoppers, {result['items']} products, "
            f"{result['interactions']} reviews in {result['path']}"
        ))
