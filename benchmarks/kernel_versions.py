"""The ranking stage's native code, this checkout's against another version's, on the same inputs in one process.

Usage:
    .venv/bin/python benchmarks/kernel_versions.py --against HEAD~1                 # 20 rounds
    .venv/bin/python benchmarks/kernel_versions.py --against v1.2 --rounds 40 --output benchmarks/results/x.json

What :mod:`benchmarks.engine_versions` measures for the whole engine, for ``modeling/stage_kernel.c`` alone, where
a change is a few percent of a request and the machine's drift between processes is larger than that. The
serving benchmark's workspace (built first by ``benchmarks/serving.py``) is served as a web worker serves it (one
BLAS thread, the bundle's approximate index, 200 products out of stock) for 700 of its shoppers, 100 per call and
then 300 of them alone, and the inputs of every call of the stage's native code are kept (the stage hands it a
batch's shoppers :data:`modeling.reranker.RANK_CHUNK` at a time: 50 per call for 100). The other version's
``stage_kernel.c`` (``git show``) is compiled beside this one's (each library under its own digest, as
``modeling.native`` names them) and both are called on those same inputs in turn within one process, round after
round (other, this; this, other; ...). Reports, for the batched and the single calls, how many shoppers a call
holds, each version's median time per call, the median of the rounds' paired ratios (this version's over the
other's) and in how many rounds this one was the faster, and whether both gave the same candidates and features,
bit for bit. Writes
benchmarks/results/kernel-versions.json.

The other version's C function must take the arguments this checkout's ``modeling.native`` passes (the same
signature); a version whose signature differs cannot be compared this way.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from modeling import runtime as _runtime  # noqa: E402,F401  (first: environment for TensorFlow)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

from engine_versions import SHOPPERS, WORKSPACE, paired, shoppers  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
BATCH = 100
ALONE = 300
KERNEL = "modeling/stage_kernel.c"


def other_source(against: str, folder: Path) -> Path:
    """The other version's ``stage_kernel.c``, written into ``folder``; SystemExit when ``against`` is no commit of
    this repository or holds no such file."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", f"{against}^{{commit}}"],
                            capture_output=True, text=True)
    if commit.returncode != 0:
        raise SystemExit(f"--against {against!r} is not a commit of this repository")
    shown = subprocess.run(["git", "-C", str(ROOT), "show", f"{commit.stdout.strip()}:{KERNEL}"], capture_output=True)
    if shown.returncode != 0:
        raise SystemExit(f"--against {against!r} has no {KERNEL}")
    path = folder / "stage_kernel.c"
    path.write_bytes(shown.stdout)
    return path


def kernels(source: Path) -> tuple[Any, Any]:
    """``(other, this)``: the C functions compiled from ``source`` and from this checkout's file, each with the
    argument types :func:`modeling.native.stage_function` gives it."""
    from modeling import native

    this = native.stage_function()
    saved = native.SOURCE
    try:
        native.SOURCE = source
        native.forget()
        other = native.stage_function()
    finally:
        native.SOURCE = saved
        native.forget()
    if this is None or other is None:
        raise SystemExit("the stage's native code could not be compiled or loaded here (see the log above)")
    return other, this


def captured_calls(workspace: Path) -> tuple[list[tuple[Any, Any]], list[tuple[Any, Any]]]:
    """The native code's inputs ``(proposals, wanted)`` of every call made while 700 shoppers are served 100 per
    call, then 300 of them alone: ``(batched calls, single calls)``."""
    from threadpoolctl import threadpool_limits

    from modeling import artifacts, reranker
    from modeling.index import ANN_MIN_ITEMS
    from modeling.recommender import Recommender

    import faiss  # noqa: F401  (its OpenMP runtime loaded first, so that the limit below reaches it)

    threadpool_limits(1)
    version = (workspace / "models" / "ACTIVE").read_text().strip()
    recommender = Recommender(artifacts.load_bundle(workspace / "models" / version), ann_min_items=ANN_MIN_ITEMS)
    users, histories, allowed = shoppers(recommender, workspace)
    calls: list[tuple[Any, Any]] = []
    original = reranker.native_candidates

    def keep(function: Any, proposals: Any, wanted: Callable[..., bool]) -> Any:
        calls.append((proposals, wanted))
        return original(function, proposals, wanted)

    reranker.native_candidates = keep
    try:
        for start in range(0, SHOPPERS, BATCH):
            recommender.recommend(users[start:start + BATCH], histories, 10, allowed)
        batched = list(calls)
        calls.clear()
        for user in users[:ALONE]:
            recommender.recommend([user], histories, 10, allowed)
    finally:
        reranker.native_candidates = original
    return batched, list(calls)


