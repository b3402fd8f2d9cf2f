"""Run as a script by test_distributed.py: the loss and gradient of one batch, in one replica and in two.

Usage: python tests/modeling/distributed_gradient.py RAW_DIR EMBEDDINGS_DIR
Prints one JSON line: {"loss_one", "loss_two", "loss_local_negatives", "gradient_difference", "gradient_scale"}.
Two logical CPUs stand in for two workers: the replica context (and its all_gather) is the one
MultiWorkerMirroredStrategy gives each worker.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from modeling import runtime as _runtime  # noqa: F401  (before tensorflow)

import json

import numpy as np
import tensorflow as tf

from modeling.embeddings import load_embeddings
from modeling.sources import load_source
from modeling.train import _training_dataset, build_variables, prepare_fit
from modeling.two_tower import TwoTowerParams

BATCH = 32


def dense(gradient: object) -> np.ndarray:
    return tf.convert_to_tensor(gradient).numpy()


def main() -> None:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    data = load_source("amazon2018", sys.argv[1])
    embeddings = load_embeddings(sys.argv[2])
    params = TwoTowerParams(batch_size=BATCH, seed=3, logq_correction=True)

    fit = prepare_fit(data, embeddings, params)
    batch = next(iter(_training_dataset(fit.history, fit.features, embeddings, params).take(1)))
    build_variables(fit.model, _training_dataset(fit.history, fit.features, embeddings, params))
    weights = fit.model.get_weights()
    with tf.GradientTape() as tape:
        loss_one = fit.model.compute_loss(batch, training=False)
    variables = fit.model.trainable_variables
    one = [dense(g) for g in tape.gradient(loss_one, variables)]
    halves = [{k: v[i * BATCH // 2:(i + 1) * BATCH // 2] for k, v in batch.items()} for i in range(2)]
    local = sum(float(fit.model.compute_loss(half, training=False)) for half in halves)

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        two = prepare_fit(data, embeddings, params)
        build_variables(two.model, _training_dataset(two.history, two.features, embeddings, params))
    two.model.set_weights(weights)
    shares = strategy.experimental_distribute_values_from_function(
        lambda context: halves[context.replica_id_in_sync_group])

    @tf.function
    def step(features: dict) -> tuple:
        with tf.GradientTape() as tape:
            loss = two.model.compute_loss(features, training=False)
        return loss, tape.gradient(loss, two.model.trainable_variables)

    losses, gradients = strategy.run(step, args=(shares,))
    loss_two = float(strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None))
    summed = [sum(dense(g) for g in strategy.experimental_local_results(gradient)) for gradient in gradients]
    print(json.dumps({
        "loss_one": float(loss_one), "loss_two": loss_two, "loss_local_negatives": local,
        "gradient_difference": max(float(np.max(np.abs(a - b))) for a, b in zip(one, summed, strict=True)),
        "gradient_scale": max(float(np.max(np.abs(a))) for a in one),
    }))


if __name__ == "__main__":
    main()
