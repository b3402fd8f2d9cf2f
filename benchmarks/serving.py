"""Serving benchmark: the API under gunicorn at 100,000 products and 200,000 shoppers, loaded by wrk.

Usage:
    .venv/bin/python benchmarks/serving.py                    # full size; the first run builds the workspace (~25 min)
    .venv/bin/python benchmarks/serving.py --items 20000 --users 40000 --interactions 200000   # smaller
    .venv/bin/python benchmarks/serving.py --items 1000000 --workdir benchmarks/.work/serving-1m  # a million
    .venv/bin/python benchmarks/serving.py --text-vectors-as float32   # text vectors as bundles held them before
    .venv/bin/python benchmarks/serving.py --text-index-as sq8   # the text index as bundles held it before

Needs `wrk` (Debian/Ubuntu: `apt install wrk`). What it does:

1. Builds a workspace once (reused while the sizes are unchanged): the demo generator at the given
   size, imported into a SQLite database with `manage.py load_data`, and a model bundle built for the
   purpose. The towers are real (a short training run on a small shop of the same generator); the
   bundle's arrays are computed by those towers at full size. The products' text embeddings are MiniLM's,
   of each generated product's text, through the ONNX export serving encodes with (a few minutes at
   100,000 products), as publishing stores them. 5% of the shoppers are left out of the bundle: they are
   "new" shoppers with a
   history in the database, served by the "content" strategy (the query tower runs per request).
2. Starts gunicorn (2 workers x 2 threads, as shipped) on loopback and runs wrk from a separate process
   for each scenario: one known shopper, one new shopper ("content"), 100 shoppers per request,
   similar_items and a text query (a different text each time: the ONNX text encoder runs per request);
   at 2 and at 8 connections. The time from starting gunicorn to the first recommendation answered
   is reported too. A row whose requests all went to one of the workers (both of wrk's connections
   accepted by one) is run again, up to 3 runs in all; the table says so and the JSON keeps those runs.
3. Measures, in the same run, the floor: a bare numpy dot product + argpartition over the same item
   vectors, and the engine's own time (Recommender.recommend, filters and exclusions included); and the
   time to build the engine over the loaded bundle, as a worker does at start, with the ranking stage's
   stored category and brand codes and coding them at load (bundles written before the codes).
4. Reports each worker's resident and proportional memory after all of that, and whether the bundle
   arrays are shared memory maps.
5. From ``RECO_ANN_MIN_ITEMS`` products on (default 100,000), the bundle carries the approximate indexes
   publishing writes (FAISS IVF over the product vectors, tuned on the shoppers' vectors, and over the
   text vectors for text queries), which the service and the in-process engine search; reports exact
   search's time per query and, with the index, its recall@10 against exact search and its time per query.

Prints a table and writes benchmarks/results/serving.json.

With `--compare-index-kinds ROUNDS` it runs only, in process, the engine over the workspace's bundle with
its published index (8-bit codes) and with an IVF-Flat index built over the same vectors with the same
``nprobe`` (what bundles held before codes), alternately (flat, codes, codes, flat, ...) for ROUNDS rounds
of each: one shopper (500 calls) and 100 shoppers per call (15 calls), medians per round, and how many of
1,000 shoppers' served top 10 are the same under both; to benchmarks/results/serving-index-kinds.json.

With `--compare-nprobe A,B` it runs only, in process, the engine with the product index scanning A and B
inverted lists per query, alternately (A, B, B, A, ...), 4 rounds of each, as above, and each one's
served top 10 against exact search; to benchmarks/results/serving-nprobe.json.

With `--compare-compiled-ranker ROUNDS` it runs only, in process, the engine with the bundle's ranker compiled
to native code (what publishing writes) and with the same booster scored by LightGBM, alternately (lightgbm,
compiled, compiled, lightgbm, ...), ROUNDS rounds of each, as above, and how many of 1,000 shoppers' served top 10
are the same under both; to benchmarks/results/serving-compiled-ranker.json.

With `--compare-native ROUNDS` it runs only, in process, the engine with the ranking stage's candidates and their
sparse features computed by its native code (modeling/stage_kernel.c, what the service uses where a C compiler is
found) and by numpy, alternately (numpy, native, native, numpy, ...), ROUNDS rounds of each, as above, and how many
of 1,000 shoppers' served top 10 are the same under both; to benchmarks/results/serving-native.json.

With `--compare-env NAME=A,B` it runs only the scenarios over HTTP (those ``--only`` names; default "one known
shopper") against two servers started side by side, one with the environment variable NAME=A and one with NAME=B,
loaded in turn by wrk (A, B, B, A, ...) for ``--rounds`` rounds of ``--seconds`` each at 2 and at 8 connections: the
machine's drift and a start's luck (both of wrk's connections on one worker) fall on both alike. It reports the
median req/s, p50, p95, p99 and the server's CPU time per request (its processes' user and system time, from
/proc) of each, and in how many rounds B had more req/s, a lower p95 and a lower p99 (:func:`compare_summary`), to
benchmarks/results/serving-compare-<NAME>.json. For example ``--compare-env RECO_KEEPALIVE_LINGER_MS=0,2``.

With `--impressions-overhead ROUNDS` it runs only the cost of recording impressions (a RecommendationList row
per answer, written by a background thread per worker): per round one gunicorn with RECO_IMPRESSIONS=1 and
one with =0, in alternating order (on, off; off, on; ...), each warmed up then loaded with "one known
shopper" at 2 connections; it reports the medians over rounds, the paired difference of p50 per round, and
the rows written, to benchmarks/results/serving-impressions.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modeling import runtime as _runtime  # noqa: E402,F401  (first: environment for TensorFlow)

import argparse  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from typing import TextIO  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
TEXT_DIM = 384


def _env(work: Path, port: int | None = None, workers: int = 2, threads: int = 2) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "recoapi.settings",
        "DATABASE_URL": f"sqlite:///{work / 'db.sqlite3'}",
        "RECO_DATA_PATH": str(work / "raw"),
        "RECO_PROCESSED_DIR": str(work / "processed"),
        "RECO_EMBEDDINGS_DIR": str(work / "embeddings"),
        "RECO_MODELS_DIR": str(work / "models"),
        "RECO_LOGS_DIR": str(work / "logs"),
        "RECO_THROTTLE_ANON": "off",
        "RECO_ENCODE_NEW_PRODUCTS": "0",
        "RECO_CONSOLE_LOG_LEVEL": "ERROR",
        "RECO_WORKERS": str(workers),
        "RECO_THREADS": str(threads),
    }
    if port:
        env["RECO_BIND"] = f"127.0.0.1:{port}"
    return env


@contextmanager
def one_thread() -> Iterator[None]:
    """One BLAS and one OpenMP thread in this process while in the block, as each web worker has (gunicorn.conf.py
    sets the variables before numpy loads).

    threadpoolctl limits the libraries loaded when the block is entered; FAISS brings its own OpenMP runtime, loaded
    with faiss, so it is imported first. Before it was, the in-process figures measured the approximate index's
    search with both cores' threads (a query 0.145 against 0.058 ms with one thread, the same query repeated).
    LightGBM needs nothing here: the stage trains and scores with ``num_threads=1`` itself."""
    import faiss  # noqa: F401  (loads its OpenMP runtime, for threadpoolctl to find)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def ann_min_items() -> int:
    """The catalogue size from which the service searches the approximate index (as gunicorn will read it)."""
    from modeling.index import ANN_MIN_ITEMS

    return int(os.environ.get("RECO_ANN_MIN_ITEMS") or ANN_MIN_ITEMS) or 2**62  # 0: never


def _manage(work: Path, *args: str) -> None:
    subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], env=_env(work), cwd=ROOT, check=True)


def _small_towers(work: Path):
    """A real two-tower model trained briefly on a small shop of the same generator."""
    from modeling.sources import load_source
    from modeling.embeddings import build_embeddings, load_embeddings
    from modeling.synthetic import DemoParams, generate_demo_data
    from modeling.train import train_model
    from modeling.two_tower import TwoTowerParams

    small = work / "small"
    generate_demo_data(small / "raw", DemoParams(n_users=800, n_items=250, n_interactions=8000, seed=3),
                       progress=False)
    data = load_source("amazon2018", small / "raw")
    build_embeddings(data, small / "embeddings", progress=False)
    return train_model(data, load_embeddings(small / "embeddings"), TwoTowerParams(epochs=2, seed=1))


def _unreviewed_products(raw: Path, reviewed: set[str]) -> pd.DataFrame:
    """The generated products without a review, as catalogue rows (:data:`modeling.datasets.ITEM_COLUMNS`)."""
    import gzip

    from modeling import datasets as ds
    from modeling.synthetic import META_FILENAME

    rows = []
    with gzip.open(raw / META_FILENAME, "rt", encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line)
            if record["asin"] in reviewed:
                continue
            rows.append((record["asin"], record["title"], " ".join(record["description"]), record["brand"],
                         ds.CATEGORY_SEPARATOR.join(record["category"]), float(record["price"].lstrip("$"))))
    return pd.DataFrame(rows, columns=list(ds.ITEM_COLUMNS))


_ADD_PRODUCTS = """
import json, sys
import django
django.setup()
from recoapi.catalog.services import products_upsert
rows = json.load(open(sys.argv[1]))
for start in range(0, len(rows), 5000):
    products_upsert(rows[start:start + 5000])
