"""A small random hyper-parameter search for the two-tower model, judged on the validation split.

Each trial trains with early stopping on the validation items of one leave-last-out split
and is scored by its best validation NDCG@10; the test items are never looked at, so the
chosen parameters can then be measured on test without bias.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from modeling import datasets as ds
from modeling.embeddings import Embeddings
from modeling.errors import TrainingError
from modeling.params import TwoTowerParams
from modeling.splits import Split, leave_last_out_split

logger = logging.getLogger(__name__)

SEARCH_SPACE: dict[str, Sequence[Any]] = {
    "temperature": (0.05, 0.1, 0.2),
    "learning_rate": (0.001, 0.003),
    "batch_size": (256, 512, 1024),
    "id_dropout": (0.1, 0.3, 0.5),
    "hidden_dim": (128, 256),
    "history_length": (20, 50),
    "history_half_life_days": (180.0, 0.0),
    "attention_heads": (0, 2),
    "logq_strength": (1.0, 1.5),
    "use_user_id": (True, False),
    "causal_history": (True, False),
}


def sample_params(base: TwoTowerParams, space: Mapping[str, Sequence[Any]], trials: int,
                  seed: int = 0) -> list[TwoTowerParams]:
    """``trials`` distinct parameter sets: ``base`` first, then random draws from ``space``."""
    rng = np.random.default_rng(seed)
    chosen = [base]
    seen = {tuple(sorted(base.to_dict().items()))}
    attempts = 0
    while len(chosen) < trials and attempts < 100 * trials:
        attempts += 1
        values = {name: options[int(rng.integers(len(options)))] for name, options in space.items()}
        params = replace(base, **values)
        key = tuple(sorted(params.to_dict().items()))
        if key not in seen:
            seen.add(key)
            chosen.append(params)
    return chosen


def random_search(data: ds.CanonicalData, embeddings: Embeddings, base: TwoTowerParams | None = None, *,
                  space: Mapping[str, Sequence[Any]] = SEARCH_SPACE, trials: int = 8, seed: int = 0,
                  split: Split | None = None,
                  on_trial: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Train ``trials`` parameter sets and keep the one with the best validation NDCG@10.

    Returns:
        ``{"trials": [{"trial", "params", "val_ndcg@10", "val_hr@10", "best_epoch", "seconds"}],
        "best": params dict, "best_trial": int}``.
    """
    from modeling.train import train_model

    split = split or leave_last_out_split(data.interactions)
    log: list[dict[str, Any]] = []
    for n, params in enumerate(sample_params(base or TwoTowerParams(), space, trials, seed)):
        started = time.perf_counter()
        result = train_model(data, embeddings, params, split=split, ranking_stage=False)
        best = result.history[result.best_epoch - 1] if result.best_epoch else {"val_ndcg@10": 0.0, "val_hr@10": 0.0}
        entry = {"trial": n, "params": params.to_dict(), "val_ndcg@10": best["val_ndcg@10"],
                 "val_hr@10": best["val_hr@10"], "best_epoch": result.best_epoch,
                 "seconds": round(time.perf_counter() - started, 1)}
        log.append(entry)
        logger.info("trial %d: validation NDCG@10 %.4f HR@10 %.4f (%s)", n, entry["val_ndcg@10"],
                    entry["val_hr@10"], {k: v for k, v in params.to_dict().items() if k in space})
        if on_trial is not None:
            on_trial(entry)
    winner = max(log, key=lambda entry: entry["val_ndcg@10"])
    return {"trials": log, "best": winner["params"], "best_trial": winner["trial"]}


DEFAULT_BUDGET_SECONDS = 60.0
"""Seconds ``train`` spends on the two-tower search by default (the first, default-parameter trial always runs)."""


