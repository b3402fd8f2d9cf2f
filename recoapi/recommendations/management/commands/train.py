"""Train the two-tower model and write a versioned bundle to models/."""

from __future__ import annotations

import argparse
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from modeling.errors import ModelingError
from modeling.two_tower import TwoTowerParams
from recoapi.exceptions import ApplicationError
from recoapi.recommendations.services import model_train


class Command(BaseCommand):
    help = ("Train the TFRS two-tower model on the imported data and embeddings; write models/<version>/. "
            "Skipped when a model from the same inputs and parameters exists.")

    def add_arguments(self, parser: CommandParser) -> None:
        d = TwoTowerParams()
        parser.add_argument("--activate", action="store_true", help="Make the new model the active one.")
        parser.add_argument("--force", action="store_true", help="Train even when an identical model exists.")
        parser.add_argument("--epochs", type=int, default=d.epochs, help="Maximum epochs (early stopping).")
        parser.add_argument("--batch-size", type=int, default=d.batch_size, help="Examples per step.")
        parser.add_argument("--embedding-dim", type=int, default=d.embedding_dim, help="Output vector size.")
        parser.add_argument("--learning-rate", type=float, default=d.learning_rate, help="Adam learning rate.")
        parser.add_argument("--temperature", type=float, default=d.temperature, help="Softmax temperature.")
        parser.add_argument("--seed", type=int, default=d.seed, help="Random seed.")
        parser.add_argument("--logq-correction", action=argparse.BooleanOptionalAction, default=d.logq_correction,
                            help="Correct the in-batch softmax for how often popular items appear as negatives.")

    def handle(self, *args: Any, **options: Any) -> None:
        for name in ("epochs", "batch_size", "embedding_dim"):
            if options[name] < 1:
                raise CommandError(f"--{name.replace('_', '-')} must be at least 1, got {options[name]}")
        if options["learning_rate"] <= 0 or options["temperature"] <= 0:
            raise CommandError("--learning-rate and --temperature must be positive")
        params = TwoTowerParams(epochs=options["epochs"], batch_size=options["batch_size"],
                                embedding_dim=options["embedding_dim"], learning_rate=options["learning_rate"],
                                temperature=options["temperature"], seed=options["seed"],
                                logq_correction=options["logq_correction"])

        def on_epoch(row: dict[str, float]) -> None:
            if options["verbosity"] > 0:
                self.stdout.write(f"  epoch {row['epoch']}/{row['epochs']}: loss {row['loss']:.3f}, "
                                  f"validation HR@10 {row['val_hr@10']:.4f}, NDCG@10 {row['val_ndcg@10']:.4f}")

        self.stdout.write("Training the two-tower model ...")
        try:
            result = model_train(params=params, activate=options["activate"], force=options["force"],
                                 on_epoch=on_epoch)
        except (ModelingError, ApplicationError) as exc:
            raise CommandError(str(exc)) from exc
        if result["skipped"]:
            self.stdout.write(f"A model from the same inputs exists: {result['version']} (training skipped).")
        metrics = result["metrics"]
        for name, values in metrics.items():
            self.stdout.write(f"  test {name:<10} HR@10 {values['hr@10']:.4f}  NDCG@10 {values['ndcg@10']:.4f}  "
                              f"Recall@50 {values['recall@50']:.4f}  coverage@10 {values['coverage@10']:.3f}")
        if not result["skipped"]:
            self.stdout.write(f"  {result['train_seconds']} s, {result['examples_per_second']} examples/s")
        state = " and activated" if result["activated"] else ""
        self.stdout.write(self.style.SUCCESS(f"Model {result['version']} ready{state}."))
