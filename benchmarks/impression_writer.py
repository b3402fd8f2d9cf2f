"""What one write of the impression writer costs, its connection kept between writes against opened for each.

Usage:
    .venv/bin/python benchmarks/impression_writer.py --output benchmarks/results/impression_writer.json  # ~1 minute

Over a copy of the serving benchmark's database (``--workspace``, built by benchmarks/serving.py; copied with
SQLite's backup, so the workspace is left as it was), in one process, with another connection held open as a
worker's request threads hold theirs: records ``--batch`` lists like a 100-shopper answer's (random shoppers, ten
random products each) and writes them with :meth:`recoapi.recommendations.impressions.ImpressionBuffer.write_due`,
the writer thread's write, ``--writes`` times, either as it does (the connection kept) or closing the connection
after each write (what the writer did before), alternately (kept, opened, opened, kept, ...) ``--rounds`` rounds of
each, for each batch size. Prints and writes the median CPU time of a write (the thread's, ``time.thread_time``),
its wall time and the CPU time a list.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modeling import runtime as _runtime  # noqa: E402,F401  (first: the service's environment)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sqlite3  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
WORKSPACE = ROOT / "benchmarks" / ".work" / "serving"
MODES = ("kept", "opened")


def timed_writes(batch: int, writes: int, mode: str, rng: np.random.Generator) -> dict[str, float]:
    """``writes`` writes of ``batch`` lists each through the writer's :meth:`write_due` on the current Django
    database, the connection closed after each one when ``mode`` is "opened". Medians of a write: CPU and wall ms."""
    from django.db import connection
    from django.utils import timezone

    from recoapi.recommendations import impressions

    cpu, wall = [], []
    for _ in range(writes):
        now = timezone.now()
        impressions.buffer.record([
            impressions.Shown(impressions.new_list_id(), now, f"shopper-{rng.integers(0, 200_000)}", "two_tower",
                              "benchmark", [f"product-{p}" for p in rng.integers(0, 100_000, 10)])
            for _ in range(batch)])
        started_cpu, started = time.thread_time(), time.perf_counter()
        if impressions.buffer.write_due():
            raise RuntimeError("the database refused the lists (see the log)")
        if mode == "opened":
            connection.close()
        cpu.append(time.thread_time() - started_cpu)
        wall.append(time.perf_counter() - started)
    return {"cpu_ms": 1000 * statistics.median(cpu), "wall_ms": 1000 * statistics.median(wall)}


def compare(batches: tuple[int, ...], writes: int, rounds: int, seed: int = 0) -> dict[str, Any]:
    """Both modes in turn (kept first), ``rounds`` rounds of each per batch size, on the current Django database."""
    from recoapi.recommendations.models import RecommendationList

    rng = np.random.default_rng(seed)
    before = RecommendationList.objects.count()
    runs: list[dict[str, Any]] = []
    for batch in batches:
        for turn in range(2 * rounds):
            mode = MODES[0] if turn % 4 in (0, 3) else MODES[1]
            runs.append({"batch": batch, "mode": mode, **timed_writes(batch, writes, mode, rng)})
    summary = {}
    for batch in batches:
        for mode in MODES:
            cpu = [run["cpu_ms"] for run in runs if run["batch"] == batch and run["mode"] == mode]
            wall = [run["wall_ms"] for run in runs if run["batch"] == batch and run["mode"] == mode]
            summary[f"{batch} lists, connection {mode}"] = {
                "cpu_ms_a_write": cpu, "wall_ms_a_write": wall,
                "cpu_us_a_list": [round(1000 * value / batch, 1) for value in cpu]}
    return {"batches": list(batches), "writes_a_run": writes, "rounds": rounds, "runs": runs, "summary": summary,
            "lists_written": RecommendationList.objects.count() - before}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workspace", default=str(WORKSPACE), help="built by benchmarks/serving.py")
    parser.add_argument("--batch", type=int, nargs="+", default=[100, 500], help="lists a write (default 100 500)")
    parser.add_argument("--writes", type=int, default=20, help="writes a run (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each mode per batch size (default 3)")
    parser.add_argument("--output", default=str(RESULTS / "impression_writer.json"))
    args = parser.parse_args()
    if min(args.batch) < 1 or args.writes < 1 or args.rounds < 1:
        parser.error("--batch, --writes and --rounds take numbers of at least 1")
    source = Path(args.workspace) / "db.sqlite3"
    if not source.is_file():
        parser.error(f"no database at {source}: build the workspace first (.venv/bin/python benchmarks/serving.py)")
    with tempfile.TemporaryDirectory(prefix="impression-writer-") as folder:
        copy = Path(folder) / "db.sqlite3"
        with sqlite3.connect(source) as original, sqlite3.connect(copy) as target:
            original.backup(target)
        os.environ.update({"DJANGO_SETTINGS_MODULE": "recoapi.settings", "DATABASE_URL": f"sqlite:///{copy}",
                           "RECO_LOGS_DIR": folder, "RECO_IMPRESSIONS_WRITER": "manual"})
        import django

        django.setup()
        held = sqlite3.connect(copy)  # as a worker's request threads hold theirs: closing is not the last close
        held.execute("SELECT count(*) FROM django_migrations").fetchall()
        try:
            result = compare(tuple(args.batch), args.writes, args.rounds)
        finally:
            held.close()
    result["workspace"] = os.path.relpath(args.workspace, ROOT)
    for name, figures in result["summary"].items():
        print(f"{name}: CPU {', '.join(f'{v:.2f}' for v in figures['cpu_ms_a_write'])} ms a write "
              f"({', '.join(f'{v:.1f}' for v in figures['cpu_us_a_list'])} µs a list), wall "
              f"{', '.join(f'{v:.2f}' for v in figures['wall_ms_a_write'])} ms")
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwritten to {os.path.relpath(output, ROOT)}")


if __name__ == "__main__":
    main()
