"""Fitting the two-tower model on several local worker processes (tf.distribute.MultiWorkerMirroredStrategy).

``train_model(..., workers=N)`` hands the fit to :func:`fit_on_workers`: N fresh processes on this
machine (``multiprocessing`` spawn; a strategy must be created before a process runs any other
TensorFlow op, and the calling process usually has), each given ``TF_CONFIG`` for a cluster of N
workers on loopback ports. Every worker prepares the same data and model under the strategy, reads
its own share of each shuffled batch, and the gradients are summed across workers after every step
(collective all-reduce), so the variables stay identical everywhere. The in-batch softmax uses every
worker's candidates as negatives (``modeling.two_tower``), so N workers train the same objective as
one process with the same ``batch_size``.

The chief (worker 0) measures the validation shoppers after each epoch, decides on early stopping
and tells the others (a collective sum of its decision), and writes the best epoch's weights to a
file; the calling process loads them into its own model and does the rest of ``train_model``
(test metrics, ranking stage). Each worker's output goes to a log file whose tail is quoted when it
fails; a failed or vanished worker stops the others and raises :class:`~modeling.errors.TrainingError`.

The processes are started here for one machine. The same strategy runs across machines when each
starts a worker with its own ``TF_CONFIG``; that launcher is not part of this module.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing
import os
import pickle
import queue
import socket
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modeling import runtime as _runtime  # noqa: F401  (before any tensorflow import)
from modeling.errors import TrainingError

if TYPE_CHECKING:
    from modeling import datasets as ds
    from modeling.embeddings import Embeddings
    from modeling.splits import Split
    from modeling.train import FitOutcome
    from modeling.two_tower import TwoTowerParams

logger = logging.getLogger(__name__)

STARTUP_SECONDS = 300.0
"""How long a worker may take to start (import TensorFlow, load the job) before the fit is abandoned."""


def cluster_config(workers: int, ports: list[int], index: int) -> dict[str, Any]:
    """``TF_CONFIG`` of worker ``index`` in a cluster of ``workers`` on 127.0.0.1 at ``ports``."""
    return {"cluster": {"worker": [f"127.0.0.1:{port}" for port in ports[:workers]]},
            "task": {"type": "worker", "index": index}}


def free_ports(n: int) -> list[int]:
    """``n`` distinct loopback ports that were free a moment ago (bound together, then released)."""
    sockets = []
    try:
        for _ in range(n):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def check_workers(workers: int, batch_size: int) -> None:
    """Refuse a worker count that cannot split the batch.

    Raises:
        TrainingError: ``workers`` < 1, or ``batch_size`` not a multiple of it.
    """
    if workers < 1:
        raise TrainingError(f"workers must be 1 or more, got {workers}")
    if batch_size % workers:
        raise TrainingError(f"the batch size ({batch_size}) must be a multiple of the number of workers "
                            f"({workers}): each worker takes an equal share of every batch")


def fit_on_workers(data: ds.CanonicalData, embeddings: Embeddings, params: TwoTowerParams, split: Split, *,
                   workers: int, on_epoch: Callable[[dict[str, float]], None] | None = None,
                   timeout_seconds: float | None = None, deadline: float | None = None) -> FitOutcome:
    """Fit the towers on ``workers`` local processes; return the chief's best weights and epoch log.

    Args:
        data, embeddings, params, split: as for :func:`modeling.train.train_model`.
        workers: processes, at least 2.
        on_epoch: the chief's epoch rows, as :func:`modeling.train.train_model` gives them.
        timeout_seconds: give up (and stop the workers) after this long; None: no limit.
        deadline: a ``time.time()`` after which the chief has every worker stop after the epoch under way
            (see :func:`modeling.train.fit_epochs`); None: none.

    Raises:
        TrainingError: a worker failed or exited early, or the timeout passed.
    """
    from modeling.train import FitOutcome

    check_workers(workers, params.batch_size)
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="reco-workers-") as directory:
        folder = Path(directory)
        job = folder / "job.pickle"
        with job.open("wb") as handle:
            pickle.dump({"data": data, "embeddings": embeddings, "params": params, "split": split,
                         "deadline": deadline}, handle,
                        protocol=pickle.HIGHEST_PROTOCOL)
        ports = free_ports(workers)
        messages = context.Queue()
        processes = [context.Process(target=_worker, name=f"reco-train-worker-{index}", daemon=True,
                                     args=(index, workers, ports, str(folder), messages))
                     for index in range(workers)]
        logger.info("training on %d worker processes (ports %s)", workers, ports)
        for process in processes:
            process.start()
        try:
            _wait(processes, messages, folder, on_epoch, timeout_seconds)
        finally:
            for process in processes:
                process.join(timeout=30)
                if process.is_alive():
                    process.terminate()
                    process.join(timeout=10)
            messages.close()
        with np.load(folder / "weights.npz") as stored:
            weights = [stored[f"w{i}"] for i in range(len(stored.files))]
        log = json.loads((folder / "outcome.json").read_text())
        return FitOutcome(weights=weights, history=log["history"], best_epoch=log["best_epoch"],
                          seconds=log["seconds"], examples=log["examples"],
                          deadline_reached=bool(log.get("deadline_reached", False)))


def _wait(processes: list[Any], messages: Any, folder: Path, on_epoch: Callable[[dict[str, float]], None] | None,
          timeout_seconds: float | None) -> None:
    started = time.monotonic()
    while True:
        try:
            kind, payload = messages.get(timeout=0.5)
        except queue.Empty:
            if timeout_seconds is not None and time.monotonic() - started > timeout_seconds:
                raise TrainingError(f"training on {len(processes)} workers took longer than "
                                    f"{timeout_seconds:g} s") from None
            for index, process in enumerate(processes):
                if process.exitcode not in (None, 0):
                    raise TrainingError(f"training worker {index} exited with code {process.exitcode}"
                                        f"{_log_tail(folder, index)}") from None
            if all(process.exitcode == 0 for process in processes):
                raise TrainingError("the training workers exited without a result") from None
            continue
        if kind == "epoch" and on_epoch is not None:
            on_epoch(payload)
        elif kind == "error":
            index, text = payload
            raise TrainingError(f"training worker {index} failed: {text.strip().splitlines()[-1]}"
                                f"{_log_tail(folder, index)}")
        elif kind == "done":
            return


def _log_tail(folder: Path, index: int, lines: int = 15) -> str:
    path = folder / f"worker-{index}.log"
    try:
        tail = path.read_text(errors="replace").strip().splitlines()[-lines:]
    except OSError:
        return ""
    return ("\n  worker log (last lines):\n    " + "\n    ".join(tail)) if tail else ""


def _worker(index: int, workers: int, ports: list[int], directory: str, messages: Any) -> None:
    """One training worker: join the cluster, fit, and (the chief) write the outcome."""
    folder = Path(directory)
    log = os.open(folder / f"worker-{index}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.environ["TF_CONFIG"] = json.dumps(cluster_config(workers, ports, index))
    try:
        import tensorflow as tf

        threads = max(1, (os.cpu_count() or 1) // workers)
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        with (folder / "job.pickle").open("rb") as handle:
            job = pickle.load(handle)  # noqa: S301  (written by the calling process a moment ago)
        outcome = fit_worker(job["data"], job["embeddings"], job["params"], job["split"], strategy,
                             chief=index == 0,
                             on_epoch=(lambda row: messages.put(("epoch", row))) if index == 0 else None,
                             deadline=job.get("deadline"))
        if index == 0:
            partial = folder / "weights.partial.npz"
            np.savez(partial, **{f"w{i}": w for i, w in enumerate(outcome.weights)})
            partial.replace(folder / "weights.npz")
            (folder / "outcome.json").write_text(json.dumps({
                "history": outcome.history, "best_epoch": outcome.best_epoch, "seconds": outcome.seconds,
                "examples": outcome.examples, "deadline_reached": outcome.deadline_reached}))
            messages.put(("done", None))
    except BaseException:
        text = traceback.format_exc()
        os.write(2, text.encode())
        messages.put(("error", (index, text)))
        raise SystemExit(1) from None


def fit_worker(data: ds.CanonicalData, embeddings: Embeddings, params: TwoTowerParams, split: Split,
               strategy: Any, *, chief: bool,
               on_epoch: Callable[[dict[str, float]], None] | None = None,
               deadline: float | None = None) -> FitOutcome:
    """The fit as one worker of ``strategy`` runs it (see the module's description).

    Returns:
        On the chief the best epoch's weights and the log; elsewhere the log with no weights.
    """
    import tensorflow as tf

    from modeling.train import _training_dataset, fit_epochs, prepare_fit

    with strategy.scope():
        fit = prepare_fit(data, embeddings, params, split)
    steps = max(1, math.ceil(len(fit.history.items) / params.batch_size))
    batch_losses: list[float] = []
    record = tf.keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: batch_losses.append(float(logs["loss"])))

    def one_epoch(epoch: int) -> float:
        def dataset(input_context: Any) -> Any:
            return _training_dataset(fit.history, fit.features, embeddings, params, input_context=input_context,
                                     epoch=epoch)

        batch_losses.clear()
        # The logged loss of a step is summed over every worker's replica (Keras reduces it with "sum").
        fit.model.fit(tf.keras.utils.experimental.DatasetCreator(dataset), epochs=1, steps_per_epoch=steps,
                      verbose=0, callbacks=[record])
        return sum(batch_losses)

    def agree(stop: bool) -> bool:
        # Once per epoch, eagerly (TensorFlow warns that eager collectives are slow; one scalar is cheap).
        vote = np.array([1.0 if chief and stop else 0.0], dtype=np.float32)

        def replica() -> Any:
            return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, tf.constant(vote))

        return float(strategy.experimental_local_results(strategy.run(replica))[0][0]) > 0.5

    return fit_epochs(fit, one_epoch, on_epoch=on_epoch, examples_per_epoch=steps * params.batch_size,
                      validate=chief, agree=agree, deadline=deadline)
