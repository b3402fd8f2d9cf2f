"""The text index's codes on real MiniLM vectors: 8-bit codes against product-quantizer codes.

Usage:
    .venv/bin/python benchmarks/text_index.py            # about 5 minutes the first time (encoding), then seconds
    .venv/bin/python benchmarks/text_index.py --limit 2000   # a quick look

The serving benchmark's text vectors are random vectors clustered by category (encoding 100,000 texts
takes too long there), which says nothing of how codes rank real sentence vectors. Here the products are
real texts of the shared data sets (MovieLens titles with their genres, and the Amazon sets' review
summaries and texts, deduplicated: about 13,500), encoded by the ONNX export of the bundled MiniLM, as
publishing encodes product texts. Queries are what a shop's search box gets: 1,000 pairs of words drawn
from those texts, and 1,000 held-out texts (not indexed) as longer queries. For 8-bit codes
(``faiss_ivf_sq8``, what text indexes stored before) and product-quantizer codes
(``faiss_ivf_pq48``, what publishing stores from ``modeling.index.PQ_MIN_ITEMS`` products), both with the
same lists: each index's file size, and the recall@10 against exact search of what serving answers
(``modeling.index.IvfIndex``: the candidates fetched, scored exactly) at several ``nprobe`` and at the one
publishing tunes (on products as queries, as ``write_text_index`` does). Writes
``benchmarks/results/text_index.json``. Needs ``../shared/datasets``.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modeling import runtime as _runtime  # noqa: E402,F401  (first: environment for TensorFlow)

import argparse  # noqa: E402
import csv  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

logger = logging.getLogger("benchmarks.text_index")

DATASETS = ROOT.parent / "shared" / "datasets"
REVIEWS = ("amazon2018_gift_cards/Gift_Cards_5.json.gz", "amazon2018_all_beauty/All_Beauty_5.json.gz",
           "amazon2018_amazon_fashion/AMAZON_FASHION_5.json", "amazon2018_appliances/Appliances_5.json.gz")
HELD_OUT = 1000
NPROBES = (8, 16, 32, 64, 128)


def shared_texts(datasets: Path) -> list[str]:
    """Product-like texts of the shared sets, deduplicated, in a seeded random order."""
    texts = [f"Title: {row['title']}\nCategory: {row['genres'].replace('|', ', ')}"
             for row in csv.DictReader(open(datasets / "movielens_ml_latest_small" / "movies.csv", encoding="utf-8"))]
    for name in REVIEWS:
        path = datasets / name
        with (gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")) as f:
            for line in f:
                review = json.loads(line)
                text = (str(review.get("summary", "")) + ". " + str(review.get("reviewText", "")))[:400]
                if len(text) > 20:
                    texts.append(text)
    texts = list(dict.fromkeys(texts))
    random.Random(0).shuffle(texts)
    return texts


def word_pairs(texts: list[str], n: int) -> list[str]:
    """``n`` two-word queries, words drawn from the texts (seeded)."""
    words = [w for t in texts[:3000] for w in t.split() if w.isalpha()]
    rng = random.Random(1)
    return [" ".join(rng.sample(words, 2)) for _ in range(n)]


def encoded(texts: list[str], work: Path) -> np.ndarray:
    """(n, 384) float32 MiniLM vectors of ``texts`` by the ONNX export, cached in ``work`` by the texts' digest."""
    import hashlib

    from modeling.atomic import atomic_write
    from modeling.embeddings import default_model_path
    from modeling.exported_text import OnnxTextEncoder, ensure_text_export

    digest = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:16]
    cache = work / f"vectors-{digest}.npy"
    if cache.is_file():
        return np.load(cache)
    export = ensure_text_export(work / "models", default_model_path())
    encoder = OnnxTextEncoder(work / "models" / export["path"], threads=os.cpu_count() or 1)
    started = time.perf_counter()
    vectors = np.concatenate([encoder.encode(texts[i:i + 512], batch_size=64) for i in range(0, len(texts), 512)])
    logger.info("encoded %d texts in %.0f s", len(texts), time.perf_counter() - started)
    with atomic_write(cache, mode="wb") as handle:
        np.save(handle, vectors)
    return vectors


def measure(items: np.ndarray, queries: dict[str, np.ndarray], pq_bytes: int) -> dict:
    """One kind of codes: file size, recall@10 of the served search at each nprobe and at the tuned one."""
    import faiss

    from modeling.index import IvfIndex, build_ivf, recall_against_exact, tune_nprobe

    started = time.perf_counter()
    index = build_ivf(items, quantized=True, pq_bytes=pq_bytes)
    built = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as scratch:
        faiss.write_index(index, str(Path(scratch) / "index.faiss"))
        size = (Path(scratch) / "index.faiss").stat().st_size
    products = items[np.random.default_rng(1).choice(len(items), min(1000, len(items)), replace=False)]
    tuned, tuned_recall = tune_nprobe(index, items, products, quantized=True)
    result = {"kind": f"faiss_ivf_pq{pq_bytes}" if pq_bytes else "faiss_ivf_sq8", "file_mb": round(size / 1e6, 2),
              "lists": int(index.nlist), "build_s": round(built, 1), "tuned_nprobe": tuned,
              "tuned_recall_on_products": round(tuned_recall, 4), "recall_at_10": {}}
    for name, q in queries.items():
        rows = {}
        for nprobe in (*NPROBES, tuned):
            served = IvfIndex(items, index, nprobe=nprobe)
            rows[str(nprobe)] = round(recall_against_exact(served, items, q, 10), 4)
        result["recall_at_10"][name] = rows
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=str(DATASETS))
    parser.add_argument("--limit", type=int, default=0, help="index only this many texts (0: all)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "text_index.json"))
    parser.add_argument("--workdir", default=str(ROOT / "benchmarks" / ".work" / "text_index"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    datasets = Path(args.datasets)
    if not (datasets / "movielens_ml_latest_small").is_dir():
        raise SystemExit(f"{datasets}: the shared data sets are not there (--datasets)")
    from modeling.index import TEXT_PQ_BYTES

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    texts = shared_texts(datasets)
    held_out, indexed = texts[:HELD_OUT], texts[HELD_OUT:]
    if args.limit:
        indexed = indexed[:args.limit]
    pairs = word_pairs(indexed, 1000)
    vectors = encoded([*held_out, *indexed, *pairs], work)
    longer, items, short = vectors[:HELD_OUT], vectors[HELD_OUT:HELD_OUT + len(indexed)], vectors[-len(pairs):]
    queries = {"two words": short, "a held-out text": longer}
    kinds = [measure(items, queries, 0), measure(items, queries, TEXT_PQ_BYTES)]
    figures = {"items": len(items), "queries": {name: len(q) for name, q in queries.items()}, "codes": kinds}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\n{len(items):,} product texts, MiniLM vectors; recall@10 of the served search against exact search\n")
    for kind in kinds:
        print(f"{kind['kind']}: {kind['file_mb']} MB, {kind['lists']} lists, tuned nprobe {kind['tuned_nprobe']} "
              f"(recall on products {kind['tuned_recall_on_products']})")
        for name, rows in kind["recall_at_10"].items():
            print(f"  {name:<16}" + "  ".join(f"nprobe {n}: {r:.3f}" for n, r in rows.items()))
    print(f"\nwritten to {os.path.relpath(args.output, ROOT)}")


if __name__ == "__main__":
    main()
