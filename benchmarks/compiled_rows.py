"""The compiled ranker's two ways to score rows, on the rows real requests score: its own entry point against
tl2cgen's predictor.

Usage:
    .venv/bin/python benchmarks/compiled_rows.py                 # 5 rounds
    .venv/bin/python benchmarks/compiled_rows.py --rounds 9 --output benchmarks/results/x.json

On the workspace ``benchmarks/serving.py`` builds (run it first; a workspace built before the entry point existed
has its ranker compiled again here, in place), ``Recommender.recommend`` answers 50 of its shoppers one at a time
and 100 in one call while the feature rows its ranker scores are kept. Those rows are then scored by the library's
``recoapi_predict_rows`` (one ctypes call per matrix, what a worker does from this version) and by tl2cgen's
predictor (a matrix object and a call through its runtime, what it did before), alternately, ROUNDS rounds of
each: per round, the fastest of 20 passes over the 50 shoppers' rows (µs per shopper) and of 10 over the batch's
(ms). Checks that both give the same scores on every row. One BLAS thread, as in a web worker. Writes
benchmarks/results/compiled-rows.json.
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
import time  # noqa: E402

import numpy as np  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
WORKSPACE = ROOT / "benchmarks" / ".work" / "serving"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each (default 5)")
    parser.add_argument("--workspace", default=str(WORKSPACE), help="built by benchmarks/serving.py")
    parser.add_argument("--output", default=str(RESULTS / "compiled-rows.json"))
    args = parser.parse_args()
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    workspace = Path(args.workspace)
    if not (workspace / "models" / "ACTIVE").is_file():
        raise SystemExit(f"no serving workspace at {workspace}: run .venv/bin/python benchmarks/serving.py first")
    from threadpoolctl import threadpool_limits

    from modeling import artifacts
    from modeling.compiled_ranker import compile_booster
    from modeling.index import ANN_MIN_ITEMS
    from modeling.recommender import History, Recommender
    from modeling.reranker import Ranker

    import faiss  # noqa: F401  (its OpenMP runtime loaded first, so that the limit below reaches it)

    threadpool_limits(1)
    bundle_dir = workspace / "models" / (workspace / "models" / "ACTIVE").read_text().strip()
    recommender = Recommender(artifacts.load_bundle(bundle_dir), ann_min_items=ANN_MIN_ITEMS)
    ranker = recommender.stage.ranker
    if ranker.compiled is None:
        raise SystemExit("the workspace's ranking stage has no compiled ranker")
    if ranker.compiled._rows is None:  # published before the entry point: compile it again, then load again
        stage = bundle_dir / "ranking_stage"
        text = (stage / "ranker.txt").read_text(encoding="utf-8")
        ranker.compiled = None
        print("compiled again:", compile_booster(ranker.booster, text, stage / "ranker.so"))
        recommender = Recommender(artifacts.load_bundle(bundle_dir), ann_min_items=ANN_MIN_ITEMS)
        ranker = recommender.stage.ranker
    compiled = ranker.compiled
    rng = np.random.default_rng(1)
    users = [str(u) for u in recommender.user_ids[rng.integers(0, len(recommender.user_ids), 150)]]
    items = recommender.item_ids
    histories = {u: History(np.asarray(items[rng.integers(0, len(items), 5)], dtype=object),
                            np.arange(5, dtype=np.int64) + 1_700_000_000, np.ones(5)) for u in users}
    kept: list[np.ndarray] = []
    score = Ranker.score

    def keeping(self: Ranker, features: np.ndarray) -> np.ndarray:
        kept.append(np.array(features))
        return score(self, features)

    Ranker.score = keeping
    try:
        for user in users[:50]:
            recommender.recommend([user], histories, 10)
        recommender.recommend(users[50:], histories, 10)
    finally:
        Ranker.score = score
    one, batch = kept[:50], np.concatenate(kept[50:])
    rows_function = compiled._rows

    def with_(entry: object) -> tuple[float, float]:
        compiled._rows = entry
        passes = []
        for _ in range(20):
            started = time.perf_counter()
            for rows in one:
                compiled.predict(rows)
            passes.append((time.perf_counter() - started) / len(one) * 1e6)
        whole = []
        for _ in range(10):
            started = time.perf_counter()
            compiled.predict(batch)
            whole.append((time.perf_counter() - started) * 1e3)
        return min(passes), min(whole)

    same = True
    for rows in [*one, batch]:
        compiled._rows = rows_function
        first = compiled.predict(rows)
        compiled._rows = None
        same &= bool(np.array_equal(first, compiled.predict(rows)))
    runs: dict[str, list[tuple[float, float]]] = {"rows_function": [], "tl2cgen": []}
    for turn in range(args.rounds):
        for name in (("tl2cgen", "rows_function") if turn % 2 == 0 else ("rows_function", "tl2cgen")):
            runs[name].append(with_(rows_function if name == "rows_function" else None))
        print(f"round {turn + 1}: " + ", ".join(f"{name} {values[-1][0]:.1f} µs per shopper, {values[-1][1]:.2f} ms "
                                                f"per batch" for name, values in runs.items()), flush=True)
    compiled._rows = rows_function
    report = {"rounds": args.rounds, "rows_per_shopper": round(float(np.mean([len(r) for r in one])), 1),
              "rows_per_batch": len(batch), "same_scores": same,
              "us_per_shopper": {name: [round(v[0], 1) for v in values] for name, values in runs.items()},
              "ms_per_batch": {name: [round(v[1], 2) for v in values] for name, values in runs.items()}}
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"\nwritten to {os.path.relpath(output, ROOT)}")


if __name__ == "__main__":
    main()
