"""Compare the two-tower model with the baselines on a data source (full ranking)."""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from modeling.atomic import atomic_write, blocking_file
from modeling.cold_start import cold_items, cold_users, format_cold_table
from modeling.embeddings import build_embeddings, load_embeddings
from modeling.errors import ModelingError
from modeling.evaluate import EASE_L2_GRID, compare_leave_last_out, format_differences, format_table, json_safe
from modeling.params import TwoTowerParams
from modeling.sources import SOURCES, load_source
from modeling.splits import TIED_NOTE_SHARE, leave_last_out_split, require_held_out, tied_share
from modeling.tuning import DEFAULT_BUDGET_SECONDS, SEARCH_SPACE, budgeted_search, random_search, read_params
from recoapi.catalog.services import event_time_bounds
from recoapi.recommendations.management.stage_progress import echo_stage_progress


def _trial_line(trial: dict[str, Any]) -> str:
    varied = ", ".join(f"{name}={trial['params'][name]}" for name in SEARCH_SPACE)
    return (f"trial {trial['trial']}: validation NDCG@10 {trial['val_ndcg@10']:.4f}, HR@10 {trial['val_hr@10']:.4f} "
            f"(epoch {trial['best_epoch']}, {trial['seconds']} s; {varied}"
            f"{'; stopped when the budget was spent' if trial.get('cut') else ''})")


def _check_writable(target: Path) -> None:
    """Refuse an ``--output`` that could not be written once the evaluation is done: a folder, or a file in a
    folder that cannot be made or written in (tried with a temporary file beside it, then removed).

    Raises:
        CommandError: saying why.
    """
    if target.is_dir():
        raise CommandError(f"--output {target} is a folder; give the path of the JSON file to write")
    blocked = blocking_file(target)
    if blocked is not None:
        raise CommandError(f"--output {target}: {blocked} is a file, not a folder")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommandError(f"--output {target}: cannot make its folder ({exc.strerror})") from exc
    try:
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"):
            pass
    except OSError as exc:
        raise CommandError(f"--output {target}: cannot write in its folder {target.parent} ({exc.strerror})"
                           ) from exc


