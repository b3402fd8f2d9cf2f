"""The real pipeline through the management commands, then the API, as `make demo` runs it."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from modeling import artifacts
from recoapi.recommendations.engine import registry
from recoapi.recommendations.models import ModelVersion


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO(), verbosity=1)
    return out.getvalue()


@pytest.fixture
def workdir(settings, tmp_path: Path) -> Path:
    settings.RECO_DATA_PATH = tmp_path / "raw"
    settings.RECO_PROCESSED_DIR = tmp_path / "processed"
    settings.RECO_EMBEDDINGS_DIR = tmp_path / "embeddings"
    settings.RECO_MODELS_DIR = tmp_path / "models"
    settings.RECO_ACTIVE_CHECK_SECONDS = 0.0
    registry.reset()
    yield tmp_path
    registry.reset()


@pytest.mark.django_db
def test_commands_build_a_serving_pipeline_and_reruns_skip(workdir: Path, settings) -> None:
    out = run("generate_demo_data", "--users", "120", "--items", "50", "--interactions", "1400", "--seed", "5")
    assert "Demo data written: 120 shoppers, 50 products" in out
    assert "Imported 120 shoppers, 50 products" in run("load_data")
    assert "Embeddings written" in run("build_embeddings")
    out = run("train", "--activate", "--refit", "--epochs", "2", "--batch-size", "128", "--budget", "5")
    assert "test two_tower" in out and "test popularity" in out and "ready and activated" in out
    assert "evaluate's popularity baseline counts its shoppers" in out
    assert "test hybrid" in out and "search trial 0" in out and "ranking stage: " in out
    assert "refit on every interaction, epoch 1/" in out and "trained again on every interaction" in out
    assert re.search(r"in all \d+ s \(the two-tower search [\d.]+ s, the ranking stage's choice [\d.]+ s; the rest",
                     out), out
    version = artifacts.read_active(workdir / "models")
    manifest = artifacts.load_bundle(workdir / "models" / version).manifest
    assert 1 <= manifest["refit_epochs"] <= 2 and manifest["refit_epochs"] == manifest["best_epoch"]
    assert manifest["search"]["budget_seconds"] == 5 and len(manifest["search"]["trials"]) >= 1
    assert manifest["ranking_stage"]["selection"]["choice"]
    assert version and ModelVersion.objects.get(version=version).is_active
    token = run("create_staff_user", "--username", "boss", "--password", "s3cret-pass").split("API token: ")[1]

    client = APIClient()
    user = client.get("/random_users", {"n": 1}).json()["users"][0]
    body = client.get("/recommendations", {"users": f"{user},stranger", "k": 5}).json()
    assert body["model_version"] == version
    assert body["recommendations"][user]["strategy"] == "two_tower"
    assert body["recommendations"]["stranger"]["strategy"] == "popular"
    assert len(body["recommendations"][user]["items"]) == 5
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.strip()}")
    assert client.post("/reload_model").json()["model_version"] == version

    # A second `make demo` finds every stage current.
    assert "Demo data is current" in run("generate_demo_data", "--users", "120", "--items", "50",
                                         "--interactions", "1400", "--seed", "5")
    assert "import skipped" in run("load_data")
    assert "Embeddings are current" in run("build_embeddings")
    assert "training skipped" in run("train", "--activate", "--refit", "--epochs", "2", "--batch-size", "128",
                                     "--budget", "5")
    assert artifacts.list_versions(workdir / "models") == [version]
    assert "curl" in run("demo_examples")
    # Without the refit it is another model (the measured one), published as a version of its own.
    out = run("train", "--epochs", "2", "--batch-size", "128", "--no-search")
    assert "refit" not in out and "search trial" not in out and "trained again" not in out
    versions = artifacts.list_versions(workdir / "models")
    assert len(versions) == 2 and artifacts.load_bundle(workdir / "models" / versions[-1]).manifest["refit_epochs"] == 0

    # Live events since the import: training learns from the database, and only their texts are encoded.
    from modeling import datasets as ds
    from recoapi.catalog.models import Interaction
    from recoapi.catalog.services import interaction_record

    interaction_record(user_id=user, item_id=body["recommendations"][user]["items"][0]["item_id"], event="review",
                       text="Arrived quickly and works as described.")
    settings.RECO_ANN_MIN_ITEMS = 10  # from 10 products on, the bundle carries an approximate index
    out = run("train", "--epochs", "2", "--batch-size", "128", "--no-search")
    assert "trained on the database: " in out and "(1 live)" in out, out
    newest = artifacts.load_bundle(workdir / "models" / artifacts.list_versions(workdir / "models")[-1])
    assert newest.item_index is not None and newest.item_index.ntotal == 50
    assert newest.manifest["item_index"]["items"] == 50 and 0 < newest.manifest["item_index"]["recall_at_10"] <= 1
    assert newest.text_index is not None and newest.text_index.ntotal == 50  # and one for text queries
    assert newest.manifest["text_index"]["kind"] == "faiss_ivf_sq8"
    training = ds.read_snapshot(workdir / "processed" / "training")
    assert len(training.interactions) == Interaction.objects.count()
    assert "import skipped" in run("load_data")  # the import snapshot is the import's
    assert len(artifacts.list_versions(workdir / "models")) == 3


def test_commands_fail_with_clear_messages(workdir: Path) -> None:
    with pytest.raises(CommandError, match="no such file or directory"):
        run("load_data", "--path", str(workdir / "missing"))
    with pytest.raises(CommandError, match="run `manage.py load_data` first"):
        run("build_embeddings")
    with pytest.raises(CommandError, match="exceeds half"):
        run("generate_demo_data", "--users", "10", "--items", "10", "--interactions", "60")
    with pytest.raises(CommandError, match="--epochs must be at least 1"):
        run("train", "--epochs", "0")
    with pytest.raises(CommandError, match="--workers must be 1 or more"):
        run("train", "--workers", "0")
    with pytest.raises(CommandError, match="--workers 3 does not divide the batch size 512"):
        run("train", "--workers", "3")
    with pytest.raises(CommandError, match="--processes must be 1 or more"):
        run("build_embeddings", "--processes", "0")


def test_evaluate_command_prints_a_table_and_writes_json(workdir: Path, pipeline) -> None:
    import json

    out = run("evaluate", "--source", "amazon2018", "--path", str(pipeline.raw), "--epochs", "1",
              "--ease-l2", "50", "--no-search", "--output", str(workdir / "results.json"))
    assert "model" in out and "two_tower" in out and "ease" in out
    result = json.loads((workdir / "results.json").read_text())
    baselines = {"popularity", "item_knn", "ease", "ials", "transitions", "transitions+ease", "sequential_rules"}
    assert set(result["models"]) == baselines | {"two_tower", "hybrid"}
    assert "hybrid minus each baseline" in out and result["ranking_stage"]["selection"]["choice"]
    assert set(result["cold_users"]) == {"users", "given_0", "given_1", "given_3", "fallback_given_0", "differences"}
    assert "recall@50" in result["cold_items"]["two_tower"]
    assert "Cold users" in out and "Cold items" in out and "next HR@10" in out
    assert "minus each baseline" in out and set(result["differences"]) == baselines | {"two_tower"}
    assert {"hr@10", "next_hr@10", "next_ndcg@10"} <= set(result["cold_users"]["given_1"]["two_tower"])
    assert result["source"]["counts"] == pipeline.data.counts()
    assert "Cold-start protocols alone" not in out  # the baselines' grids were searched on the validation items
    cold = run("evaluate", "--source", "amazon2018", "--path", str(pipeline.raw), "--epochs", "1", "--no-search",
               "--protocols", "cold")
    assert "Cold-start protocols alone: the baselines keep their default parameters" in cold and "Cold users" in cold
    with pytest.raises(CommandError, match="--epochs must be at least 1"):
        run("evaluate", "--epochs", "0")
    with pytest.raises(CommandError, match="--search must be 0 or more"):
        run("evaluate", "--search", "-1")
    with pytest.raises(CommandError, match="--budget must be 0 or more"):
        run("evaluate", "--budget", "-3")
    with pytest.raises(CommandError, match="--budget must be 0 or more"):
        run("train", "--budget", "-1")


def test_evaluate_refuses_an_output_folder_at_once_and_says_which_data_it_reads(workdir: Path) -> None:
    # Before, --output naming a folder failed with IsADirectoryError after the whole evaluation, its temporary
    # file left in the folder's parent; and with no --source and --path it evaluated the service's own data
    # without saying so.
    started = time.perf_counter()
    with pytest.raises(CommandError, match=rf"--output {re.escape(str(workdir))} is a folder; give the path of the "
                                           "JSON file"):
        run("evaluate", "--source", "csv", "--path", str(workdir / "nothing"), "--output", str(workdir))
    assert time.perf_counter() - started < 60 and not list(workdir.parent.glob(f".{workdir.name}.*.tmp"))
    out = StringIO()
    with pytest.raises(CommandError):  # the service's own data folder is empty here
        call_command("evaluate", stdout=out, stderr=StringIO(), verbosity=1)
    assert (f"Evaluating the {settings.RECO_DATA_SOURCE} data at {workdir / 'raw'} (--source and --path not "
            "given: the service's own data" in out.getvalue())


def test_evaluate_search_log_feeds_train_params(workdir: Path, pipeline) -> None:
    import json
    import shutil

    results = workdir / "search.json"
    # The pipeline's embeddings are those of these very files: evaluate finds them current in its cache instead of
    # encoding every text again (test_evaluate_command_prints_a_table_and_writes_json has it build them).
    shutil.copytree(pipeline.embeddings, workdir / "evaluation" / pipeline.data.fingerprint[:16])
    out = run("evaluate", "--source", "amazon2018", "--path", str(pipeline.raw), "--epochs", "1", "--search", "2",
              "--protocols", "leave_last_out", "--ease-l2", "50", "--output", str(results))
    assert "trial 0: validation NDCG@10" in out and "trial 1: validation NDCG@10" in out
    result = json.loads(results.read_text())
    trials = result["search"]["trials"]
    assert len(trials) == 2
    best = max(trials, key=lambda t: t["val_ndcg@10"])
    assert result["search"]["best"] == best["params"] == result["params"]
    assert result["two_tower"]["params"] == best["params"]
    # A bad parameters file is refused with its name and the problem.
    bad = workdir / "bad.json"
    bad.write_text(json.dumps({"temperature": -1}))
    with pytest.raises(CommandError, match="bad.json: parameter temperature must be positive"):
        run("train", "--params", str(bad))
    with pytest.raises(CommandError, match="cannot read parameters file"):
        run("evaluate", "--params", str(workdir / "missing.json"))


def _tea_shop(path: Path) -> Path:
    """A small shop of its own: 40 shoppers, 12 teas, ids unlike the demo's."""
    path.mkdir(parents=True)
    teas = [f"TEA-{n:02d}" for n in range(12)]
    rows = [f"tea-shopper-{u},{teas[(u + step * (1 + u % 3)) % 12]},{1_700_000_000 + 3600 * (u * 10 + step)},purchase"
            for u in range(40) for step in range(5)]
    (path / "interactions.csv").write_text("user_id,item_id,timestamp,event\n" + "\n".join(rows) + "\n")
    (path / "items.csv").write_text("item_id,title,category,price\n" + "".join(
        f"{tea},{kind} tea no. {n},Tea > {kind},{4 + n}\n"
        for n, tea in enumerate(teas) for kind in [("Green", "Black", "Oolong")[n % 3]]))
    return path


