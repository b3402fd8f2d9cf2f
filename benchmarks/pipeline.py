"""Pipeline throughput: import rows/s, embedding texts/s, training examples/s and time per epoch.

Usage:
    .venv/bin/python benchmarks/pipeline.py                     # demo size and the 100k scale
    .venv/bin/python benchmarks/pipeline.py --scales demo       # demo size only (about a minute)
    .venv/bin/python benchmarks/pipeline.py --scales 100k --epochs 1 --workers 1,2 --text-processes 1,2
                                                                # 1 against 2 training workers and encoder processes

Two sizes from the demo generator: "demo" (2,000 shoppers, 500 products, 30,000 reviews: what
`make demo` builds) and "100k" (200,000 shoppers, 100,000 products, 1,000,000 reviews).

- import: `data_import` (parse, validate, one transaction into a fresh SQLite file, parquet snapshot).
- embeddings: MiniLM on the product texts (at 100k, a sample of ``--embed-sample`` products, since
  the rate does not depend on the catalogue size) and on the distinct review texts (demo only).
- training: `train_model` for ``--epochs`` epochs (early stopping off; the two-tower only, no ranking
  stage), on each ``--workers`` count. At 100k the text embeddings fed to the towers are random unit
  vectors of the right shape (building real ones means encoding every product and review, see the
  embeddings rate); the training cost is the same.

Prints a table and writes benchmarks/results/pipeline.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modeling import runtime as _runtime  # noqa: E402,F401  (first: environment for TensorFlow)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import django  # noqa: E402
import numpy as np  # noqa: E402

SCALES = {
    "demo": {"n_users": 2000, "n_items": 500, "n_interactions": 30_000},
    "100k": {"n_users": 200_000, "n_items": 100_000, "n_interactions": 1_000_000},
}


def random_embeddings(data, dim: int = 384):
    """Embeddings of the right shapes with random unit vectors (for timing; also used by evaluation_scale.py)."""
    from modeling import datasets as ds
    from modeling.embeddings import Embeddings

    rng = np.random.default_rng(0)

    def unit(n: int) -> np.ndarray:
        x = rng.normal(size=(n, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    users = data.users[ds.USER_ID].astype(str).to_numpy()
    return Embeddings(item_ids=data.items[ds.ITEM_ID].astype(str).to_numpy(), item_text=unit(len(data.items)),
                      review_texts=np.asarray([], dtype=str), review_text=np.zeros((0, dim), np.float32),
                      user_ids=users, user_text=unit(len(users)),
                      manifest={"fingerprint": "random", "dim": dim, "model_name": "random"})


def measure(scale: str, work: Path, epochs: int, embed_sample: int, workers: list[int],
            processes: list[int]) -> dict:
    from modeling import datasets as ds
    from modeling.embeddings import TextEncoder, build_embeddings, load_embeddings
    from modeling.synthetic import DemoParams, generate_demo_data
    from modeling.train import train_model
    from modeling.two_tower import TwoTowerParams
    from recoapi.catalog.services import data_import

    raw = work / scale / "raw"
    generate_demo_data(raw, DemoParams(**SCALES[scale]), progress=False)
    figures: dict = {"scale": scale, **SCALES[scale]}

    started = time.perf_counter()
    result = data_import(source="amazon2018", path=raw, processed_dir=work / scale / "processed", force=True)
    seconds = time.perf_counter() - started
    figures["import_s"] = round(seconds, 1)
    figures["import_rows_per_s"] = round(result.counts["interactions"] / seconds)
    data = ds.read_snapshot(work / scale / "processed")

    if scale == "demo":
        started = time.perf_counter()
        manifest = build_embeddings(data, work / scale / "embeddings", progress=False, force=True)
        seconds = time.perf_counter() - started
        texts = manifest["counts"]["items"] + manifest["counts"]["distinct_review_texts"]
        figures["embedding_texts"] = texts
        figures["embedding_texts_per_s"] = round(texts / seconds)
        embeddings = load_embeddings(work / scale / "embeddings")
    else:
        encoder = TextEncoder(None)
        sample = ds.item_text(data.items.head(embed_sample))
        encoder.encode(sample[:64])  # load the model outside the timing
        rates = {}
        for n in processes:
            # With n > 1 the timing includes starting the pool (a few seconds), as a build pays it.
            started = time.perf_counter()
            encoder.encode(sample, processes=n)
            rates[str(n)] = round(len(sample) / (time.perf_counter() - started))
        figures["embedding_texts"] = len(sample)
        figures["embedding_texts_per_s"] = rates[str(processes[0])]
        figures["embedding_texts_per_s_by_processes"] = rates
        embeddings = random_embeddings(data)

    params = TwoTowerParams(epochs=epochs, seed=1, patience=epochs + 1)
    by_workers = {}
    for n in workers:
        trained = train_model(data, embeddings, params, workers=n, ranking_stage=False)
        by_workers[str(n)] = {"examples_per_s": round(trained.examples_per_second),
                              "train_seconds": round(trained.train_seconds, 1),
                              "last_loss": round(trained.history[-1]["loss"], 4),
                              "val_ndcg@10": round(trained.history[-1]["val_ndcg@10"], 4),
                              "test_ndcg@10": round(trained.metrics["two_tower"]["ndcg@10"], 4)}
        if n == workers[0]:
            figures["train_examples_per_s"] = round(trained.examples_per_second)
            figures["train_seconds"] = round(trained.train_seconds, 1)
            figures["epochs"] = len(trained.history)
            figures["seconds_per_epoch"] = round(trained.train_seconds / max(1, len(trained.history)), 1)
    if len(workers) > 1:
        figures["training_by_workers"] = by_workers
    return figures


def _counts(text: str, option: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise SystemExit(f"{option} takes comma-separated counts, e.g. 1,2; got {text!r}") from None
    if not counts or min(counts) < 1:
        raise SystemExit(f"{option} counts must be 1 or more, got {text!r}")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", default="demo,100k")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--embed-sample", type=int, default=5000)
    parser.add_argument("--workers", default="1", help="Training processes to compare, e.g. 1,2 (train --workers).")
    parser.add_argument("--text-processes", default="1",
                        help="Encoder processes to compare at 100k, e.g. 1,2 (build_embeddings --processes).")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "pipeline.json"))
    args = parser.parse_args()
    workers = _counts(args.workers, "--workers")
    processes = _counts(args.text_processes, "--text-processes")
    work = Path(tempfile.mkdtemp(prefix="reco_pipeline_bench_"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "recoapi.settings")
    os.environ["DATABASE_URL"] = f"sqlite:///{work / 'db.sqlite3'}"
    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    rows = [measure(scale, work, args.epochs, args.embed_sample, workers, processes)
            for scale in args.scales.split(",")]
    out = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                       "python": platform.python_version()}, "database": "sqlite", "results": rows}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=2) + "\n")
    print(f"\n{'scale':<6}{'interactions':>13}{'import rows/s':>15}{'embed texts/s':>15}{'train ex/s':>12}"
          f"{'s/epoch':>9}")
    for r in rows:
        print(f"{r['scale']:<6}{r['n_interactions']:>13,}{r['import_rows_per_s']:>15,}{r['embedding_texts_per_s']:>15,}"
              f"{r['train_examples_per_s']:>12,}{r['seconds_per_epoch']:>9}")
        for n, row in r.get("training_by_workers", {}).items():
            print(f"  {r['scale']}: {n} training worker(s): {row['examples_per_s']:,} examples/s, last epoch loss "
                  f"{row['last_loss']}, validation NDCG@10 {row['val_ndcg@10']}, test NDCG@10 {row['test_ndcg@10']}")
        for n, rate in r.get("embedding_texts_per_s_by_processes", {}).items():
            print(f"  {r['scale']}: {n} encoder process(es): {rate:,} texts/s")
    print(f"\nwritten to {os.path.relpath(args.output, ROOT)}")


if __name__ == "__main__":
    main()
