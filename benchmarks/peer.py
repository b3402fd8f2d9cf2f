"""Side by side: the service against the minimal peer a shop would hand-roll (Flask + implicit ALS).

Usage:
    .venv/bin/python benchmarks/peer.py                  # the demo shop (make demo's data, a trained model)
    .venv/bin/python benchmarks/peer.py --shop 100k      # the serving benchmark's 100,000-product workspace

Needs `wrk` (Debian/Ubuntu: `apt install wrk`). What it does, in one run:

1. A workspace: for ``demo``, the demo generator's default shop imported with `manage.py load_data`, its
   MiniLM embeddings and a model trained with `manage.py train --activate` (default parameters and search
   budget), as `make demo` builds it; for ``100k``, the workspace of benchmarks/serving.py (built by it when
   missing). Both are reused while unchanged.
2. The peer's model: implicit's AlternatingLeastSquares (64 factors, 15 iterations) fitted on the same
   interactions (the import's snapshot); benchmarks/peer_app.py serves it from memory with Flask.
3. Both services under gunicorn with the same settings (2 workers x 2 threads, one BLAS thread each) on
   loopback, started together; the service's throttling stays on, at a rate the load never reaches (its
   cost is part of every request, as in production). wrk (a separate process) asks both for the top 10 of
   one known shopper per request, the same 1,000 shoppers in the same order, at 2 and 8 connections;
   the two services take turns, ``--rounds`` times, and the median round is reported.
4. Each worker's resident and proportional memory after the load.

Prints a table and writes benchmarks/results/peer-<shop>.json.
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
import platform  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

import numpy as np  # noqa: E402
from serving import _env, build_workspace, run_wrk, service_memory  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
CONNECTIONS = (2, 8)


def _manage(work: Path, *args: str) -> None:
    subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], env=_env(work), cwd=ROOT, check=True)


def demo_workspace(work: Path) -> dict:
    """make demo's shop in ``work``: data, import, embeddings and a model trained with the defaults."""
    stamp = work / "workspace.json"
    if stamp.is_file():
        _manage(work, "migrate", "-v0")  # a workspace built by an earlier version: its database up to date
        return json.loads(stamp.read_text())
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    timings = {}
    for step in (["migrate", "-v0"], ["generate_demo_data"], ["load_data"], ["build_embeddings"],
                 ["train", "--activate"]):
        started = time.perf_counter()
        _manage(work, *step)
        timings[step[0] + "_s"] = time.perf_counter() - started
    from modeling import artifacts

    info = {"version": artifacts.read_active(work / "models"), "timings": timings}
    stamp.write_text(json.dumps(info))
    return info