@pytest.mark.django_db
def test_own_data_after_the_demo_replaces_the_demo_shop(workdir: Path) -> None:
    # Issue 12: the README's own-data commands after `make demo` give a shop with only the new data.
    from modeling import datasets as ds
    from modeling.embeddings import load_embeddings
    from recoapi.catalog.models import Interaction, Product, Shopper
    from recoapi.catalog.services import interaction_record

    run("generate_demo_data", "--users", "120", "--items", "50", "--interactions", "1400", "--seed", "5")
    run("load_data")
    demo_product = Product.objects.order_by("id").first().id
    interaction_record(user_id="walk-in", item_id=demo_product, event="view")  # a live event on a demo product
    shop = _tea_shop(workdir / "tea")
    before = (Product.objects.count(), Shopper.objects.count(), Interaction.objects.count())

    with pytest.raises(CommandError, match=r"shares 0 of its 12 products with the 50 products.*--replace"):
        run("load_data", "--source", "csv", "--path", str(shop))
    assert (Product.objects.count(), Shopper.objects.count(), Interaction.objects.count()) == before

    out = run("load_data", "--source", "csv", "--path", str(shop), "--replace")
    assert "Imported 40 shoppers, 12 products, 200 interactions" in out
    assert "Removed 50 products and 121 shoppers" in out
    snapshot = ds.read_snapshot(workdir / "processed")
    assert set(Product.objects.values_list("id", flat=True)) == set(snapshot.items[ds.ITEM_ID])
    assert set(Shopper.objects.values_list("id", flat=True)) == set(snapshot.users[ds.USER_ID])
    assert all(p.startswith("TEA-") for p in Product.objects.values_list("id", flat=True))
    assert Interaction.objects.count() == 200 and not Shopper.objects.filter(id="walk-in").exists()

    assert "Embeddings written" in run("build_embeddings")
    assert set(load_embeddings(workdir / "embeddings").item_ids) == set(snapshot.items[ds.ITEM_ID])
    assert "ready and activated" in run("train", "--activate", "--epochs", "2", "--batch-size", "64", "--no-search")
    body = APIClient().get("/recommendations", {"users": "tea-shopper-1,stranger", "k": 5}).json()
    for entry in body["recommendations"].values():
        assert entry["items"] and all(i["item_id"].startswith("TEA-") for i in entry["items"])
    # The same files again: nothing to do, and the tea shop's own re-import needs no flag.
    assert "import skipped" in run("load_data", "--source", "csv", "--path", str(shop))
    assert "Imported 40 shoppers" in run("load_data", "--source", "csv", "--path", str(shop), "--force")