def budgeted_search(data: ds.CanonicalData, embeddings: Embeddings, base: TwoTowerParams | None = None, *,
                    budget_seconds: float = DEFAULT_BUDGET_SECONDS, space: Mapping[str, Sequence[Any]] = SEARCH_SPACE,
                    seed: int = 0, split: Split | None = None,
                    on_trial: Callable[[dict[str, Any]], None] | None = None,
                    on_epoch: Callable[[dict[str, float]], None] | None = None, workers: int = 1) -> Any:
    """Train ``base``, then random draws from ``space`` while the time budget lasts; keep the best on validation.

    A new trial starts only when the time left covers the last trial's duration, and a trial still
    training when the budget is spent stops after its current epoch, keeping its best epoch so far
    (``"cut": true`` in its log entry), so the search ends within about one epoch of the budget (the
    first trial always runs to its end: a shop gets at least the given parameters fully trained).
    The winner (best validation NDCG@10; ties keep the earlier trial) then gets its ranking stage,
    fitted on the same validation items; the test items are only measured.

    Args:
        data, embeddings: the shop's tables and text embeddings.
        base: the first trial's parameters (default parameters if None).
        budget_seconds: 0: train ``base`` only.
        on_trial: called with each trial's log entry (not when there is no budget: nothing is searched).
        on_epoch: the first trial's epoch progress (see :func:`modeling.train.train_model`).
        workers: training processes of every trial (see :func:`modeling.train.train_model`).

    Returns:
        The winning :class:`modeling.train.TrainResult`, its ``search`` set to ``{"budget_seconds",
        "trials": [{"trial", "params", "val_ndcg@10", "val_hr@10", "best_epoch", "seconds"[, "cut"]}],
        "best_trial", "seconds"}``; ``seconds``: the trials' (the ranking stage's are in its report).
    """
    from modeling.train import add_ranking_stage, train_model

    split = split or leave_last_out_split(data.interactions)
    base = base or TwoTowerParams()
    started = time.perf_counter()
    deadline = time.time() + budget_seconds
    log: list[dict[str, Any]] = []
    best, best_score = None, -1.0
    for n, params in enumerate(sample_params(base, space, 1000, seed)):
        trial_started = time.perf_counter()
        result = train_model(data, embeddings, params, split=split, ranking_stage=False,
                             on_epoch=on_epoch if n == 0 else None, workers=workers,
                             deadline=deadline if n else None)
        epoch = result.history[result.best_epoch - 1] if result.best_epoch else {"val_ndcg@10": 0.0, "val_hr@10": 0.0}
        seconds = time.perf_counter() - trial_started
        entry = {"trial": n, "params": {k: v for k, v in params.to_dict().items() if n == 0 or k in space},
                 "val_ndcg@10": round(float(epoch["val_ndcg@10"]), 5), "val_hr@10": round(float(epoch["val_hr@10"]), 5),
                 "best_epoch": result.best_epoch, "seconds": round(seconds, 1),
                 **({"cut": True} if result.deadline_reached else {})}
        log.append(entry)
        logger.info("search trial %d: validation NDCG@10 %.4f (%.0f s)", n, entry["val_ndcg@10"], seconds)
        if on_trial is not None and budget_seconds > 0:
            on_trial(entry)
        if best is None or epoch["val_ndcg@10"] > best_score:
            best, best_score = result, float(epoch["val_ndcg@10"])
        if time.perf_counter() - started + seconds > budget_seconds:
            break
    searched = time.perf_counter() - started
    add_ranking_stage(best, data, embeddings, split)
    best.search = {"budget_seconds": budget_seconds, "trials": log,
                   "best_trial": max(log, key=lambda e: (e["val_ndcg@10"], -e["trial"]))["trial"],
                   "seconds": round(searched, 1)}
    return best


def read_params(path: str | Path, base: TwoTowerParams | None = None) -> TwoTowerParams:
    """Parameters from a JSON file: a parameter object, a search log (its ``best`` is used), or an ``evaluate``
    output (its ``params``: those it measured, the kept trial's after a time-budgeted search).

    Raises:
        TrainingError: when the file is missing, not JSON, or holds unknown or invalid parameters.
    """
    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise TrainingError(f"cannot read parameters file {path}: {exc.strerror or exc}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TrainingError(f"{path}: not a JSON file ({exc})") from exc
    if isinstance(values, dict) and isinstance(values.get("search"), dict):
        values = values["search"]
    if isinstance(values, dict) and isinstance(values.get("best"), dict):
        values = values["best"]
    elif isinstance(values, dict) and isinstance(values.get("params"), dict) and (
            "protocol" in values or "source" in values):  # leave-last-out's results, or any evaluate output's
        values = values["params"]
    try:
        return TwoTowerParams.from_dict(values, base)
    except ValueError as exc:
        raise TrainingError(f"{path}: {exc}") from exc
