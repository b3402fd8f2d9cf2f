"""Whether the ranking stage's LambdaMART gains from signals it does not have: session neighbours, second-order
transitions, or a two-tower whose query tower attends over the history.

Usage:
    .venv/bin/python benchmarks/stage_features.py --source clickstream \\
        --path ../shared/datasets/uci_eshop_clothing_2008 --output benchmarks/results/stage_features_clickstream.json

Validation items only: the lists are built as ``benchmarks/ranker_lists.py`` builds them (every validation
shopper's candidates, each from the history before its item was found, the two-tower trained with default
parameters and no search), and every variant is a LambdaMART ranker trained on the stage's own sample of lists
in its three folds and measured on its selection shoppers (``ranker_lists.measure``), after 50 and 100 trees.
The variants:

- ``stage``: the stage's features (:data:`modeling.reranker.FEATURES`);
- ``+session_knn``: plus the session-kNN score of each candidate and its share of the shopper's best (Ludewig
  and Jannach's V-SKNN: the history's products weighted 1 for the latest, 0.1 less per step back, at least 0.1;
  each other shopper's similarity is the weights of the products they had over the square root of their
  number of products, i.e. cosine up to the history's own norm, which does not change who is nearest; the 100
  most similar; a candidate's score is the sum of the similarities of those who had it);
- ``+second_order``: plus P(candidate | the history's previous and last product), counted over consecutive
  triples of the training sequences (repeats of one product in a row counted once), and the log of how often
  that pair was followed by a third product (how much evidence there is);
- ``+both``: all four columns;
- ``attention``: the lists built again with the two-tower's query tower attending over the history
  (``attention_heads=2``, in the search space but not the default), the stage's features.

Each variant's paired difference from ``stage`` (same shoppers, same trees) with one standard error; each new
signal alone as a ranking, and the two-tower alone in both lists. Prints a table and writes JSON to
``--output``. On the clickstream each build of the lists takes 4 to 7 minutes, each variant a minute.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from modeling import runtime as _runtime  # noqa: E402,F401  (first: environment for TensorFlow)

import logging  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

logger = logging.getLogger("benchmarks.stage_features")

TREES = (50, 100)
NEIGHBOURS = 100
BATCH = 500


def _collapsed(users: np.ndarray, items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(users, items) with consecutive repeats of one product by one shopper kept once."""
    keep = np.ones(len(users), dtype=bool)
    keep[1:] = (users[1:] != users[:-1]) | (items[1:] != items[:-1])
    return users[keep], items[keep]