@pytest.mark.django_db
def test_retrain_activates_a_model_trained_on_new_events_and_the_gate_refuses_a_worse_one(workdir: Path,
                                                                                       monkeypatch) -> None:
    """Issue: a service that learns from its own traffic."""
    from datetime import UTC, datetime, timedelta

    from django.conf import settings as django_settings

    from recoapi.catalog.models import Interaction, Product
    from recoapi.catalog.services import interaction_record
    from recoapi.recommendations.models import TrainingRun

    run("generate_demo_data", "--users", "120", "--items", "50", "--interactions", "1400", "--seed", "5")
    run("load_data")
    run("build_embeddings")
    run("train", "--activate", "--epochs", "2", "--batch-size", "128", "--no-search")
    first = artifacts.read_active(workdir / "models")
    with pytest.raises(CommandError, match="No version older than the active one"):
        run("rollback")
    assert "Retraining skipped: no interactions since" in run("retrain", "--budget", "0")

    newest = Interaction.objects.order_by("-occurred_at").first().occurred_at
    products = list(Product.objects.order_by("id").values_list("id", flat=True)[:6])

    def taste(who: str, hours: float) -> None:
        """Ten new shoppers buy the same six products: four within 3 hours, the last two a day later."""
        for n in range(10):
            for product, offset in zip(products, (0, 1, 2, 3, 30, 31), strict=True):
                interaction_record(user_id=f"{who}-{n}", item_id=product, event="purchase",
                                   occurred_at=newest + timedelta(hours=hours + offset))

    interaction_record(user_id="early-bird", item_id=products[0], event="view",
                       occurred_at=newest + timedelta(minutes=30))
    held = run("retrain", "--budget", "0")  # the one new event is held out
    # The window is counted back from the newest interaction: the message must not tell the user to wait.
    assert "waiting alone changes nothing" in held and "once newer interactions move" in held, held
    taste("newcomer", 1)
    out = run("retrain", "--budget", "0", "--holdout-days", "1", "--tolerance", "1")
    assert "Retraining activated" in out and "candidate " in out and "active " in out, out
    second = artifacts.read_active(workdir / "models")
    assert second != first
    manifest = artifacts.load_bundle(workdir / "models" / second).manifest
    # The measured candidate trained without the held-out day; the activated bundle is that model published
    # again with the held-out interactions in its data (the newest event included).
    last = newest + timedelta(hours=1 + 31)  # taste("newcomer", 1): the last purchase
    assert abs(datetime.fromtimestamp(manifest["trained_until"], tz=UTC) - last) < timedelta(seconds=1)
    measured = [v for v in artifacts.list_versions(workdir / "models") if first < v < second]
    assert len(measured) == 1
    trained_until = datetime.fromtimestamp(
        artifacts.load_bundle(workdir / "models" / measured[0]).manifest["trained_until"], tz=UTC)
    assert newest + timedelta(hours=4) <= trained_until < newest + timedelta(hours=30)  # the new events, not the last
    registry.reset()  # this process serves as a worker that follows models/ACTIVE would
    body = APIClient().get("/recommendations", {"users": "newcomer-0", "k": 3}).json()
    assert body["model_version"] == second and body["recommendations"]["newcomer-0"]["strategy"] == "two_tower"
    activated = TrainingRun.objects.get(decision=TrainingRun.ACTIVATED)
    assert activated.candidate_version == second and activated.previous_version == first
    assert f"activated as {second}" in activated.reason and measured[0] in activated.reason
    # The figures printed are the measured bundle's: named as such (before, the republished one was named).
    assert f"candidate {measured[0]} (activated as {second}): recall@10" in out, out
    assert activated.holdout["interactions"] == 20 and activated.candidate_metrics["shoppers"] == 10

    # A deliberately worse candidate stays inactive: its bundle is written with the product ids shuffled
    # (every vector, neighbour list and transition then belongs to another product), and the gate measures
    # it for real on the newest interactions.
    import dataclasses

    import numpy as np

    real_write = artifacts.write_bundle

    def shuffled_write(models_dir, arrays, *args, **kwargs):  # noqa: ANN001, ANN202
        shuffled = np.random.default_rng(7).permutation(np.asarray(arrays.item_ids))
        return real_write(models_dir, dataclasses.replace(arrays, item_ids=shuffled), *args, **kwargs)

    monkeypatch.setattr(artifacts, "write_bundle", shuffled_write)
    taste("second-wave", 80)
    out = run("retrain", "--budget", "0", "--holdout-days", "1", "--tolerance", "0.05")
    assert "Retraining refused" in out and f"{second} stays active" in out, out
    assert artifacts.read_active(workdir / "models") == second
    refused = TrainingRun.objects.get(decision=TrainingRun.REFUSED)
    assert refused.candidate_version in artifacts.list_versions(workdir / "models")
    assert refused.candidate_metrics["recall@10"] < refused.previous_metrics["recall@10"] - 0.05
    monkeypatch.setattr(artifacts, "write_bundle", real_write)

    import modeling.tuning

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(modeling.tuning, "budgeted_search", broken)
    taste("third-wave", 160)
    with pytest.raises(CommandError, match="Retraining failed: RuntimeError: out of memory"):
        run("retrain", "--budget", "0")
    assert artifacts.read_active(workdir / "models") == second
    assert TrainingRun.objects.filter(decision=TrainingRun.FAILED).count() == 1

    assert f"Model {first} is active" in run("rollback")
    assert artifacts.read_active(workdir / "models") == first
    assert f"Model {second} is active" in run("rollback", "--to", second)
    with pytest.raises(CommandError, match="No model version"):
        run("rollback", "--to", "no-such-version")
    with pytest.raises(CommandError, match="--holdout-days must be a positive number"):
        run("retrain", "--holdout-days", "0")

    # The scheduler: one training at a time (the lock held here stands for another scheduler's run).
    monkeypatch.undo()
    taste("fourth-wave", 240)
    runs = TrainingRun.objects.count()
    with _training_lock_held_elsewhere():
        out = run("run_scheduler", "--once", "--min-events", "1", "--budget", "0")
        # said once: not "retraining" first, then that it does not (the lock is taken before it says it trains)
        assert "new interactions, but another process is training; not retraining" in out
        assert ": retraining" not in out
        with pytest.raises(CommandError, match=re.escape("Another training is running (retrain, run_scheduler or "
                                                         "train --activate)")):
            run("retrain", "--budget", "0")
        active = artifacts.read_active(django_settings.RECO_MODELS_DIR)
        refused = StringIO()  # it activated beside a retrain; and said it was training before it refused
        with pytest.raises(CommandError, match="Another training is running"):
            call_command("train", "--activate", "--force", "--epochs", "1", "--budget", "0", stdout=refused)
        assert "Training the two-tower model" not in refused.getvalue(), refused.getvalue()
        assert artifacts.read_active(django_settings.RECO_MODELS_DIR) == active
    assert TrainingRun.objects.count() == runs
    out = run("run_scheduler", "--once", "--min-events", "1", "--budget", "0")
    assert "retraining activated" in out or "retraining refused" in out, out
    assert TrainingRun.objects.count() == runs + 1
    out = run("run_scheduler", "--once", "--min-events", "1000")
    assert "new interactions: retraining" not in out and "fewer than 1000: not retraining" in out
    counted = out.split(" new interaction(s) since the last training")[0].split()[-1]
    run("rollback", "--to", first)  # the first model: its data ends long before the newest model's
    out = run("run_scheduler", "--once", "--min-events", "1000")
    assert f"{counted} new interaction(s) since the last training" in out, out  # a rollback makes nothing new

    # Bundles trained by another version of the service (an upgrade that changed the ranking stage's features):
    # rollback does not pick one, and retrain replaces an active one instead of skipping or comparing with it.
    import json

    from modeling.reranker import FEATURES

    def from_another_version(version: str) -> None:
        stage = workdir / "models" / version / "ranking_stage" / "stage.json"
        stage.write_text(json.dumps({**json.loads(stage.read_text()), "features": list(FEATURES[:-2])}))

    *older, newest = artifacts.list_versions(workdir / "models")
    run("rollback", "--to", newest)
    for version in older:
        from_another_version(version)
    with pytest.raises(CommandError, match="that this version can serve"):  # not "cannot be loaded"
        run("rollback")
    from_another_version(newest)
    # The scheduler retrains at once, without waiting for new interactions (retrain then replaces the model).
    out = run("run_scheduler", "--once", "--min-events", "1000", "--budget", "0")
    assert "the active model cannot be served by this version (its ranking stage" in out, out
    assert "retraining activated" in out, out
    assert artifacts.read_active(workdir / "models") not in (*older, newest)
    assert "could not be served by this version" in TrainingRun.objects.latest("started_at").reason