"""


def _add_products(work: Path, products: pd.DataFrame) -> None:
    """Put ``products`` into the workspace's database through the product feed's service function."""
    if products.empty:
        return
    feed = work / "unreviewed-products.json"
    feed.write_text(json.dumps([{"id": r.item_id, "title": r.title, "description": r.description, "brand": r.brand,
                                 "category": r.category, "price": r.price} for r in products.itertuples()]))
    subprocess.run([sys.executable, "-c", _ADD_PRODUCTS, str(feed)], env=_env(work), cwd=ROOT, check=True)
    feed.unlink()


LAMBDAMART_ROUNDS = 100
"""Boosting rounds of the LambdaMART ranker a workspace serves when its small training chose another ranker
(the middle of the rounds the stage's selection tries)."""


def _lambdamart_of_random_lists(lists: int = 2000, candidates: int = 200, seed: int = 0):  # noqa: ANN202
    """A LambdaMART ranker over the stage's features, boosted :data:`LAMBDAMART_ROUNDS` rounds on random lists
    whose target's features are shifted (so the trees split as on real lists); what it scores is meaningless,
    what scoring costs is a trained ranker's."""
    from modeling.reranker import FEATURES, Ranker, _train_booster

    rng = np.random.default_rng(seed)
    positions = np.tile(np.arange(candidates), (lists, 1))
    features = rng.normal(size=(lists, candidates, len(FEATURES))).astype(np.float32)
    targets = rng.integers(0, candidates, lists)
    features[np.arange(lists), targets] += 1.0
    booster = _train_booster(positions, features, targets, LAMBDAMART_ROUNDS, seed)
    return Ranker("lightgbm", booster=booster, rounds=LAMBDAMART_ROUNDS)


def build_workspace(work: Path, n_users: int, n_items: int, n_interactions: int) -> dict:
    """Data in the database and an active bundle at full size (skipped when already built)."""
    import tensorflow as tf

    from modeling import artifacts
    from modeling import datasets as ds
    from modeling.synthetic import DemoParams, generate_demo_data
    from modeling.features import item_attributes
    from modeling.candidates import fit_sources
    from modeling.reranker import STAGE_DIR, RankingStage, StageConfig
    from modeling.embeddings import default_model_path
    from modeling.exported_text import EXPORT_FORMAT as TEXT_EXPORT_FORMAT
    from modeling.exported_text import ensure_text_export
    from modeling.index import write_item_index, write_text_index
    from modeling.train import recent_popularity, save_towers
    from modeling.two_tower import CandidateTowerServer, QueryTowerServer

    sizes = {"users": n_users, "items": n_items, "interactions": n_interactions}
    stamp = work / "workspace.json"
    indexed = n_items >= ann_min_items()  # the bundle carries the approximate index, as publishing writes it
    layout = {"bundle": artifacts.BUNDLE_FORMAT, "text_encoder": TEXT_EXPORT_FORMAT,  # a new layout: build again
              "item_index": "8-bit codes" if indexed else False,
              "text_index": "product-quantizer codes" if indexed else False,
              "catalogue": "every generated product", "attribute_codes": "stored",
              "text_vectors": "MiniLM of the product texts", "text_vectors_stored_as": artifacts.CONTENT_DTYPE.name,
              "ranker": "lightgbm, compiled"}
    if stamp.is_file() and json.loads(stamp.read_text()).get("sizes") == sizes and (
            json.loads(stamp.read_text()).get("layout") == layout):
        _manage(work, "migrate", "-v0")  # a workspace built by an earlier version: its database up to date
        return json.loads(stamp.read_text())
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    timings = {}
    started = time.perf_counter()
    generate_demo_data(work / "raw", DemoParams(n_users=n_users, n_items=n_items, n_interactions=n_interactions,
                                                seed=7), progress=True)
    timings["generate_s"] = time.perf_counter() - started
    _manage(work, "migrate", "-v0")
    started = time.perf_counter()
    _manage(work, "load_data")
    timings["import_s"] = time.perf_counter() - started

    data = ds.read_snapshot(work / "processed")
    # The amazon2018 loader keeps the reviewed products (about 40% of the generated ones at a million
    # products and interactions); a shop's catalogue also has products nobody has reviewed yet. Those go
    # into the database as the shop's product feed would put them (products_upsert, what POST /products
    # runs) and into the bundle, with vectors from the candidate tower, like every other product.
    started = time.perf_counter()
    unreviewed = _unreviewed_products(work / "raw", set(data.items[ds.ITEM_ID].astype(str)))
    _add_products(work, unreviewed)
    items = pd.concat([data.items, unreviewed], ignore_index=True)
    timings["unreviewed_products"] = len(unreviewed)
    timings["unreviewed_products_s"] = time.perf_counter() - started

    started = time.perf_counter()
    result = _small_towers(work)
    timings["small_training_s"] = time.perf_counter() - started
    item_ids = items[ds.ITEM_ID].astype(str).to_numpy()
    all_users = data.users[ds.USER_ID].astype(str).to_numpy()
    user_ids = all_users[: int(len(all_users) * 0.95)]  # the last 5% are "new" shoppers
    rng = np.random.default_rng(0)

    def unit(n: int) -> np.ndarray:
        x = rng.normal(size=(n, TEXT_DIM)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    started = time.perf_counter()
    attributes = item_attributes(items)
    # The products' text vectors are what publishing stores: MiniLM's (through the ONNX export serving encodes
    # text with) of each generated product's text, so the text index meets the structure of real text vectors.
    text_encoder = ensure_text_export(work / "models", default_model_path())
    item_text = _encode(work / "models" / text_encoder["path"], ds.item_text(items))
    timings["text_vectors_s"] = time.perf_counter() - started
    started = time.perf_counter()
    candidate = CandidateTowerServer(result.model.candidate_tower, TEXT_DIM)
    query = QueryTowerServer(result.model.query_tower, TEXT_DIM)
    item_vectors = np.concatenate([
        candidate.serve(item_id=tf.constant(item_ids[i:i + 8192]), item_text=tf.constant(item_text[i:i + 8192]),
                        item_category=tf.constant(attributes.category[i:i + 8192]),
                        item_brand=tf.constant(attributes.brand[i:i + 8192]),
                        item_price=tf.constant(attributes.price[i:i + 8192]))
        for i in range(0, len(item_ids), 8192)])
    # Known shoppers' vectors only need the right shape and spread for a serving benchmark: random text
    # inputs and an empty history window.
    user_vectors = np.concatenate([
        query.serve(user_id=tf.constant(user_ids[i:i + 8192]), user_text=tf.constant(unit(len(user_ids[i:i + 8192]))),
                    user_behaviour=tf.constant(unit(len(user_ids[i:i + 8192]))),
                    history=tf.fill([len(user_ids[i:i + 8192]), 1], ""),
                    history_weight=tf.zeros([len(user_ids[i:i + 8192]), 1]))
        for i in range(0, len(user_ids), 8192)])
    timings["tower_vectors_s"] = time.perf_counter() - started
    positions = items.reset_index(drop=True).reset_index().set_index(ds.ITEM_ID)["index"]
    item_pos = positions.reindex(data.interactions[ds.ITEM_ID]).to_numpy()
    arrays = artifacts.BundleArrays(
        item_ids=item_ids, item_vectors=np.asarray(item_vectors, np.float32), item_content=item_text,
        user_ids=user_ids, user_vectors=np.asarray(user_vectors, np.float32),
        popularity=recent_popularity(item_pos, data.interactions[ds.WEIGHT].to_numpy(),
                                     data.interactions[ds.TIMESTAMP].to_numpy(), len(item_ids)),
    )

    # The ranking stage: sources fitted on the full-size interactions (item-kNN above EASE's size limit), the
    # ranker of the small shop's training when it is LambdaMART (the cost of scoring does not depend on what it
    # learned). When that shop's validation chose a single feature or a blend, which cost far less to score, a
    # LambdaMART ranker of LAMBDAMART_ROUNDS rounds is served instead, so every workspace measures the same path.
    started = time.perf_counter()
    users_index = {u: n for n, u in enumerate(all_users)}
    order = data.interactions.sort_values([ds.USER_ID, ds.TIMESTAMP], kind="stable")
    ranker = result.stage.ranker
    if ranker.kind != "lightgbm":
        timings["small_training_ranker"] = ranker.kind
        ranker = _lambdamart_of_random_lists()
    stage = RankingStage(fit_sources(order[ds.USER_ID].map(users_index).to_numpy(),
                                     positions.reindex(order[ds.ITEM_ID]).to_numpy(), len(all_users), len(item_ids)),
                         ranker, StageConfig(), result.stage.report)
    timings["ranking_stage_sources_s"] = time.perf_counter() - started

    manifest = {"model": "two_tower", "purpose": "benchmark", "params": result.params.to_dict(),
                "text_encoder": text_encoder}

    def save(directory: Path) -> None:
        save_towers(result.model, TEXT_DIM, directory)
        stage.save(directory / STAGE_DIR, attributes)
        if indexed:
            started = time.perf_counter()
            manifest["item_index"] = write_item_index(directory, arrays.item_vectors, arrays.user_vectors)
            timings["item_index_s"] = time.perf_counter() - started
            started = time.perf_counter()
            manifest["text_index"] = write_text_index(directory, arrays.item_content)
            timings["text_index_s"] = time.perf_counter() - started

    bundle = artifacts.write_bundle(work / "models", arrays, manifest, save)
    artifacts.set_active(work / "models", bundle.name)
    info = {"sizes": sizes, "layout": layout, "version": bundle.name, "timings": timings,
            "new_users": all_users[len(user_ids):].tolist()[:2000]}
    stamp.write_text(json.dumps(info))
    return info


def store_text_vectors(bundle: Path, dtype: str) -> None:
    """Rewrite ``bundle``'s text vectors (item_content.npy) in ``dtype`` through a temporary file and a rename
    (nothing is done when they already are): "int8" codes with their scales (what publishing writes), "float16"
    or "float32" rows. The rows a workspace publishes are rewritten as read: float32 holds them exactly, float16
    to its own precision."""
    from modeling import artifacts
    from modeling.atomic import atomic_write
    from modeling.rows import quantize_rows

    path = bundle / "item_content.npy"
    if np.load(path, mmap_mode="r").dtype == np.dtype(dtype):  # as stored (codes read as float32)
        return
    values = np.asarray(artifacts.load_item_content(bundle), dtype=np.float32)
    if dtype == "int8":
        quantized = quantize_rows(values)
        with atomic_write(bundle / artifacts.CONTENT_SCALE_FILE, mode="wb") as handle:
            np.save(handle, quantized.scales, allow_pickle=False)
        values = quantized.codes
    with atomic_write(path, mode="wb") as handle:
        np.save(handle, np.asarray(values).astype(dtype), allow_pickle=False)


def _encode(export: Path, texts: list[str], chunk: int = 4096) -> np.ndarray:
    """(n, 384) float32 MiniLM vectors of ``texts`` by the ONNX export at ``export``, every core encoding (a few
    minutes at 100,000 short product texts), with a progress bar."""
    from tqdm import tqdm

    from modeling.exported_text import OnnxTextEncoder

    encoder = OnnxTextEncoder(export, threads=os.cpu_count() or 1)
    with tqdm(total=len(texts), desc="product text vectors", unit="text") as bar:
        parts = []
        for start in range(0, len(texts), chunk):
            parts.append(encoder.encode(texts[start:start + chunk], batch_size=64))
            bar.update(len(parts[-1]))
    return np.concatenate(parts).astype(np.float32)


def store_text_index(bundle: Path, kind: str) -> None:
    """Rewrite ``bundle``'s text index (and its manifest entry) as "pq" (product-quantizer codes, what publishing
    writes from ``modeling.index.PQ_MIN_ITEMS`` products) or "sq8" (8-bit codes, what it wrote before), tuned as
    publishing tunes it; nothing is done when it already is. Files are replaced through a temporary file and a
    rename."""
    from modeling import artifacts
    from modeling.atomic import atomic_write
    from modeling.index import TEXT_INDEX_FILE, TEXT_PQ_BYTES, write_text_index

    manifest = json.loads((bundle / artifacts.MANIFEST_FILE).read_text())
    pq_bytes = TEXT_PQ_BYTES if kind == "pq" else 0
    wanted = f"faiss_ivf_pq{pq_bytes}" if pq_bytes else "faiss_ivf_sq8"
    if not manifest.get("text_index") or manifest["text_index"].get("kind") == wanted:
        return
    with tempfile.TemporaryDirectory(dir=bundle) as scratch:
        manifest["text_index"] = write_text_index(Path(scratch), artifacts.load_item_content(bundle),
                                                   pq_bytes=pq_bytes)
        os.replace(Path(scratch) / TEXT_INDEX_FILE, bundle / TEXT_INDEX_FILE)
    with atomic_write(bundle / artifacts.MANIFEST_FILE) as handle:
        handle.write(json.dumps(manifest, indent=2))


def _median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000)


def in_process(work: Path, version: str, new_users: list[str]) -> dict:
    from modeling import artifacts
    from modeling.index import ExactIndex, IvfIndex, recall_against_exact
    from modeling.recommender import History, Recommender

    bundle = artifacts.load_bundle(work / "models" / version)
    items = np.asarray(bundle.arrays.item_vectors)
    users = np.asarray(bundle.arrays.user_vectors)
    rng = np.random.default_rng(1)
    one, hundred = users[rng.integers(0, len(users), 1)], users[rng.integers(0, len(users), 100)]

    def floor(q: np.ndarray) -> None:
        scores = q @ items.T
        np.argpartition(-scores, 9, axis=1)[:, :10]

    recommender = Recommender(bundle, ann_min_items=ann_min_items())  # as the service builds it
    allowed = np.ones(len(items), dtype=bool)
    allowed[rng.integers(0, len(items), 200)] = False  # a few products out of stock
    user_ids = [str(u) for u in bundle.arrays.user_ids[rng.integers(0, len(users), 100)]]
    history = {u: History(np.asarray(bundle.arrays.item_ids[rng.integers(0, len(items), 5)], dtype=object),
                          np.zeros(5, dtype=np.int64), np.ones(5)) for u in user_ids + new_users[:1]}
    figures = {
        "floor_1_ms": _median_ms(lambda: floor(one), 200),
        "engine_1_ms": _median_ms(lambda: recommender.recommend(user_ids[:1], history, 10, allowed), 200),
        "floor_100_ms": _median_ms(lambda: floor(hundred), 30),
        "engine_100_ms": _median_ms(lambda: recommender.recommend(user_ids, history, 10, allowed), 30),
        "engine_content_ms": _median_ms(lambda: recommender.recommend(new_users[:1], history, 10, allowed), 50),
    }
    # The two stages apart, for one known shopper with a 5-product history (the query tower runs first).
    shopper = user_ids[0]
    query_vector = recommender.content_vectors([history[shopper]], [shopper])
    batch = recommender.history_batch([history[shopper]])
    seen = [recommender.item_positions(history[shopper].item_ids)]
    figures["query_tower_1_ms"] = _median_ms(lambda: recommender.content_vectors([history[shopper]], [shopper]), 100)
    figures["retrieval_1_ms"] = _median_ms(lambda: recommender.rank(query_vector, seen, 10, allowed), 200)
    figures["ranking_stage_1_ms"] = _median_ms(
        lambda: recommender.stage.rank(query_vector, recommender.item_vectors, recommender.index, recommender.tables,
                                       batch, seen, 10, allowed), 200)
    figures["ranking_stage_added_ms"] = figures["ranking_stage_1_ms"] - figures["retrieval_1_ms"]
    from modeling.reranker import candidate_features

    stage = recommender.stage
    candidates, _ = candidate_features(query_vector, recommender.item_vectors, recommender.index, stage.sources,
                                       recommender.tables, batch, seen, allowed, stage.config)
    figures["ranking_stage_candidates"] = int((candidates >= 0).sum())
    figures["ranking_stage_ranker"] = recommender.stage.ranker.kind + (
        ", compiled" if recommender.stage.ranker.compiled is not None else "")
    figures["ratio_1"] = figures["engine_1_ms"] / figures["floor_1_ms"]
    figures["ratio_100"] = figures["engine_100_ms"] / figures["floor_100_ms"]

    # Search: exact against the index the service searches at this size (the bundle's own, when it has one).
    queries = users[rng.integers(0, len(users), 1000)]
    none = [np.zeros(0, dtype=np.int64)]
    exact = ExactIndex(items)
    figures["ann"] = {"exact_query_ms": _median_ms(lambda: exact.search(one, 10, none), 200),
                      "served_index": type(recommender.index).__name__,
                      "published": bundle.manifest.get("item_index")}
    if isinstance(recommender.index, IvfIndex):
        figures["ann"]["recall@10"] = recall_against_exact(recommender.index, items, queries, 10)
        figures["ann"]["query_ms"] = _median_ms(lambda: recommender.index.search(one, 10, none), 200)
        figures["ann"]["served_lists"] = _served_against_exact(bundle, recommender, allowed, rng)
    # Text queries: exact over the text vectors against the text index the service searches (queries: 500
    # products' text vectors moved a little, as a shopper's words resemble a product's text).
    content = np.asarray(bundle.arrays.item_content, dtype=np.float32)
    texts = content[rng.integers(0, len(content), 500)] + 0.05 * rng.normal(size=(500, content.shape[1]))
    texts = (texts / np.linalg.norm(texts, axis=1, keepdims=True)).astype(np.float32)
    exact_text = ExactIndex(content)
    figures["text_search"] = {"exact_query_ms": _median_ms(lambda: exact_text.search(texts[:1], 10, none), 50),
                              "served_index": type(recommender.text_index).__name__,
                              "published": bundle.manifest.get("text_index")}
    if isinstance(recommender.text_index, IvfIndex):
        figures["text_search"]["recall@10"] = recall_against_exact(recommender.text_index, content, texts, 10)
        figures["text_search"]["query_ms"] = _median_ms(lambda: recommender.text_index.search(texts[:1], 10, none),
                                                        200)
    # Building the engine over the loaded bundle, as every worker does at start, with the stage's stored category
    # and brand codes and with them coded at load (bundles written before the codes), alternately, 3 times each.
    import dataclasses

    coded_at_load = dataclasses.replace(bundle, attribute_codes=None)
    builds: dict[str, list[float]] = {"codes_stored_s": [], "coded_at_load_s": []}
    for turn in range(6):
        name = "codes_stored_s" if turn % 4 in (0, 3) else "coded_at_load_s"
        started = time.perf_counter()
        Recommender(bundle if name == "codes_stored_s" else coded_at_load, ann_min_items=ann_min_items())
        builds[name].append(time.perf_counter() - started)
    figures["engine_build"] = {**builds, "codes_stored": bundle.attribute_codes is not None}
    # One product added after publishing, as a product feed's change makes every worker do: its time and the
    # private memory it takes (another Recommender over the same bundle, so the figures above are untouched).
    grown = Recommender(bundle, ann_min_items=ann_min_items())
    before, started = _private_mib(), time.perf_counter()
    grown.add_items(np.array(["BENCHMARK-NEW-PRODUCT"]), texts[:1], None)
    figures["add_one_product"] = {"seconds": time.perf_counter() - started, "private_mib": _private_mib() - before}
    figures["text_encoder"] = text_encoder_memory(bundle)
    return figures


_ENCODER_PROBE = """
import json, sys, time
from pathlib import Path

def anonymous_mib():
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return int(status["RssAnon"].split()[0]) / 1024

import numpy as np
from modeling.exported_text import OnnxTextEncoder

before = anonymous_mib()
encoder = OnnxTextEncoder(sys.argv[1])
encoder.encode(["espresso machine with a steam wand"])
after = anonymous_mib()
times = []
for _ in range(50):
    started = time.perf_counter()
    encoder.encode(["a light waterproof jacket for hiking"])
    times.append(time.perf_counter() - started)
print(json.dumps({"private_mib": round(after - before, 1), "encode_one_ms": float(np.median(times) * 1000)}))
"""


def text_encoder_memory(bundle) -> dict:  # noqa: ANN001
    """The private memory the ONNX text encoder takes when loaded and run once, as in each worker (its weights
    file is memory-mapped besides: see the workers' largest resident files), and one encoding's time.

    Measured in a fresh process: in this one, the memory freed by the scenarios before is reused (a run
    measured 0 MiB here against about 50 MiB in a fresh process)."""
    from modeling import artifacts

    result = subprocess.run([sys.executable, "-c", _ENCODER_PROBE, str(artifacts.text_export_path(bundle))],
                            cwd=ROOT, capture_output=True, text=True, check=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    return json.loads(result.stdout.strip().splitlines()[-1])


def _alternately(engines: dict, bundle, rounds: int) -> tuple[dict, list[str], tuple]:  # noqa: ANN001
    """Two engines over ``bundle`` timed in turn (first, second, second, first, ...), ``rounds`` rounds of each:
    per round the median of 500 calls for one known shopper and of 15 calls for 100 at once (5-product
    histories, a few products out of stock). Returns ``({name: {"one_ms": [...], "hundred_ms": [...]}}, the
    order, (the shoppers, their histories, the allowed mask))``."""
    from modeling.recommender import History

    rng = np.random.default_rng(1)
    items = bundle.arrays.item_ids
    users = [str(u) for u in bundle.arrays.user_ids[rng.integers(0, len(bundle.arrays.user_ids), 2000)]]
    history = {u: History(np.asarray(items[rng.integers(0, len(items), 5)], dtype=object),
                          np.zeros(5, dtype=np.int64), np.ones(5)) for u in users}
    allowed = np.ones(len(items), dtype=bool)
    allowed[rng.integers(0, len(items), 200)] = False  # a few products out of stock

    def median_ms(engine, batch: int, calls: int) -> float:  # noqa: ANN001
        times = []
        for call in range(calls):
            start = (call * batch) % (len(users) - batch)
            started = time.perf_counter()
            engine.recommend(users[start:start + batch], history, 10, allowed)
            times.append(time.perf_counter() - started)
        return float(np.median(times) * 1000)

    names = list(engines)
    for engine in engines.values():  # warm both (the pages of both indexes, the first calls)
        median_ms(engine, 1, 50)
    timed: dict = {name: {"one_ms": [], "hundred_ms": []} for name in names}
    order = []
    for turn in range(2 * rounds):
        name = names[0] if turn % 4 in (0, 3) else names[1]
        order.append(name)
        timed[name]["one_ms"].append(median_ms(engines[name], 1, 500))
        timed[name]["hundred_ms"].append(median_ms(engines[name], 100, 15))
    return timed, order, (users, history, allowed)


def compare_index_kinds(work: Path, version: str, rounds: int) -> dict:
    """The engine with the bundle's index (8-bit codes) against IVF-Flat over the same vectors (see the docstring)."""
    from modeling import artifacts
    from modeling.index import IvfIndex, build_ivf
    from modeling.recommender import Recommender

    bundle = artifacts.load_bundle(work / "models" / version)
    codes = Recommender(bundle, ann_min_items=ann_min_items())
    if not isinstance(codes.index, IvfIndex) or not codes.index.quantized:
        raise SystemExit("the workspace's bundle is not served with an index of 8-bit codes (a smaller catalogue, or "
                         "--serve-ann-min-items above it)")
    flat = Recommender(bundle, ann_min_items=ann_min_items())
    flat.index = IvfIndex(flat.item_vectors, build_ivf(np.asarray(bundle.arrays.item_vectors)),
                          nprobe=codes.index.nprobe)

    timed, order, (users, history, allowed) = _alternately({"flat": flat, "codes": codes}, bundle, rounds)
    figures: dict = {"nprobe": codes.index.nprobe, "order": order, **timed}
    figures["served_lists"] = _served_overlap(codes, flat, users[:1000], history, allowed)
    return figures


def compare_nprobe(work: Path, version: str, values: tuple[int, int], rounds: int) -> dict:
    """The engine with the product index scanning ``values[0]`` and ``values[1]`` lists per query, alternately
    (first, second, second, first, ...), ROUNDS rounds of each: one shopper (500 calls) and 100 shoppers (15
    calls), medians per round; and each one's served top 10 against exact search for 1,000 shoppers."""
    from modeling import artifacts
    from modeling.index import IvfIndex
    from modeling.recommender import Recommender

    bundle = artifacts.load_bundle(work / "models" / version)
    engines = {n: Recommender(bundle, ann_min_items=ann_min_items(), ann_nprobe=n) for n in values}
    if not all(isinstance(e.index, IvfIndex) for e in engines.values()):
        raise SystemExit("the workspace's bundle is not served with an approximate index")

    timed, order, (users, history, allowed) = _alternately({str(n): engines[n] for n in values}, bundle, rounds)
    figures: dict = {"tuned": (bundle.manifest.get("item_index") or {}).get("nprobe"), "order": order, **timed}
    exact = Recommender(bundle, ann_min_items=None)
    for n in values:
        figures[str(n)]["served_against_exact"] = _served_overlap(engines[n], exact, users[:1000], history, allowed)
    return figures


def compare_compiled_ranker(work: Path, version: str, rounds: int) -> dict:
    """The engine with the bundle's compiled ranker against the same booster scored by LightGBM, alternately
    (lightgbm, compiled, compiled, lightgbm, ...), ROUNDS rounds of each: one shopper (500 calls) and 100 shoppers
    (15 calls), medians per round; and how many of 1,000 shoppers' served top 10 are the same under both."""
    import dataclasses

    from modeling import artifacts
    from modeling.recommender import Recommender

    bundle = artifacts.load_bundle(work / "models" / version)
    if bundle.stage.ranker.compiled is None:
        raise SystemExit("the workspace's ranker is not compiled (no C compiler when it was built?)")
    booster_only = dataclasses.replace(bundle, stage=dataclasses.replace(
        bundle.stage, ranker=dataclasses.replace(bundle.stage.ranker, compiled=None)))
    engines = {"lightgbm": Recommender(booster_only, ann_min_items=ann_min_items()),
               "compiled": Recommender(bundle, ann_min_items=ann_min_items())}
    timed, order, (users, history, allowed) = _alternately(engines, bundle, rounds)
    figures: dict = {"rounds": bundle.stage.ranker.rounds, "order": order, **timed}
    figures["served_lists"] = _served_overlap(engines["compiled"], engines["lightgbm"], users[:1000], history, allowed)
    return figures


class _NativeSwitched:
    """An engine whose ranking stage computes its candidates with its native code or with numpy (``kernel``: what
    :func:`modeling.reranker.stage_kernel` gives during each of its calls)."""

    def __init__(self, engine, kernel) -> None:  # noqa: ANN001
        self.engine, self.kernel = engine, kernel

    def recommend(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201
        from modeling import reranker

        checked, reranker.stage_kernel = reranker.stage_kernel, self.kernel
        try:
            return self.engine.recommend(*args, **kwargs)
        finally:
            reranker.stage_kernel = checked


def compare_native(work: Path, version: str, rounds: int) -> dict:
    """The engine with the ranking stage's candidates computed by its native code (modeling/stage_kernel.c) and by
    numpy, alternately (numpy, native, native, numpy, ...), ROUNDS rounds of each: one shopper (500 calls) and 100
    shoppers (15 calls), medians per round; and how many of 1,000 shoppers' served top 10 are the same under both."""
    from modeling import artifacts, reranker
    from modeling.recommender import Recommender

    bundle = artifacts.load_bundle(work / "models" / version)
    engine = Recommender(bundle, ann_min_items=ann_min_items())
    kernel = reranker.stage_kernel
    if kernel() is None:
        raise SystemExit("the ranking stage's native code is not available here (no C compiler, or RECO_NATIVE=0)")
    engines = {"numpy": _NativeSwitched(engine, lambda: None), "native": _NativeSwitched(engine, kernel)}
    timed, order, (users, history, allowed) = _alternately(engines, bundle, rounds)
    figures: dict = {"order": order, **timed}
    figures["served_lists"] = _served_overlap(engines["native"], engines["numpy"], users[:1000], history, allowed)
    return figures


def _write_comparison(output: str, sizes: dict, key: str, compared: dict, names: list[str]) -> None:
    """Write an in-process comparison (``{"sizes": ..., key: compared}``) to ``output`` and print each engine's
    medians per round, one shopper and 100 shoppers per call."""
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(json.dumps({"sizes": sizes, key: compared}, indent=2) + "\n")
    for name in names:
        print(f"{name}: one shopper {', '.join(f'{v:.2f}' for v in compared[name]['one_ms'])} ms; 100 shoppers "
              f"{', '.join(f'{v:.1f}' for v in compared[name]['hundred_ms'])} ms")


def _served_against_exact(bundle, recommender, allowed: np.ndarray, rng: np.random.Generator,
                          shoppers: int = 1000) -> dict:
    """What the approximate index changes in the served top 10 (both stages), against the same bundle served
    with exact search, for ``shoppers`` known shoppers with 5-product histories."""
    from modeling.recommender import History, Recommender

    exact = Recommender(bundle, ann_min_items=None)
    n = len(bundle.arrays.item_ids)
    user_ids = [str(u) for u in bundle.arrays.user_ids[rng.integers(0, len(bundle.arrays.user_ids), shoppers)]]
    history = {u: History(np.asarray(bundle.arrays.item_ids[rng.integers(0, n, 5)], dtype=object),
                          np.zeros(5, dtype=np.int64), np.ones(5)) for u in user_ids}
    return _served_overlap(recommender, exact, user_ids, history, allowed)


def _served_overlap(first, second, user_ids: list[str], history: dict, allowed: np.ndarray) -> dict:
    """How much of the served top 10 two engines share for ``user_ids`` (100 shoppers per call)."""
    lists = []
    for engine in (first, second):
        served = {}
        for start in range(0, len(user_ids), 100):
            served.update(engine.recommend(user_ids[start:start + 100], history, 10, allowed))
        lists.append(served)
    overlap = [len(set(lists[0][u].items) & set(lists[1][u].items)) / 10 for u in user_ids]
    return {"shoppers": len(user_ids), "top10_overlap": float(np.mean(overlap)), "lowest_overlap": float(min(overlap)),
            "identical_lists": float(np.mean([np.array_equal(lists[0][u].items, lists[1][u].items)
                                              for u in user_ids]))}


def _proc_status(pid: int | str = "self") -> dict[str, str]:
    """The fields of ``/proc/<pid>/status`` (name -> value as written, e.g. ``"  1234 kB"``)."""
    return dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)


def _private_mib() -> float:
    """This process's anonymous resident memory, MiB (from /proc; 0 where there is none)."""
    try:
        return int(_proc_status()["RssAnon"].split()[0]) / 1024
    except (OSError, KeyError):
        return 0.0


# --------------------------------------------------------------------------- HTTP under wrk

_LUA = """
local paths = {%s}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i %% #paths) + 1])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests": %%d, "duration_us": %%d, "errors": %%d, "non2xx": %%d, '
    .. '"p50_us": %%d, "p95_us": %%d, "p99_us": %%d}\\n', summary.requests, summary.duration,
    e.connect + e.read + e.write + e.timeout, e.status, latency:percentile(50), latency:percentile(95),
    latency:percentile(99)))
end
"""


_WORDS = ["coffee", "mug", "leash", "tent", "lipstick", "grinder", "espresso", "sleeping", "bag", "dog", "kitchen",
          "enamel", "camping", "shampoo", "gift", "card", "toy", "puzzle", "book", "lamp"]


_LOG_PID = re.compile(r"^\S+ \S+ \[(\d+)\] ")


def worker_shares(log: Path, offset: int) -> list[float]:
    """Each worker's share of the requests logged in ``log`` after byte ``offset`` (largest first).

    wrk keeps its connections open, and gunicorn hands a connection to whichever worker accepts it first:
    at 2 connections both can land on one worker, which then answers everything on one core while the
    other idles (about half the throughput). The shares tell such a run from a balanced one."""
    if not log.is_file():
        return []
    with log.open("rb") as handle:
        handle.seek(offset if log.stat().st_size >= offset else 0)  # rotated meanwhile: the new file
        counts: dict[str, int] = {}
        for line in handle.read().decode("utf-8", "replace").splitlines():
            match = _LOG_PID.match(line)
            if match:
                counts[match.group(1)] = counts.get(match.group(1), 0) + 1
    total = sum(counts.values()) or 1
    return sorted((round(n / total, 3) for n in counts.values()), reverse=True)


def run_wrk(base: str, paths: list[str], connections: int, seconds: int, script_dir: Path,
            log: Path | None = None) -> dict:
    """wrk's figures for ``paths`` in turn; with the service's request ``log``, each worker's share of them."""
    script = script_dir / "paths.lua"
    script.write_text(_LUA % ", ".join(json.dumps(p) for p in paths))
    offset = log.stat().st_size if log is not None and log.is_file() else 0
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script),
                          base], capture_output=True, text=True, check=True).stdout
    result = json.loads(out.split("RESULT ", 1)[1].splitlines()[0])
    run = {"connections": connections, "requests": result["requests"],
           "rps": result["requests"] / (result["duration_us"] / 1e6),
           "p50_ms": result["p50_us"] / 1000, "p95_ms": result["p95_us"] / 1000, "p99_ms": result["p99_us"] / 1000,
           "errors": result["errors"] + result["non2xx"]}
    if log is not None:
        run["worker_shares"] = worker_shares(log, offset)
    return run