def fit_peer(work: Path, version: str) -> dict:
    """implicit ALS on the snapshot's interactions, saved for benchmarks/peer_app.py (reused per model)."""
    import scipy.sparse as sp
    from implicit.cpu.als import AlternatingLeastSquares

    from modeling import datasets as ds

    folder = work / "peer"
    stamp = folder / "fitted.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("version") == version:
        return json.loads(stamp.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    data = ds.read_snapshot(work / "processed")
    users, user_ids = data.interactions[ds.USER_ID].astype(str).factorize()
    items = data.items[ds.ITEM_ID].astype(str).reset_index(drop=True)
    item_index = {item: n for n, item in enumerate(items)}
    columns = data.interactions[ds.ITEM_ID].astype(str).map(item_index).to_numpy()
    seen = sp.csr_matrix((data.interactions[ds.WEIGHT].to_numpy(np.float32), (users, columns)),
                         shape=(len(user_ids), len(items)))
    seen.sum_duplicates()
    started = time.perf_counter()
    from threadpoolctl import threadpool_limits

    model = AlternatingLeastSquares(factors=64, iterations=15, regularization=0.05, random_state=0)
    with threadpool_limits(1, "blas"):  # implicit runs its own threads
        model.fit(seen, show_progress=False)
    fit_s = time.perf_counter() - started
    model.save(str(folder / "als.npz"))
    popular = np.argsort(-np.bincount(columns, minlength=len(items)))[:100]
    np.savez(folder / "data.npz", item_ids=items.to_numpy(dtype=str), user_ids=np.asarray(user_ids, dtype=str),
             seen_data=seen.data, seen_indices=seen.indices, seen_indptr=seen.indptr, popular=popular)
    info = {"version": version, "fit_s": fit_s, "users": len(user_ids), "items": len(items),
            "interactions": int(seen.nnz)}
    stamp.write_text(json.dumps(info))
    return info


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for(url: str, seconds: float = 120.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            urllib.request.urlopen(url, timeout=5).read()  # noqa: S310  (loopback)
            return time.monotonic() - started
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"no answer from {url} within {seconds:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shop", choices=("demo", "100k"), default="demo")
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per service, concurrency and round")
    parser.add_argument("--rounds", type=int, default=3, help="turns per concurrency (the median is reported)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes (both services)")
    parser.add_argument("--threads", type=int, default=2, help="threads per worker (both services)")
    parser.add_argument("--output", default=None, help="default: benchmarks/results/peer-<shop>.json")
    args = parser.parse_args()
    if min(args.seconds, args.rounds, args.workers, args.threads) < 1:
        raise SystemExit("--seconds, --rounds, --workers and --threads must be at least 1")
    import shutil

    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian/Ubuntu: apt install wrk)")
    if args.shop == "demo":
        work = ROOT / "benchmarks" / ".work" / "peer-demo"
        info = demo_workspace(work)
    else:
        work = ROOT / "benchmarks" / ".work" / "serving"
        info = build_workspace(work, 200_000, 100_000, 1_000_000)
    peer_info = fit_peer(work, info["version"])

    from modeling import artifacts

    bundle = artifacts.load_bundle(work / "models" / info["version"])
    rng = np.random.default_rng(2)
    known = [str(u) for u in bundle.arrays.user_ids[rng.integers(0, len(bundle.arrays.user_ids), 1000)]]
    paths = [f"/recommendations?users={u}&k=10" for u in known]

    ours_port, peer_port = _free_port(), _free_port()
    ours_env = {**_env(work, ours_port, args.workers, args.threads), "RECO_THROTTLE_ANON": "1000000/second"}
    peer_env = {**os.environ, "PEER_DIR": str(work / "peer"), "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    peer_config = work / "peer" / "gunicorn.conf.py"
    peer_config.write_text("# the peer runs on gunicorn's defaults and the command line's settings\n")
    logs = [open(work / name, "w") for name in ("gunicorn-ours.log", "gunicorn-peer.log")]  # noqa: SIM115
    servers = {
        "service": subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")],
                                    env=ours_env, cwd=ROOT, stdout=logs[0], stderr=subprocess.STDOUT),
        # Its own (empty) configuration file: gunicorn would read the service's gunicorn.conf.py from the folder.
        "peer": subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(peer_config), "-w", str(args.workers),
                                  "--threads",
                                  str(args.threads), "-k", "gthread", "-b", f"127.0.0.1:{peer_port}",
                                  "benchmarks.peer_app:app"],
                                 env=peer_env, cwd=ROOT, stdout=logs[1], stderr=subprocess.STDOUT),
    }
    bases = {"service": f"http://127.0.0.1:{ours_port}", "peer": f"http://127.0.0.1:{peer_port}"}
    runs: dict[str, dict[int, list[dict]]] = {name: {c: [] for c in CONNECTIONS} for name in servers}
    try:
        for base in bases.values():
            _wait_for(base + paths[0])
            run_wrk(base, paths, 2, 3, work)  # warm both workers
        for connections in CONNECTIONS:
            for _ in range(args.rounds):
                for name, base in bases.items():
                    runs[name][connections].append(run_wrk(base, paths, connections, args.seconds, work))
        memory = {name: service_memory(server.pid) for name, server in servers.items()}
    finally:
        for server in servers.values():
            server.terminate()
        for server in servers.values():
            server.wait(timeout=30)
        for log in logs:
            log.close()

    def median_round(rounds: list[dict]) -> dict:
        ordered = sorted(rounds, key=lambda run: run["rps"])
        return {**ordered[len(ordered) // 2], "rounds_rps": [round(run["rps"]) for run in rounds],
                "rounds_p99_ms": [round(run["p99_ms"], 2) for run in rounds]}

    table = {name: {str(c): median_round(by_c[c]) for c in CONNECTIONS} for name, by_c in runs.items()}
    figures = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                           "python": platform.python_version()},
               "shop": args.shop, "model_version": info["version"], "peer_model": peer_info,
               "gunicorn": f"{args.workers} workers x {args.threads} threads", "seconds": args.seconds,
               "rounds": args.rounds, "http": table,
               "workers": {name: [{k: row[k] for k in ("rss_mib", "pss_mib", "rss_anon_mib")}
                                  for row in rows["workers"]] for name, rows in memory.items()},
               "text_process": [{k: row[k] for k in ("role", "rss_mib", "pss_mib", "rss_anon_mib")}
                                for row in memory["service"]["text_process"]],
               "service_pss_mib": {name: rows["service_pss_mib"] for name, rows in memory.items()}}
    output = Path(args.output or RESULTS / f"peer-{args.shop}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(figures, indent=2) + "\n")

    print(f"\n{args.shop} shop: {peer_info['items']:,} products, {peer_info['users']:,} shoppers, "
          f"{peer_info['interactions']:,} shopper-product pairs; {os.cpu_count()} CPUs; gunicorn {figures['gunicorn']}"
          f"; one known shopper per request; median of {args.rounds} rounds of {args.seconds} s\n")
    print(f"{'conns':>5}  {'':<8}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}   rounds (req/s)")
    for c in CONNECTIONS:
        for name in servers:
            run = table[name][str(c)]
            print(f"{c:>5}  {name:<8}{run['rps']:>8.0f}{run['p50_ms']:>9.2f}{run['p99_ms']:>9.2f}{run['errors']:>8}   "
                  f"{run['rounds_rps']}")
    for name, rows in memory.items():
        print(f"{name} workers: " + "; ".join(f"RSS {row['rss_mib']} MiB, PSS {row['pss_mib']} MiB"
                                             for row in rows["workers"])
              + "".join(f"; text process ({row['role']}): RSS {row['rss_mib']} MiB, PSS {row['pss_mib']} MiB"
                        for row in rows["text_process"])
              + f"; the whole service's PSS {rows['service_pss_mib']} MiB")
    print(f"\nwritten to {os.path.relpath(output, ROOT)}")


if __name__ == "__main__":
    main()