@pytest.mark.django_db
def test_events_recorded_late_are_new_and_those_a_training_read_are_not(workdir: Path) -> None:
    """Issue: events sent late with their original times (before the active model's trained_until) never made
    retrain or run_scheduler see anything new; and the events of trained_until's own second (cut to whole seconds)
    were counted as new again right after the training that read them."""
    import json
    from datetime import timedelta

    from recoapi.catalog.models import Interaction, Product
    from recoapi.catalog.services import interaction_record
    from recoapi.recommendations.models import TrainingRun

    run("generate_demo_data", "--users", "120", "--items", "50", "--interactions", "1400", "--seed", "5")
    run("load_data")
    run("build_embeddings")
    newest = Interaction.objects.order_by("-occurred_at").first().occurred_at
    products = list(Product.objects.order_by("id").values_list("id", flat=True)[:6])
    second = newest + timedelta(seconds=5)  # a batch of events stamped on arrival: fractions of one second
    for n, ms in enumerate((450, 630)):
        interaction_record(user_id=f"walk-in-{n}", item_id=products[n], event="view",
                           occurred_at=second + timedelta(milliseconds=ms))
    run("train", "--activate", "--epochs", "2", "--batch-size", "128", "--no-search")
    first = artifacts.read_active(workdir / "models")
    manifest = artifacts.load_bundle(workdir / "models" / first).manifest
    assert manifest["trained_until"] == int(second.timestamp())
    assert manifest["last_interaction_id"] == Interaction.objects.order_by("-id").first().id
    out = run("run_scheduler", "--once", "--min-events", "1")
    assert "0 new interaction(s) since the last training" in out, out
    assert "Retraining skipped: no interactions since" in run("retrain", "--budget", "0")

    # 150 purchases sent late (POST /events with their times): 3 days and 30 minutes before trained_until.
    user, password = "shop", "s3cret-pass"
    token = run("create_staff_user", "--username", user, "--password", password).split("API token: ")[1].strip()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    late = [{"user": f"offline-{n % 25}", "item": products[n % 6], "event": "purchase",
             "timestamp": (second - (timedelta(days=3) if n < 90 else timedelta(minutes=30))).isoformat()}
            for n in range(150)]
    assert client.post("/events", late, format="json").status_code == 201
    out = run("run_scheduler", "--once", "--min-events", "100", "--budget", "0")
    assert "150 new interactions: retraining" in out, out
    # Nothing newer than what the model trained on: nothing to measure a candidate on, and the message says so.
    assert ("retraining skipped: the 150 interaction(s) recorded since the active model's data was read are all "
            "timed at or before the newest it trained on") in out, out
    assert TrainingRun.objects.latest("started_at").holdout["late"] == 150
    out = run("run_scheduler", "--once", "--min-events", "1")  # the retraining read them: not new to the next check
    assert "0 new interaction(s) since the last training" in out, out

    # One newer event, held out: the late ones are what the candidate has new to train on.
    interaction_record(user_id="early-bird", item_id=products[0], event="view",
                       occurred_at=newest + timedelta(minutes=30))
    out = run("retrain", "--budget", "0", "--tolerance", "1")
    assert "Retraining activated" in out and "held out: 1 interactions" in out, out
    activated = TrainingRun.objects.get(decision=TrainingRun.ACTIVATED)
    measured = artifacts.load_bundle(workdir / "models" / activated.reason.split("the measured candidate ")[1]
                                     .split()[0]).manifest
    assert measured["data_counts"]["interactions"] == Interaction.objects.count() - 1  # the late ones included
    assert activated.holdout["late"] == 150
    out = run("run_scheduler", "--once", "--min-events", "1")
    assert "0 new interaction(s) since the last training" in out, out

    # The same files imported again (--force): every imported row is recorded anew, none is new to the model.
    run("load_data", "--force")
    out = run("run_scheduler", "--once", "--min-events", "100", "--budget", "0")
    imported = Interaction.objects.filter(source=Interaction.IMPORTED).count()
    assert f"{imported} new interactions: retraining" in out, out
    assert (f"retraining skipped: the {imported:,} interaction(s) recorded since the active model's data was read "
            "are those it was trained on, recorded again") in out, out
    assert "0 new interaction(s) since the last training" in run("run_scheduler", "--once", "--min-events", "1")
    # ...and with one newer event beside them: they are still not new (they were trained on again and activated, with
    # a gate comparing 0 with 0 on that one event's shopper), and the newer one is held out.
    interaction_record(user_id="early-bird", item_id=products[1], event="view",
                       occurred_at=newest + timedelta(minutes=40))
    out = run("retrain", "--budget", "0")
    assert (f"the {imported:,} interaction(s) recorded since the active model's data was read and timed at or before "
            "the newest it trained on are those it was trained on, recorded again") in out, out
    assert "Retraining skipped: every interaction since the active model's data is within the held-out" in out, out
    assert TrainingRun.objects.latest("started_at").holdout["recorded_again"] == imported

    # Bundles published and runs recorded before the last id was: counted by time, as before.
    for version in artifacts.list_versions(workdir / "models"):
        path = workdir / "models" / version / artifacts.MANIFEST_FILE
        path.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items()
                                    if k != "last_interaction_id"}))
    for training in TrainingRun.objects.all():
        training.holdout = {k: v for k, v in training.holdout.items() if k not in ("newest_id", "late")}
        training.save()
    interaction_record(user_id="offline-0", item_id=products[1], event="view",
                       occurred_at=newest - timedelta(days=10))  # late: not seen by the time rule
    interaction_record(user_id="offline-1", item_id=products[2], event="view",
                       occurred_at=newest + timedelta(hours=2))
    out = run("run_scheduler", "--once", "--min-events", "5")
    assert "1 new interaction(s) since the last training" in out, out
    out = run("retrain", "--budget", "0")
    assert "Retraining skipped: every interaction since the active model's data is within the held-out" in out, out