def resident_files(pid: str, top: int = 10) -> dict[str, float]:
    """The ``top`` mapped files of a process by resident size: file name -> MiB (from /proc/PID/smaps)."""
    sizes: dict[str, int] = {}
    name = None
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(maxsplit=5)
        if len(head) >= 5 and "-" in head[0] and ":" in head[3]:  # a mapping's first line: range perms offset dev inode
            name = Path(head[5]).name if len(head) == 6 and head[5].startswith("/") else None
        elif name is not None and line.startswith("Rss:"):
            sizes[name] = sizes.get(name, 0) + int(line.split()[1])
    ranked = sorted(sizes.items(), key=lambda pair: -pair[1])[:top]
    return {file: round(kib / 1024, 1) for file, kib in ranked}


def _children(pid: int | str) -> list[str]:
    return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()


def service_cpu_seconds(master_pid: int | str) -> float:
    """CPU seconds (user and system) the server's processes have used so far: the master and its children (the
    workers, the text process's arbiter and encoder), from ``/proc/PID/stat``."""
    ticks = os.sysconf("SC_CLK_TCK")
    total, pending = 0.0, [str(master_pid)]
    while pending:
        pid = pending.pop()
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            pending.extend(_children(pid))
        except OSError:  # gone meanwhile
            continue
        total += (int(fields[11]) + int(fields[12])) / ticks  # utime and stime (the 14th and 15th fields)
    return total


