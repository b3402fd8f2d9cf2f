"""Management commands refuse bad command lines with a message (a CommandError), never a stack trace."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from io import StringIO
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
@pytest.mark.parametrize(("arguments", "message"), [
    (("--username", "", "--password", "long-enough-1"), "may not be empty"),
    (("--username", "a b/c", "--password", "long-enough-1"), "Enter a valid username"),
    (("--username", "ops", "--password", "short"), "--password: This password is too short"),
    (("--username", "u" * 151, "--password", "long-enough-1"), "at most 150 characters"),
])
def test_create_staff_user_refuses_what_the_admin_would(arguments: tuple[str, ...], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("create_staff_user", *arguments, stdout=StringIO())
    assert not get_user_model().objects.exists()


@pytest.mark.django_db
def test_create_staff_user_keeps_the_old_password_when_a_new_one_is_refused() -> None:
    out = StringIO()
    call_command("create_staff_user", "--username", "ops", "--password", "ops-pass-123", stdout=out)
    assert "API token: " in out.getvalue()
    with pytest.raises(CommandError, match="too short"):
        call_command("create_staff_user", "--username", "ops", "--password", "x", stdout=StringIO())
    assert get_user_model().objects.get(username="ops").check_password("ops-pass-123")


def test_generate_demo_data_into_a_file_or_an_impossible_folder_is_a_message(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    for output in (tmp_path / "a-file", tmp_path / "a-file" / "below"):
        with pytest.raises(CommandError, match="cannot write the demo data to"):
            call_command("generate_demo_data", "--output", str(output), "--users", "20", "--items", "30",
                         "--interactions", "200", verbosity=0, stdout=StringIO())
    assert (tmp_path / "a-file").read_text() == "not a folder"


def test_load_data_into_a_database_without_tables_says_to_migrate(tmp_path: Path) -> None:
    """A new DATABASE_URL: the import ended in a stack trace ("no such table: catalog_product")."""
    (tmp_path / "interactions.csv").write_text("user_id,item_id,timestamp\na,p1,1700000000\n")
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'new.sqlite3'}",
           "RECO_PROCESSED_DIR": str(tmp_path / "processed"), "RECO_LOGS_DIR": str(tmp_path / "logs")}
    done = subprocess.run([sys.executable, "manage.py", "load_data", "--source", "csv", "--path", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
    assert "lacks tables of this version (none yet, or an upgrade without migrate): run " \
           "`.venv/bin/python manage.py migrate` first" in done.stderr
    assert not (tmp_path / "processed").exists()


def test_a_command_after_an_upgrade_without_migrate_says_to_migrate(tmp_path: Path) -> None:
    """rollback on the tables of the version before (no record of activations yet) said 'no such table: ...; check
    DATABASE_URL, that its server is running and that the database exists'."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'old.sqlite3'}",
           "RECO_MODELS_DIR": str(tmp_path / "models"), "RECO_LOGS_DIR": str(tmp_path / "logs")}
    for command in (["migrate", "-v", "0"], ["migrate", "recommendations", "0005", "-v", "0"]):
        subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env, check=True, timeout=300)
    done = subprocess.run([sys.executable, "manage.py", "rollback"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "the database lacks tables of this version: run `.venv/bin/python manage.py migrate`" in done.stderr
    assert "check DATABASE_URL" not in done.stderr


def test_train_and_evaluate_show_the_ranking_stages_progress_lines() -> None:
    """Between the last two-tower trial and the end, train said nothing for minutes on a large shop."""
    import logging

    from recoapi.recommendations.management.stage_progress import echo_stage_progress

    written: list[str] = []
    train, grid = logging.getLogger("modeling.train"), logging.getLogger("modeling.grid_search")
    level = train.level, grid.level
    train.setLevel(logging.INFO)
    grid.setLevel(logging.INFO)
    try:
        with echo_stage_progress(written.append):
            train.info("ranking stage: item-item EASE λ=%g (validation NDCG@10 %.4f)", 2, 0.0141)
            train.info("epoch 1/15: loss 6.35")  # the commands show epochs themselves
            grid.info("%s %g: validation %.4f", "ranking stage: item-item EASE l2", 10, 0.0127)
        with echo_stage_progress(written.append, enabled=False):
            train.info("ranking stage: not shown")
        train.info("ranking stage: after the block")
    finally:
        train.setLevel(level[0])
        grid.setLevel(level[1])
    assert written == ["  ranking stage: item-item EASE λ=2 (validation NDCG@10 0.0141)",
                       "    ranking stage: item-item EASE l2 10: validation 0.0127"]


@pytest.mark.parametrize(("url", "said"), [
    ("postgress://shop@127.0.0.1/shop", "ImproperlyConfigured: DATABASE_URL's scheme 'postgress://' is not one this "
                                        "service can use: postgres://, postgresql:// or sqlite://"),
    ("postgres://shop@127.0.0.1:port/shop", "ImproperlyConfigured: DATABASE_URL is not a database URL this service"),
    # both said "scheme '://' is not one this service can use"
    ("127.0.0.1/shop", "ImproperlyConfigured: DATABASE_URL has no scheme (not shown: it may hold a "
                       "password): it starts with postgres://"),
    ("postgres//127.0.0.1/shop", "ImproperlyConfigured: DATABASE_URL has no scheme"),
    ("postgres://shop@127.0.0.1:5432/", "ImproperlyConfigured: DATABASE_URL names no database"),
    ("sqlite:////no-such-folder/below/db.sqlite3", "check DATABASE_URL, that its server is running"),
])
def test_a_database_url_that_cannot_work_is_one_line(tmp_path: Path, url: str, said: str) -> None:
    """Django's own commands (migrate) ended in a traceback through Django's internals, 35 to 95 lines."""
    env = {**os.environ, "DATABASE_URL": url, "RECO_LOGS_DIR": str(tmp_path / "logs")}
    done = subprocess.run([sys.executable, "manage.py", "migrate"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert said in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize("command", [("retrain", "--budget", "0"), ("load_data", "--source", "csv")])
def test_a_sqlite_file_in_a_missing_folder_is_one_line_for_the_commands_that_lock(tmp_path: Path,
                                                                                 command: tuple[str, ...]) -> None:
    """load_data, train --activate and retrain ended in a FileNotFoundError traceback from the lock file beside the
    database (migrate said it in one line)."""
    shop = tmp_path / "shop"  # files load_data reads before it takes its lock (the demo's are not in a fresh clone)
    shop.mkdir()
    (shop / "interactions.csv").write_text("user_id,item_id,timestamp\nu1,p1,1700000000\n")
    command = (*command, "--path", str(shop)) if command[0] == "load_data" else command
    env = {**os.environ, "DATABASE_URL": "sqlite:////no-such-folder/below/db.sqlite3",
           "RECO_LOGS_DIR": str(tmp_path / "logs")}
    done = subprocess.run([sys.executable, "manage.py", *command], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "cannot open /no-such-folder/below/db.sqlite3." in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize(("arguments", "said"), [
    (("--interval", "inf"), "--interval (default RECO_RETRAIN_INTERVAL) must be more than 0 and at most"),
    (("--interval", "0"), "got 0"),
    (("--min-events", "0"), "--min-events (default RECO_RETRAIN_MIN_EVENTS) must be at least 1"),
])
def test_run_scheduler_refuses_settings_it_cannot_keep(arguments: tuple[str, ...], said: str) -> None:
    """--interval inf started the scheduler, whose first wait then overflowed (a traceback, exit status 1)."""
    with pytest.raises(CommandError, match=re.escape(said)):
        call_command("run_scheduler", "--once", *arguments, stdout=StringIO())



@pytest.mark.django_db
def test_run_scheduler_once_does_not_retrain_on_what_the_last_retraining_read(settings, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """After a refused retraining, every `run_scheduler --once` (cron) retrained on the same data: the refused
    candidate's data ends at its held-out cut-off, so the held-out interactions counted as new at every check."""
    from datetime import UTC, datetime, timedelta

    from django.utils import timezone

    from recoapi.catalog.models import Interaction, Product, Shopper
    from recoapi.recommendations import retraining
    from recoapi.recommendations.models import TrainingRun

    settings.RECO_MODELS_DIR = tmp_path / "models"
    newest = datetime(2026, 11, 30, 12, tzinfo=UTC)
    product = Product.objects.create(id="p1", title="Kickboard")
    for n in range(3):
        Interaction.objects.create(shopper=Shopper.objects.create(id=f"s{n}"), product=product, event="view",
                                   occurred_at=newest - timedelta(hours=n))
    TrainingRun.objects.create(started_at=timezone.now(), seconds=1.0, decision=TrainingRun.REFUSED, reason="worse",
                               tolerance=0.01, holdout={"cutoff": int((newest - timedelta(days=1)).timestamp()),
                                                        "interactions": 3, "shoppers": 3,
                                                        "newest": int(newest.timestamp())})

    monkeypatch.setattr(retraining, "model_retrain",
                        _refused_retraining("retrained on the interactions the last retraining had read"))
    assert "0 new interaction(s) since the last training, fewer than 1: not retraining" in _scheduler_once(1)
    assert retraining.newest_read() == (None, int(newest.timestamp()))  # a run recorded before ids were

    Interaction.objects.create(shopper_id="s0", product=product, event="cart", occurred_at=newest + timedelta(hours=1))
    monkeypatch.setattr(retraining, "model_retrain", _skipped_retraining)
    assert "1 new interactions: retraining" in _scheduler_once(1)


def _scheduler_once(min_events: int) -> str:
    """What one check of ``run_scheduler --once --min-events N`` says."""
    out = StringIO()
    call_command("run_scheduler", "--once", "--min-events", str(min_events), stdout=out)
    return out.getvalue()


def _refused_retraining(reason: str) -> Callable[..., object]:
    """A stand-in for ``model_retrain`` that fails the test with ``reason`` if the scheduler calls it."""
    def retrain(**kwargs: object) -> object:
        raise AssertionError(reason)
    return retrain


def _skipped_retraining(*, on_start: Callable[[], None] | None = None, **kwargs: object) -> object:
    """A retraining that holds the lock at once (it says so through ``on_start``, as the real one does once it
    holds it) and then skips."""
    from recoapi.recommendations.models import TrainingRun

    if on_start is not None:
        on_start()
    return TrainingRun(decision="skipped", reason="ok")


def _bundle(models: Path, version: str, **manifest: object) -> None:
    """A published bundle as far as the scheduler reads one: its manifest."""
    import json

    (models / version).mkdir(parents=True)
    (models / version / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.django_db
def test_run_scheduler_counts_what_was_recorded_since_the_training_whatever_its_time(
        settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Events sent late with their original times (before the model's trained_until) were never new; and the
    interactions of trained_until's own second (cut to whole seconds) were new again right after the training."""
    from datetime import UTC, datetime, timedelta

    from recoapi.catalog.models import Interaction, Product, Shopper
    from recoapi.recommendations import retraining

    settings.RECO_MODELS_DIR = tmp_path / "models"
    trained_until = datetime(2026, 12, 6, 23, 45, 35, tzinfo=UTC)
    product = Product.objects.create(id="p1", title="Kickboard")
    shopper = Shopper.objects.create(id="s0")
    for moment in (trained_until - timedelta(hours=2), trained_until + timedelta(milliseconds=450),
                   trained_until + timedelta(milliseconds=630)):  # one batch of events stamped within a second
        Interaction.objects.create(shopper=shopper, product=product, event="view", occurred_at=moment)
    read = Interaction.objects.order_by("-id").first().id
    _bundle(tmp_path / "models", "20261206T234600Z", trained_until=int(trained_until.timestamp()),
            last_interaction_id=read)

    monkeypatch.setattr(retraining, "model_retrain",
                        _refused_retraining("retrained on the interactions the model had read"))
    assert "0 new interaction(s) since the last training, fewer than 1: not retraining" in _scheduler_once(1)

    # Late: 120 stamped 3 days earlier, 30 stamped 30 minutes earlier, 2 within trained_until's second.
    late = [trained_until - timedelta(days=3)] * 120 + [trained_until - timedelta(minutes=30)] * 30 + [
        trained_until + timedelta(milliseconds=100)] * 2
    Interaction.objects.bulk_create([Interaction(shopper=shopper, product=product, event="purchase", occurred_at=m)
                                     for m in late])
    monkeypatch.setattr(retraining, "model_retrain", _skipped_retraining)
    assert "152 new interactions: retraining" in _scheduler_once(100)


@pytest.mark.django_db
def test_run_scheduler_counts_by_time_from_a_bundle_published_before_manifests_recorded_the_last_id(
        settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bundle without ``last_interaction_id`` (published by an earlier version): what is timed after its
    trained_until is new, as before; once a bundle records the id, what was recorded after it is."""
    from datetime import UTC, datetime, timedelta

    from recoapi.catalog.models import Interaction, Product, Shopper
    from recoapi.recommendations import retraining

    settings.RECO_MODELS_DIR = tmp_path / "models"
    trained_until = datetime(2026, 12, 6, 23, 45, 35, tzinfo=UTC)
    product = Product.objects.create(id="p1", title="Kickboard")
    shopper = Shopper.objects.create(id="s0")
    for moment in (trained_until - timedelta(hours=2), trained_until, trained_until + timedelta(hours=1),
                   trained_until - timedelta(days=3)):  # the last one recorded late
        Interaction.objects.create(shopper=shopper, product=product, event="view", occurred_at=moment)
    _bundle(tmp_path / "models", "20261206T234600Z", trained_until=int(trained_until.timestamp()))
    monkeypatch.setattr(retraining, "model_retrain", _skipped_retraining)
    assert "1 new interaction(s) since the last training, fewer than 5: not retraining" in _scheduler_once(5)
    assert retraining.newest_read() == (None, int(trained_until.timestamp()))

    _bundle(tmp_path / "models", "20261207T000000Z", trained_until=int(trained_until.timestamp()),
            last_interaction_id=Interaction.objects.order_by("id").first().id)
    assert "3 new interaction(s) since the last training, fewer than 5: not retraining" in _scheduler_once(5)


def test_the_stage_line_names_what_orders_the_candidates_and_only_the_scores_a_blend_weighs() -> None:
    """A blend of item_item 0.8 and transition_last 0.2 read "blend over ease item-item, transition, sequential rules,
    popular and two-tower candidates", as if every source were blended."""
    from recoapi.recommendations.management.commands.train import stage_line

    sources = {"item_item": "ease", "sequence": {"window": 5, "history": 3}}
    blend = stage_line({"ranker": "blend", "rounds": 0, "sources": sources, "selection": {"seconds": 1.5},
                        "weights": {"two_tower": 0.0, "item_item": 0.8, "item_item_recent": 0.0,
                                    "transition_last": 0.2, "sequence": 0.0}})
    assert blend.startswith("ranking stage: blend of item_item x 0.8, transition_last x 0.2 orders the candidates "
                            "of the ease item-item, transition, sequential rules (5 steps from the 3 most recent ")
    assert "two_tower x" not in blend and blend.endswith("(chosen on the validation items in 1.5 s)")
    trees = stage_line({"ranker": "lightgbm", "rounds": 50, "weights": None, "sources": sources})
    assert trees.startswith("ranking stage: lightgbm (50 trees) orders") and trees.endswith("validation items)")
    boosted = stage_line({"ranker": "lightgbm+prior", "rounds": 25, "sources": sources,
                          "weights": {"two_tower": 0.25, "item_item": 0.75, "sequence": 0.0}})
    assert boosted.startswith("ranking stage: lightgbm+prior (25 trees, boosted from the blend two_tower x 0.25, "
                              "item_item x 0.75) orders")


@pytest.mark.django_db
def test_create_staff_user_names_the_variable_a_refused_value_came_from(monkeypatch: pytest.MonkeyPatch) -> None:
    """RECO_ADMIN_PASSWORD=short was refused as "--password: This password is too short"."""
    monkeypatch.setenv("RECO_ADMIN_PASSWORD", "short")
    with pytest.raises(CommandError, match="^RECO_ADMIN_PASSWORD: This password is too short"):
        call_command("create_staff_user", "--username", "ops", stdout=StringIO())
    with pytest.raises(CommandError, match="^--password: This password is too short"):
        call_command("create_staff_user", "--username", "ops", "--password", "tiny", stdout=StringIO())
    monkeypatch.setenv("RECO_ADMIN_USERNAME", "")
    with pytest.raises(CommandError, match="^RECO_ADMIN_USERNAME may not be empty"):
        call_command("create_staff_user", "--password", "long-enough-1", stdout=StringIO())
    assert not get_user_model().objects.exists()
    monkeypatch.delenv("RECO_ADMIN_USERNAME")
    monkeypatch.setenv("RECO_ADMIN_PASSWORD", "long-enough-1")
    out = StringIO()
    call_command("create_staff_user", stdout=out)
    assert "Staff user: admin / password: long-enough-1" in out.getvalue()


@pytest.mark.parametrize(("arguments", "said"), [
    (("--ease-l2", "10", "-1"), "--ease-l2 values must be positive numbers, got -1"),
    (("--ease-l2", "0"), "--ease-l2 values must be positive numbers, got 0"),
    (("--ease-l2", "nan"), "--ease-l2 values must be positive numbers, got nan"),
    (("--seed", "-1"), "--seed must be 0 or more, got -1"),
    pytest.param(("--output", "/proc/results.json"), "--output /proc/results.json: cannot write in its folder /proc",
                 marks=pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="no /proc")),
])
def test_evaluate_refuses_what_would_fail_only_after_the_evaluation(settings, tmp_path: Path,
                                                                    arguments: tuple[str, ...], said: str) -> None:
    """--output in a folder nothing can be written in failed after the whole evaluation (FileNotFoundError);
    --ease-l2 -1 ended in numpy's LinAlgError, --seed -1 in a ValueError of the split."""
    settings.RECO_DATA_PATH = tmp_path / "no-data"
    with pytest.raises(CommandError, match=re.escape(said)):
        call_command("evaluate", "--no-search", *arguments, stdout=StringIO())


@pytest.mark.django_db
def test_demo_examples_say_when_the_staff_user_does_not_exist() -> None:
    """--username nobody printed the usual placeholder, as if the user were there and only its token missing."""
    out = StringIO()
    call_command("demo_examples", "--username", "nobody", stdout=out)
    assert "Token <token: there is no user 'nobody'; `python manage.py create_staff_user` makes one>" in out.getvalue()


def test_evaluate_says_which_folder_of_its_output_is_a_file(settings, tmp_path: Path) -> None:
    """"--output .../x.json: cannot make its folder (File exists)" read as if the output were in the way."""
    settings.RECO_DATA_PATH = tmp_path / "no-data"
    (tmp_path / "notes.txt").write_text("a file\n")
    target = tmp_path / "notes.txt" / "x.json"
    with pytest.raises(CommandError, match=re.escape(f"--output {target}: {tmp_path / 'notes.txt'} is a file, not "
                                                     "a folder")):
        call_command("evaluate", "--no-search", "--output", str(target), stdout=StringIO())


def test_evaluate_prints_the_notes_of_the_data_it_reads(tmp_path: Path) -> None:
    """load_data printed a source's notes (unread columns, a shopper id holding a third of the rows) and evaluate,
    reading the same files, said nothing of them."""
    rows = [f"u{u},p{(u + k) % 30},{1_700_000_000 + 10 * u + k}" for u in range(60) for k in range(2)]
    rows += [f"guest,p0,{1_700_100_000 + k}" for k in range(78)]
    (tmp_path / "interactions.csv").write_text("user_id,item_id,timestamp,store\n" + "\n".join(rows) + "\n")
    out = StringIO()
    with pytest.raises(CommandError, match="leave-last-out needs shoppers with at least 3 distinct products"):
        call_command("evaluate", "--source", "csv", "--path", str(tmp_path), "--no-search", stdout=out)
    assert "Note: interactions.csv: column(s) 'store' not read" in out.getvalue()
    assert "Note: shopper 'guest' holds 39% of the interactions (78 of 198; the next largest 2)" in out.getvalue()


def test_build_embeddings_refuses_a_file_as_its_folder_before_any_work(settings, tmp_path: Path) -> None:
    """RECO_EMBEDDINGS_DIR naming a file: "Embeddings written", the file moved to .notes.txt.old and a folder put
    in its place."""
    notes = tmp_path / "notes.txt"
    notes.write_text("data\n")
    settings.RECO_EMBEDDINGS_DIR = notes
    settings.RECO_PROCESSED_DIR = tmp_path / "no-data"  # refused before the data is read
    with pytest.raises(CommandError, match=re.escape(f"RECO_EMBEDDINGS_DIR: cannot write embeddings to {notes}: "
                                                     "it exists and is not a folder")):
        call_command("build_embeddings", stdout=StringIO())
    assert notes.read_text() == "data\n" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    settings.RECO_EMBEDDINGS_DIR = tmp_path / "embeddings"
    settings.RECO_TEXT_MODEL_PATH = str(tmp_path / "nonexistent" / "model")
    with pytest.raises(CommandError, match="RECO_TEXT_MODEL_PATH: sentence-transformers model not found: .* does not "
                                           "exist"):
        call_command("build_embeddings", stdout=StringIO())


def _trained(search: dict) -> dict:
    """What model_train returns, as far as the train command reads it."""
    return {"version": "20260101T000000Z", "skipped": False, "activated": False, "metrics": {}, "search": search,
            "ranking_stage": None, "refit_epochs": 0, "train_seconds": 30.0, "examples_per_second": 100.0,
            "data": {"source": "import"}}


@pytest.mark.parametrize(("options", "search", "said", "not_said"), [
    (("--no-search",), {"budget_seconds": 0.0, "trials": [{"trial": 0}], "best_trial": 0, "seconds": 30.4},
     ["no search: one training with the given parameters, 30.4 s",
      "(the two-tower training with the given parameters 30.4 s; the rest"], ["search: 1 trial", "budget 0 s"]),
    ((), {"budget_seconds": 60.0, "trials": [{"trial": 0}, {"trial": 1}], "best_trial": 1, "seconds": 58.0},
     ["search: 2 trial(s) in 58.0 s (budget 60 s); trial 1 kept", "(the two-tower search 58 s; the rest"],
     ["no search"]),
])
def test_train_without_a_search_does_not_report_one(monkeypatch: pytest.MonkeyPatch, options: tuple[str, ...],
                                                    search: dict, said: list[str], not_said: list[str]) -> None:
    """train --no-search printed "search: 1 trial(s) in 30.4 s (budget 0 s)" and "(the two-tower search 30.4 s"."""
    from recoapi.recommendations.management.commands import train

    monkeypatch.setattr(train, "model_train", lambda **kwargs: _trained(search))
    out = StringIO()
    call_command("train", *options, stdout=out)
    for text in said:
        assert text in out.getvalue(), out.getvalue()
    for text in not_said:
        assert text not in out.getvalue(), out.getvalue()


def test_train_on_a_shop_without_held_out_shoppers_says_it_is_not_measured(monkeypatch: pytest.MonkeyPatch) -> None:
    """With every shopper at one product, train printed "test two_tower HR@10 0.0000 ... coverage@10 0.000", then
    "ready", and nothing said that no shopper had been held out."""
    from recoapi.recommendations.management.commands import train

    zero = {"hr@10": 0.0, "ndcg@10": 0.0, "recall@50": 0.0, "coverage@10": 0.0, "users": 0.0}
    measured = {**zero, "hr@10": 0.25, "users": 12.0}
    for metrics, said, not_said in (
            ({"two_tower": zero, "popularity": zero}, "not measured: no shopper has 3 distinct products", "HR@10"),
            ({"two_tower": measured, "popularity": measured}, "test two_tower  HR@10 0.2500", "not measured")):
        monkeypatch.setattr(train, "model_train", lambda metrics=metrics, **kwargs: {
            **_trained({"budget_seconds": 0.0, "trials": [{"trial": 0}], "best_trial": 0, "seconds": 3.0}),
            "metrics": metrics})
        out = StringIO()
        call_command("train", "--no-search", stdout=out)
        assert said in out.getvalue() and not_said not in out.getvalue(), out.getvalue()


def test_evaluate_writes_json_without_nan() -> None:
    """A mean of nothing was written as a bare NaN, which JSON has not (JavaScript's parser refused the file)."""
    from modeling.evaluate import json_safe

    result = {"models": {"a": {"ndcg@10": float("nan"), "hr@10": 0.25}}, "curves": [float("inf"), 1.0, (2.0,)],
              "users": 3, "name": "x"}
    written = json.dumps(json_safe(result), allow_nan=False)
    assert json.loads(written) == {"models": {"a": {"ndcg@10": None, "hr@10": 0.25}}, "curves": [None, 1.0, [2.0]],
                                   "users": 3, "name": "x"}