def timed(function: Any, calls: list[tuple[Any, Any]]) -> tuple[float, list[Any]]:
    """Seconds to run ``function`` on every call's inputs, and its outputs."""
    from modeling.reranker import native_candidates

    started = time.perf_counter()
    outputs = [native_candidates(function, proposals, wanted) for proposals, wanted in calls]
    return time.perf_counter() - started, outputs


def same(first: list[Any], second: list[Any]) -> bool:
    """Whether two runs' outputs (rows, items, features per call) are equal, NaN equal to NaN."""
    import numpy as np

    return len(first) == len(second) and all(
        a is not None and b is not None and all(np.array_equal(x, y, equal_nan=True) for x, y in zip(a, b, strict=True))
        for a, b in zip(first, second, strict=True))


def compare(other: Any, this: Any, calls: list[tuple[Any, Any]], rounds: int) -> dict[str, Any]:
    """Both functions on ``calls`` in turn for ``rounds`` rounds: ms per call, paired ratios, same outputs."""
    times: dict[str, list[float]] = {"other": [], "this": []}
    outputs: dict[str, list[Any]] = {}
    for turn in range(rounds):
        for name in (("other", "this") if turn % 2 == 0 else ("this", "other")):
            seconds, result = timed(other if name == "other" else this, calls)
            times[name].append(seconds / len(calls) * 1000)
            outputs.setdefault(name, result)
    return {"calls": len(calls), "shoppers_per_call": max((len(p.histories) for p, _ in calls), default=0),
            "ms_per_call": {name: round(statistics.median(values), 4) for name, values in times.items()},
            "rounds_ms": {name: [round(v, 4) for v in values] for name, values in times.items()},
            "paired": paired(times["other"], times["this"]),
            "same_outputs": same(outputs["other"], outputs["this"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", required=True,
                        help="the other version: a commit, branch or tag of this repository")
    parser.add_argument("--rounds", type=int, default=20, help="rounds of each version (default 20)")
    parser.add_argument("--workspace", default=str(WORKSPACE), help="built by benchmarks/serving.py")
    parser.add_argument("--output", default=str(RESULTS / "kernel-versions.json"))
    args = parser.parse_args()
    workspace = Path(args.workspace)
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    if not (workspace / "models" / "ACTIVE").is_file() or not (workspace / "db.sqlite3").is_file():
        raise SystemExit(f"no serving workspace at {workspace}: run .venv/bin/python benchmarks/serving.py first")
    with tempfile.TemporaryDirectory(prefix="kernel-versions-") as folder:
        other, this = kernels(other_source(args.against, Path(folder)))
        batched, single = captured_calls(workspace)
        report = {"against": args.against, "rounds": args.rounds,
                  "batched": compare(other, this, batched, args.rounds),
                  "one_shopper": compare(other, this, single, args.rounds)}
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    for name in ("batched", "one_shopper"):
        part = report[name]
        print(f"{name}: {part['calls']} calls of up to {part['shoppers_per_call']} shoppers, other "
              f"{part['ms_per_call']['other']:.3f} ms a call, this {part['ms_per_call']['this']:.3f} ms; "
              f"paired ratio {part['paired']['median_ratio']}, faster in {part['paired']['faster_rounds']} of "
              f"{part['paired']['rounds']} rounds; same outputs: {part['same_outputs']}")
    print(f"\nwritten to {os.path.relpath(output, ROOT)}")


if __name__ == "__main__":
    main()