def process_memory(pid: int | str) -> dict:
    """Resident and proportional set sizes of one process, its largest resident mapped files, and what it maps."""
    status = _proc_status(pid)
    rollup = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]
                  if ":" in line)
    maps = Path(f"/proc/{pid}/maps").read_text()

    def mib(value: str) -> float:
        return round(int(value.split()[0]) / 1024, 1)

    return {"pid": int(pid), "rss_mib": mib(status["VmRSS"]), "rss_anon_mib": mib(status["RssAnon"]),
            "rss_file_mib": mib(status["RssFile"]), "pss_mib": mib(rollup["Pss"]),
            "bundle_memory_mapped": "item_vectors.npy" in maps and "user_vectors.npy" in maps,
            "tensorflow_loaded": "libtensorflow" in maps, "torch_loaded": "libtorch" in maps,
            "onnxruntime_loaded": "onnxruntime" in maps, "largest_resident_files_mib": resident_files(str(pid))}


def service_memory(master_pid: int) -> dict:
    """Memory of every process of the service: the web workers (the master's children that have none of their
    own), the text process (gunicorn's dirty pool: its arbiter, a child of the master, and the arbiter's
    worker, which runs the text encoder; none with RECO_TEXT_PROCESS=0) and the master; with their PSS summed
    (what the service costs the machine, each shared page counted once)."""
    workers, text = [], []
    for pid in _children(master_pid):
        below = _children(pid)
        if below:  # the dirty pool's arbiter
            text.append({"role": "arbiter", **process_memory(pid)})
            text.extend({"role": "encoder", **process_memory(child)} for child in below)
        else:
            workers.append(process_memory(pid))
    master = process_memory(master_pid)
    total = sum(row["pss_mib"] for row in [*workers, *text, master])
    return {"workers": workers, "text_process": text, "master": master, "service_pss_mib": round(total, 1)}


