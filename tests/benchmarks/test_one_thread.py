"""The in-process benchmarks measure with one BLAS and one OpenMP thread, FAISS's included, as a web worker runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]



@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: every library runs one thread anyway")
def test_faiss_searches_with_one_thread_inside_the_block() -> None:
    # A fresh process without the thread variables a worker gets: FAISS's OpenMP runtime is loaded only when faiss
    # is imported, which threadpoolctl alone (entered before) did not reach.
    threads = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    env = {k: v for k, v in os.environ.items() if k not in threads}
    code = ("import sys; sys.path.insert(0, 'benchmarks')\n"
            "from benchmarks import serving\n"
            "with serving.one_thread():\n"
            "    import faiss\n"
            "    inside = faiss.omp_get_max_threads()\n"
            "print(inside, faiss.omp_get_max_threads())\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    inside, after = (int(v) for v in done.stdout.split()[-2:])
    assert inside == 1
    assert after > 1  # the limit is the block's only
