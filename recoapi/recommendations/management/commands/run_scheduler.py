"""Retrain on a schedule: every interval, when enough new interactions arrived."""

from __future__ import annotations

import signal
import threading
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from modeling.tuning import DEFAULT_BUDGET_SECONDS

MAX_INTERVAL_SECONDS = 365 * 24 * 3600


class Command(BaseCommand):
    help = ("Run `retrain` every RECO_RETRAIN_INTERVAL seconds when at least RECO_RETRAIN_MIN_EVENTS interactions "
            "arrived since the data of the active model (or of the last attempt). One training at a time across "
            "processes and hosts: a second scheduler waits its turn and says so. At each check, deletes the "
            "recommendation lists older than RECO_LIST_RETENTION_DAYS (prune_lists). Stops on Ctrl-C or SIGTERM.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--interval", type=float, default=settings.RECO_RETRAIN_INTERVAL,
                            help=f"Seconds between checks (default RECO_RETRAIN_INTERVAL, "
                                 f"{settings.RECO_RETRAIN_INTERVAL:g}).")
        parser.add_argument("--min-events", type=int, default=settings.RECO_RETRAIN_MIN_EVENTS,
                            help=f"New interactions needed to retrain (default RECO_RETRAIN_MIN_EVENTS, "
                                 f"{settings.RECO_RETRAIN_MIN_EVENTS}).")
        parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET_SECONDS, metavar="SECONDS",
                            help=f"Two-tower search budget of each retraining (default {DEFAULT_BUDGET_SECONDS:g}).")
        parser.add_argument("--once", action="store_true", help="Check once and exit (for cron).")

    def handle(self, *args: Any, **options: Any) -> None:
        problems = []
        if not 0 < options["interval"] <= MAX_INTERVAL_SECONDS:  # NaN and inf too (the wait overflowed on inf)
            problems.append(f"--interval (default RECO_RETRAIN_INTERVAL) must be more than 0 and at most "
                            f"{MAX_INTERVAL_SECONDS:,} seconds (a year), got {options['interval']:g}")
        if options["min_events"] < 1:
            problems.append(f"--min-events (default RECO_RETRAIN_MIN_EVENTS) must be at least 1, got "
                            f"{options['min_events']}")
        if not 0 <= options["budget"] < float("inf"):
            problems.append(f"--budget must be 0 or more seconds, got {options['budget']:g}")
        if problems:
            raise CommandError("; ".join(problems))
        stop = threading.Event()
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, lambda *_: _stop_or_exit(stop))
        try:
            self._loop(stop, options)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        self.stdout.write("Scheduler stopped.")

    def _loop(self, stop: threading.Event, options: dict[str, Any]) -> None:
        from recoapi.recommendations.retraining import (
            TrainingBusy,
            active_unservable,
            model_retrain,
            new_interactions,
            newest_read,
        )

        attempted: int | None = None  # the largest interaction id counted before the last attempt that trained
        repaired = False  # an active model this version cannot serve was retrained once (not at every check)
        self.stdout.write(f"Scheduler: every {options['interval']:g} s, retrain after {options['min_events']} new "
                          f"interactions.")
        while not stop.is_set():
            # Counted from the newest data any model trained on (after a rollback, not from the older model's), or
            # that the last retraining read (a refused one's held-out days are not new to the next check, nor to
            # the next `--once`): the interactions recorded since, whatever their time (see new_interactions).
            last_id, until = newest_read()
            if attempted is not None:
                last_id = max(attempted, last_id or 0)
            count, newest = new_interactions(last_id=last_id, until=until)
            unservable = "" if repaired else active_unservable()
            if count >= options["min_events"] or unservable:
                if unservable:  # after an upgrade: no recommendations until a model this version reads is trained
                    repaired = True
                    why = f"the active model cannot be served by this version ({unservable})"
                else:
                    why = f"{count} new interactions"
                try:  # said once the training lock is held (before, "retraining" came before "another process ...")
                    run = model_retrain(holdout_days=settings.RECO_RETRAIN_HOLDOUT_DAYS,
                                        tolerance=settings.RECO_RETRAIN_TOLERANCE, budget_seconds=options["budget"],
                                        say=lambda line: None,
                                        on_start=lambda why=why: self.stdout.write(f"{why}: retraining"))
                except TrainingBusy:
                    self.stdout.write(f"{why}, but another process is training; " + (
                        "not retraining" if options["once"] else "waiting for the next check"))
                else:
                    attempted = newest if newest is not None else last_id
                    self.stdout.write(f"retraining {run.decision}: {run.reason}")
            elif options["once"] or options["verbosity"] > 1:  # a loop's every check would flood the console
                self.stdout.write(f"{count} new interaction(s) since the last training, fewer than "
                                  f"{options['min_events']}: not retraining")
            self._prune()
            if options["once"]:
                break
            stop.wait(options["interval"])

    def _prune(self) -> None:
        """Delete the lists older than RECO_LIST_RETENTION_DAYS (0: none); a database that refuses is retried at
        the next check."""
        from django.db import DatabaseError

        from recoapi.recommendations.services import recommendation_lists_prune

        days = settings.RECO_LIST_RETENTION_DAYS
        if days <= 0:
            return
        try:
            deleted = recommendation_lists_prune(days=days)
        except DatabaseError as exc:
            self.stdout.write(f"could not delete old recommendation lists (retried at the next check): {exc}")
            return
        if deleted:
            self.stdout.write(f"deleted {deleted} recommendation list(s) answered more than {days:g} days ago")


def _stop_or_exit(stop: threading.Event) -> None:
    """First signal: finish the current check (a retraining in progress included), then stop. Second: now
    (a retraining killed midway leaves everything as it was)."""
    if stop.is_set():
        raise SystemExit(130)
    stop.set()