# --------------------------------------------------------------------------- impressions: their cost, on and off


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start_gunicorn(work: Path, port: int, workers: int, threads: int, extra_env: dict[str, str] | None = None,
                    log_name: str = "gunicorn.log") -> tuple[subprocess.Popen, TextIO]:
    """gunicorn on loopback with the workspace's settings (plus ``extra_env``); its output to ``log_name``."""
    log = open(work / log_name, "w")  # noqa: SIM115
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")],
                              env={**_env(work, port, workers, threads), **(extra_env or {})}, cwd=ROOT, stdout=log,
                              stderr=subprocess.STDOUT)
    return server, log


def settled(run: dict) -> dict:
    """Wait until the requests wrk left in flight are answered, so the next row does not queue behind them.

    wrk stops sending at the end of its time but gunicorn still answers what was sent: up to one request per
    connection, answered a worker thread at a time. Without the wait, the row after "100 shoppers per request"
    at 8 connections (2 s per answer) measured those answers in its own p95 and p99.
    """
    time.sleep(max(2.0, 2 * run["p99_ms"] / 1000))
    return run


UNBALANCED_TRIES = 3
"""How many times the table's row is run at most while every request of it went to one worker (see
:func:`balanced_run`)."""


def balanced_run(base: str, paths: list[str], connections: int, seconds: int, work: Path, log: Path,
                 workers: int) -> dict:
    """:func:`run_wrk` of a table's row, settled; run again, up to :data:`UNBALANCED_TRIES` runs in all, while
    ``workers`` > 1 and its requests all went to one worker.

    Where both of wrk's connections land on one worker, that worker answers everything on one core while the
    other idles: the row then measures where two connections happened to land (about half the throughput), not
    the service. It happened to about one row in ten of a run (the first row of one run of this version: 291
    against 718 requests a second in the run before). The runs set aside are kept in the row's
    ``one_worker_runs``, and the table marks the row."""
    set_aside: list[dict] = []
    while True:
        run = settled(run_wrk(base, paths, connections, seconds, work, log))
        if workers < 2 or len(run.get("worker_shares", [])) != 1 or len(set_aside) + 1 >= UNBALANCED_TRIES:
            return {**run, "one_worker_runs": set_aside} if set_aside else run
        set_aside.append({key: run[key] for key in ("rps", "p50_ms", "p95_ms", "p99_ms", "worker_shares")})
        print(f"  {connections} connections: every request went to one worker ({run['rps']:.0f} req/s); "
              "run again", flush=True)


def _first_answer(base: str, path: str) -> bool:
    """Wait (up to about 2 minutes) for the first answer to ``path``; True once one was answered."""
    for _ in range(1200):
        try:
            urllib.request.urlopen(f"{base}{path}", timeout=5).read()  # noqa: S310
            return True
        except OSError:
            time.sleep(0.1)
    return False


def _recommendation_lists(work: Path) -> int:
    """How many RecommendationList rows (impressions) the workspace's SQLite database holds.

    The database is the one ``_env`` points DATABASE_URL at; read with sqlite3 directly, while no server runs.
    """
    import sqlite3

    path = _env(work)["DATABASE_URL"].removeprefix("sqlite:///")
    db = sqlite3.connect(path)
    try:
        return int(db.execute("SELECT COUNT(*) FROM recommendations_recommendationlist").fetchone()[0])
    finally:
        db.close()


def _impressions_round(work: Path, setting: str, paths: list[str], warm_paths: list[list[str]], seconds: int,
                       workers: int, threads: int) -> dict:
    """One server with RECO_IMPRESSIONS=``setting``: warm up, one wrk run at 2 connections, a graceful stop.

    The rows written are counted after the stop (a worker's exit writes what its buffer still holds), against
    every request answered by that server: the first answer, the warm-up and the measured run.
    """
    before = _recommendation_lists(work)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server, log = _start_gunicorn(work, port, workers, threads, {"RECO_IMPRESSIONS": setting})
    try:
        if not _first_answer(base, paths[0]):
            raise SystemExit(f"gunicorn did not answer (see {work / 'gunicorn.log'})")
        warm = [run_wrk(base, p, 2, 3, work) for p in warm_paths]  # the text encoder loads in the background
        time.sleep(5)
        run = run_wrk(base, paths, 2, seconds, work)
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()
    answered = 1 + sum(w["requests"] for w in warm) + run["requests"]
    return {"impressions": setting, **run, "answered": answered,
            "lists_written": _recommendation_lists(work) - before}


