"""What the ranking stage's text features would cost with fewer dimensions, on the serving benchmark's workspace.

Usage:
    .venv/bin/python benchmarks/text_projection.py                       # 64 and 128 dimensions, under a minute
    .venv/bin/python benchmarks/text_projection.py --dims 32 64 --rounds 20 --output benchmarks/results/x.json

The stage's text features (a candidate's cosine to the history's products and to their mean) read every
candidate's text row: 384 8-bit codes, six cache lines, at random in a table of the whole catalogue. This runs
``Recommender.recommend`` in process, as a web worker calls it (one BLAS and one FAISS thread, the bundle's
approximate index, 200 products out of stock), over the workspace built by ``benchmarks/serving.py`` (100,000
products), with the stage's text rows as published and, in turn, projected onto their first k directions (the
top right singular vectors of a sample of the rows: what keeps dot products best), made unit rows again and stored
as 8-bit codes as a bundle stores them. The variants run alternately, call by call (the order reversed every
other call), so that a machine whose speed drifts favours none; reported per variant: the median time of a call
for 100 shoppers and for one, the median of each call's ratio to the published rows' call next to it and how
often it was the faster, the text features' own time in a 100-shopper call, and the share of the rows' squared
length the k directions keep (over the sample).

The ranker stays the bundle's, trained on the published rows: the share of the 700 shoppers' top 10 that stay
the same shows how far the features move, not how a ranker trained on projected rows would rank. That needs a
bundle trained with them and ``manage.py evaluate`` on the data sets. Writes benchmarks/results/text-projection.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modeling import runtime as _runtime  # noqa: E402,F401  (first: the service's environment)

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from modeling.rows import QuantizedRows, as_float32, quantize_rows  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
WORKSPACE = ROOT / "benchmarks" / ".work" / "serving"
FULL = "published"
BATCH = 100


def projected(content: Any, dims: int, *, sample: int = 20_000, seed: int = 0) -> tuple[QuantizedRows, float]:
    """(n, t) text rows (float32, float16 or :class:`QuantizedRows`) projected onto their first ``dims`` right
    singular vectors (of ``sample`` random rows), made unit rows again and coded in 8 bits: ``(rows (n, dims),
    share)``, ``share`` the part of the sampled rows' squared length the directions keep (1.0 when ``dims`` is at
    least t)."""
    n = len(content)
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(n, size=min(sample, n), replace=False))
    rows = as_float32(content[picked])
    _, _, directions = np.linalg.svd(rows, full_matrices=False)
    basis = np.ascontiguousarray(directions[:dims].T, dtype=np.float32)  # (t, k)
    total = float(np.einsum("ij,ij->", rows, rows))
    kept = rows @ basis
    share = float(np.einsum("ij,ij->", kept, kept)) / total if total > 0 else 1.0
    out = np.empty((n, basis.shape[1]), dtype=np.float32)
    for start in range(0, n, 10_000):
        part = as_float32(content[start:start + 10_000]) @ basis
        norms = np.linalg.norm(part, axis=1, keepdims=True)
        out[start:start + len(part)] = np.divide(part, norms, out=np.zeros_like(part), where=norms > 0)
    return quantize_rows(out), share


def reads_text(recommender: Any) -> bool:
    """Whether the recommender's ranking stage reads the text features (a single feature or a blend may not)."""
    from modeling.reranker import TEXT_FEATURES

    stage = getattr(recommender, "stage", None)
    if stage is None:
        return False
    columns = stage.ranker.columns()
    return columns is None or any(name in columns for name in TEXT_FEATURES)


