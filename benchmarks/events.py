"""Event ingestion over HTTP: POST /events in lists of 500 and one at a time, on SQLite and PostgreSQL.

Usage:
    .venv/bin/python benchmarks/events.py                                  # SQLite only, about 2 minutes
    .venv/bin/python benchmarks/events.py --postgres postgres://postgres@127.0.0.1:5432   # and PostgreSQL

For each database: the demo generator's small shop (2,000 shoppers, 500 products) is imported into a
new database (for PostgreSQL a scratch database created on the given server and dropped afterwards),
gunicorn is started as shipped (2 workers x 2 threads) on loopback, and clients post events for
``--seconds`` each: lists of ``--batch`` events from 1 and from 4 clients, then single events from 6
clients. Every event has its own event_id. Reports events per second, the median request time, the
requests refused, and checks that the database holds exactly the events that were acknowledged.

Prints a table and writes benchmarks/results/events.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"


def _env(work: Path, database_url: str, port: int | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "recoapi.settings",
        "DATABASE_URL": database_url,
        "RECO_DATA_PATH": str(work / "raw"),
        "RECO_PROCESSED_DIR": str(work / "processed"),
        "RECO_EMBEDDINGS_DIR": str(work / "embeddings"),
        "RECO_MODELS_DIR": str(work / "models"),
        "RECO_LOGS_DIR": str(work / "logs"),
        "RECO_THROTTLE_USER": "off",
        "RECO_CONSOLE_LOG_LEVEL": "ERROR",
        "RECO_WORKERS": "2",
        "RECO_THREADS": "2",
    }
    if port:
        env["RECO_BIND"] = f"127.0.0.1:{port}"
    return env


def _manage(env: dict[str, str], *args: str) -> str:
    return subprocess.run([sys.executable, str(ROOT / "manage.py"), *args], env=env, cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout


def _post(url: str, token: str, body: object) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "Content-Type": "application/json", "Authorization": f"Token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def run_clients(base: str, token: str, items: list[str], *, clients: int, batch: int, seconds: float,
                label: str) -> dict:
    """``clients`` threads posting lists of ``batch`` events (a single event when batch is 1)."""
    numbers = itertools.count()
    lock = threading.Lock()
    times: list[float] = []
    stored, refused = [0], [0]
    deadline = time.monotonic() + seconds

    def client(worker: int) -> None:
        while time.monotonic() < deadline:
            with lock:
                first = next(numbers) * batch
            events = [{"user": f"bench-{worker}-{(first + i) % 97}", "item": items[(first + i) % len(items)],
                       "event": "view", "event_id": f"{label}-{first + i}"} for i in range(batch)]
            started = time.perf_counter()
            status, body = _post(f"{base}/events", token, events if batch > 1 else events[0])
            elapsed = time.perf_counter() - started
            with lock:
                times.append(elapsed)
                if status in (200, 201):
                    stored[0] += body["stored"] if batch > 1 else int(not body["duplicate"])
                else:
                    refused[0] += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(w,)) for w in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {"clients": clients, "batch": batch, "requests": len(times), "refused": refused[0],
            "events_stored": stored[0], "events_per_second": round(stored[0] / wall, 1),
            "p50_request_ms": round(statistics.median(times) * 1000, 1) if times else None}


def bench_database(work: Path, name: str, database_url: str, args: argparse.Namespace) -> dict:
    env = _env(work, database_url)
    _manage(env, "migrate", "-v0")
    _manage(env, "load_data")
    token = _manage(env, "create_staff_user", "--username", "bench", "--password", "bench-pass-123"
                    ).split("API token: ")[1].strip()
    items = _manage(env, "shell", "-c", "from recoapi.catalog.models import Product;"
                    "print('items', *Product.objects.values_list('id', flat=True)[:500])").split("items ")[-1].split()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(work / f"gunicorn-{name}.log", "w")  # noqa: SIM115
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(ROOT / "gunicorn.conf.py")],
                              env=_env(work, database_url, port), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    runs = []
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{base}/health", timeout=5).read()  # noqa: S310
                break
            except urllib.error.HTTPError:  # 503 without a model: the server answers, which is all we need
                break
            except OSError:
                time.sleep(0.5)
        scenarios = [(1, args.batch), (4, args.batch), (6, 1)]
        for clients, batch in scenarios:
            runs.append(run_clients(base, token, items, clients=clients, batch=batch, seconds=args.seconds,
                                    label=f"{name}-{clients}-{batch}"))
            print(f"  {name}: {clients} clients x {batch} events per request: "
                  f"{runs[-1]['events_per_second']:,.0f} events/s", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    held = int(_manage(env, "shell", "-c", "from recoapi.catalog.models import Interaction;"
                       "print('live', Interaction.objects.filter(source='live').count())").split("live ")[-1])
    acknowledged = sum(run["events_stored"] for run in runs)
    return {"database": name, "runs": runs, "live_events_in_database": held, "acknowledged": acknowledged,
            "nothing_lost": held == acknowledged}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=15, help="duration of each scenario")
    parser.add_argument("--batch", type=int, default=500, help="events per request in the list scenarios")
    parser.add_argument("--postgres", default="", help="a PostgreSQL server URL (postgres://user@host:port): "
                        "a scratch database is created on it and dropped afterwards")
    parser.add_argument("--workdir", default=str(ROOT / "benchmarks" / ".work" / "events"))
    parser.add_argument("--output", default=str(RESULTS / "events.json"))
    args = parser.parse_args()

    from modeling.synthetic import DemoParams, generate_demo_data

    work = Path(args.workdir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    generate_demo_data(work / "raw", DemoParams(n_users=2000, n_items=500, n_interactions=20000, seed=5),
                       progress=False)
    results = [bench_database(work, "sqlite", f"sqlite:///{work / 'db.sqlite3'}", args)]
    if args.postgres:
        import psycopg

        server = args.postgres.rstrip("/")
        name = f"reco_events_bench_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        try:
            results.append(bench_database(work, "postgresql", f"{server}/{name}", args))
        finally:
            with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    figures = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                           "python": platform.python_version()},
               "gunicorn": "2 workers x 2 threads", "seconds_per_scenario": args.seconds, "results": results}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(figures, indent=2) + "\n")
    print(f"\n{'database':<12}{'clients':>8}{'batch':>7}{'events/s':>10}{'p50 ms':>9}{'refused':>9}")
    for result in results:
        for run in result["runs"]:
            print(f"{result['database']:<12}{run['clients']:>8}{run['batch']:>7}{run['events_per_second']:>10,.0f}"
                  f"{run['p50_request_ms']:>9.1f}{run['refused']:>9}")
        print(f"{result['database']}: {result['live_events_in_database']:,} events in the database, "
              f"{result['acknowledged']:,} acknowledged")
    print(f"\nwritten to {os.path.relpath(args.output, ROOT)}")


if __name__ == "__main__":
    main()
