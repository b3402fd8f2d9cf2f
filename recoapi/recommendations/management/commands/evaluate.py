"""Compare the two-tower model with the baselines on a data source (full ranking)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from modeling import datasets as ds
from modeling.embeddings import build_embeddings, load_embeddings
from modeling.errors import ModelingError
from modeling.evaluate import EASE_L2_GRID, compare_leave_last_out, format_table
from modeling.two_tower import TwoTowerParams


class Command(BaseCommand):
    help = ("Evaluate the two-tower model against popularity, item-kNN and EASE on a leave-last-out split of "
            "a data source (full ranking, training items excluded). Prints one table and can write it as JSON.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--source", choices=ds.SOURCES, default=settings.RECO_DATA_SOURCE)
        parser.add_argument("--path", default=str(settings.RECO_DATA_PATH), help="Files of the source.")
        parser.add_argument("--output", help="Write the results as JSON to this file.")
        parser.add_argument("--epochs", type=int, default=TwoTowerParams().epochs, help="Two-tower max epochs.")
        parser.add_argument("--seed", type=int, default=TwoTowerParams().seed)
        parser.add_argument("--ease-l2", type=float, nargs="+", default=list(EASE_L2_GRID),
                            help="EASE λ values to choose from on the validation items.")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["epochs"] < 1:
            raise CommandError("--epochs must be at least 1")
        try:
            data = ds.load_source(options["source"], options["path"])
            cache = Path(settings.RECO_PROCESSED_DIR).parent / "evaluation" / data.fingerprint[:16]
            self.stdout.write(f"Loaded {data.counts()}; text embeddings in {cache} ...")
            build_embeddings(data, cache, model_path=settings.RECO_TEXT_MODEL_PATH,
                             progress=options["verbosity"] > 1)
            params = TwoTowerParams(epochs=options["epochs"], seed=options["seed"])
            result = compare_leave_last_out(data, load_embeddings(cache), params,
                                            ease_l2_grid=options["ease_l2"],
                                            on_progress=lambda m: self.stdout.write(f"  {m}"))
        except ModelingError as exc:
            raise CommandError(str(exc)) from exc
        result["source"] = {"name": options["source"], "path": str(options["path"]), "counts": data.counts()}
        self.stdout.write(format_table(result))
        if options["output"]:
            target = Path(options["output"])
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(result, handle, indent=2)
            os.replace(tmp, target)
            self.stdout.write(self.style.SUCCESS(f"Results written to {target}"))
