"""Import throughput: a demo shop of about 1,000,000 interactions into the configured database.

Usage (SQLite, a throw-away file):
    DATABASE_URL=sqlite:////tmp/bench.sqlite3 .venv/bin/python benchmarks/import_speed.py
PostgreSQL (the database must exist; its tables are created by migrate):
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/reco_bench .venv/bin/python benchmarks/import_speed.py

Prints a table and writes benchmarks/results/import_<engine>.json. The import is the same
service `manage.py load_data` and POST /reload_data call.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling import runtime as _runtime  # noqa: E402,F401  (first: environment for TensorFlow)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import django  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=66_000)
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--data-dir", default=str(Path(tempfile.gettempdir()) / "reco_import_bench"))
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "recoapi.settings")
    django.setup()
    from django.core.management import call_command
    from django.db import connection

    from modeling.synthetic import DemoParams, generate_demo_data
    from recoapi.catalog.services import data_import

    started = time.perf_counter()
    generate_demo_data(args.data_dir, DemoParams(n_users=args.users, n_items=args.items,
                                                 n_interactions=args.interactions), progress=False)
    generated = time.perf_counter() - started
    call_command("migrate", verbosity=0)
    with tempfile.TemporaryDirectory() as processed:
        started = time.perf_counter()
        result = data_import(source="amazon2018", path=args.data_dir, processed_dir=processed, force=True)
        seconds = time.perf_counter() - started
    rows = result.counts["interactions"]
    figures = {
        "engine": connection.vendor,
        "interactions": rows,
        "users": result.counts["users"],
        "items": result.counts["items"],
        "import_seconds": round(seconds, 1),
        "rows_per_second": round(rows / seconds),
        "generate_seconds": round(generated, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
    }
    width = max(len(k) for k in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value}")  # noqa: T201  (a benchmark prints its table)
    out = Path(__file__).resolve().parent / "results" / f"import_{connection.vendor}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