def scenario_paths(arrays, new_users: list[str]) -> dict[str, list[str]]:  # noqa: ANN001  (a BundleArrays)
    """Each scenario's request paths over a bundle's ``arrays``, drawn with a fixed seed (the same in every run):
    1,000 known shoppers one at a time and 5,000 in requests of 100, 1,000 of ``new_users``, 1,000 products for
    similar_items and 1,000 texts of two words and a number."""
    rng = np.random.default_rng(2)
    known = [str(u) for u in arrays.user_ids[rng.integers(0, len(arrays.user_ids), 5000)]]
    item_ids = [str(i) for i in arrays.item_ids[rng.integers(0, len(arrays.item_ids), 1000)]]
    return {
        "one known shopper": [f"/recommendations?users={u}&k=10" for u in known[:1000]],
        "one new shopper (content)": [f"/recommendations?users={u}&k=10" for u in new_users[:1000]],
        "100 shoppers per request": [f"/recommendations?users={','.join(known[i:i + 100])}&k=10"
                                     for i in range(0, 5000, 100)],
        "similar_items": [f"/similar_items?item={i}&k=10" for i in item_ids],
        "text query": [f"/recommendations?text={a}+{b}+{n}&k=10" for n, (a, b) in
                       enumerate(zip(rng.choice(_WORDS, 1000), rng.choice(_WORDS, 1000), strict=True))],
    }


def impressions_overhead(work: Path, info: dict, rounds: int, seconds: int, workers: int, threads: int) -> dict:
    """The p50, p99 and req/s of "one known shopper" with impressions recorded (on) and not (off).

    Rounds alternate the order (on, off; off, on; ...) so a drift of the machine's speed cancels out of
    the paired difference of p50 (on minus off, per round).
    """
    from modeling import artifacts

    bundle = artifacts.load_bundle(work / "models" / info["version"])
    rng = np.random.default_rng(2)  # the same shoppers as the main scenarios
    known = [str(u) for u in bundle.arrays.user_ids[rng.integers(0, len(bundle.arrays.user_ids), 5000)]]
    paths = [f"/recommendations?users={u}&k=10" for u in known[:1000]]
    texts = [f"/recommendations?text={a}+{b}+{n}&k=10" for n, (a, b) in
             enumerate(zip(rng.choice(_WORDS, 1000), rng.choice(_WORDS, 1000), strict=True))]
    runs = []
    for r in range(rounds):
        for setting in ("1", "0") if r % 2 == 0 else ("0", "1"):
            run = _impressions_round(work, setting, paths, [paths, texts], seconds, workers, threads)
            runs.append({"round": r, **run})
            print(f"round {r} impressions {'on ' if setting == '1' else 'off'}: {run['rps']:.0f} req/s, p50 "
                  f"{run['p50_ms']:.2f} ms, p99 {run['p99_ms']:.2f} ms, {run['lists_written']} lists written for "
                  f"{run['answered']} answers", flush=True)

    def median(setting: str, key: str) -> float:
        return float(np.median([run[key] for run in runs if run["impressions"] == setting]))

    by_round = {(run["round"], run["impressions"]): run for run in runs}
    differences = [by_round[r, "1"]["p50_ms"] - by_round[r, "0"]["p50_ms"] for r in range(rounds)]
    on = [run for run in runs if run["impressions"] == "1"]
    off = [run for run in runs if run["impressions"] == "0"]
    return {
        "scenario": "one known shopper", "connections": 2, "seconds": seconds, "rounds": rounds,
        "order": "on,off then off,on alternately",
        "median": {name: {"p50_ms": median(setting, "p50_ms"), "p99_ms": median(setting, "p99_ms"),
                          "rps": median(setting, "rps")} for name, setting in (("on", "1"), ("off", "0"))},
        "p50_difference_ms_by_round": differences,
        "p50_difference_ms_median": float(np.median(differences)),
        "target_p50_difference_ms": 0.5,
        "within_target": bool(np.median(differences) <= 0.5),
        "lists_written_on": sum(run["lists_written"] for run in on),
        "answered_on": sum(run["answered"] for run in on),
        "lists_written_off": sum(run["lists_written"] for run in off),
        "errors": sum(run["errors"] for run in runs),
        "runs": runs,
    }


def _log_name(name: str, value: str) -> str:
    """The log file of the server with NAME=value (a value that is a path, e.g. another models folder, in one name;
    where a character had to be replaced, a digest of the value keeps two such values' logs apart)."""
    safe = re.sub(r"[^A-Za-z0-9_.,=-]", "_", value)
    tag = "" if safe == value else "-" + hashlib.sha256(value.encode()).hexdigest()[:8]
    return f"gunicorn-{name}-{safe}{tag}.log"


def compare_env(work: Path, info: dict, name: str, values: tuple[str, str], only: str, rounds: int, seconds: int,
                workers: int, threads: int) -> dict:
    """The scenarios whose name holds ``only`` against two servers, NAME=A and NAME=B, started side by side and
    loaded in turn (A, B, B, A, ...), ``rounds`` rounds of ``seconds`` at 2 and 8 connections each."""
    from modeling import artifacts

    bundle = artifacts.load_bundle(work / "models" / info["version"])
    scenarios = {title: paths for title, paths in scenario_paths(bundle.arrays, info["new_users"]).items()
                 if only in title}
    if not scenarios:
        raise SystemExit(f"no scenario's name holds {only!r}")
    servers: dict[str, tuple[subprocess.Popen, TextIO, str]] = {}
    try:
        for value in values:
            port = _free_port()
            server, log = _start_gunicorn(work, port, workers, threads, {name: value}, _log_name(name, value))
            servers[value] = (server, log, f"http://127.0.0.1:{port}")
        for value, (_, _, base) in servers.items():
            if not _first_answer(base, next(iter(scenarios.values()))[0]):
                raise SystemExit(f"the server with {name}={value} did not answer "
                                 f"(see {work / _log_name(name, value)})")
            for paths in scenarios.values():  # warm both workers of each
                run_wrk(base, paths, 2, 3, work)
        time.sleep(2)
        request_log = work / "logs" / "requests.log"
        runs: list[dict] = []
        for title, paths in scenarios.items():
            for connections in (2, 8):
                for turn in range(rounds):
                    for value in values if turn % 2 == 0 else values[::-1]:
                        cpu = service_cpu_seconds(servers[value][0].pid)
                        run = settled(run_wrk(servers[value][2], paths, connections, seconds, work, request_log))
                        # the server's CPU per request answered (settled: the requests left in flight are in both)
                        run["cpu_ms_per_request"] = 1000 * (service_cpu_seconds(servers[value][0].pid) - cpu) / max(
                            run["requests"], 1)
                        runs.append({"scenario": title, "value": value, "round": turn, **run})
                        print(f"{title}, {connections} connections, round {turn}, {name}={value}: {run['rps']:.0f} "
                              f"req/s, p50 {run['p50_ms']:.2f} ms, p99 {run['p99_ms']:.2f} ms, CPU "
                              f"{run['cpu_ms_per_request']:.2f} ms a request", flush=True)
    finally:
        for server, _, _ in servers.values():
            server.terminate()
        for server, log, _ in servers.values():
            server.wait(timeout=60)
            log.close()
    return {"variable": name, "values": list(values), "rounds": rounds, "seconds": seconds,
            "order": "A, B then B, A alternately", "summary": compare_summary(runs, values), "runs": runs}


def compare_summary(runs: list[dict], values: tuple[str, str]) -> list[dict]:
    """One row per scenario and connection count of :func:`compare_env`'s ``runs``: each value's medians over the
    rounds (req/s, p50, p95, p99, the server's CPU a request) and, round by round (the rounds both values ran),
    how often the second value served more requests, and had the lower p95 and p99. A row of 10 s holds a few
    hundred requests at most when they take 50 ms or more, so its p99 is its two or three slowest: the p95 and the
    paired counts say whether a difference of p99 held."""
    summary = []
    for title, connections in dict.fromkeys((run["scenario"], run["connections"]) for run in runs):
        mine = [run for run in runs if run["scenario"] == title and run["connections"] == connections]
        row: dict[str, object] = {"scenario": title, "connections": connections}
        for value in values:
            own = [run for run in mine if run["value"] == value]
            row[value] = {key: float(np.median([run[key] for run in own]))
                          for key in ("rps", "p50_ms", "p95_ms", "p99_ms", "cpu_ms_per_request")}
        by_round = {(run["round"], run["value"]): run for run in mine}
        pairs = [(by_round[turn, values[0]], by_round[turn, values[1]])
                 for turn in sorted({turn for turn, _ in by_round}) if all((turn, v) in by_round for v in values)]
        row[f"rounds_with_more_req_s_for_{values[1]}"] = sum(b["rps"] > a["rps"] for a, b in pairs)
        row[f"rounds_with_lower_p95_for_{values[1]}"] = sum(b["p95_ms"] < a["p95_ms"] for a, b in pairs)
        row[f"rounds_with_lower_p99_for_{values[1]}"] = sum(b["p99_ms"] < a["p99_ms"] for a, b in pairs)
        summary.append(row)
    return summary