@contextmanager
def _training_lock_held_elsewhere() -> Iterator[None]:
    """The training lock taken as another process would take it: its own database session (PostgreSQL
    advisory locks are re-entrant within one session) or its own open file (SQLite)."""
    import fcntl
    import os

    from django.db import connection

    from recoapi import locks

    if connection.vendor == "postgresql":
        import psycopg

        params = connection.get_connection_params()
        with psycopg.connect(**{k: v for k, v in params.items() if k in ("dbname", "user", "password", "host",
                                                                          "port")}, autocommit=True) as other:
            assert other.execute("SELECT pg_try_advisory_lock(%s)", [locks.ADVISORY_KEY]).fetchone()[0]
            yield
        return
    with locks.training_lock() as held:  # a second open file of the same process conflicts like another process
        assert held
        descriptor = os.open(locks.lock_path(), os.O_RDWR)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(descriptor)
        yield


@pytest.mark.django_db
@pytest.mark.parametrize("args, message", [
    (("load_data", "--min-user-interactions", "-3"), "--min-user-interactions must be 0 (off) or more, got -3"),
    (("load_data", "--min-distinct-items", "-1"), "--min-distinct-items must be 0 (off) or more"),
    (("load_data", "--outlier-std", "nan"), "--outlier-std must be 0 (off) or a positive number of standard"),
    (("load_data", "--outlier-std", "-1"), "--outlier-std must be 0 (off) or a positive number"),
    (("load_data", "--start", "2020-01-01", "--end", "2019-01-01"), "--end must be after --start: the window from "
                                                                     "2020-01-01 to 2019-01-01 keeps no interaction"),
    (("retrain", "--tolerance", "5"), "--tolerance must be between 0 and 1"),
    (("demo_examples", "--base-url", "notaurl"), "--base-url must be an http:// or https:// URL with a host"),
    # A traceback (ValueError: Invalid IPv6 URL), and a port no URL can have taken silently.
    (("demo_examples", "--base-url", "http://[::1"), "--base-url must be an http:// or https:// URL with a host"),
    (("demo_examples", "--base-url", "http://shop:99999"), "--base-url must be an http:// or https:// URL"),
    # Two of the search options: one was ignored without a word.
    (("evaluate", "--search", "3", "--no-search"), "argument --no-search: not allowed with argument --search"),
    (("evaluate", "--budget", "30", "--search", "2"), "argument --search: not allowed with argument --budget"),
    (("train", "--budget", "30", "--no-search"), "argument --no-search: not allowed with argument --budget"),
])
def test_arguments_that_cannot_work_are_refused_in_one_line(workdir: Path, args: tuple[str, ...],
                                                            message: str) -> None:
    # Each was taken silently before (a negative minimum or NaN filter, a tolerance that passes any candidate,
    # curl lines addressed to "notaurl/...").
    with pytest.raises(CommandError, match=re.escape(message)):
        run(*args)


def test_recommend_batch_says_when_its_input_is_a_folder(workdir: Path) -> None:
    with pytest.raises(CommandError, match=r"--input .* is a folder; give the file with one shopper id per line"):
        run("recommend_batch", "--input", str(workdir), "--output", str(workdir / "out.csv"))


def test_evaluate_refuses_a_shop_where_no_shopper_has_three_products(workdir: Path) -> None:
    # It printed 0.0000 for every model, then ended in a KeyError traceback from the ranking stage's line.
    shop = workdir / "tiny-shop"
    shop.mkdir()
    (shop / "interactions.csv").write_text("user_id,item_id,timestamp\nu1,a,1700000000\nu1,b,1700000100\n"
                                           "u2,a,1700000000\nu2,c,1700000200\nu3,b,1700000300\nu3,c,1700000400\n")
    with pytest.raises(CommandError, match=r"leave-last-out needs shoppers with at least 3 distinct products .* none "
                                           r"of the 3 shoppers has 3"):
        run("evaluate", "--source", "csv", "--path", str(shop), "--no-search")
