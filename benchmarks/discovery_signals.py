"""Whether the ranking stage's LambdaMART gains from transitions counted toward newly found products only, and
from the reverse transition (how often the candidate led to the history's last product).

Usage:
    .venv/bin/python benchmarks/discovery_signals.py --source clickstream \\
        --path ../shared/datasets/uci_eshop_clothing_2008 --output benchmarks/results/discovery_signals_clickstream.json

Validation items only, with the lists and the measure of ``benchmarks/stage_features.py`` (LambdaMART on the
stage's own sample of lists in its three folds, measured on its selection shoppers, after 50 and 100 trees).
The held-out item of every protocol is a product the shopper finds for the first time, and the service never
proposes a product the shopper has; the stage's transitions count every step of the training sequences, a return
to a product seen earlier in the same sequence too. The variants:

- ``stage``: the stage's features (:data:`modeling.reranker.FEATURES`);
- ``+discovery``: plus P(the next product found for the first time is the candidate | the history's last product),
  counted over the training sequences' steps into a product not met before in that sequence (consecutive
  repeats once), and the candidate's share of the best of them in its list;
- ``+reverse``: plus P(the history's last product follows | the candidate), the stage's transitions read the other
  way round (two products a shopper moves between both ways are a pair in the shop's navigation);
- ``+both``: the four columns.

Each variant's paired difference from ``stage`` (same shoppers, same trees) with one standard error, and each new
signal alone as a ranking beside the stage's transitions alone. Prints a table and writes JSON to ``--output``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from modeling import runtime as _runtime  # noqa: E402,F401  (first: environment for TensorFlow)

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402


def discovery_probabilities(users: np.ndarray, items: np.ndarray, n_items: int) -> sp.csr_matrix:
    """(n_items, n_items) row-normalised counts of product i directly followed by product j where j is met for
    the first time in that shopper's sequence (arrays sorted by shopper and time; consecutive repeats once)."""
    users, items = np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
    keep = np.ones(len(users), dtype=bool)
    keep[1:] = (users[1:] != users[:-1]) | (items[1:] != items[:-1])
    users, items = users[keep], items[keep]
    first = np.zeros(len(users), dtype=bool)
    first[np.unique(users * n_items + items, return_index=True)[1]] = True
    follows = (users[1:] == users[:-1]) & first[1:]
    counts = sp.csr_matrix((np.ones(int(follows.sum()), dtype=np.float32),
                            (items[:-1][follows], items[1:][follows])), shape=(n_items, n_items), dtype=np.float32)
    totals = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    totals[totals == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / totals) @ counts, dtype=np.float32)


def extra_features(candidates: np.ndarray, histories: list[np.ndarray], train_users: np.ndarray,
                   train_items: np.ndarray, n_items: int) -> dict[str, np.ndarray]:
    """The new columns for every (shopper, candidate), each (v, C) float32 (candidates (v, C), -1 pads; histories:
    v arrays of item positions, oldest first)."""
    from modeling.baselines import transition_probabilities

    discovery = discovery_probabilities(train_users, train_items, n_items).toarray()
    forward = transition_probabilities(np.asarray(train_users, dtype=np.int64),
                                       np.asarray(train_items, dtype=np.int64), n_items).toarray()
    last = np.array([int(h[-1]) if len(h) else -1 for h in histories], dtype=np.int64)
    valid = (candidates >= 0) & (last[:, None] >= 0)
    safe, safe_last = np.maximum(candidates, 0), np.maximum(last, 0)[:, None]
    out = {"discovery": np.where(valid, discovery[safe_last, safe], 0.0).astype(np.float32),
           "reverse": np.where(valid, forward[safe, safe_last], 0.0).astype(np.float32)}
    best = out["discovery"].max(axis=1, keepdims=True)
    out["discovery_share"] = np.where(best > 0, out["discovery"] / np.where(best > 0, best, 1.0), 0.0
                                      ).astype(np.float32)
    return out


VARIANTS = {"+discovery": ("discovery", "discovery_share"), "+reverse": ("reverse",),
            "+both": ("discovery", "discovery_share", "reverse")}


def main(argv: list[str] | None = None) -> int:
    from stage_features import compare_signals

    def make(run, histories: list[np.ndarray]) -> dict[str, np.ndarray]:  # noqa: ANN001  (a ranker_lists.Run)
        inputs = run.inputs
        return extra_features(run.lists.candidates, histories, inputs.history.users, inputs.history.items,
                              len(inputs.features.item_ids))

    return compare_signals(__doc__.split("\n\n")[0], argv, make, ("discovery", "reverse"), VARIANTS)


if __name__ == "__main__":
    sys.exit(main())