def _counts_at(keys: np.ndarray, table: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """counts[j] where table[j] == keys[i], else 0 (``table`` sorted). Returns keys' shape, int64."""
    if len(table) == 0:
        return np.zeros(keys.shape, dtype=np.int64)
    at = np.minimum(np.searchsorted(table, keys), len(table) - 1)
    return np.where(table[at] == keys, counts[at], 0)


def extra_features(candidates: np.ndarray, histories: list[np.ndarray], owners: np.ndarray, train_users: np.ndarray,
                   train_items: np.ndarray, n_users: int, n_items: int) -> dict[str, np.ndarray]:
    """The new columns for every (shopper, candidate), each (v, C) float32.

    Args:
        candidates: (v, C) item positions, -1 pads.
        histories: v arrays of item positions, oldest first (what each list was ranked from).
        owners: (v,) each list's shopper position (their own training products are not their neighbour).
        train_users, train_items: (n,) the training interactions, sorted by shopper and time.
        n_users, n_items: table sizes.
    """
    n = n_items
    users, items = _collapsed(np.asarray(train_users, dtype=np.int64), np.asarray(train_items, dtype=np.int64))
    triple = (users[2:] == users[:-2]) & (users[1:-1] == users[:-2])
    first, second, third = items[:-2][triple], items[1:-1][triple], items[2:][triple]
    pairs, pair_counts = np.unique(first * n + second, return_counts=True)
    triples, triple_counts = np.unique((first * n + second) * n + third, return_counts=True)

    bought = sp.csr_matrix((np.ones(len(train_users), dtype=np.float32), (train_users, train_items)),
                           shape=(n_users, n))
    bought.data[:] = 1.0
    sizes = np.sqrt(np.asarray(bought.sum(axis=1)).ravel())
    by_item = (sp.diags(1.0 / np.where(sizes > 0, sizes, 1.0)) @ bought).T.tocsr()  # (n, users), cosine's rows

    v, width = candidates.shape
    valid = candidates >= 0
    safe = np.maximum(candidates, 0)
    out = {name: np.zeros((v, width), dtype=np.float32) for name in ("session_knn", "second_order", "pair_count")}
    for start in range(0, v, BATCH):
        stop = min(v, start + BATCH)
        rows, cols, weights = [], [], []
        last_two = np.full((stop - start, 2), -1, dtype=np.int64)
        for row in range(start, stop):
            history = np.asarray(histories[row], dtype=np.int64)
            if len(history):
                history = history[np.r_[True, history[1:] != history[:-1]]]
            if len(history) >= 2:
                last_two[row - start] = history[-2:]
            weight: dict[int, float] = {}
            for back, item in enumerate(history[::-1]):
                weight.setdefault(int(item), max(1.0 - 0.1 * back, 0.1))
            rows += [row - start] * len(weight)
            cols += list(weight)
            weights += list(weight.values())
        query = sp.csr_matrix((np.asarray(weights, dtype=np.float32), (rows, cols)), shape=(stop - start, n))
        similarity = (query @ by_item).toarray()  # (b, users)
        similarity[np.arange(stop - start), owners[start:stop]] = 0.0
        k = min(NEIGHBOURS, n_users)
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        chosen = sp.csr_matrix((np.take_along_axis(similarity, nearest, axis=1).ravel(),
                                (np.repeat(np.arange(stop - start), k), nearest.ravel())),
                               shape=(stop - start, n_users))
        scores = (chosen @ bought).toarray()  # (b, n)
        part = slice(start, stop)
        out["session_knn"][part] = np.where(valid[part], np.take_along_axis(scores, safe[part], axis=1), 0.0)
        pair = last_two[:, 0] * n + last_two[:, 1]
        support = np.where(last_two[:, 0] >= 0, _counts_at(pair, pairs, pair_counts), 0)
        counted = _counts_at(pair[:, None] * n + safe[part], triples, triple_counts)
        out["second_order"][part] = np.where(valid[part] & (support[:, None] > 0),
                                             counted / np.maximum(support, 1)[:, None], 0.0)
        out["pair_count"][part] = np.log1p(support)[:, None]
    best = np.where(valid, out["session_knn"], 0.0).max(axis=1, keepdims=True)
    out["session_knn_share"] = np.where(best > 0, out["session_knn"] / np.where(best > 0, best, 1.0), 0.0
                                        ).astype(np.float32)
    return out


VARIANTS = {"+session_knn": ("session_knn", "session_knn_share"), "+second_order": ("second_order", "pair_count"),
            "+both": ("session_knn", "session_knn_share", "second_order", "pair_count")}


class Averaged:
    """The mean score of several boosters (each as LightGBM's ``predict`` takes rows)."""

    def __init__(self, boosters: list[Any]) -> None:
        self.boosters = boosters

    def predict(self, features: np.ndarray, num_threads: int = 1) -> np.ndarray:
        return np.mean([booster.predict(features, num_threads=num_threads) for booster in self.boosters], axis=0)


def measure(lists: Any, in_sample: np.ndarray, seed: int, extra: dict[str, np.ndarray],
            columns: tuple[str, ...], folds: int = 3, *, trees: tuple[int, ...] = TREES,
            boosters: int = 1, params: dict[str, Any] | None = None) -> dict[int, np.ndarray]:
    """{trees: (v,) NDCG@10} of LambdaMART on the stage's features plus ``columns`` of ``extra``, trained on the
    stage's sample in its folds (as ``fit_ranker`` assigns them), after each of ``trees``; 0 outside the sample.
    ``boosters`` > 1: that many boosters of different seeds in each fold, their scores averaged; ``params``:
    LightGBM settings that replace the stage's (None: the stage's)."""
    from ranker_lists import stage_folds

    from modeling import reranker

    features = lists.features
    if columns:
        features = np.concatenate([features] + [extra[name][:, :, None] for name in columns], axis=2)
    names = reranker.FEATURES + columns
    fold_of = stage_folds(in_sample, seed, folds)
    results = {count: np.zeros(len(lists.targets)) for count in trees}
    for fold in range(folds):
        test, learn = (fold_of == fold) & in_sample, (fold_of != fold) & in_sample
        trained = [reranker._train_booster(lists.candidates[learn], features[learn], lists.targets[learn], max(trees),
                                           seed + 1000 * n, names=names, params=params) for n in range(boosters)]
        for count in trees:
            truncated = [reranker._Truncated(booster, count) for booster in trained]
            model = truncated[0] if boosters == 1 else Averaged(truncated)
            ranked, _ = reranker.Ranker("lightgbm", booster=model).order(lists.candidates[test], features[test], 10)
            results[count][test] = reranker._ndcg_at_10(ranked, lists.targets[test])
    return results


def alone(lists: Any, values: np.ndarray, measured: np.ndarray) -> float:
    """Mean NDCG@10 on the measured shoppers of ``values`` (v, C) as a ranking (popularity breaking ties)."""
    from modeling import reranker

    popularity = lists.features[:, :, reranker.FEATURES.index("popularity_rank")]
    scores = np.where(lists.candidates >= 0, values + 1e-6 * popularity, -np.inf)
    ranked, _ = reranker.order_candidates(lists.candidates, scores, 10)
    return float(reranker._ndcg_at_10(ranked[measured], lists.targets[measured]).mean())


def _difference(values: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    difference = values - reference
    error = float(difference.std(ddof=1) / np.sqrt(len(difference))) if len(difference) > 1 else 0.0
    return {"ndcg@10": round(float(values.mean()), 5), "minus_stage": round(float(difference.mean()), 5),
            "standard_error": round(error, 5)}


def main(argv: list[str] | None = None) -> int:
    from ranker_lists import all_lists, start

    from modeling import reranker
    from modeling.train import history_batch
    from modeling.two_tower import TwoTowerParams

    run = start(__doc__.split("\n\n")[0], argv)
    lists, in_sample, seed, seconds, inputs = run.lists, run.in_sample, run.seed, run.seconds, run.inputs
    data, embeddings, measured = run.data, run.embeddings, run.measured
    began = time.perf_counter()
    histories = history_batch(inputs.validation_history, inputs.val_u).items
    extra = extra_features(lists.candidates, histories, inputs.val_u, inputs.history.users, inputs.history.items,
                           len(inputs.features.user_ids), len(inputs.features.item_ids))
    seconds["extra_features"] = time.perf_counter() - began
    two_tower = lists.features[:, :, reranker.FEATURES.index("two_tower")]
    single = {name: round(alone(lists, extra[name], measured), 5) for name in ("session_knn", "second_order")}
    single["two_tower"] = round(alone(lists, two_tower, measured), 5)
    results = {"stage": measure(lists, in_sample, seed, extra, ())}
    for name, columns in VARIANTS.items():
        results[name] = measure(lists, in_sample, seed, extra, columns)
        logger.info("%s measured", name)
    del extra

    attention, *_ = all_lists(data, embeddings, TwoTowerParams(attention_heads=2))
    if not np.array_equal(attention.targets, lists.targets):
        raise SystemExit("the two builds of the lists hold different shoppers")
    single["two_tower_with_attention"] = round(
        alone(attention, attention.features[:, :, reranker.FEATURES.index("two_tower")], measured), 5)
    results["attention"] = measure(attention, in_sample, seed, {}, ())

    finish(run, results, single)
    return 0


def compare_signals(description: str, argv: list[str] | None,
                    make: Callable[[Any, list[np.ndarray]], dict[str, np.ndarray]], singles: tuple[str, ...],
                    variants: dict[str, tuple[str, ...]]) -> int:
    """A signal benchmark's run: every validation shopper's list, ``make(run, histories)``'s new columns (each
    (v, C) float32; histories: v arrays of item positions, oldest first), each of ``singles`` alone as a ranking
    beside the transitions alone, and LambdaMART on the stage's features and with each of ``variants``' columns,
    printed and written as :func:`finish` does."""
    from ranker_lists import start

    from modeling import reranker
    from modeling.train import history_batch

    run = start(description, argv)
    began = time.perf_counter()
    histories = history_batch(run.inputs.validation_history, run.inputs.val_u).items
    extra = make(run, histories)
    run.seconds["extra_features"] = time.perf_counter() - began
    single = {name: round(alone(run.lists, extra[name], run.measured), 5) for name in singles}
    single["transition_last"] = round(
        alone(run.lists, run.lists.features[:, :, reranker.FEATURES.index("transition_last")], run.measured), 5)
    results = {"stage": measure(run.lists, run.in_sample, run.seed, extra, ())}
    for name, columns in variants.items():
        results[name] = measure(run.lists, run.in_sample, run.seed, extra, columns)
    finish(run, results, single)
    return 0


def finish(run: Any, results: dict[str, dict[int, np.ndarray]], single: dict[str, float]) -> None:
    """Each variant's paired difference from ``results["stage"]`` on the measured shoppers, after each of
    :data:`TREES`, printed and written with ``single`` (each signal alone as a ranking)."""
    from ranker_lists import report

    table = {f"{name}:{trees}": _difference(values[trees][run.measured], results["stage"][trees][run.measured])
             for name, values in results.items() for trees in TREES}
    print("alone: " + ", ".join(f"{name} {value:.4f}" for name, value in single.items()))
    report(run, table, {"alone": single})


if __name__ == "__main__":
    sys.exit(main())
