"""Lists for histories of products added after training, on the demo shop.

Usage (after `make pipeline` or `make demo`, which leave the demo's data in data/raw/demo and its model in models/):
    .venv/bin/python benchmarks/new_products.py                     # about a minute
    .venv/bin/python benchmarks/new_products.py --models models --data data/raw/demo \
        --output benchmarks/results/new_products.json

Every trained product is posted again under a new id, with the same title, description, brand, category and price
(what a shop adds after training looks like what it sold before), and encoded by the bundle's text encoder, as the
service encodes a product added through `POST /products`. The originals are left out of every list. Lists of 10
are asked for:

- one copy: the targets are the products shoppers went on to right after the copy's original;
- a shopper's first three products, as copies: the targets are the shopper's later products;

by three rules, each measured by recall@10 of the targets, the share of the list in the history's categories, and
the share of the 10 most popular products in it:

- ``served``: what `Recommender.recommend` answers (the products nearest to the copies in the candidate tower's
  space, which `similar_items` searches);
- ``two_tower_order``: the ranking stage's candidates in the two-tower score's order (the query tower on the
  history), what such a history got until this version;
- ``text_nearest`` (one copy only): the products whose MiniLM text is nearest, as a text alone is served.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modeling import runtime as _runtime  # noqa: E402,F401  (first: environment for TensorFlow)

import argparse  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402

from modeling import artifacts  # noqa: E402
from modeling import datasets as ds  # noqa: E402
from modeling.exported_text import OnnxTextEncoder  # noqa: E402
from modeling.features import item_attributes_of_rows  # noqa: E402
from modeling.recommender import History, Recommender  # noqa: E402
from modeling.sources import load_source  # noqa: E402

K = 10


def _with_copies(models: Path, raw: Path) -> tuple[Recommender, np.ndarray, dict[str, list[int]]]:
    """The active bundle's recommender with every trained product posted again as ``NEW-<id>``; the trained
    products' ids; each shopper's products in time order (positions)."""
    bundle = artifacts.load_bundle(models / artifacts.read_active(models))
    recommender = Recommender(bundle)
    trained = recommender.item_ids[:recommender.n_trained_items].astype(str)
    data = load_source("amazon2018", raw)
    meta = data.items.set_index(ds.ITEM_ID)
    rows = [(f"NEW-{i}", meta.loc[i, ds.TITLE], meta.loc[i].get(ds.DESCRIPTION, ""), meta.loc[i, ds.BRAND],
             meta.loc[i, ds.CATEGORY], meta.loc[i, ds.PRICE]) for i in trained]
    encoder = OnnxTextEncoder(artifacts.text_export_path(bundle))
    recommender.add_items(np.asarray([row[0] for row in rows]), encoder.encode(ds.item_text_of_rows(rows)),
                          item_attributes_of_rows(rows))
    position = {item: p for p, item in enumerate(trained)}
    ordered = data.interactions.sort_values([ds.USER_ID, ds.TIMESTAMP], kind="stable")
    sequences = {str(user): [position[i] for i in group[ds.ITEM_ID].astype(str) if i in position]
                 for user, group in ordered.groupby(ds.USER_ID)}
    return recommender, trained, sequences


def _lists(recommender: Recommender, histories: dict[str, History], allowed: np.ndarray,
           rule: str) -> dict[str, np.ndarray]:
    """Top-10 item positions per history by ``rule`` (``served`` or ``two_tower_order``)."""
    users = list(histories)
    out: dict[str, np.ndarray] = {}
    for start in range(0, len(users), 100):
        part = users[start:start + 100]
        if rule == "served":
            answers = recommender.recommend(part, histories, K, allowed)
            out.update({u: answers[u].items[:K] for u in part})
            continue
        batch = [histories[u] for u in part]
        looked_up = [recommender.item_lookup(h.item_ids) for h in batch]
        query = recommender.content_vectors(batch, [""] * len(batch), looked_up)
        positions, _ = recommender.stage.rank(query, recommender.item_vectors, recommender.index, recommender.tables,
                                              recommender.history_batch(batch, looked_up), looked_up, K, allowed)
        out.update({u: row[row >= 0] for u, row in zip(part, positions, strict=True)})
    return out


def _measure(lists: dict[str, np.ndarray], targets: dict[str, np.ndarray], categories: dict[str, list[str]],
             category: np.ndarray, popular: set[int]) -> dict[str, float]:
    users = list(lists)
    return {"histories": len(users),
            f"recall@{K}": round(float(np.mean([np.isin(targets[u], lists[u]).mean() for u in users])), 4),
            "share_in_history_categories": round(float(np.mean(
                [np.isin(category[lists[u]], categories[u]).mean() for u in users])), 4),
            f"share_of_popular_top_{K}": round(float(np.mean(
                [len(set(lists[u].tolist()) & popular) / K for u in users])), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=Path, default=ROOT / "models", help="models folder (its ACTIVE model)")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "raw" / "demo", help="the demo shop's files")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "new_products.json")
    args = parser.parse_args()
    if not (args.models / "ACTIVE").is_file():
        parser.error(f"no active model in {args.models}: run `make pipeline` first")
    recommender, trained, sequences = _with_copies(args.models, args.data)
    n = len(trained)
    category = np.asarray(recommender.attributes.category, dtype=str)
    allowed = np.ones(recommender.n_items, dtype=bool)
    allowed[n:] = False  # the copies are never listed: their originals are the answers
    popular = set(np.argsort(-recommender.popularity[:n])[:K].tolist())

    following: dict[int, list[int]] = {}
    for sequence in sequences.values():
        for before, after in zip(sequence[:-1], sequence[1:], strict=True):
            if before != after:
                following.setdefault(before, []).append(after)
    one = {f"v{p}": History(np.asarray([f"NEW-{trained[p]}"], dtype=object), np.zeros(1, dtype=np.int64),
                            np.ones(1)) for p in following}
    one_targets = {f"v{p}": np.asarray(following[p]) for p in following}
    one_categories = {f"v{p}": [category[p]] for p in following}
    three, three_targets, three_categories = {}, {}, {}
    for user, sequence in sequences.items():
        first = list(dict.fromkeys(sequence))[:3]
        rest = [p for p in sequence if p not in first]
        if len(first) == 3 and rest:
            three[f"w{user}"] = History(np.asarray([f"NEW-{trained[p]}" for p in first], dtype=object),
                                        np.arange(3, dtype=np.int64) * 86_400, np.ones(3))
            three_targets[f"w{user}"], three_categories[f"w{user}"] = np.asarray(rest), [category[p] for p in first]

    results: dict[str, dict[str, dict[str, float]]] = {"one_copy": {}, "first_three_copies": {}}
    for rule in ("served", "two_tower_order"):
        results["one_copy"][rule] = _measure(_lists(recommender, one, allowed, rule), one_targets, one_categories,
                                             category, popular)
        results["first_three_copies"][rule] = _measure(_lists(recommender, three, allowed, rule), three_targets,
                                                       three_categories, category, popular)
    users = list(one)
    copies = recommender.item_lookup([one[u].item_ids[0] for u in users])
    texts = np.asarray(recommender.item_content[copies], dtype=np.float32)
    found, _ = recommender.text_index.search(texts, K, [np.asarray([p]) for p in copies], allowed)
    results["one_copy"]["text_nearest"] = _measure({u: row[row >= 0] for u, row in zip(users, found, strict=True)},
                                                   one_targets, one_categories, category, popular)
    results["model_version"] = recommender.version  # type: ignore[assignment]
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    for case in ("one_copy", "first_three_copies"):
        for rule, figures in results[case].items():
            print(f"{case:<20} {rule:<16} " + ", ".join(f"{k} {v}" for k, v in figures.items()))
    print(f"written to {args.output}")


if __name__ == "__main__":
    main()
