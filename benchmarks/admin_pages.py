"""Admin list-page timings on a large catalogue (default 100,000 products, 1,000,000 interactions).

Usage:
    DATABASE_URL=sqlite:////tmp/admin_bench.sqlite3 .venv/bin/python benchmarks/admin_pages.py --users 100000
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/reco_bench .venv/bin/python benchmarks/admin_pages.py

Generates the demo shop at that size (cached in a temp folder), imports it unless the database
already holds it, then requests each admin page 3 times as a logged-in superuser through Django's
test client and reports the median time and the number of SQL queries. Writes
benchmarks/results/admin_<engine>.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling import runtime as _runtime  # noqa: F401  (first: environment for TensorFlow)

import argparse
import json
import os
import statistics
import tempfile
import time

import django


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=66_000)
    parser.add_argument("--interactions", type=int, default=1_000_000)
    parser.add_argument("--data-dir", default=str(Path(tempfile.gettempdir()) / "reco_admin_bench"))
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "recoapi.settings")
    os.environ.setdefault("DJANGO_ALLOWED_HOSTS", "testserver")
    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from modeling.synthetic import DemoParams, generate_demo_data
    from recoapi.catalog.models import Interaction, Product, Shopper
    from recoapi.catalog.services import data_import

    generate_demo_data(args.data_dir, DemoParams(n_users=args.users, n_items=args.items,
                                                 n_interactions=args.interactions), progress=False)
    call_command("migrate", verbosity=0)
    if Interaction.objects.count() != args.interactions or Shopper.objects.count() != args.users:
        with tempfile.TemporaryDirectory() as processed:
            data_import(source="amazon2018", path=args.data_dir, processed_dir=processed, force=True)
    user = get_user_model().objects.filter(username="bench").first() or get_user_model().objects.create_superuser(
        username="bench", email="", password="bench-pass-123")
    client = Client()
    client.force_login(user)
    shopper = Shopper.objects.order_by("id").values_list("id", flat=True)[1000]
    product = Product.objects.order_by("id").first()
    category = product.category.split(" > ")[0]
    pages = {
        "shopper list": "/admin/catalog/shopper/",
        "shopper list, page 1000": "/admin/catalog/shopper/?p=1000",
        "shopper search": f"/admin/catalog/shopper/?q={shopper[:-1]}",
        "shopper page (history)": f"/admin/catalog/shopper/{shopper}/change/",
        "product list": "/admin/catalog/product/",
        "product search (title word)": f"/admin/catalog/product/?q={product.title.split()[0]}",
        "product list, category filter": f"/admin/catalog/product/?category={product.category}",
        "interaction list": "/admin/catalog/interaction/",
        "interaction list, event filter": "/admin/catalog/interaction/?event__exact=review",
        "interaction list, last 7 days": "/admin/catalog/interaction/?occurred_at__gte=2022-12-25T00:00:00%2B00:00",
    }
    del category
    results = {}
    for name, url in pages.items():
        timings, queries = [], 0
        for _ in range(3):
            with CaptureQueriesContext(connection) as captured:
                started = time.perf_counter()
                response = client.get(url)
                timings.append((time.perf_counter() - started) * 1000)
            queries = len(captured)
            assert response.status_code == 200, (url, response.status_code)
        results[name] = {"median_ms": round(statistics.median(timings), 1), "queries": queries}
    # The shopper list's interaction count and last activity: one grouped query over the page's 50 shoppers.
    from recoapi.catalog.selectors import shopper_activity

    last = max(Shopper.objects.count() - 50, 0)
    for name, start in (("activity query, first 50 shoppers", 0), ("activity query, last 50 shoppers", last)):
        ids = list(Shopper.objects.order_by("id").values_list("id", flat=True)[start:start + 50])
        timings = []
        for _ in range(21):
            started = time.perf_counter()
            shopper_activity(ids=ids)
            timings.append((time.perf_counter() - started) * 1000)
        results[name] = {"median_ms": round(statistics.median(timings), 2), "queries": 1}
    print(f"{'page':<34} {'median ms':>10} {'queries':>8}")  # noqa: T201
    for name, row in results.items():
        print(f"{name:<34} {row['median_ms']:>10} {row['queries']:>8}")  # noqa: T201
    payload = {"engine": connection.vendor, "shoppers": Shopper.objects.count(), "products": Product.objects.count(),
               "interactions": Interaction.objects.count(),
               "pages": results, "machine": f"{os.cpu_count()} cores",
               "load_average_1min": round(os.getloadavg()[0], 1)}
    out = Path(__file__).resolve().parent / "results" / f"admin_{connection.vendor}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
