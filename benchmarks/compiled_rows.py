"""The compiled ranker's ways to score rows, on the rows real requests score: the library tl2cgen generates,
through its own entry point and through tl2cgen's predictor, and the library lleaves generates.

Usage:
    .venv/bin/python benchmarks/compiled_rows.py                 # 5 rounds
    .venv/bin/python benchmarks/compiled_rows.py --rounds 9 --output benchmarks/results/x.json
    .venv/bin/python benchmarks/compiled_rows.py --copy-models benchmarks/.work/serving/models-tl2cgen

On the workspace ``benchmarks/serving.py`` builds (run it first), ``Recommender.recommend`` answers 50 of its
shoppers one at a time and 100 in one call while the feature rows its ranker scores are kept. The workspace's
booster is compiled again into a temporary folder by each generator (``modeling.compiled_ranker.GENERATORS``:
lleaves, then tl2cgen; a generator that cannot compile here is left out), and the kept rows are scored by
tl2cgen's library through its ``recoapi_predict_rows`` (one ctypes call per matrix, what a worker does with it),
through tl2cgen's predictor (a matrix object and a call through its runtime, what workers did before that entry),
and by lleaves' library through the same entry, in turn (the order rotating each round), ROUNDS rounds of each:
per round, the fastest of 20 passes over the 50 shoppers' rows (µs per shopper) and of 10 over the batch's (ms).
Checks that every way gives LightGBM's scores on every row. Then the engine's whole calls (the 50 shoppers alone, the
100 in one call) with each library's entry as the stage's compiled ranker, alternately, and whether the lists are the
same. One BLAS thread, as in a web worker. Writes benchmarks/results/compiled-rows.json.

``--copy-models DIR`` only makes DIR a copy of the workspace's models folder (hard links) whose active bundle's ranker
is compiled by ``--generator`` (default tl2cgen), so that ``benchmarks/serving.py --compare-env
RECO_MODELS_DIR=DIR,benchmarks/.work/serving/models`` serves the same bundle with either library side by side.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from modeling import runtime as _runtime  # noqa: E402,F401  (first: environment for TensorFlow)

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
WORKSPACE = ROOT / "benchmarks" / ".work" / "serving"


def copy_models(source: Path, target: Path, generator: str) -> None:
    """Make ``target`` a copy of the models folder ``source`` (hard links) whose active bundle's ranker is compiled by
    ``generator`` alone: the same bundle served with another library, side by side with the original."""
    from modeling import compiled_ranker
    from modeling.compiled_ranker import CompileError, compile_booster
    from modeling.reranker import lightgbm_module

    if target.exists():
        raise SystemExit(f"{target} exists: remove it first")
    stage = target / (source / "ACTIVE").read_text().strip() / "ranking_stage"
    if not (source / stage.parent.name / "ranking_stage" / "ranker.txt").is_file():
        raise SystemExit("the workspace's active bundle has no LightGBM ranker")
    try:
        shutil.copytree(source, target, copy_function=os.link)
        meta = json.loads((stage / "stage.json").read_text(encoding="utf-8"))
        for name in ("ranker.so", compiled_ranker.PROBE_FILE, "stage.json"):  # the copy's own files, not the links
            (stage / name).unlink(missing_ok=True)
        text = (stage / "ranker.txt").read_text(encoding="utf-8")
        meta["compiled"] = compile_booster(lightgbm_module().Booster(model_str=text), text, stage / "ranker.so",
                                           generators=(generator,))
        (stage / "stage.json").write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
    except BaseException as exc:  # no half-made copy left (another file system refuses hard links, a failed build)
        shutil.rmtree(target, ignore_errors=True)
        if isinstance(exc, CompileError):
            raise SystemExit(f"{generator} did not compile the ranker: {exc}") from exc
        raise
    print(f"{target}: the workspace's models, the ranker compiled by {generator} "
          f"({meta['compiled']['seconds']} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each (default 5)")
    parser.add_argument("--workspace", default=str(WORKSPACE), help="built by benchmarks/serving.py")
    parser.add_argument("--output", default=str(RESULTS / "compiled-rows.json"))
    parser.add_argument("--copy-models", metavar="DIR", default=None,
                        help="only make DIR a copy of the workspace's models folder (its files hard links) whose "
                             "active bundle's ranker is compiled by --generator, for benchmarks/serving.py "
                             "--compare-env RECO_MODELS_DIR=...")
    parser.add_argument("--generator", choices=("lleaves", "tl2cgen"), default="tl2cgen",
                        help="with --copy-models: the generator of the copy's ranker (default tl2cgen)")
    args = parser.parse_args()
    if args.rounds < 1:
        raise SystemExit("--rounds must be at least 1")
    workspace = Path(args.workspace)
    if not (workspace / "models" / "ACTIVE").is_file():
        raise SystemExit(f"no serving workspace at {workspace}: run .venv/bin/python benchmarks/serving.py first")
    if args.copy_models:
        copy_models(workspace / "models", Path(args.copy_models), args.generator)
        return
    from threadpoolctl import threadpool_limits

    from benchmarks.engine_versions import paired
    from modeling import artifacts, compiled_ranker
    from modeling.compiled_ranker import CompileError, CompiledBooster, LazyBooster, compile_booster
    from modeling.index import ANN_MIN_ITEMS
    from modeling.recommender import History, Recommender
    from modeling.reranker import Ranker

    import faiss  # noqa: F401  (its OpenMP runtime loaded first, so that the limit below reaches it)

    threadpool_limits(1)
    bundle_dir = workspace / "models" / (workspace / "models" / "ACTIVE").read_text().strip()
    recommender = Recommender(artifacts.load_bundle(bundle_dir), ann_min_items=ANN_MIN_ITEMS)
    ranker = recommender.stage.ranker
    if ranker.kind != "lightgbm":
        raise SystemExit(f"the workspace's ranking stage orders by {ranker.kind}, not a LightGBM ranker")
    booster = ranker.booster.get() if isinstance(ranker.booster, LazyBooster) else ranker.booster
    text = booster.model_to_string()
    rng = np.random.default_rng(1)
    users = [str(u) for u in recommender.user_ids[rng.integers(0, len(recommender.user_ids), 150)]]
    items = recommender.item_ids
    histories = {u: History(np.asarray(items[rng.integers(0, len(items), 5)], dtype=object),
                            np.arange(5, dtype=np.int64) + 1_700_000_000, np.ones(5)) for u in users}
    kept: list[np.ndarray] = []
    score = Ranker.score

    def keeping(self: Ranker, features: np.ndarray) -> np.ndarray:
        kept.append(np.array(features))
        return score(self, features)

    Ranker.score = keeping
    try:
        for user in users[:50]:
            recommender.recommend([user], histories, 10)
        recommender.recommend(users[50:], histories, 10)
    finally:
        Ranker.score = score
    one, batch = kept[:50], np.concatenate(kept[50:])
    with tempfile.TemporaryDirectory(prefix="compiled-rows-") as folder:
        libraries: dict[str, CompiledBooster] = {}
        compiled_by: dict[str, Any] = {}
        for generator in compiled_ranker.GENERATORS:
            path = Path(folder) / generator / "ranker.so"
            path.parent.mkdir()
            try:
                compiled_by[generator] = compile_booster(booster, text, path, generators=(generator,))
                libraries[generator] = CompiledBooster(path)
            except CompileError as exc:
                compiled_by[generator] = {"error": str(exc)}
                print(f"{generator}: {exc}", flush=True)
        ways: dict[str, tuple[CompiledBooster, Any]] = {}
        if "tl2cgen" in libraries:
            tl2cgen_library = libraries["tl2cgen"]
            ways["tl2cgen rows entry"] = (tl2cgen_library, tl2cgen_library._rows)
            ways["tl2cgen predictor"] = (tl2cgen_library, None)
        if "lleaves" in libraries:
            ways["lleaves rows entry"] = (libraries["lleaves"], libraries["lleaves"]._rows)
        if not ways:
            raise SystemExit("no generator compiled the ranker here")

        def scores(way: str, rows: np.ndarray) -> np.ndarray:
            library, entry = ways[way]
            library._rows = entry
            return library.predict(rows)

        def timed(way: str) -> tuple[float, float]:
            passes = []
            for _ in range(20):
                started = time.perf_counter()
                for rows in one:
                    scores(way, rows)
                passes.append((time.perf_counter() - started) / len(one) * 1e6)
            whole = []
            for _ in range(10):
                started = time.perf_counter()
                scores(way, batch)
                whole.append((time.perf_counter() - started) * 1e3)
            return min(passes), min(whole)

        same = {way: all(bool(np.array_equal(scores(way, rows), booster.predict(rows, num_threads=1)))
                         for rows in [*one, batch]) for way in ways}
        runs: dict[str, list[tuple[float, float]]] = {way: [] for way in ways}
        names = list(ways)
        for turn in range(args.rounds):
            for way in names[turn % len(names):] + names[:turn % len(names)]:
                runs[way].append(timed(way))
            print(f"round {turn + 1}: " + ", ".join(f"{way} {values[-1][0]:.1f} µs per shopper, {values[-1][1]:.2f} "
                                                    f"ms per batch" for way, values in runs.items()), flush=True)
        # The engine's whole call with each library's rows entry as the stage's compiled ranker: what the ranker's
        # time is of a request's.
        engine: dict[str, list[tuple[float, float]]] = {}
        served = ranker.compiled
        answers: dict[str, list] = {}
        for turn in range(args.rounds):
            order = [way for way in names if way.endswith("rows entry")]
            for way in order if turn % 2 == 0 else order[::-1]:
                library, entry = ways[way]
                library._rows = entry
                ranker.compiled = library
                alone, lists = [], []
                for _ in range(3):
                    started = time.perf_counter()
                    for user in users[:50]:
                        lists.append(recommender.recommend([user], histories, 10)[user].items.tolist())
                    alone.append((time.perf_counter() - started) / 50 * 1e3)
                together = []
                for _ in range(3):
                    started = time.perf_counter()
                    answered = recommender.recommend(users[50:], histories, 10)
                    together.append((time.perf_counter() - started) * 1e3)
                answers[way] = [*lists[:50], *(answered[user].items.tolist() for user in users[50:])]
                engine.setdefault(way, []).append((min(alone), min(together)))
        ranker.compiled = served
    medians = {way: (float(np.median([v[0] for v in values])), float(np.median([v[1] for v in values])))
               for way, values in runs.items()}
    report = {"rounds": args.rounds, "trees": booster.num_trees(),
              "rows_per_shopper": round(float(np.mean([len(r) for r in one])), 1), "rows_per_batch": len(batch),
              "same_scores_as_lightgbm": same, "compiled": compiled_by,
              "us_per_shopper": {way: [round(v[0], 1) for v in values] for way, values in runs.items()},
              "ms_per_batch": {way: [round(v[1], 2) for v in values] for way, values in runs.items()},
              "median": {way: {"us_per_shopper": round(m[0], 1), "ms_per_batch": round(m[1], 2)}
                         for way, m in medians.items()},
              "engine_ms": {way: {"one_shopper": [round(v[0], 3) for v in values],
                                  "100_shoppers": [round(v[1], 2) for v in values]} for way, values in engine.items()},
              "engine_same_lists": len({json.dumps(lists) for lists in answers.values()}) == 1}
    if len(engine) == 2:
        (first, a), (second, b) = engine.items()
        report["engine_paired_ratio"] = {
            "of": f"{second} over {first}",
            "one_shopper": paired([x[0] for x in a], [y[0] for y in b])["median_ratio"],
            "100_shoppers": paired([x[1] for x in a], [y[1] for y in b])["median_ratio"]}
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"\nwritten to {os.path.relpath(output, ROOT)}")


if __name__ == "__main__":
    main()
