"""Quality of the two-tower fitted on one process against several worker processes (train --workers).

Usage:
    .venv/bin/python benchmarks/distributed_training.py                  # seeds 1-4, 1 and 2 workers
    .venv/bin/python benchmarks/distributed_training.py --seeds 1,2 --workers 1,2

A demo shop of 800 shoppers, 250 products and 12,000 reviews (real MiniLM embeddings) is trained
with each seed on each worker count (6 epochs at most, early stopping on the validation items),
and the two-tower's test HR@10 / NDCG@10 (leave-last-out) are compared seed by seed. Speed is
measured at 100,000 products by benchmarks/pipeline.py --workers 1,2.

Prints a table and writes benchmarks/results/distributed_training.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modeling import runtime as _runtime  # noqa: F401  (first: environment for TensorFlow)

import argparse
import json
import os
import platform
import statistics
import tempfile
import time


def _counts(text: str, option: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise SystemExit(f"{option} takes comma-separated numbers, e.g. 1,2; got {text!r}") from None
    if not counts or min(counts) < 1:
        raise SystemExit(f"{option} numbers must be 1 or more, got {text!r}")
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="1,2,3,4")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "distributed_training.json"))
    args = parser.parse_args()
    seeds, workers = _counts(args.seeds, "--seeds"), _counts(args.workers, "--workers")

    from modeling.embeddings import build_embeddings, load_embeddings
    from modeling.sources import load_source
    from modeling.synthetic import DemoParams, generate_demo_data
    from modeling.train import train_model
    from modeling.two_tower import TwoTowerParams

    work = Path(tempfile.mkdtemp(prefix="reco_distributed_bench_"))
    generate_demo_data(work / "raw", DemoParams(n_users=800, n_items=250, n_interactions=12_000, seed=11),
                       progress=False)
    data = load_source("amazon2018", work / "raw")
    build_embeddings(data, work / "embeddings", progress=False)
    embeddings = load_embeddings(work / "embeddings")

    runs = []
    for seed in seeds:
        for n in workers:
            started = time.perf_counter()
            result = train_model(data, embeddings, TwoTowerParams(epochs=args.epochs, seed=seed), workers=n,
                                 ranking_stage=False)
            runs.append({"seed": seed, "workers": n, "seconds": round(time.perf_counter() - started, 1),
                         "best_epoch": result.best_epoch, "epochs": len(result.history),
                         "hr@10": round(result.metrics["two_tower"]["hr@10"], 4),
                         "ndcg@10": round(result.metrics["two_tower"]["ndcg@10"], 4)})
            print(json.dumps(runs[-1]), flush=True)

    summary = {}
    for n in workers:
        mine = [run for run in runs if run["workers"] == n]
        summary[str(n)] = {metric: {"mean": round(statistics.mean(r[metric] for r in mine), 4),
                                    "sd": round(statistics.stdev(r[metric] for r in mine), 4) if len(mine) > 1 else 0.0}
                           for metric in ("hr@10", "ndcg@10")}
    base = workers[0]
    differences = {str(n): [round(next(r["ndcg@10"] for r in runs if r["workers"] == n and r["seed"] == seed)
                                  - next(r["ndcg@10"] for r in runs if r["workers"] == base and r["seed"] == seed), 4)
                            for seed in seeds] for n in workers[1:]}
    out = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                       "python": platform.python_version()},
           "shop": {"users": 800, "items": 250, "reviews": 12_000}, "runs": runs, "summary": summary,
           f"ndcg@10_minus_{base}_worker_by_seed": differences}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=2) + "\n")
    print(f"\n{'workers':<8}{'HR@10':>16}{'NDCG@10':>16}")
    for n, row in summary.items():
        print(f"{n:<8}{row['hr@10']['mean']:>9.4f} ±{row['hr@10']['sd']:.4f}{row['ndcg@10']['mean']:>9.4f} "
              f"±{row['ndcg@10']['sd']:.4f}")
    for n, values in differences.items():
        print(f"NDCG@10 with {n} workers minus {base}, seed by seed: {values}")
    print(f"\nwritten to {os.path.relpath(args.output, ROOT)}")


if __name__ == "__main__":
    main()
