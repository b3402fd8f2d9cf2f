"""Train the two-tower model and write a versioned bundle to models/."""

from __future__ import annotations

import argparse
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from modeling.errors import ModelingError
from modeling.params import TwoTowerParams
from modeling.reranker import describe_blend
from modeling.splits import HELD_OUT_MIN_ITEMS
from modeling.tuning import DEFAULT_BUDGET_SECONDS, SEARCH_SPACE, read_params
from recoapi.exceptions import ApplicationError
from recoapi.recommendations.management.stage_progress import echo_stage_progress
from recoapi.recommendations.services import model_train


class Command(BaseCommand):
    help = ("Train the TFRS two-tower model on the imported data and embeddings; write models/<version>/. "
            "Skipped when a model from the same inputs and parameters exists.")

    def add_arguments(self, parser: CommandParser) -> None:
        d = TwoTowerParams()
        parser.add_argument("--activate", action="store_true", help="Make the new model the active one.")
        parser.add_argument("--force", action="store_true", help="Train even when an identical model exists.")
        parser.add_argument("--params", help="A JSON file of TwoTowerParams fields, or the output of "
                                             "`manage.py evaluate --search` (its best parameters); the options "
                                             "below override it.")
        parser.add_argument("--epochs", type=int, help=f"Maximum epochs (early stopping; default {d.epochs}).")
        parser.add_argument("--batch-size", type=int, help=f"Examples per step (default {d.batch_size}).")
        parser.add_argument("--embedding-dim", type=int, help=f"Output vector size (default {d.embedding_dim}).")
        parser.add_argument("--learning-rate", type=float, help=f"Adam learning rate (default {d.learning_rate}).")
        parser.add_argument("--temperature", type=float, help=f"Softmax temperature (default {d.temperature}).")
        parser.add_argument("--seed", type=int, help=f"Random seed (default {d.seed}).")
        parser.add_argument("--refit", action="store_true",
                            help="After measuring on held-out interactions, train again on every interaction for "
                                 "the chosen number of epochs and publish that model instead of the measured one.")
        searches = parser.add_mutually_exclusive_group()  # both given: which one wins was not said
        searches.add_argument("--budget", type=float, default=DEFAULT_BUDGET_SECONDS, metavar="SECONDS",
                              help="Seconds for a search of two-tower parameters on this shop's validation items "
                                   "after the first training (each further trial starts only if the time left "
                                   f"covers the last one; default {DEFAULT_BUDGET_SECONDS:g}). The ranking stage is "
                                   "always chosen on the validation items.")
        searches.add_argument("--no-search", action="store_true",
                              help="Train the given (or default) parameters only; same as --budget 0.")
        parser.add_argument("--workers", type=int, default=1, metavar="N",
                            help="Fit the towers on N processes of this machine (TensorFlow's "
                                 "MultiWorkerMirroredStrategy on loopback ports; the batch size must be a multiple "
                                 "of N). Each training pays a few seconds to start the workers (default 1).")
        parser.add_argument("--logq-correction", action=argparse.BooleanOptionalAction, default=None,
                            help="Correct the in-batch softmax for how often popular items appear as negatives "
                                 f"(default {'on' if d.logq_correction else 'off'}).")

    def handle(self, *args: Any, **options: Any) -> None:
        names = ("epochs", "batch_size", "embedding_dim", "learning_rate", "temperature", "seed", "logq_correction")
        overrides = {name: options[name] for name in names if options[name] is not None}
        try:
            base = read_params(options["params"]) if options["params"] else TwoTowerParams()
            params = TwoTowerParams.from_dict(overrides, base)
        except ValueError as exc:
            option = next((name for name in names if f"parameter {name} " in str(exc)), None)
            message = str(exc)
            if option:
                message = message.replace(f"parameter {option} ", f"--{option.replace('_', '-')} ")
            raise CommandError(message) from exc
        except ModelingError as exc:
            raise CommandError(str(exc)) from exc
        if options["workers"] < 1:
            raise CommandError(f"--workers must be 1 or more, got {options['workers']}")
        if params.batch_size % options["workers"]:
            raise CommandError(f"--workers {options['workers']} does not divide the batch size {params.batch_size}: "
                               f"each worker takes an equal share of every batch (choose --batch-size)")
        budget = 0.0 if options["no_search"] else options["budget"]
        if budget < 0 or budget != budget:
            raise CommandError(f"--budget must be 0 or more seconds, got {options['budget']}")

        def on_trial(entry: dict[str, Any]) -> None:
            if options["verbosity"] == 0:
                return
            varied = ", ".join(f"{name}={entry['params'][name]}" for name in SEARCH_SPACE if name in entry["params"])
            tail = f"; {varied}" if entry["trial"] else "; the given parameters"
            if entry.get("cut"):
                tail += "; stopped when the budget was spent"
            self.stdout.write(f"  search trial {entry['trial']}: validation NDCG@10 {entry['val_ndcg@10']:.4f} "
                              f"(epoch {entry['best_epoch']}, {entry['seconds']} s{tail})")

        def on_epoch(row: dict[str, float]) -> None:
            if options["verbosity"] == 0:
                return
            if row.get("refit"):
                self.stdout.write(f"  refit on every interaction, epoch {row['epoch']}/{row['epochs']}: "
                                  f"loss {row['loss']:.3f}")
            else:
                self.stdout.write(f"  epoch {row['epoch']}/{row['epochs']}: loss {row['loss']:.3f}, "
                                  f"validation HR@10 {row['val_hr@10']:.4f}, NDCG@10 {row['val_ndcg@10']:.4f}")

        started = time.monotonic()
        try:
            with echo_stage_progress(self.stdout.write, enabled=options["verbosity"] > 0):
                result = model_train(params=params, activate=options["activate"], force=options["force"],
                                     refit=options["refit"], budget_seconds=budget, on_epoch=on_epoch,
                                     on_trial=on_trial, workers=options["workers"],
                                     on_start=lambda: self.stdout.write("Training the two-tower model ..."))
        except (ModelingError, ApplicationError) as exc:
            raise CommandError(str(exc)) from exc
        data = result["data"]
        if data["source"] == "database":
            self.stdout.write(f"  trained on the database: {data['interactions']:,} interactions "
                              f"({data['live_interactions']:,} live), {data['items']:,} products; snapshot in "
                              f"RECO_PROCESSED_DIR/training")
        if result["skipped"]:
            self.stdout.write(f"A model from the same inputs exists: {result['version']} (training skipped).")
        metrics = result["metrics"]
        if metrics and all(values.get("users", 1) == 0 for values in metrics.values()):
            self.stdout.write(f"  not measured: no shopper has {HELD_OUT_MIN_ITEMS} distinct products (one to learn "
                              "from, one for validation, one for test), so none was held out and every figure would "
                              "read 0; the model learned from every interaction")
            metrics = {}
        for name, values in metrics.items():
            self.stdout.write(f"  test {name:<10} HR@10 {values['hr@10']:.4f}  NDCG@10 {values['ndcg@10']:.4f}  "
                              f"Recall@50 {values['recall@50']:.4f}  coverage@10 {values['coverage@10']:.3f}")
        if "popularity" in metrics:  # not evaluate's popularity baseline, which counts shoppers per product
            self.stdout.write("  (popularity here sums each product's interactions by their weights, repeats "
                              "included; evaluate's popularity baseline counts its shoppers)")
        search = result.get("search") or {}
        searched = bool(search.get("trials")) and search.get("budget_seconds", 0) > 0
        if searched:
            self.stdout.write(f"  search: {len(search['trials'])} trial(s) in {search['seconds']} s (budget "
                              f"{search['budget_seconds']:g} s); trial {search['best_trial']} kept")
        elif search.get("trials"):
            self.stdout.write(f"  no search: one training with the given parameters, {search['seconds']} s")
        stage = result.get("ranking_stage") or {}
        took = (stage.get("selection") or {}).get("seconds")
        if stage:
            self.stdout.write(f"  {stage_line(stage)}")
        if result.get("refit_epochs"):
            self.stdout.write(f"  (measured with each shopper's last two products held out; the published model "
                              f"was trained again on every interaction for {result['refit_epochs']} epochs)")
        if not result["skipped"]:
            on = f" on {options['workers']} workers" if options["workers"] > 1 else ""
            self.stdout.write(f"  training took {result['train_seconds']} s, {result['examples_per_second']} "
                              f"examples/s{on}")
        if not result["skipped"]:
            parts = [f"the two-tower search {search['seconds']:g} s" if searched else
                     f"the two-tower training with the given parameters {search['seconds']:g} s"
                     if search.get("trials") else "",
                     f"the ranking stage's choice {took:g} s" if stage and took is not None else ""]
            known = ", ".join(part for part in parts if part)
            self.stdout.write(f"  in all {time.monotonic() - started:.0f} s" + (
                f" ({known}; the rest: reading the data, fitting the candidate sources, measuring on the test items "
                "and publishing)" if known else ""))
        state = " and activated" if result["activated"] else ""
        self.stdout.write(self.style.SUCCESS(f"Model {result['version']} ready{state}."))


def stage_line(stage: dict[str, Any]) -> str:
    """The summary line of a ranking stage as the manifest records it (:func:`modeling.reranker.stage_summary`):
    what orders the candidates (a blend: the scores it weighs; LambdaMART: its trees), and the sources."""
    rules = stage["sources"].get("sequence") or {}
    took = (stage.get("selection") or {}).get("seconds")
    ranker = stage["ranker"]
    blend = describe_blend(stage.get("weights") or {})
    if stage.get("rounds"):  # LambdaMART, from nothing or boosted from a blend (lightgbm+prior)
        ranker += f" ({stage['rounds']} trees" + (f", boosted from the blend {blend})" if blend else ")")
    elif blend:  # only the scores it weighs: the other sources only propose candidates
        ranker += f" of {blend}"
    return (f"ranking stage: {ranker} orders the candidates of the {stage['sources']['item_item']} item-item, "
            f"transition, sequential rules ({rules.get('window')} steps from the {rules.get('history')} most recent "
            f"products), popular and two-tower sources (chosen on the validation items"
            f"{'' if took is None else f' in {took:g} s'})")
