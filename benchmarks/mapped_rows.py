"""How much of a memory-mapped bundle array becomes resident when a few of its rows are read.

A web worker maps the bundle's arrays and reads a few hundred rows per request (the candidates' text
vectors, the history's). This script maps one array (``np.load(mmap_mode="r")``, as serving does) in a
fresh process per case, with each ``madvise`` advice in turn, reads ``--rows`` random rows (in groups of
235, about one request's candidates), and reports how many MiB of the mapping are then resident (from
``/proc/self/smaps``). Where the operating system maps a whole large folio of the page cache per fault
(recent Linux kernels on ext4 and XFS), a few rows make the whole file resident in the process, whatever
the advice. The last case first drops the file from the page cache (``POSIX_FADV_DONTNEED``, as after a
reboot), so the rows read are faulted in from the disk under ``MADV_RANDOM``.

    .venv/bin/python benchmarks/mapped_rows.py benchmarks/.work/serving/models/<version>/item_content.npy

Prints one line per advice and writes benchmarks/results/mapped-rows.json.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ADVICE = ("none", "MADV_RANDOM", "MADV_NOHUGEPAGE", "cold+MADV_RANDOM")
REQUEST_ROWS = 235


def resident_mib(path: Path) -> float:
    """MiB of this process's mappings of ``path`` that are resident."""
    target, current, total = str(path.resolve()), None, 0
    for line in Path("/proc/self/smaps").read_text().splitlines():
        parts = line.split()
        if parts and "-" in parts[0] and not parts[0].endswith(":"):
            current = parts[5] if len(parts) > 5 else None
        elif line.startswith("Rss:") and current == target:
            total += int(parts[1])
    return total / 1024


def one_case(path: Path, advice: str, rows: int) -> dict:
    """Map ``path``, advise, read ``rows`` random rows; what is resident (run in a fresh process)."""
    if advice.startswith("cold+"):  # the file's pages dropped from the page cache first (as after a reboot)
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)
    array = np.load(path, mmap_mode="r")
    if advice != "none":
        array._mmap.madvise(getattr(mmap, advice.removeprefix("cold+")))  # numpy keeps a memmap's mmap object here
    rng = np.random.default_rng(0)
    before = resident_mib(path)
    for _ in range(max(1, rows // REQUEST_ROWS)):
        np.asarray(array[np.sort(rng.integers(0, len(array), REQUEST_ROWS))], dtype=np.float32).sum()
    return {"advice": advice, "rows_read": max(1, rows // REQUEST_ROWS) * REQUEST_ROWS, "resident_before_mib": before,
            "resident_mib": round(resident_mib(path), 1), "file_mib": round(path.stat().st_size / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("array", type=Path, help="a .npy file of a bundle (e.g. item_content.npy)")
    parser.add_argument("--rows", type=int, default=REQUEST_ROWS, help="random rows read (in groups of 235)")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "mapped-rows.json")
    parser.add_argument("--case", choices=ADVICE, help=argparse.SUPPRESS)  # one case, in the child process
    args = parser.parse_args()
    if not args.array.is_file():
        raise SystemExit(f"{args.array}: no such file")
    if args.rows < 1:
        raise SystemExit("--rows: at least 1")
    if args.case:
        print(json.dumps(one_case(args.array, args.case, args.rows)))
        return
    if not Path("/proc/self/smaps").is_file():
        raise SystemExit("this script reads /proc/self/smaps (Linux)")
    cases = []
    for advice in ADVICE:
        result = subprocess.run([sys.executable, __file__, str(args.array), "--rows", str(args.rows),
                                 "--case", advice], capture_output=True, text=True, check=True)
        case = json.loads(result.stdout)
        cases.append(case)
        print(f"{advice:16s} {case['rows_read']:>7,} rows read: {case['resident_mib']:.1f} of "
              f"{case['file_mib']:.1f} MiB resident")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"file": args.array.name, "kernel": platform.release(), "cases": cases},
                                      indent=2) + "\n")
    print(f"\nwritten to {os.path.relpath(args.output, ROOT)}")


if __name__ == "__main__":
    main()
