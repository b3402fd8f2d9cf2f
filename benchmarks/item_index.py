"""The approximate item index against exact search, from 100,000 to 1,000,000 products, in process.

Usage:
    .venv/bin/python benchmarks/item_index.py                      # 100k, 250k, 500k and 1M products
    .venv/bin/python benchmarks/item_index.py --sizes 100000,200000

What it does, per catalogue size:

1. Product vectors from real towers: a two-tower model trained briefly on a small shop of the demo
   generator (as benchmarks/serving.py builds its bundle); the candidate tower runs on each product's
   category, brand and price drawn from that shop and a random unit text vector (MiniLM on a million
   texts would take hours and changes nothing measured here). Shopper vectors: the query tower on
   histories of 5 products, random text and behaviour vectors; 1,000 tune the index, 500 others measure it.
2. Builds and tunes the index exactly as publishing does (:func:`modeling.index.write_item_index`),
   then reads it back memory-mapped as a worker does.
3. Measures on the 500 held-out shoppers: recall@10 against exact search, without and with the
   filters serving applies (each shopper's 20 best products excluded as already bought, 2% of the
   catalogue out of stock); the median time per query of exact search and of the index (one query at a
   time, one BLAS and OpenMP thread, as a web worker answers); and the resident memory a fresh process adds by
   mapping the index and answering 500 queries (anonymous and file-backed: file-backed pages are the
   page cache, shared by every worker on the machine), with the part that is the index file's and the
   part that is the vectors' file (read by the exact scoring of the candidates codes find; a worker
   reads those vectors for its ranking stage anyway).

Published indexes hold 8-bit codes (the candidates found are scored exactly from the vectors). With
``--compare-flat`` it also builds, tunes and measures an IVF-Flat index (the vectors themselves, what
bundles held before) over the same vectors at each size, beside the codes: recall, time per query (one
shopper's top 10, the ranking stage's top 100, and 100 shoppers' top 100 at once), file size.

With ``--compare-hnsw`` it also builds a FAISS HNSW graph (M 32, efConstruction 200) over the same
vectors at each size and reports its recall@10 and time per query at efSearch 64 to 1024, beside the IVF
index at each nprobe from 16 to 1024 (the comparison behind the choice of IVF; HNSW takes minutes to build
at a million products).

Prints a table and writes benchmarks/results/item_index.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import os  # noqa: E402

# Queries are timed as a web worker answers them: one BLAS and OpenMP thread (gunicorn.conf.py sets the
# same before numpy loads). Building the index uses every core (faiss.omp_set_num_threads below).
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_name] = "1"

from modeling import runtime as _runtime  # noqa: E402,F401  (first: environment for TensorFlow)

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TEXT_DIM = 384
TUNE, MEASURE = 1000, 500


def tower_vectors(work: Path, n_items: int) -> tuple[np.ndarray, np.ndarray]:
    """(n_items, d) product vectors and (TUNE + MEASURE, d) shopper vectors from real towers."""
    import tensorflow as tf

    from benchmarks.serving import _small_towers
    from modeling import datasets as ds
    from modeling.features import item_attributes
    from modeling.sources import load_source
    from modeling.two_tower import CandidateTowerServer, QueryTowerServer

    result = _small_towers(work)
    data = load_source("amazon2018", work / "small" / "raw")
    attributes = item_attributes(data.items)
    rng = np.random.default_rng(0)

    def unit(n: int) -> np.ndarray:
        x = rng.normal(size=(n, TEXT_DIM)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    candidate = CandidateTowerServer(result.model.candidate_tower, TEXT_DIM)
    parts = []
    for start in range(0, n_items, 8192):
        m = min(8192, n_items - start)
        pick = rng.integers(0, len(attributes.category), m)
        parts.append(np.asarray(candidate.serve(
            item_id=tf.constant(np.full(m, "")), item_text=tf.constant(unit(m)),
            item_category=tf.constant(attributes.category[pick]), item_brand=tf.constant(attributes.brand[pick]),
            item_price=tf.constant((attributes.price[pick] * rng.uniform(0.5, 2.0, m)).astype(np.float32))),
            dtype=np.float32))
    m = TUNE + MEASURE
    users = data.users[ds.USER_ID].astype(str).to_numpy()[rng.integers(0, len(data.users), m)]
    history = data.items[ds.ITEM_ID].astype(str).to_numpy()[rng.integers(0, len(data.items), (m, 5))]
    query = QueryTowerServer(result.model.query_tower, TEXT_DIM)
    queries = np.asarray(query.serve(user_id=tf.constant(users), user_text=tf.constant(unit(m)),
                                     user_behaviour=tf.constant(unit(m)), history=tf.constant(history),
                                     history_weight=tf.ones([m, 5])), dtype=np.float32)
    return np.concatenate(parts), queries


def _median_ms(fn, queries: np.ndarray) -> float:
    times = []
    for q in queries:
        started = time.perf_counter()
        fn(q[None])
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


MAPPED_PROCESS = """
import json, sys, numpy as np
sys.path.insert(0, sys.argv[1])
from modeling.index import IvfIndex, read_item_index
def status():
    out = {}
    for line in open("/proc/self/status"):
        if line.startswith(("RssAnon", "RssFile")):
            out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out
