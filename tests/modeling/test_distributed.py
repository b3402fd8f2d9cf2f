"""Training on several worker processes (modeling.distributed) and encoding texts on several processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modeling.distributed import check_workers, cluster_config, fit_on_workers, free_ports
from modeling.embeddings import TextEncoder, load_embeddings
from modeling.errors import TrainingError
from modeling.splits import Split
from modeling.train import build_variables, prepare_fit, train_model
from modeling.two_tower import TwoTowerParams
from tests.conftest import Pipeline

ROOT = Path(__file__).resolve().parents[2]


def test_cluster_config_names_every_worker_on_loopback() -> None:
    ports = free_ports(3)
    assert len(set(ports)) == 3
    config = cluster_config(3, ports, 2)
    assert config == {"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
                      "task": {"type": "worker", "index": 2}}


def test_worker_counts_that_cannot_split_the_batch_are_refused() -> None:
    check_workers(4, 512)
    with pytest.raises(TrainingError, match="multiple of the number of workers"):
        check_workers(3, 512)
    with pytest.raises(TrainingError, match="1 or more"):
        check_workers(0, 512)


def test_two_replicas_compute_the_loss_and_gradient_of_one_process(pipeline: Pipeline) -> None:
    """Each replica's in-batch softmax sees every replica's candidates: the summed loss and gradient
    equal one process's on the whole batch, and differ from replicas that use only their own."""
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "modeling" / "distributed_gradient.py"),
                          str(pipeline.raw), str(pipeline.embeddings)],
                         capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["loss_two"] == pytest.approx(figures["loss_one"], rel=1e-5)
    assert figures["gradient_difference"] <= 1e-5 * figures["gradient_scale"], figures
    # The comparison can fail: with only their own candidates as negatives the replicas' loss is another.
    assert abs(figures["loss_local_negatives"] - figures["loss_one"]) > 1e-2 * figures["loss_one"], figures


@pytest.mark.slow
def test_two_workers_train_a_model_whose_weights_come_back_whole(pipeline: Pipeline) -> None:
    embeddings = load_embeddings(pipeline.embeddings)
    params = TwoTowerParams(epochs=3, batch_size=64, seed=1, patience=3)
    epochs: list[dict] = []
    result = train_model(pipeline.data, embeddings, params, workers=2, on_epoch=epochs.append)
    assert result.workers == 2
    assert [row["epoch"] for row in epochs] == [row["epoch"] for row in result.history]
    assert 1 <= result.best_epoch <= len(result.history) <= 3
    assert all(np.isfinite(row["loss"]) and row["loss"] > 0 for row in result.history)
    # The chief measured its best epoch; the weights this process loaded give the same figure.
    again = prepare_fit(pipeline.data, embeddings, params)
    from modeling.train import _training_dataset

    build_variables(again.model, _training_dataset(again.history, again.features, embeddings, params))
    again.model.set_weights(result.model.get_weights())
    measured = again.validation_metrics()
    assert measured is not None
    assert measured["ndcg@10"] == pytest.approx(result.history[result.best_epoch - 1]["val_ndcg@10"], abs=1e-6)
    assert result.metrics["two_tower"]["users"] > 0


@pytest.mark.slow
def test_every_worker_stops_when_the_chief_finds_the_deadline_passed(pipeline: Pipeline) -> None:
    import time

    params = TwoTowerParams(epochs=3, batch_size=64, seed=1, patience=3)
    result = train_model(pipeline.data, load_embeddings(pipeline.embeddings), params, workers=2,
                         ranking_stage=False, deadline=time.time() - 1)
    assert len(result.history) == 1 and result.best_epoch == 1 and result.deadline_reached


@pytest.mark.slow
def test_a_failing_worker_stops_the_fit_with_its_reason(pipeline: Pipeline) -> None:
    embeddings = load_embeddings(pipeline.embeddings)
    interactions = pipeline.data.interactions
    empty = Split(train=interactions.iloc[:0], validation=interactions.iloc[:0], test=interactions.iloc[:0])
    with pytest.raises(TrainingError, match="training worker [01] failed: .*no training interactions"):
        fit_on_workers(pipeline.data, embeddings, TwoTowerParams(batch_size=64), empty, workers=2,
                       timeout_seconds=600)


@pytest.mark.slow
def test_encoding_on_two_processes_gives_the_vectors_of_one() -> None:
    encoder = TextEncoder()
    texts = [f"product {i}: {'a soft cotton shirt' if i % 3 else 'a steel kettle'} in size {i % 7}"
             for i in range(600)]
    one = encoder.encode(texts)
    two = encoder.encode(texts, processes=2)
    assert two.shape == one.shape == (600, encoder.dim)
    assert float(np.max(np.abs(one - two))) < 1e-5


def test_encoding_refuses_no_processes() -> None:
    with pytest.raises(ValueError, match="processes must be 1 or more"):
        TextEncoder().encode(["a"], processes=0)