IMPRESSIONS_CPU = """
import json, os, time, uuid
import django
django.setup()
from django.utils import timezone
from recoapi.recommendations import impressions
from recoapi.recommendations.models import RecommendationList
n, batch = int(os.environ["LISTS"]), int(os.environ["BATCH"])
items = [f"B{i:09d}" for i in range(10)]
buffer = impressions.ImpressionBuffer()
shown = [[impressions.Shown(uuid.uuid4().hex, timezone.now(), f"A{i:07d}", "two_tower", "v", items)]
         for i in range(n)]
start = time.process_time()
for one in shown:
    buffer.record(one)
record = time.process_time() - start
buffer._pending.clear()
write = 0.0
for first in range(0, n, batch):
    for one in shown[first:first + batch]:
        buffer._pending.extend(one)
    start = time.process_time()
    buffer.flush()
    write += time.process_time() - start
RecommendationList.objects.filter(id__in=[one[0].id for one in shown]).delete()
print(json.dumps({"lists": n, "batch": batch, "record_us": 1e6 * record / n, "write_us": 1e6 * write / n}))
"""


def impressions_cpu(work: Path, lists: int = 5000, batch: int = 500) -> dict:
    """CPU time per answered list that recording it costs, in process (precise where latency is noisy): the
    request's part (``impressions.record``: appending to the buffer) and the writer thread's part (one
    transaction per ``batch`` lists, as the thread writes them), on the workspace's SQLite database. On a
    server whose cores are busy, this CPU time is what each request pays."""
    env = {**_env(work), "LISTS": str(lists), "BATCH": str(batch), "RECO_IMPRESSIONS_WRITER": "manual"}
    done = subprocess.run([sys.executable, "-c", IMPRESSIONS_CPU], env=env, cwd=ROOT, check=True,
                          capture_output=True, text=True)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return {**figures, "total_us": figures["record_us"] + figures["write_us"]}


def _print_impressions(result: dict) -> None:
    print(f"\n{'impressions':<13}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}   (median of {result['rounds']} rounds, "
          f"{result['scenario']}, {result['connections']} connections, {result['seconds']} s each)")
    for name in ("on", "off"):
        row = result["median"][name]
        print(f"{name:<13}{row['rps']:>9.0f}{row['p50_ms']:>9.2f}{row['p99_ms']:>9.2f}")
    print("p50 on minus off, per round: " + ", ".join(f"{d:+.2f}" for d in result["p50_difference_ms_by_round"])
          + f" ms; median {result['p50_difference_ms_median']:+.2f} ms (target at most "
          f"{result['target_p50_difference_ms']} ms: {'met' if result['within_target'] else 'NOT met'})")
    print(f"lists written: {result['lists_written_on']} for {result['answered_on']} answers with impressions on, "
          f"{result['lists_written_off']} with them off; errors {result['errors']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per scenario and concurrency")
    parser.add_argument("--workdir", default=str(ROOT / "benchmarks" / ".work" / "serving"))
    parser.add_argument("--output", default=None, help="the JSON written (default: benchmarks/results/serving.json; "
                                                       "with --impressions-overhead, serving-impressions.json)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=2, help="threads per worker")
    parser.add_argument("--only", default="", help="run only the scenarios whose name contains this text")
    parser.add_argument("--in-process-only", action="store_true",
                        help="measure the engine in process only (no gunicorn, no wrk); prints and writes the same "
                             "engine figures")
    parser.add_argument("--serve-ann-min-items", type=int, default=None, metavar="N",
                        help="serve (in process and under gunicorn) with RECO_ANN_MIN_ITEMS=N on the workspace built "
                             "with the default, e.g. 200000 for exact search over a bundle that carries the indexes: "
                             "both thresholds measured on one workspace")
    parser.add_argument("--text-index-as", choices=["pq", "sq8"], default=None,
                        help="rewrite the workspace bundle's text index before the run as product-quantizer codes "
                             "(what publishing writes from 10,000 products) or 8-bit codes (what it wrote before)")
    parser.add_argument("--text-vectors-as", choices=["int8", "float16", "float32"], default=None,
                        help="rewrite the workspace bundle's text vectors (item_content.npy) in this type before the "
                             "run, from the values it holds (int8 codes with a scale per row are what publishing "
                             "writes; float16 and float32 what bundles held before): all measured on one workspace")
    parser.add_argument("--compare-index-kinds", type=int, default=0, metavar="ROUNDS",
                        help="run only the engine in process with the bundle's index of 8-bit codes and with IVF-Flat "
                             "over the same vectors, alternately, ROUNDS rounds of each (0: off)")
    parser.add_argument("--compare-nprobe", default="", metavar="A,B",
                        help="run only the engine in process with the product index scanning A and B inverted lists "
                             "per query, alternately, 4 rounds of each, and each one's served top 10 against exact "
                             "search (to benchmarks/results/serving-nprobe.json)")
    parser.add_argument("--compare-compiled-ranker", type=int, default=0, metavar="ROUNDS",
                        help="run only the engine in process with the bundle's ranker compiled and scored by LightGBM, "
                             "alternately, ROUNDS rounds of each (to benchmarks/results/serving-compiled-ranker.json)")
    parser.add_argument("--compare-native", type=int, default=0, metavar="ROUNDS",
                        help="run only the engine in process with the ranking stage's candidates computed by its "
                             "native code and by numpy, alternately, ROUNDS rounds of each (to "
                             "benchmarks/results/serving-native.json)")
    parser.add_argument("--compare-env", default="", metavar="NAME=A,B",
                        help="run only the scenarios --only names (default \"one known\") against two servers side by "
                             "side, with the environment variable NAME=A and NAME=B, loaded in turn --rounds times (to "
                             "benchmarks/results/serving-compare-NAME.json)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of each server with --compare-env")
    parser.add_argument("--impressions-overhead", type=int, default=0, metavar="ROUNDS",
                        help="run only the cost of recording impressions: ROUNDS rounds of \"one known shopper\" at 2 "
                             "connections with RECO_IMPRESSIONS=1 and =0, alternating the order (0: off)")
    args = parser.parse_args()
    if args.impressions_overhead and args.in_process_only:
        parser.error("--impressions-overhead and --in-process-only exclude each other")
    if args.compare_index_kinds and (args.impressions_overhead or args.in_process_only):
        parser.error("--compare-index-kinds runs alone (without --impressions-overhead or --in-process-only)")
    if args.compare_index_kinds < 0:
        parser.error("--compare-index-kinds: a number of rounds, at least 1")
    if args.compare_compiled_ranker < 0:
        parser.error("--compare-compiled-ranker: a number of rounds, at least 1")
    if args.compare_compiled_ranker and (args.compare_index_kinds or args.compare_nprobe or args.impressions_overhead
                                         or args.in_process_only):
        parser.error("--compare-compiled-ranker runs alone")
    if args.compare_native < 0:
        parser.error("--compare-native: a number of rounds, at least 1")
    if args.compare_native and (args.compare_compiled_ranker or args.compare_index_kinds or args.compare_nprobe
                                or args.impressions_overhead or args.in_process_only):
        parser.error("--compare-native runs alone")
    nprobes: tuple[int, ...] = ()
    if args.compare_nprobe:
        try:
            nprobes = tuple(int(v) for v in args.compare_nprobe.split(","))
        except ValueError:
            nprobes = ()
        if len(nprobes) != 2 or min(nprobes) < 1 or nprobes[0] == nprobes[1]:
            parser.error(f"--compare-nprobe: two different positive numbers of lists, e.g. 256,144, "
                         f"not {args.compare_nprobe!r}")
        if args.compare_index_kinds or args.impressions_overhead or args.in_process_only:
            parser.error("--compare-nprobe runs alone")
    compared_env: tuple[str, tuple[str, str]] | None = None
    if args.compare_env:
        variable, _, listed = args.compare_env.partition("=")
        pair = tuple(listed.split(","))
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", variable) or len(pair) != 2 or pair[0] == pair[1]:
            parser.error(f"--compare-env: NAME=A,B with two different values, e.g. RECO_KEEPALIVE_LINGER_MS=0,2, "
                         f"not {args.compare_env!r}")
        if args.rounds < 1:
            parser.error("--rounds: at least 1")
        if (args.impressions_overhead or args.in_process_only or args.compare_index_kinds or args.compare_nprobe
                or args.compare_compiled_ranker or args.compare_native):
            parser.error("--compare-env runs alone")
        compared_env = (variable, (pair[0], pair[1]))
        args.output = args.output or str(RESULTS / f"serving-compare-{variable}.json")
    if args.output is None:
        args.output = str(RESULTS / ("serving-impressions.json" if args.impressions_overhead > 0 else
                                     "serving-index-kinds.json" if args.compare_index_kinds > 0 else
                                     "serving-nprobe.json" if nprobes else
                                     "serving-compiled-ranker.json" if args.compare_compiled_ranker > 0 else
                                     "serving-native.json" if args.compare_native > 0 else
                                     "serving.json"))
    if shutil.which("wrk") is None and not (args.in_process_only or args.compare_index_kinds or nprobes
                                            or args.compare_compiled_ranker or args.compare_native):
        raise SystemExit("wrk is not installed (Debian/Ubuntu: apt install wrk)")
    work = Path(args.workdir)
    info = build_workspace(work, args.users, args.items, args.interactions)
    if args.text_vectors_as is not None:
        store_text_vectors(work / "models" / info["version"], args.text_vectors_as)
    if args.text_index_as is not None:
        store_text_index(work / "models" / info["version"], args.text_index_as)
    if args.serve_ann_min_items is not None:  # after the build: the workspace's layout follows the default
        os.environ["RECO_ANN_MIN_ITEMS"] = str(args.serve_ann_min_items)
    if nprobes:
        with one_thread():
            compared = compare_nprobe(work, info["version"], (nprobes[0], nprobes[1]), 4)
        _write_comparison(args.output, info["sizes"], "nprobe", compared, [str(n) for n in nprobes])
        for n in nprobes:
            served = compared[str(n)]["served_against_exact"]
            print(f"nprobe {n}, served top 10 against exact search: {served['top10_overlap']:.4f} of the products, "
                  f"{served['identical_lists']:.3f} of the lists identical")
        print(f"\nwritten to {os.path.relpath(args.output, ROOT)}")
        return
    compared_pair = (
        ("compiled_ranker", compare_compiled_ranker, args.compare_compiled_ranker, ["compiled", "lightgbm"])
        if args.compare_compiled_ranker > 0 else
        ("native", compare_native, args.compare_native, ["native", "numpy"])
        if args.compare_native > 0 else
        ("index_kinds", compare_index_kinds, args.compare_index_kinds, ["codes", "flat"])
        if args.compare_index_kinds > 0 else None)
    if compared_pair is not None:  # two engines alternately, and how many of their served lists are the same
        key, compare, rounds, names = compared_pair
        with one_thread():
            compared = compare(work, info["version"], rounds)
        _write_comparison(args.output, info["sizes"], key, compared, names)
        served = compared["served_lists"]
        print(f"served top 10 the same: {served['top10_overlap']:.4f} of the products (lowest "
              f"{served['lowest_overlap']:.1f}), {served['identical_lists']:.4f} of the lists identical")
        print(f"\nwritten to {os.path.relpath(args.output, ROOT)}")
        return
    if compared_env is not None:
        variable, pair = compared_env
        result = compare_env(work, info, variable, pair, args.only or "one known", args.rounds, args.seconds,
                             args.workers, args.threads)
        figures = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                               "python": platform.python_version()},
                   "sizes": info["sizes"], "gunicorn": f"{args.workers} workers x {args.threads} threads", **result}
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(figures, indent=2) + "\n")
        print(f"\n{'scenario':<28}{'conns':>6}  " + "  ".join(
            f"{variable}={value}: req/s, p50, p95, p99, CPU ms a request" for value in pair)
              + "  rounds in which the second had more req/s, a lower p95, a lower p99")
        for row in result["summary"]:
            print(f"{row['scenario']:<28}{row['connections']:>6}  " + "  ".join(
                f"{row[value]['rps']:.0f}, {row[value]['p50_ms']:.2f}, {row[value]['p95_ms']:.2f}, "
                f"{row[value]['p99_ms']:.2f}, {row[value]['cpu_ms_per_request']:.2f}" for value in pair)
                + f"  {row[f'rounds_with_more_req_s_for_{pair[1]}']}, {row[f'rounds_with_lower_p95_for_{pair[1]}']}, "
                  f"{row[f'rounds_with_lower_p99_for_{pair[1]}']} of {args.rounds}")
        print(f"\nwritten to {os.path.relpath(args.output, ROOT)}")
        return
    if args.impressions_overhead > 0:
        load_before = os.getloadavg()
        cpu = impressions_cpu(work)
        print(f"CPU per list recorded: {cpu['record_us']:.1f} us in the request, {cpu['write_us']:.1f} us in the "
              f"writer ({cpu['lists']} lists, written {cpu['batch']} per transaction)")
        result = {"cpu_per_list": cpu,
                  **impressions_overhead(work, info, args.impressions_overhead, args.seconds, args.workers,
                                         args.threads)}
        figures = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                               "python": platform.python_version(), "load_average_before": load_before,
                               "load_average_after": os.getloadavg()},
                   "sizes": info["sizes"], "gunicorn": f"{args.workers} workers x {args.threads} threads",
                   "impressions_overhead": result}
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(figures, indent=2) + "\n")
        print(f"\n{info['sizes']['items']:,} products, {info['sizes']['users']:,} shoppers, {os.cpu_count()} CPUs, "
              f"gunicorn {args.workers} workers x {args.threads} threads, wrk on loopback")
        _print_impressions(result)
        print(f"\nwritten to {os.path.relpath(args.output, ROOT)}")
        return
    with one_thread():
        engine = in_process(work, info["version"], info["new_users"])
    if args.in_process_only:
        figures = {"sizes": info["sizes"], "workspace_timings_s": info["timings"],
                   "served_ann_min_items": ann_min_items(), "engine_in_process": engine}
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(figures, indent=2) + "\n")
        _print_engine(engine)
        print(f"\nwritten to {os.path.relpath(args.output, ROOT)}")
        return

    port = _free_port()
    server, log = _start_gunicorn(work, port, args.workers, args.threads)
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    try:
        from modeling import artifacts

        bundle = artifacts.load_bundle(work / "models" / info["version"])
        scenarios = scenario_paths(bundle.arrays, info["new_users"])
        _first_answer(base, scenarios["one known shopper"][0])  # a worker loaded the model
        first_answer_s = time.monotonic() - started
        for paths in scenarios.values():  # warm every worker: the text encoder loads in the background
            run_wrk(base, paths, 2, 3, work)
        time.sleep(5)
        scenarios = {name: paths for name, paths in scenarios.items() if args.only in name}
        request_log = work / "logs" / "requests.log"
        http = {name: [balanced_run(base, paths, c, args.seconds, work, request_log, args.workers) for c in (2, 8)]
                for name, paths in scenarios.items()}
        memory = service_memory(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()

    figures = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                           "python": platform.python_version()},
               "sizes": info["sizes"], "workspace_timings_s": info["timings"],
               "gunicorn": f"{args.workers} workers x {args.threads} threads",
               "served_ann_min_items": ann_min_items(), "start_to_first_answer_s": first_answer_s, "http": http,
               "engine_in_process": engine,
               "workers": memory["workers"], "text_process": memory["text_process"], "master": memory["master"],
               "service_pss_mib": memory["service_pss_mib"]}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(figures, indent=2) + "\n")

    print(f"\n{info['sizes']['items']:,} products, {info['sizes']['users']:,} shoppers, "
          f"{os.cpu_count()} CPUs, gunicorn {args.workers} workers x {args.threads} threads, wrk on loopback\n")
    print(f"start to first answer: {first_answer_s:.1f} s")
    print(f"{'scenario':<28}{'conns':>6}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}"
          "  workers' shares")
    for name, runs in http.items():
        for run in runs:
            shares = "/".join(f"{share:.2f}" for share in run.get("worker_shares", []))
            if run.get("one_worker_runs"):
                shares += (f" (after {len(run['one_worker_runs'])} run(s) on one worker: "
                           + ", ".join(f"{r['rps']:.0f}" for r in run["one_worker_runs"]) + " req/s)")
            print(f"{name:<28}{run['connections']:>6}{run['rps']:>9.0f}{run['p50_ms']:>9.1f}{run['p95_ms']:>9.1f}"
                  f"{run['p99_ms']:>9.1f}{run['errors']:>8}  {shares}")
    _print_engine(engine)
    for row in memory["workers"]:
        print(f"worker {row['pid']}: RSS {row['rss_mib']} MiB (anonymous {row['rss_anon_mib']}, file-backed "
              f"{row['rss_file_mib']}), PSS {row['pss_mib']} MiB, bundle memory-mapped: {row['bundle_memory_mapped']}, "
              f"TensorFlow loaded: {row['tensorflow_loaded']}, torch loaded: {row['torch_loaded']}, "
              f"ONNX Runtime loaded: {row['onnxruntime_loaded']}")
    for row in memory["text_process"]:
        print(f"text process ({row['role']}) {row['pid']}: RSS {row['rss_mib']} MiB (anonymous {row['rss_anon_mib']}, "
              f"file-backed {row['rss_file_mib']}), PSS {row['pss_mib']} MiB")
    print(f"master {memory['master']['pid']}: RSS {memory['master']['rss_mib']} MiB, PSS {memory['master']['pss_mib']} "
          f"MiB; the whole service's PSS {memory['service_pss_mib']} MiB")
    print(f"\nwritten to {os.path.relpath(args.output, ROOT)}")


