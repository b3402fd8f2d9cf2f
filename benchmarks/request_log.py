"""What writing one request log line costs, line by line against in batches (recoapi.request_log).

Usage:
    .venv/bin/python benchmarks/request_log.py --output benchmarks/results/request_log.json   # about 10 seconds

Logs ``--lines`` lines like the service's request log (its format, a typical message) through
concurrent-log-handler's ``ConcurrentRotatingFileHandler`` (one write under the file lock per line) and through
``BatchedRotatingFileHandler`` (the service's: batches of 256 or a second), alternately (line by line, batched,
batched, line by line, ...) ``--rounds`` rounds of each, into files in a temporary folder, one process, and prints
each round's microseconds a line (closing the handler, which writes the last batch, included) and checks that both
wrote every line.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from concurrent_log_handler import ConcurrentRotatingFileHandler  # noqa: E402

from recoapi.request_log import BatchedRotatingFileHandler  # noqa: E402

FORMAT = "%(asctime)s [%(process)d] %(message)s"  # the service's "request" format, without the request id filter


def microseconds_a_line(handler: logging.Handler, lines: int) -> float:
    """Log ``lines`` request lines through ``handler``, close it; microseconds a line."""
    handler.setFormatter(logging.Formatter(FORMAT))
    log = logging.getLogger(f"benchmarks.request_log.{id(handler)}")
    log.propagate, log.level = False, logging.INFO
    log.addHandler(handler)
    started = time.perf_counter()
    for n in range(lines):
        log.info("%s %s %d %.1fms %s", "GET", f"/recommendations?users=shopper-{n}", 200, 2.5,
                 "users=1 strategies=two_tower:1 model=20261207T000000Z")
    handler.close()
    seconds = time.perf_counter() - started
    log.removeHandler(handler)
    return 1e6 * seconds / lines


def compare(folder: Path, lines: int, rounds: int) -> dict:
    """Both handlers in turn (line by line first), ``rounds`` rounds of each, each round into its own file."""
    made = {"line_by_line": lambda path: ConcurrentRotatingFileHandler(str(path), maxBytes=0, backupCount=1),
            "batched": lambda path: BatchedRotatingFileHandler(str(path), maxBytes=0, backupCount=1)}
    timed: dict[str, list[float]] = {name: [] for name in made}
    written: dict[str, list[int]] = {name: [] for name in made}
    for turn in range(2 * rounds):
        name = "line_by_line" if turn % 4 in (0, 3) else "batched"
        path = folder / f"{name}-{turn}.log"
        timed[name].append(microseconds_a_line(made[name](path), lines))
        written[name].append(len(path.read_text().splitlines()))
    return {"lines": lines, "rounds": rounds, "microseconds_a_line": timed, "lines_written": written}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default=None, help="JSON file for the results")
    args = parser.parse_args()
    if args.lines < 1 or args.rounds < 1:
        parser.error("--lines and --rounds must be at least 1")
    with tempfile.TemporaryDirectory() as folder:
        result = compare(Path(folder), args.lines, args.rounds)
    for name, values in result["microseconds_a_line"].items():
        print(f"{name:<13} " + ", ".join(f"{value:.1f}" for value in values) + " µs a line; lines written "
              + ", ".join(str(count) for count in result["lines_written"][name]))
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
        print(f"written to {args.output}")


if __name__ == "__main__":
    main()