before = status()
vectors = np.load(sys.argv[3], mmap_mode="r")
index = IvfIndex(vectors, read_item_index(__import__("pathlib").Path(sys.argv[2])), nprobe=int(sys.argv[4]))
queries = np.load(sys.argv[5])
for q in queries:
    index.search(q[None], 10, [np.zeros(0, dtype=np.int64)])
after = status()
out = {k: round(after[k] - before[k], 1) for k in after}
mapped, path = {sys.argv[2]: 0, sys.argv[3]: 0}, None
for line in open("/proc/self/smaps"):  # resident pages of the index file and of the vectors' file
    fields = line.split()
    if "-" in fields[0] and not fields[0].endswith(":"):
        path = fields[-1] if len(fields) >= 6 else None
    elif fields[0] == "Rss:" and path in mapped:
        mapped[path] += int(fields[1]) / 1024
out["index_file"], out["vectors_file"] = round(mapped[sys.argv[2]], 1), round(mapped[sys.argv[3]], 1)
print(json.dumps(out))
"""


def measure(vectors: np.ndarray, queries: np.ndarray, folder: Path, *, quantized: bool = True) -> dict:
    """Build, tune, store and measure the index over ``vectors`` (see the module docstring); ``quantized``:
    8-bit codes, as publishing writes (False: IVF-Flat)."""
    import faiss

    from modeling.index import INDEX_FILE, ExactIndex, IvfIndex, read_item_index, write_item_index

    faiss.omp_set_num_threads(os.cpu_count() or 1)  # building uses the machine; queries are timed on one thread
    entry = write_item_index(folder, vectors, queries[:TUNE], quantized=quantized)
    faiss.omp_set_num_threads(1)
    held_out = queries[TUNE:]
    stored = read_item_index(folder / INDEX_FILE)
    index = IvfIndex(vectors, stored, nprobe=entry["nprobe"])
    exact = ExactIndex(vectors)
    none = [np.zeros(0, dtype=np.int64)] * len(held_out)

    def top(search, exclude, allowed) -> np.ndarray:
        return np.concatenate([search(held_out[i:i + 50], 10, exclude[i:i + 50], allowed)[0]
                               for i in range(0, len(held_out), 50)])

    def recall(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.mean([len(np.intersect1d(x, y)) / 10 for x, y in zip(a, b, strict=True)]))

    truth = top(exact.search, none, None)
    bought = list(np.concatenate([exact.search(held_out[i:i + 50], 20, none[i:i + 50])[0]
                                  for i in range(0, len(held_out), 50)]))  # each shopper's 20 best: "bought"
    allowed = np.random.default_rng(5).random(len(vectors)) >= 0.02
    filtered_truth = top(exact.search, bought, allowed)
    one = [np.zeros(0, dtype=np.int64)]
    figures = {
        "items": len(vectors), "index": entry,
        "file_mb": round((folder / INDEX_FILE).stat().st_size / 1e6, 1),
        "recall_at_10": recall(top(index.search, none, None), truth),
        "recall_at_10_filtered": recall(top(index.search, bought, allowed), filtered_truth),
        "exact_ms": _median_ms(lambda q: exact.search(q, 10, one), held_out[:200]),
        "index_ms": _median_ms(lambda q: index.search(q, 10, one), held_out[:200]),
        "index_ms_filtered": _median_ms(lambda q: index.search(q, 10, [bought[0]], allowed), held_out[:200]),
        # what the ranking stage asks of it: a shopper's top 100 (5 bought), then 100 shoppers' at once
        "index_ms_top100": _median_ms(lambda q: index.search(q, 100, [bought[0][:5]]), held_out[:200]),
        "index_ms_100_shoppers_top100": _batch_ms(index, held_out, [b[:5] for b in bought]),
    }
    np.save(folder / "vectors.npy", vectors)
    np.save(folder / "queries.npy", held_out)
    out = subprocess.run([sys.executable, "-c", MAPPED_PROCESS, str(ROOT), str(folder / INDEX_FILE),
                          str(folder / "vectors.npy"), str(entry["nprobe"]), str(folder / "queries.npy")],
                         capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    figures["mapped_process_mb"] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def _batch_ms(index, queries: np.ndarray, exclude: list[np.ndarray], rounds: int = 5) -> float:
    """Median ms of one search for 100 queries' top 100 (``rounds`` batches of different queries)."""
    times = []
    for r in range(rounds):
        part = slice((r * 100) % (len(queries) - 99), (r * 100) % (len(queries) - 99) + 100)
        started = time.perf_counter()
        index.search(queries[part], 100, exclude[part])
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