class Command(BaseCommand):
    help = ("Evaluate the two-tower model against popularity, item-kNN, EASE, implicit ALS, transitions, "
            "transitions+EASE and sequential rules (every baseline tuned on the validation items) under "
            "leave-last-out and the cold-start protocols (full ranking, input items excluded). Prints the tables "
            "and can write them as JSON.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--source", choices=SOURCES, default=None,
                            help="The data's layout (default: RECO_DATA_SOURCE, the service's own).")
        parser.add_argument("--path", default=None,
                            help="Files of the source (default: RECO_DATA_PATH, the service's own).")
        parser.add_argument("--output", help="Write the results as JSON to this file.")
        parser.add_argument("--params", help="Two-tower parameters: a JSON object of TwoTowerParams fields, or "
                                                 "the output of an earlier --search run (its best parameters).")
        searches = parser.add_mutually_exclusive_group()  # two of them given: which one wins was not said
        searches.add_argument("--search", type=int, default=0, metavar="N",
                              help="First try N parameter sets (the given ones and N-1 random draws) and keep the "
                                   "best on the validation items; the log goes into --output.")
        searches.add_argument("--budget", type=float, default=DEFAULT_BUDGET_SECONDS, metavar="SECONDS",
                              help="As `train` does by default: after the first training, try other two-tower "
                                   "parameters on the validation items while this many seconds last "
                                   f"(default {DEFAULT_BUDGET_SECONDS:g}).")
        searches.add_argument("--no-search", action="store_true", help="Same as --budget 0.")
        parser.add_argument("--epochs", type=int, help="Two-tower max epochs (overrides --params).")
        parser.add_argument("--seed", type=int, default=TwoTowerParams().seed,
                            help="Seed of the two-tower model, the search and the cold-start samples.")
        parser.add_argument("--logq-correction", action=argparse.BooleanOptionalAction, default=None,
                            help="Two-tower: correct the in-batch softmax for item popularity (overrides --params).")
        parser.add_argument("--ease-l2", type=float, nargs="+", default=list(EASE_L2_GRID),
                            help="EASE λ values tried first on the validation items (widened past a winning edge; "
                                 "a single value is used as given).")
        parser.add_argument("--refit", action="store_true",
                            help="Leave-last-out: fit every model again on the training and validation "
                                 "interactions before ranking the test items (as `train` does with everything).")
        parser.add_argument("--protocols", choices=["all", "leave_last_out", "cold"], default="all",
                            help="leave_last_out (protocol 1), cold (cold users and cold items), or all. The "
                                 "baselines' parameters and the two-tower search come from leave-last-out's "
                                 "validation items: with cold alone, the baselines keep their defaults and the "
                                 "two-tower its parameters (not the figures of a run with all).")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["epochs"] is not None and options["epochs"] < 1:
            raise CommandError("--epochs must be at least 1")
        if options["search"] < 0:
            raise CommandError("--search must be 0 or more")
        budget = 0.0 if options["no_search"] or options["search"] > 0 else options["budget"]
        if not budget >= 0:
            raise CommandError(f"--budget must be 0 or more seconds, got {options['budget']}")
        if options["seed"] < 0:
            raise CommandError(f"--seed must be 0 or more, got {options['seed']}")
        refused = [value for value in options["ease_l2"] if not 0 < value < float("inf")]
        if refused:
            raise CommandError(f"--ease-l2 values must be positive numbers, got {refused[0]:g}")
        target = Path(options["output"]) if options["output"] else None
        if target is not None:  # checked now, not after minutes of work
            _check_writable(target)
        defaults = [name for name in ("source", "path") if options[name] is None]
        options["source"] = options["source"] or settings.RECO_DATA_SOURCE
        options["path"] = options["path"] or str(settings.RECO_DATA_PATH)
        self.stdout.write(f"Evaluating the {options['source']} data at {options['path']}"
                          + (f" ({' and '.join('--' + n for n in defaults)} not given: the service's own data, "
                             "RECO_DATA_SOURCE and RECO_DATA_PATH)" if defaults else ""))
        try:
            with echo_stage_progress(self.stdout.write, enabled=options["verbosity"] > 0):
                params = read_params(options["params"]) if options["params"] else TwoTowerParams()
                overrides = {"seed": options["seed"], "epochs": options["epochs"],
                             "logq_correction": options["logq_correction"]}
                params = replace(params, **{k: v for k, v in overrides.items() if v is not None})
                data = load_source(options["source"], options["path"], time_bounds=event_time_bounds())
                for note in data.notes:  # as load_data prints them
                    self.stdout.write(self.style.WARNING(f"Note: {note}."))
                tied = tied_share(data.interactions)
                if tied >= TIED_NOTE_SHARE:
                    self.stdout.write(f"Note: in {tied:.0%} of the steps from a shopper's interaction to their next, "
                                      "both have the same time (Amazon reviews, for one, carry only the day): the "
                                      "order of those, so which product counts as last and what the sequential models "
                                      "learn, is a seeded random one.")
                # Leave-last-out's split, read by the search too; refused before any work where it holds no test
                # item (every metric would be 0).
                split = None
                if options["protocols"] in ("all", "leave_last_out"):
                    split = leave_last_out_split(data.interactions)
                    require_held_out(split)
                cache = Path(settings.RECO_PROCESSED_DIR).parent / "evaluation" / data.fingerprint[:16]
                self.stdout.write(f"Loaded {data.counts()}; text embeddings in {cache} ...")
                build_embeddings(data, cache, model_path=settings.RECO_TEXT_MODEL_PATH,
                                 progress=options["verbosity"] > 1)
                embeddings = load_embeddings(cache)
                say = lambda message: self.stdout.write(f"  {message}")  # noqa: E731
                result: dict[str, Any] = {}
                if options["search"] > 0:
                    self.stdout.write(f"Parameter search: {options['search']} trials on the validation items ...")
                    search = random_search(data, embeddings, params, trials=options["search"], seed=options["seed"],
                                           on_trial=lambda t: say(_trial_line(t)))
                    params = TwoTowerParams.from_dict(search["best"])
                    say(f"best: trial {search['best_trial']}")
                    result["search"] = search
                trained = None
                if budget > 0 and options["protocols"] in ("all", "leave_last_out"):
                    self.stdout.write(f"Two-tower search on the validation items ({budget:g} s budget) ...")
                    trained = budgeted_search(data, embeddings, params, budget_seconds=budget, seed=options["seed"],
                                              split=split,
                                              on_trial=lambda t: say(_trial_line(t)))
                    params = trained.params
                    result["budget_search"] = trained.search
                    if trained.search and trained.search.get("trials"):
                        say(f"kept: trial {trained.search['best_trial']} (the best validation NDCG@10)")
                result["params"] = params.to_dict()
                if options["protocols"] in ("all", "leave_last_out"):
                    result.update(compare_leave_last_out(data, embeddings, params, ease_l2_grid=options["ease_l2"],
                                                         refit=options["refit"], trained=trained, on_progress=say))
                if options["protocols"] in ("all", "cold"):
                    if "baselines" not in result:  # their grids are searched on leave-last-out's validation items
                        self.stdout.write("Cold-start protocols alone: the baselines keep their default parameters "
                                          "and the two-tower is not searched (--protocols all tunes both on the "
                                          "validation items).")
                    ease_l2 = result.get("ease_l2") or options["ease_l2"][0]
                    result["cold_users"] = cold_users(data, embeddings, params, seed=options["seed"], ease_l2=ease_l2,
                                                      baselines=result.get("baselines"), on_progress=say)
                    result["cold_items"] = cold_items(data, embeddings, params, seed=options["seed"], on_progress=say)
        except ModelingError as exc:
            raise CommandError(str(exc)) from exc
        result["source"] = {"name": options["source"], "path": str(options["path"]), "counts": data.counts()}
        if "models" in result:
            refitted = " every model refitted on training + validation" if result.get("refit") else ""
            self.stdout.write(f"Leave-last-out (full ranking{refitted}):")
            self.stdout.write(format_table(result))
            self.stdout.write(format_differences(result))
        if "cold_users" in result:
            self.stdout.write(format_cold_table(result))
        if target is not None:
            try:
                with atomic_write(target) as handle:
                    json.dump(json_safe(result), handle, indent=2, allow_nan=False)
            except OSError as exc:  # the folder changed during the evaluation, or the disk is full
                raise CommandError(f"--output {target}: cannot write it ({exc.strerror or exc})") from exc
            self.stdout.write(self.style.SUCCESS(f"Results written to {target}"))