@contextmanager
def timed_text_features(spent: list[float]) -> Iterator[None]:
    """While in the block, the ranking stage's text features add their time (seconds) to ``spent[0]``."""
    from modeling import reranker

    original = reranker._text_features

    def timed(*args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        try:
            original(*args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - started

    reranker._text_features = timed
    try:
        yield
    finally:
        reranker._text_features = original


def compare(recommender: Any, variants: dict[str, Any], users: list[str], histories: dict[str, Any],
            allowed: np.ndarray, rounds: int) -> dict[str, Any]:
    """Each variant of the stage's item tables (``variants``, the published ones first under :data:`FULL`) in turn
    for the same calls: ``rounds`` passes over ``users`` 100 per call, then each of the first 300 alone."""
    names = list(variants)
    hundred: dict[str, list[float]] = {name: [] for name in names}
    text: dict[str, list[float]] = {name: [] for name in names}
    alone: dict[str, list[float]] = {name: [] for name in names}
    lists: dict[str, list[list[str]]] = {name: [] for name in names}
    spent = [0.0]

    def call(name: str, group: list[str]) -> tuple[float, dict[str, Any]]:
        recommender.tables = variants[name]
        started = time.perf_counter()
        rankings = recommender.recommend(group, histories, 10, allowed)
        return time.perf_counter() - started, rankings

    with timed_text_features(spent):
        for name in names:  # warm: the mapped pages, the index, the compiled ranker
            call(name, users[:BATCH])
        turn = 0
        for round_ in range(rounds):
            for start in range(0, len(users), BATCH):
                group = users[start:start + BATCH]
                for name in (names if turn % 2 == 0 else names[::-1]):
                    spent[0] = 0.0
                    seconds, rankings = call(name, group)
                    hundred[name].append(seconds)
                    text[name].append(spent[0])
                    if round_ == 0:
                        lists[name] += [[str(i) for i in rankings[user].items] for user in group]
                turn += 1
        for at, user in enumerate(users[:300]):
            for name in (names if at % 2 == 0 else names[::-1]):
                alone[name].append(call(name, [user])[0])
    recommender.tables = variants[FULL]
    summary = {}
    for name in names:
        ratio = np.asarray(hundred[name]) / np.asarray(hundred[FULL])
        ratio_alone = np.asarray(alone[name]) / np.asarray(alone[FULL])
        same = [a == b for a, b in zip(lists[name], lists[FULL], strict=True)]
        overlap = [len(set(a) & set(b)) / max(len(b), 1) for a, b in zip(lists[name], lists[FULL], strict=True)]
        summary[name] = {
            "hundred_shoppers_ms": round(1000 * float(np.median(hundred[name])), 2),
            "hundred_ratio_to_published": round(float(np.median(ratio)), 3),
            "hundred_calls_faster": round(float(np.mean(ratio < 1.0)), 3) if name != FULL else None,
            "text_features_ms": round(1000 * float(np.median(text[name])), 2),
            "one_shopper_ms": round(1000 * float(np.median(alone[name])), 3),
            "one_ratio_to_published": round(float(np.median(ratio_alone)), 3),
            "one_calls_faster": round(float(np.mean(ratio_alone < 1.0)), 3) if name != FULL else None,
            "same_top10": round(float(np.mean(same)), 3),
            "top10_overlap": round(float(np.mean(overlap)), 3),
        }
    return {"calls_of_100": len(hundred[FULL]), "calls_of_one": len(alone[FULL]), "summary": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", default=str(WORKSPACE), help="built by benchmarks/serving.py")
    parser.add_argument("--dims", type=int, nargs="+", default=[64, 128], help="dimensions kept (default 64 128)")
    parser.add_argument("--rounds", type=int, default=10, help="passes over the 700 shoppers (default 10)")
    parser.add_argument("--output", default=str(RESULTS / "text-projection.json"))
    args = parser.parse_args()
    if args.rounds < 1 or min(args.dims) < 1:
        parser.error("--rounds and --dims take numbers of at least 1")
    workspace = Path(args.workspace)
    if not (workspace / "models" / "ACTIVE").is_file() or not (workspace / "db.sqlite3").is_file():
        parser.error(f"no serving workspace at {workspace}: run .venv/bin/python benchmarks/serving.py first")

    from benchmarks.engine_versions import shoppers
    from benchmarks.serving import one_thread
    from modeling import artifacts
    from modeling.index import ANN_MIN_ITEMS
    from modeling.recommender import Recommender

    version = (workspace / "models" / "ACTIVE").read_text().strip()
    recommender = Recommender(artifacts.load_bundle(workspace / "models" / version), ann_min_items=ANN_MIN_ITEMS)
    users, histories, allowed = shoppers(recommender, workspace)
    published = recommender.tables
    variants: dict[str, Any] = {FULL: published}
    shares = {FULL: 1.0}
    for dims in args.dims:
        rows, shares[f"{dims} dims"] = projected(published.content, dims)
        variants[f"{dims} dims"] = dataclasses.replace(published, content=rows)
    with one_thread():  # one BLAS and one OpenMP (FAISS) thread, as each web worker has
        result = compare(recommender, variants, users, histories, allowed, args.rounds)
    result["stage_reads_text"] = reads_text(recommender)
    if not result["stage_reads_text"]:
        print("this bundle's ranking stage does not read the text features: every variant computes the same")
    for name, share in shares.items():
        result["summary"][name]["squared_length_kept"] = round(share, 4)
    result.update({"workspace": os.path.relpath(workspace, ROOT), "products": len(recommender.item_ids),
                   "text_dims": int(published.content.shape[1]), "rounds": args.rounds})
    output = Path(args.output)  # written before the table is printed: a closed terminal loses no result
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'text rows':<12}{'100 shoppers ms':>16}{'ratio':>7}{'faster':>8}{'text ms':>9}{'1 shopper ms':>14}"
          f"{'ratio':>7}{'faster':>8}{'same top 10':>13}{'kept':>7}")
    for name, row in result["summary"].items():
        faster = "" if row["hundred_calls_faster"] is None else f"{row['hundred_calls_faster']:.2f}"
        faster_one = "" if row["one_calls_faster"] is None else f"{row['one_calls_faster']:.2f}"
        print(f"{name:<12}{row['hundred_shoppers_ms']:>16.1f}{row['hundred_ratio_to_published']:>7.3f}{faster:>8}"
              f"{row['text_features_ms']:>9.2f}{row['one_shopper_ms']:>14.2f}{row['one_ratio_to_published']:>7.3f}"
              f"{faster_one:>8}{row['same_top10']:>13.3f}{row['squared_length_kept']:>7.3f}")
    print(f"\nwritten to {os.path.relpath(output, ROOT)}")


if __name__ == "__main__":
    main()
