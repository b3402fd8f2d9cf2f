"""Train a candidate on the database and activate it only when it does as well as the active model."""

from __future__ import annotations

import math
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from modeling.errors import ArtifactError
from modeling.tuning import DEFAULT_BUDGET_SECONDS
from recoapi.recommendations import model_store
from recoapi.recommendations.models import TrainingRun


class Command(BaseCommand):
    help = ("Train on what the database holds, without its newest interactions; compare the candidate with the "
            "active model on those, and activate it only when its recall@10 is not worse by more than the "
            "tolerance. Every run is recorded (admin: Training runs).")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--holdout-days", type=float, default=settings.RECO_RETRAIN_HOLDOUT_DAYS,
                            help="Days of the newest interactions held out to compare the two models (never any "
                                 "the active model trained on; default RECO_RETRAIN_HOLDOUT_DAYS, "
                                 f"{settings.RECO_RETRAIN_HOLDOUT_DAYS:g}).")
        parser.add_argument("--tolerance", type=float, default=settings.RECO_RETRAIN_TOLERANCE,
                            help="How much lower the candidate's recall@10 may be (default RECO_RETRAIN_TOLERANCE, "
                                 f"{settings.RECO_RETRAIN_TOLERANCE:g}).")
        parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_SECONDS, metavar="SECONDS",
                            help=f"Two-tower search budget, as for train (default {DEFAULT_BUDGET_SECONDS:g}).")

    def handle(self, *args: Any, **options: Any) -> None:
        from recoapi.recommendations.retraining import TrainingBusy, model_retrain

        for name in ("holdout_days", "tolerance", "budget"):
            value = options[name]
            if (not math.isfinite(value) or value < 0 or (name == "holdout_days" and value == 0)
                    or (name == "tolerance" and value > 1)):
                bound = {"holdout_days": "a positive number",
                         "tolerance": "between 0 and 1 (a difference of recall@10; 1 accepts any candidate)"}.get(
                    name, "0 or more")
                raise CommandError(f"--{name.replace('_', '-')} must be {bound}, got {value:g}")
        try:
            run = model_retrain(holdout_days=options["holdout_days"], tolerance=options["tolerance"],
                                budget_seconds=options["budget"], say=lambda line: self.stdout.write(f"  {line}")
                                if options["verbosity"] else None)
        except TrainingBusy as exc:
            raise CommandError(exc.message) from exc
        held = run.holdout or {}
        self.stdout.write(f"Retraining {run.decision}: {run.reason}")
        if run.candidate_metrics:
            measured = _published_from(run.candidate_version)  # the figures are the measured bundle's
            name = f"{measured} (activated as {run.candidate_version})" if measured else run.candidate_version
            self.stdout.write(f"  candidate {name}: {_metrics(run.candidate_metrics)}")
        if run.previous_metrics:
            self.stdout.write(f"  active    {run.previous_version}: {_metrics(run.previous_metrics)}")
        if held:
            self.stdout.write(f"  held out: {held.get('interactions', 0):,} interactions of "
                              f"{held.get('shoppers', 0):,} shoppers; {run.seconds:.0f} s")
        if run.decision == TrainingRun.FAILED:
            raise CommandError(f"Retraining failed: {run.reason}")


def _published_from(version: str) -> str:
    """The measured candidate ``version`` was published again from (with the held-out interactions), or ""."""
    try:
        return str(model_store.read_manifest(version).get("published_from") or "") if version else ""
    except ArtifactError:
        return ""


def _metrics(values: dict[str, float]) -> str:
    return (f"recall@10 {values.get('recall@10', 0):.4f}, HR@10 {values.get('hr@10', 0):.4f} "
            f"({values.get('shoppers', 0)} shoppers)")