def _print_engine(engine: dict) -> None:
    print(f"\nfloor (numpy dot + argpartition): 1 query {engine['floor_1_ms']:.2f} ms, 100 queries "
          f"{engine['floor_100_ms']:.2f} ms")
    print(f"engine (Recommender.recommend): 1 shopper {engine['engine_1_ms']:.2f} ms ({engine['ratio_1']:.2f}x floor), "
          f"100 shoppers {engine['engine_100_ms']:.2f} ms ({engine['ratio_100']:.2f}x), "
          f"content {engine['engine_content_ms']:.2f} ms")
    print(f"two stages for one shopper: query tower {engine['query_tower_1_ms']:.2f} ms, two-tower top-10 "
          f"{engine['retrieval_1_ms']:.2f} ms, ranking stage ({engine['ranking_stage_candidates']} candidates, "
          f"{engine['ranking_stage_ranker']}) {engine['ranking_stage_1_ms']:.2f} ms: "
          f"{engine['ranking_stage_added_ms']:+.2f} ms over the two-tower top-10")
    for key, label in (("ann", "search"), ("text_search", "text search")):
        search = engine.get(key)
        if not search:
            continue
        print(f"{label}: exact {search['exact_query_ms']:.3f} ms per query; served: {search['served_index']}")
        if "recall@10" in search:
            published = search["published"] or {}
            print(f"  the bundle's index ({published.get('kind')}, {published.get('lists')} lists, nprobe "
                  f"{published.get('nprobe')}, built and tuned in {published.get('seconds')} s): recall@10 vs exact "
                  f"{search['recall@10']:.3f}, {search['query_ms']:.3f} ms per query")
        served = search.get("served_lists")
        if served:
            print(f"  served top 10 (both stages) against exact search, {served['shoppers']} shoppers: "
                  f"{served['top10_overlap']:.3f} of the products the same (lowest {served['lowest_overlap']:.1f}), "
                  f"{served['identical_lists']:.3f} of the lists identical")
    build = engine.get("engine_build")
    if build:
        stored, coded = (", ".join(f"{v:.2f}" for v in build[key]) for key in ("codes_stored_s", "coded_at_load_s"))
        print(f"the engine built over the loaded bundle: {stored} s with the stored category and brand codes, "
              f"{coded} s coding them at load")
    added = engine.get("add_one_product")
    if added:
        print(f"one product added after publishing: {added['seconds']:.2f} s, "
              f"{added['private_mib']:.0f} MiB of private memory")
    encoder = engine.get("text_encoder")
    if encoder:
        print(f"the ONNX text encoder loaded and run once: {encoder['private_mib']:.0f} MiB of private memory (its "
              f"weights file mapped besides); one text encoded in {encoder['encode_one_ms']:.1f} ms")


if __name__ == "__main__":
    main()
