"""Where a read request's time goes, stage by stage, in process (no network, no gunicorn).

Usage:
    .venv/bin/python benchmarks/request_path.py                 # the demo shop of benchmarks/peer.py
    .venv/bin/python benchmarks/request_path.py --shop 100k     # the serving benchmark's workspace
    .venv/bin/python benchmarks/request_path.py --compare-fast-lane 4   # Django against the fast lane

Calls Django's WSGI handler directly, as gunicorn does, with ``GET /recommendations?users=<one known
shopper>&k=10`` (a different shopper each time), then ``GET /similar_items`` and ``GET /check_users``, and
times each stage of every request by wrapping the functions that do it:

- ``middleware``: the whole request minus the DRF view and the rendering (Django's middleware stack, the
  request id, log line and metrics (in Prometheus's multi-process mode, as under gunicorn), the WSGI
  request and response objects);
- ``drf``: DRF's own work around the endpoint (request wrapping, content negotiation, finalising);
- ``authentication``, ``permissions``, ``throttling``: DRF's checks;
- ``validation``: the endpoint minus its service call (parsing and checking the query string);
- ``service``: the recommendation itself, and within it ``history`` (the shoppers' interactions read from
  the database), ``engine`` (:meth:`modeling.recommender.Recommender.recommend`: both stages) and what is
  left, ``payload`` (the products' details, ids, impressions);
- ``rendering``: the JSON body.

``/recommendations`` is timed with one shopper per request and, as ``recommendations_100``, with 100
shoppers per request (a twentieth as many requests).

Prints the median of each stage per endpoint and writes benchmarks/results/request-path-<shop>.json.
The read endpoints' validation, authentication and throttling together should stay under 0.3 ms.

With ``--compare-fast-lane ROUNDS`` it times whole requests of one shopper's ``/recommendations`` and of
``/similar_items`` through Django's handler and through the fast lane in front of it (:mod:`recoapi.fast_lane`,
what gunicorn serves), ROUNDS rounds of each in turn, ``--requests`` requests per round, and writes each round's
median and whether both served the same lists to benchmarks/results/request-path-<shop>-fast-lane.json. The
stage-by-stage figures above are Django's path.

With ``--compare-every-feature ROUNDS`` it times only ``/recommendations`` (whole requests through the same
handler, one known shopper each), alternately with the ranking stage computing only the features its ranker
reads (:meth:`modeling.reranker.Ranker.columns`, what the service does) and every feature (what versions before
did), ROUNDS rounds of each in the order every, only, only, every, ..., ``--requests`` requests per round, and
writes each round's median and whether both settings served the same lists to
benchmarks/results/request-path-<shop>-features.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from modeling import runtime as _runtime  # noqa: E402,F401  (first: environment for TensorFlow)

import argparse  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from collections import defaultdict  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
STAGES = ("middleware", "drf", "authentication", "permissions", "throttling", "validation", "service", "rendering")
SERVICE_PARTS = ("history", "engine", "payload")
"""What ``service`` is made of, for ``/recommendations`` (reported beside the stages, not added to them)."""


class _Timer:
    """Accumulates the time spent inside wrapped functions during one request, per stage."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)

    def wrap(self, owner: Any, name: str, stage: str) -> None:
        original = getattr(owner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.spent[stage] += time.perf_counter() - started

        setattr(owner, name, timed)

    def wrap_property(self, owner: Any, name: str, stage: str) -> None:
        original = getattr(owner, name)

        def timed(instance: Any) -> Any:
            started = time.perf_counter()
            try:
                return original.fget(instance)
            finally:
                self.spent[stage] += time.perf_counter() - started

        setattr(owner, name, property(timed))


def _environ(path: str, query: str) -> dict[str, Any]:
    return {"REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": query, "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000", "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:8000",
            "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(b""),
            "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": True,
            "wsgi.run_once": False, "wsgi.version": (1, 0)}


def _call(handler: Any, path: str, query: str) -> tuple[str, bytes]:
    """One GET through Django's WSGI ``handler``, as gunicorn makes it: ``(status line, body)``."""
    statuses: list[str] = []
    answer = handler(_environ(path, query), lambda status, headers, *_: statuses.append(status))
    try:
        body = b"".join(answer)
    finally:
        getattr(answer, "close", lambda: None)()  # as gunicorn does: Django's request_finished
    return statuses[0], body


def _active(work: Path) -> tuple[Any, Any]:
    """Django set up over the workspace (its environment already exported): ``(the engine serving its active
    model, that model's bundle)``."""
    import django

    django.setup()
    from modeling import artifacts
    from recoapi.recommendations.engine import registry

    engine = registry.current()
    if engine is None:
        raise SystemExit(f"no active model in {work / 'models'}")
    return engine, artifacts.load_bundle(work / "models" / engine.version)


def measure(work: Path, requests: int) -> dict[str, Any]:
    """Median milliseconds per stage for each read endpoint, ``requests`` requests each."""
    _, bundle = _active(work)
    from django.core.handlers.wsgi import WSGIHandler
    from rest_framework.response import Response
    from rest_framework.views import APIView

    from modeling.recommender import Recommender
    from recoapi.recommendations import apis
    rng = np.random.default_rng(4)
    users = [str(u) for u in bundle.arrays.user_ids[rng.integers(0, len(bundle.arrays.user_ids), requests)]]
    items = [str(i) for i in bundle.arrays.item_ids[rng.integers(0, len(bundle.arrays.item_ids), requests)]]
    # Other shoppers than the one-shopper requests' (whose histories those requests have just read into the
    # database's cache), 100 per request.
    others = bundle.arrays.user_ids[rng.integers(0, len(bundle.arrays.user_ids), 100 * max(20, requests // 20))]
    batches = [",".join(str(u) for u in others[start:start + 100]) for start in range(0, len(others), 100)]
    endpoints: dict[str, tuple[str, list[str], Callable[..., Any] | None]] = {
        "recommendations": ("/recommendations", [f"users={u}&k=10" for u in users], None),
        "recommendations_100": ("/recommendations", [f"users={b}&k=10" for b in batches], None),
        "similar_items": ("/similar_items", [f"item={i}&k=10" for i in items], None),
        "check_users": ("/check_users", [f"users={u}" for u in users], None),
    }
    timer = _Timer()
    timer.wrap(APIView, "dispatch", "drf")
    timer.wrap(APIView, "perform_authentication", "authentication")
    timer.wrap(APIView, "check_permissions", "permissions")
    timer.wrap(APIView, "check_throttles", "throttling")
    for view in (apis.RecommendationsApi, apis.SimilarItemsApi, apis.CheckUsersApi):
        timer.wrap(view, "get", "validation")
    timer.wrap(apis.services, "recommendation_list", "service")
    timer.wrap(apis.services, "similar_item_list", "service")
    timer.wrap(apis.catalog_selectors, "shopper_existing_ids", "service")
    timer.wrap(apis.services.catalog_selectors, "shopper_histories", "history")
    timer.wrap(Recommender, "recommend", "engine")
    timer.wrap_property(Response, "rendered_content", "rendering")
    handler = WSGIHandler()
    figures: dict[str, Any] = {}
    for name, (path, queries, _) in endpoints.items():
        rows: list[dict[str, float]] = []
        for n, query in enumerate(queries):
            timer.spent.clear()
            started = time.perf_counter()
            status, body = _call(handler, path, query)
            total = time.perf_counter() - started
            if not status.startswith("200"):
                raise SystemExit(f"{path}?{query}: {status} {body[:300]!r}")
            if n < min(50, len(queries) // 10):  # warm-up
                continue
            spent = dict(timer.spent)
            row = {"total": total, "rendering": spent.get("rendering", 0.0), "service": spent.get("service", 0.0)}
            for stage in ("authentication", "permissions", "throttling"):
                row[stage] = spent.get(stage, 0.0)
            row["validation"] = spent.get("validation", 0.0) - row["service"]
            row["drf"] = spent.get("drf", 0.0) - spent.get("validation", 0.0) - row["authentication"] - (
                row["permissions"] + row["throttling"])
            row["middleware"] = total - spent.get("drf", 0.0) - row["rendering"]
            if path == "/recommendations":
                row["history"], row["engine"] = spent.get("history", 0.0), spent.get("engine", 0.0)
                row["payload"] = row["service"] - row["history"] - row["engine"]
            rows.append(row)
        figures[name] = {stage: float(np.median([row[stage] for row in rows]) * 1000)
                         for stage in ("total", *STAGES, *(SERVICE_PARTS if path == "/recommendations" else ()))}
        figures[name]["checks"] = sum(figures[name][s] for s in ("validation", "authentication", "permissions",
                                                                 "throttling"))
    return figures


def compare_every_feature(work: Path, requests: int, rounds: int) -> dict[str, Any]:
    """Median ms per round of ``/recommendations`` with the ranker's own columns and with every feature, in turn."""
    engine, bundle = _active(work)
    from django.core.handlers.wsgi import WSGIHandler

    from modeling import reranker

    ranker = engine.recommender.stage.ranker if engine.recommender.stage is not None else None
    rng = np.random.default_rng(5)
    users = [str(u) for u in bundle.arrays.user_ids[rng.integers(0, len(bundle.arrays.user_ids), requests)]]
    handler = WSGIHandler()
    own = reranker.Ranker.columns

    def every(self: reranker.Ranker) -> None:
        return None

    def answer(user: str) -> list[tuple[str, float]]:
        status, body = _call(handler, "/recommendations", f"users={user}&k=10")
        if not status.startswith("200"):
            raise SystemExit(f"/recommendations?users={user}: {status} {body[:300]!r}")
        return [(item["item_id"], item["score"]) for item in json.loads(body)["recommendations"][user]["items"]]

    def round_ms(columns: Any) -> tuple[float, list[Any]]:
        reranker.Ranker.columns = columns
        served, times = [], []
        for user in users:
            started = time.perf_counter()
            served.append(answer(user))
            times.append(time.perf_counter() - started)
        return float(np.median(times[len(times) // 10:]) * 1000), served

    try:
        round_ms(own)  # warm up
        timed: dict[str, list[float]] = {"only_read": [], "every": []}
        lists: list[list[Any]] = []
        order = [("every", "only_read"), ("only_read", "every")]
        for turn in range(rounds):
            for name in order[turn % 2]:
                median, served = round_ms(own if name == "only_read" else every)
                timed[name].append(round(median, 3))
                lists.append(served)
    finally:
        reranker.Ranker.columns = own
    columns = None if ranker is None else ranker.columns()
    return {"ranker": None if ranker is None else {
                "kind": ranker.kind, "feature": ranker.feature if ranker.kind == "feature" else None,
                "columns": sorted(columns | {"two_tower"}) if columns is not None else "every feature"},
            "median_ms_per_round": timed, "same_lists": all(served == lists[0] for served in lists)}


def compare_fast_lane(work: Path, requests: int, rounds: int) -> dict[str, Any]:
    """Median ms per round of whole requests through Django's handler and through the fast lane in front of it
    (:mod:`recoapi.fast_lane`, what gunicorn serves), in turn, for one shopper's ``/recommendations`` and for
    ``/similar_items``; and whether both served the same lists."""
    _, bundle = _active(work)
    from django.core.handlers.wsgi import WSGIHandler

    from recoapi.fast_lane import FastLane

    rng = np.random.default_rng(6)
    users = [str(u) for u in bundle.arrays.user_ids[rng.integers(0, len(bundle.arrays.user_ids), requests)]]
    items = [str(i) for i in bundle.arrays.item_ids[rng.integers(0, len(bundle.arrays.item_ids), requests)]]
    django = WSGIHandler()
    handlers = {"django": django, "fast_lane": FastLane(django)}
    endpoints = {"recommendations": ("/recommendations", [f"users={u}&k=10" for u in users]),
                 "similar_items": ("/similar_items", [f"item={i}&k=10" for i in items])}

    def served(body: bytes) -> list[Any]:
        answer = json.loads(body)
        lists = [entry["items"] for entry in answer["recommendations"].values()] if "recommendations" in answer \
            else [answer["items"]]
        return [[(item["item_id"], item["score"]) for item in entries] for entries in lists]

    def round_ms(handler: Any, path: str, queries: list[str]) -> tuple[float, list[Any]]:
        answers, times = [], []
        for query in queries:
            started = time.perf_counter()
            status, body = _call(handler, path, query)
            times.append(time.perf_counter() - started)
            if not status.startswith("200"):
                raise SystemExit(f"{path}?{query}: {status} {body[:300]!r}")
            answers.append(served(body))
        return float(np.median(times[len(times) // 10:]) * 1000), answers

    results: dict[str, Any] = {}
    for endpoint, (path, queries) in endpoints.items():
        round_ms(handlers["fast_lane"], path, queries[:100])  # warm up
        round_ms(django, path, queries[:100])
        timed: dict[str, list[float]] = {"django": [], "fast_lane": []}
        lists = []
        for turn in range(rounds):
            for name in (("django", "fast_lane"), ("fast_lane", "django"))[turn % 2]:
                median, answers = round_ms(handlers[name], path, queries)
                timed[name].append(round(median, 3))
                lists.append(answers)
        results[endpoint] = {"median_ms_per_round": timed, "same_lists": all(a == lists[0] for a in lists)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shop", choices=("demo", "100k"), default="demo")
    parser.add_argument("--requests", type=int, default=2000, help="requests per endpoint")
    parser.add_argument("--output", default=None, help="default: benchmarks/results/request-path-<shop>.json")
    parser.add_argument("--compare-every-feature", type=int, default=0, metavar="ROUNDS",
                        help="time /recommendations with the ranker's features and with every feature, in turn")
    parser.add_argument("--compare-fast-lane", type=int, default=0, metavar="ROUNDS",
                        help="time whole read requests through Django and through the fast lane, in turn")
    args = parser.parse_args()
    if args.requests < 100:
        raise SystemExit("--requests must be at least 100")
    if args.compare_every_feature < 0 or args.compare_fast_lane < 0:
        raise SystemExit("--compare-every-feature and --compare-fast-lane take a number of rounds")
    from peer import demo_workspace
    from serving import _env, build_workspace, one_thread

    if args.shop == "demo":
        work = ROOT / "benchmarks" / ".work" / "peer-demo"
        demo_workspace(work)
    else:
        work = ROOT / "benchmarks" / ".work" / "serving"
        build_workspace(work, 200_000, 100_000, 1_000_000)
    os.environ.update({**_env(work), "RECO_THROTTLE_ANON": "1000000/second"})
    import tempfile

    # The metrics as under gunicorn: written to the multi-process directory (set before the client loads).
    metrics_dir = tempfile.TemporaryDirectory(prefix="recoapi-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir.name
    # One BLAS and OpenMP thread, as each web worker has (gunicorn.conf.py sets it before numpy loads; setting
    # OPENBLAS_NUM_THREADS here, after numpy loaded, changed nothing: this script measured with every core).
    comparisons = {"features": (args.compare_every_feature, compare_every_feature),
                   "fast-lane": (args.compare_fast_lane, compare_fast_lane)}
    for suffix, (rounds, compare) in comparisons.items():
        if rounds:
            with one_thread():
                compared = compare(work, args.requests, rounds)
            output = Path(args.output or RESULTS / f"request-path-{args.shop}-{suffix}.json")
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(json.dumps({"shop": args.shop, "requests_per_round": args.requests, **compared},
                                         indent=2) + "\n")
            print(json.dumps(compared, indent=2))
            print(f"\nwritten to {os.path.relpath(output, ROOT)}")
            return
    with one_thread():
        figures = measure(work, args.requests)
    output = Path(args.output or RESULTS / f"request-path-{args.shop}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps({"shop": args.shop, "requests": args.requests, "median_ms": figures}, indent=2)
                      + "\n")
    print(f"\nmedian ms per request, {args.shop} shop, {args.requests} requests per endpoint, in process\n")
    print(f"{'stage':<16}" + "".join(f"{name:>17}" for name in figures))
    for stage in ("total", *STAGES, "checks", *SERVICE_PARTS):
        label = {"checks": "checks (v+a+p+t)"}.get(stage, stage if stage not in SERVICE_PARTS else f"  {stage}")
        print(f"{label:<16}" + "".join(f"{figures[name][stage]:>17.3f}" if stage in figures[name] else f"{'':>17}"
                                       for name in figures))
    print(f"\nwritten to {os.path.relpath(output, ROOT)}")


if __name__ == "__main__":
    main()