def compare_hnsw(vectors: np.ndarray, queries: np.ndarray, folder: Path) -> dict:
    """Recall@10 against exact search and ms per query: IVF at each nprobe, HNSW at each efSearch."""
    import faiss

    from modeling.index import INDEX_FILE, ExactIndex, IvfIndex, read_item_index

    held_out = queries[TUNE:]
    none = [np.zeros(0, dtype=np.int64)] * len(held_out)
    truth = np.concatenate([ExactIndex(vectors).search(held_out[i:i + 50], 10, none[i:i + 50])[0]
                            for i in range(0, len(held_out), 50)])

    def recall(found: np.ndarray) -> float:
        return float(np.mean([len(np.intersect1d(x, y)) / 10 for x, y in zip(found, truth, strict=True)]))

    stored = read_item_index(folder / INDEX_FILE)
    ivf = []
    for nprobe in (16, 32, 64, 128, 256, 512, 1024):
        index = IvfIndex(vectors, stored, nprobe=nprobe)
        ivf.append({"nprobe": nprobe, "recall@10": recall(index.search(held_out, 10, none)[0]),
                    "query_ms": _median_ms(lambda q, index=index: index.search(q, 10, none[:1]), held_out[:200])})
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    started = time.perf_counter()
    graph = faiss.IndexHNSWFlat(vectors.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = 200
    graph.add(np.ascontiguousarray(vectors, dtype=np.float32))
    build_s = time.perf_counter() - started
    faiss.omp_set_num_threads(1)
    hnsw = []
    for ef in (64, 128, 256, 512, 1024):
        graph.hnsw.efSearch = ef
        hnsw.append({"ef_search": ef, "recall@10": recall(graph.search(held_out, 10)[1]),
                     "query_ms": _median_ms(lambda q: graph.search(q, 10), held_out[:200])})
    return {"ivf": ivf, "hnsw": {"neighbours": 32, "ef_construction": 200, "build_s": build_s, "by_ef_search": hnsw}}


def _print_row(n: int, row: dict) -> None:
    print(f"{n:>9,} products, {row['index']['kind']}: exact {row['exact_ms']:.2f} ms, index {row['index_ms']:.2f} "
          f"ms (filtered {row['index_ms_filtered']:.2f}; top 100 {row['index_ms_top100']:.2f}; 100 shoppers' top "
          f"100 {row['index_ms_100_shoppers_top100']:.1f}), nprobe {row['index']['nprobe']} of "
          f"{row['index']['lists']} lists, recall@10 {row['recall_at_10']:.3f} (filtered "
          f"{row['recall_at_10_filtered']:.3f}), built and tuned in {row['index']['seconds']:.0f} s, "
          f"{row['file_mb']} MB, a mapping process adds {row['mapped_process_mb']}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100000,250000,500000,1000000", help="catalogue sizes, comma-separated")
    parser.add_argument("--output", default=str(RESULTS / "item_index.json"))
    parser.add_argument("--compare-hnsw", action="store_true", help="also measure an HNSW graph at each size")
    parser.add_argument("--compare-flat", action="store_true",
                        help="also build and measure an IVF-Flat index (the vectors, not codes) at each size")
    args = parser.parse_args()
    try:
        sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        parser.error("--sizes takes whole numbers separated by commas")
    if not sizes or min(sizes) < 1000:
        parser.error("--sizes: at least one size, each at least 1000")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        vectors, queries = tower_vectors(Path(tmp), max(sizes))
        for n in sizes:
            folder = Path(tmp) / str(n)
            folder.mkdir()
            row = measure(vectors[:n], queries, folder)
            rows.append(row)
            _print_row(n, row)
            if args.compare_flat:
                (folder / "flat").mkdir()
                row["flat"] = measure(vectors[:n], queries, folder / "flat", quantized=False)
                _print_row(n, row["flat"])
            if args.compare_hnsw:
                row["compare"] = compare_hnsw(vectors[:n], queries, folder)
                for r in row["compare"]["ivf"]:
                    print(f"    IVF nprobe {r['nprobe']:>5}: recall@10 {r['recall@10']:.3f}, {r['query_ms']:.2f} ms")
                hnsw = row["compare"]["hnsw"]
                print(f"    HNSW built in {hnsw['build_s']:.0f} s")
                for r in hnsw["by_ef_search"]:
                    print(f"    HNSW efSearch {r['ef_search']:>5}: recall@10 {r['recall@10']:.3f}, "
                          f"{r['query_ms']:.2f} ms")
    figures = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                           "python": platform.python_version(), "load_average_after": os.getloadavg()},
               "queries": {"tune": TUNE, "measure": MEASURE}, "sizes": rows}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(figures, indent=2) + "\n")
    print(f"written to {os.path.relpath(args.output, ROOT)}")


if __name__ == "__main__":
    main()
