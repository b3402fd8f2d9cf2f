"""Evaluation at mid-size shop scale: wall time and peak memory of each protocol of `manage.py evaluate`.

Usage:
    .venv/bin/python benchmarks/evaluation_scale.py               # 1,000,000 interactions, 50,000 products
    .venv/bin/python benchmarks/evaluation_scale.py --small       # 50,000 interactions, 5,000 products
    .venv/bin/python benchmarks/evaluation_scale.py --epochs 2 --ease-l2 500   # shorter (see below)

The data comes from the demo generator (modeling/synthetic.py, as benchmarks/pipeline.py builds its 100k
scale), written to a temporary directory and read back with the amazon2018 loader, the way
`manage.py evaluate --source amazon2018` reads it (no database). Default size: 1,000,000 interactions,
50,000 products and 66,000 shoppers (issue 13: EASE's dense item x item inverse of every product would
need 20 GB at 50,000 products; above ``EASE_MAX_ITEMS`` it is fitted on the most interacted products).

The text embeddings are random unit vectors of the right shape, as in pipeline.py: encoding 50,000
product texts and 1,000,000 reviews with MiniLM takes hours on 2 cores (see pipeline.json's texts/s),
and the evaluation's cost does not depend on what the vectors hold.

Then the three protocols run exactly as `manage.py evaluate` runs them (default two-tower parameters,
default EASE λ grid): compare_leave_last_out, cold_users (with the baselines' parameters chosen on the
validation items) and cold_items, each timed (wall seconds) with the process's peak resident memory
after it (getrusage ru_maxrss). Each progress message is printed with the elapsed time and the peak so
far; the fits of EASE, item-kNN, implicit ALS and the two-tower are timed on the side (wrappers, no
change to what runs). ``--epochs`` and ``--ease-l2`` shorten a run (fewer two-tower epochs, fewer EASE
fits); the JSON records what was used.

Prints a table and writes benchmarks/results/evaluation_scale.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modeling import runtime as _runtime  # noqa: E402,F401  (first: environment for TensorFlow)

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from typing import Any  # noqa: E402


FULL = {"n_users": 66_000, "n_items": 50_000, "n_interactions": 1_000_000}
SMALL = {"n_users": 3_300, "n_items": 5_000, "n_interactions": 50_000}

_STARTED = time.perf_counter()


def peak_gb() -> float:
    """Peak resident memory of this process so far, GB (ru_maxrss is in KB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def current_gb() -> float:
    """Resident memory now, GB (from /proc; 0 where there is none)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return 0.0


def stamp() -> str:
    return f"[{time.perf_counter() - _STARTED:7.0f} s, rss {current_gb():5.1f} GB, peak {peak_gb():5.1f} GB]"


def _instrument(fits: dict[str, dict[str, Any]]) -> None:
    """Time every fit of the expensive models (wrappers around the methods; what runs is unchanged)."""
    from modeling import baselines, train

    def timed(name: str, function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            result = function(*args, **kwargs)
            seconds = time.perf_counter() - started
            entry = fits.setdefault(name, {"calls": 0, "seconds": []})
            entry["calls"] += 1
            entry["seconds"].append(round(seconds, 1))
            extra = ""
            if name == "ease.fit":
                fitted = len(args[0].subset) if args[0].subset is not None else args[0].n_items
                extra = f" (λ={args[0].l2:g}, {fitted:,} of {args[0].n_items:,} products)"
            if name == "train_model":
                extra = (f" ({len(result.history)} epochs, best {result.best_epoch}, "
                         f"{result.train_seconds:.0f} s training)")
                entry.setdefault("epochs", []).append(len(result.history))
            print(f"{stamp()}     {name}: {seconds:.1f} s{extra}", flush=True)
            return result
        return wrapper

    baselines.EASE.fit = timed("ease.fit", baselines.EASE.fit)
    baselines.ItemKNN.fit = timed("item_knn.fit", baselines.ItemKNN.fit)
    baselines.ImplicitALS.fit = timed("ials.fit", baselines.ImplicitALS.fit)
    train.train_model = timed("train_model", train.train_model)


def run(sizes: dict[str, int], work: Path, epochs: int | None, ease_l2: list[float] | None,
        seed: int) -> dict[str, Any]:
    from modeling.baselines import EASE_MAX_ITEMS
    from modeling.cold_start import cold_items, cold_users
    from modeling.evaluate import EASE_L2_GRID, compare_leave_last_out
    from modeling.sources import load_source
    from modeling.synthetic import DemoParams, generate_demo_data
    from pipeline import random_embeddings  # benchmarks/pipeline.py, beside this script
    from modeling.two_tower import TwoTowerParams

    stages: dict[str, dict[str, float]] = {}
    messages: list[dict[str, Any]] = []
    fits: dict[str, dict[str, Any]] = {}
    _instrument(fits)

    def say(message: str) -> None:
        print(f"{stamp()}   {message}", flush=True)
        messages.append({"at_s": round(time.perf_counter() - _STARTED, 1), "peak_gb": round(peak_gb(), 2),
                         "message": message})

    def stage(name: str, function):
        print(f"{stamp()} {name} ...", flush=True)
        started = time.perf_counter()
        result = function()
        stages[name] = {"seconds": round(time.perf_counter() - started, 1), "peak_gb": round(peak_gb(), 2)}
        print(f"{stamp()} {name}: {stages[name]['seconds']} s", flush=True)
        return result

    stage("generate", lambda: generate_demo_data(work / "raw", DemoParams(**sizes, seed=seed), progress=False))
    data = stage("load", lambda: load_source("amazon2018", work / "raw"))
    embeddings = stage("embeddings", lambda: random_embeddings(data))
    params = TwoTowerParams()
    if epochs is not None:
        params = replace(params, epochs=epochs)
    grid = list(ease_l2) if ease_l2 else list(EASE_L2_GRID)

    result = stage("leave_last_out", lambda: compare_leave_last_out(data, embeddings, params, ease_l2_grid=grid,
                                                                   on_progress=say))
    chosen_l2 = result.get("ease_l2") or grid[0]
    users = stage("cold_users", lambda: cold_users(data, embeddings, params, seed=params.seed, ease_l2=chosen_l2,
                                                   baselines=result.get("baselines"), on_progress=say))
    items = stage("cold_items", lambda: cold_items(data, embeddings, params, seed=params.seed, on_progress=say))

    ease = result["baselines"]["ease"]
    return {
        "sizes": {"requested": sizes, "loaded": data.counts()},
        "params": {"two_tower": params.to_dict(), "ease_l2_grid": grid, "ease_max_items": EASE_MAX_ITEMS},
        "stages": stages,
        "total_seconds": round(sum(s["seconds"] for s in stages.values()), 1),
        "peak_gb": round(peak_gb(), 2),
        "ease": {"limited": "fitted_items" in ease, "fitted_items": ease.get("fitted_items", len(data.items)),
                 "l2": ease["params"]["l2"]},
        "fits": fits,
        "leave_last_out": {name: {"hr@10": m["hr@10"], "ndcg@10": m["ndcg@10"]}
                           for name, m in result["models"].items()},
        "two_tower": result["two_tower"] | {"history": None},
        "cold_users": {key: value for key, value in users.items() if key != "differences"},
        "cold_items": {key: value for key, value in items.items() if key != "differences"},
        "messages": messages,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="50,000 interactions, 5,000 products (a quick check).")
    parser.add_argument("--interactions", type=int, help=f"default {FULL['n_interactions']:,}")
    parser.add_argument("--items", type=int, help=f"default {FULL['n_items']:,}")
    parser.add_argument("--users", type=int, help=f"default {FULL['n_users']:,}")
    parser.add_argument("--epochs", type=int, help="Two-tower max epochs (default: TwoTowerParams' default).")
    parser.add_argument("--ease-l2", type=float, nargs="+", help="EASE λ grid (default: evaluate's EASE_L2_GRID).")
    parser.add_argument("--seed", type=int, default=42, help="Seed of the generator.")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "evaluation_scale.json"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("modeling.baselines").setLevel(logging.INFO)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)

    sizes = dict(SMALL if args.small else FULL)
    for key, value in (("n_interactions", args.interactions), ("n_items", args.items), ("n_users", args.users)):
        if value is not None:
            sizes[key] = value
    work = Path(tempfile.mkdtemp(prefix="reco_evaluation_scale_"))
    try:
        figures = run(sizes, work, args.epochs, args.ease_l2, args.seed)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    out = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                       "processor": platform.processor() or platform.machine(),
                       "python": platform.python_version()}, **figures}

    target = Path(args.output)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(out, handle, indent=2)
        handle.write("\n")
    os.replace(tmp, target)

    loaded = figures["sizes"]["loaded"]
    print(f"\n{loaded['interactions']:,} interactions, {loaded['items']:,} products, {loaded['users']:,} shoppers "
          f"on {out['machine']['cpus']} CPUs")
    print(f"{'stage':<16}{'seconds':>10}{'peak GB':>10}")
    for name, values in figures["stages"].items():
        print(f"{name:<16}{values['seconds']:>10.1f}{values['peak_gb']:>10.2f}")
    print(f"{'total':<16}{figures['total_seconds']:>10.1f}{figures['peak_gb']:>10.2f}")
    ease = figures["ease"]
    fitted = f"the {ease['fitted_items']:,} most interacted products" if ease["limited"] else "every product"
    print(f"EASE: fitted on {fitted}, λ={ease['l2']:g}")
    print(f"\n{'leave-last-out':<18}{'HR@10':>9}{'NDCG@10':>9}")
    for name, values in figures["leave_last_out"].items():
        print(f"{name:<18}{values['hr@10']:>9.4f}{values['ndcg@10']:>9.4f}")
    print(f"\nwritten to {os.path.relpath(target, ROOT)}")


if __name__ == "__main__":
    main()
