"""The engine's speed, this checkout against another version of the code, on the serving benchmark's workspace.

Usage:
    .venv/bin/python benchmarks/engine_versions.py --against HEAD~3            # 4 rounds of each
    .venv/bin/python benchmarks/engine_versions.py --against v1.2 --rounds 6 --output benchmarks/results/x.json

``Recommender.recommend`` in process, as a web worker calls it (one BLAS thread, the bundle's approximate index,
200 products out of stock), for 700 of the workspace's shoppers with their histories as its database holds them
(real lengths, not a fixed five): each shopper alone, then the same shoppers 100 per call. The other version is
checked out (``git worktree``) into a temporary folder and both run over the same workspace (built first by
``benchmarks/serving.py``) in fresh processes, alternately (other, this; this, other; ...), so that a machine
whose speed drifts during the run favours neither. Reports the median of each round and whether both versions
answered every shopper with the same lists and scores (alone and 100 per call), whether the scores at least are the
same (then only products of equal scores changed places), and whether a shopper gets the same list alone as in a
batch, and for one shopper and for 100 the median of the rounds' paired ratios (this version's time over the
other's in the same turn) and in how many rounds this version was the faster. Writes
benchmarks/results/engine-versions.json.

A run of one version (``--measure ROOT OUT``) is what each process does; it is not meant to be called by hand.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
WORKSPACE = ROOT / "benchmarks" / ".work" / "serving"
SHOPPERS = 700
BATCH = 100


def measure(code: Path, out: Path, workspace: Path) -> None:
    """Time the engine of the code at ``code`` over ``workspace``; timings and answers pickled to ``out``."""
    sys.path.insert(0, str(code))
    from modeling import runtime as _runtime  # noqa: F401  (first: environment for TensorFlow)

    import numpy as np
    from threadpoolctl import threadpool_limits

    from modeling import artifacts
    from modeling.index import ANN_MIN_ITEMS
    from modeling.recommender import Recommender

    import faiss  # noqa: F401  (its OpenMP runtime loaded first, so that the limit below reaches it)

    threadpool_limits(1)
    version = (workspace / "models" / "ACTIVE").read_text().strip()
    recommender = Recommender(artifacts.load_bundle(workspace / "models" / version), ann_min_items=ANN_MIN_ITEMS)
    users, histories, allowed = shoppers(recommender, workspace)

    def alone() -> tuple[float, list]:
        times, answers = [], []
        for user in users:
            started = time.perf_counter()
            ranking = recommender.recommend([user], histories, 10, allowed)[user]
            times.append(time.perf_counter() - started)
            answers.append((ranking.items.tolist(), ranking.scores.tolist()))
        return float(np.median(times[50:]) * 1000), answers

    def batched() -> tuple[float, list]:
        times, answers = [], []
        for start in range(0, SHOPPERS, BATCH):
            group = users[start:start + BATCH]
            started = time.perf_counter()
            rankings = recommender.recommend(group, histories, 10, allowed)
            times.append(time.perf_counter() - started)
            answers += [(rankings[u].items.tolist(), rankings[u].scores.tolist()) for u in group]
        return float(np.median(times) * 1000), answers

    alone()  # warm up: the mapped pages, the index, the compiled ranker
    one_ms, one_answers = alone()
    hundred_ms, hundred_answers = batched()
    out.write_bytes(pickle.dumps({"one_ms": one_ms, "hundred_ms": hundred_ms, "alone": one_answers,
                                  "batched": hundred_answers,
                                  "mean_history": float(np.mean([len(h.item_ids) for h in histories.values()]))}))


def shoppers(recommender: Any, workspace: Path, count: int = SHOPPERS,
             seed: int = 1) -> tuple[list[str], dict[str, Any], np.ndarray]:
    """``count`` of the bundle's shoppers (seeded), their histories as the workspace's database holds them
    (``History`` of the code on the import path) and an (n,) mask of the products that may be recommended, 200
    random ones out of stock: ``(ids, histories by id, allowed)``."""
    import numpy as np

    from modeling.recommender import History

    rng = np.random.default_rng(seed)
    n = len(recommender.item_ids)
    allowed = np.ones(n, dtype=bool)
    allowed[rng.integers(0, n, 200)] = False
    users = [str(u) for u in recommender.user_ids[rng.integers(0, len(recommender.user_ids), count)]]
    with sqlite3.connect(workspace / "db.sqlite3") as connection:
        rows = connection.execute(
            "SELECT shopper_id, product_id, CAST(strftime('%s', occurred_at) AS INTEGER), weight "
            f"FROM catalog_interaction WHERE shopper_id IN ({','.join('?' * len(users))}) "
            "ORDER BY shopper_id, occurred_at", users).fetchall()
    raw: dict[str, list[tuple[str, int, float]]] = {}
    for shopper, product, seconds, weight in rows:
        raw.setdefault(shopper, []).append((product, seconds, weight))
    histories = {user: History(np.asarray([r[0] for r in events], dtype=object),
                               np.asarray([r[1] for r in events], dtype=np.int64),
                               np.asarray([r[2] for r in events], dtype=np.float64)) for user, events in raw.items()}
    return users, histories, allowed


def paired(other: list[float], this: list[float]) -> dict[str, Any]:
    """Round by round, this version's time over the other's (rounds run in turn, so each pair shared the machine's
    speed of that moment): ``{"median_ratio", "faster_rounds", "rounds"}``, where faster means a ratio below 1 (the
    ratio of the two versions' medians mixes rounds of different speeds on a machine whose speed drifts)."""
    if len(other) != len(this) or not other:
        raise ValueError(f"paired needs as many rounds of each version, at least one: {len(other)} and {len(this)}")
    ratios = [mine / theirs for theirs, mine in zip(other, this, strict=True)]
    return {"median_ratio": round(statistics.median(ratios), 3), "faster_rounds": sum(ratio < 1 for ratio in ratios),
            "rounds": len(ratios)}


def _run(code: Path, workspace: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="engine-versions-") as folder:
        out = Path(folder) / "run.pickle"
        subprocess.run([sys.executable, __file__, "--measure", str(code), str(out), "--workspace", str(workspace)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return pickle.loads(out.read_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", help="the other version: a commit, branch or tag of this repository")
    parser.add_argument("--rounds", type=int, default=4, help="runs of each version (default 4)")
    parser.add_argument("--workspace", default=str(WORKSPACE), help="built by benchmarks/serving.py")
    parser.add_argument("--output", default=str(RESULTS / "engine-versions.json"))
    parser.add_argument("--measure", nargs=2, metavar=("ROOT", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    workspace = Path(args.workspace)
    if args.measure:
        measure(Path(args.measure[0]), Path(args.measure[1]), workspace)
        return
    if not args.against:
        raise SystemExit("--against: which version to compare with (a commit, branch or tag)")
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    if not (workspace / "models" / "ACTIVE").is_file() or not (workspace / "db.sqlite3").is_file():
        raise SystemExit(f"no serving workspace at {workspace}: run .venv/bin/python benchmarks/serving.py first")
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", f"{args.against}^{{commit}}"],
                            capture_output=True, text=True)
    if commit.returncode != 0:
        raise SystemExit(f"--against {args.against!r} is not a commit of this repository")
    other = commit.stdout.strip()
    with tempfile.TemporaryDirectory(prefix="engine-versions-code-") as folder:
        checkout = Path(folder) / "code"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(checkout), other],
                       check=True)
        try:
            runs: dict[str, list[dict]] = {"other": [], "this": []}
            for turn in range(args.rounds):
                for name in (("other", "this") if turn % 2 == 0 else ("this", "other")):
                    runs[name].append(_run(checkout if name == "other" else ROOT, workspace))
                    print(f"round {turn + 1}, {name}: one shopper {runs[name][-1]['one_ms']:.3f} ms, "
                          f"{BATCH} shoppers {runs[name][-1]['hundred_ms']:.1f} ms", flush=True)
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(checkout)], check=False)
    first = {name: values[0] for name, values in runs.items()}
    report = {
        "against": args.against, "commit": other, "rounds": args.rounds, "shoppers": SHOPPERS,
        "mean_history_length": round(first["this"]["mean_history"], 2),
        "one_shopper_ms": {name: [round(r["one_ms"], 3) for r in values] for name, values in runs.items()},
        f"{BATCH}_shoppers_ms": {name: [round(r["hundred_ms"], 2) for r in values] for name, values in runs.items()},
        "paired": {"one_shopper": paired([r["one_ms"] for r in runs["other"]], [r["one_ms"] for r in runs["this"]]),
                   f"{BATCH}_shoppers": paired([r["hundred_ms"] for r in runs["other"]],
                                               [r["hundred_ms"] for r in runs["this"]])},
        "same_answers_alone": first["this"]["alone"] == first["other"]["alone"],
        "same_answers_batched": first["this"]["batched"] == first["other"]["batched"],
        # the same scores in the same places: where the lists differ, only products of equal scores moved
        "same_scores_alone": [a[1] for a in first["this"]["alone"]] == [a[1] for a in first["other"]["alone"]],
        "same_scores_batched": [a[1] for a in first["this"]["batched"]] == [a[1] for a in first["other"]["batched"]],
        "lists_alone_as_in_a_batch": {
            name: sum(a[0] == b[0] for a, b in zip(first[name]["alone"], first[name]["batched"], strict=True))
            for name in first},
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({key: value for key, value in report.items()}, indent=2))
    print(f"\nwritten to {os.path.relpath(output, ROOT)}")


if __name__ == "__main__":
    main()
