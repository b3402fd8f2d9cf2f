"""Each web worker's memory after every scenario of the serving benchmark, this checkout against another version.

Usage:
    .venv/bin/python benchmarks/worker_memory.py --against HEAD~3               # 2 rounds of each
    .venv/bin/python benchmarks/worker_memory.py --against v1.2 --rounds 3 --output benchmarks/results/x.json
    .venv/bin/python benchmarks/worker_memory.py --env RECO_RELEASE_AFTER_SHOPPERS=0   # this checkout, two settings

gunicorn (2 workers x 2 threads, as shipped) over the workspace ``benchmarks/serving.py`` builds (run it first),
loaded by wrk with its scenarios in turn: one known shopper, 100 shoppers per request, similar_items, a text query
and one new shopper, each at 2 then 8 connections for ``--seconds``. After each row it reads every worker's
resident memory (RSS, its anonymous and file-backed parts, PSS) from /proc. The other version is checked out
(``git worktree``) into a temporary folder and its own gunicorn serves the same workspace; the two alternate
(other, this; this, other; ...), so that a machine whose speed drifts favours neither. With ``--env NAME=VALUE``
instead of ``--against``, this checkout runs with and without those variables.

Memory is what this compares: the requests per second it prints are for orientation only (a shared machine, a
few seconds per row). Writes benchmarks/results/worker-memory.json: per run, each worker's memory after each row,
and the largest RSS any worker had at the end.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import serving  # noqa: E402  (the workspace, wrk and /proc readers of the serving benchmark)

RESULTS = ROOT / "benchmarks" / "results"
WORKSPACE = ROOT / "benchmarks" / ".work" / "serving"


SCENARIOS = ("one known shopper", "100 shoppers per request", "similar_items", "text query",
             "one new shopper (content)")
"""The serving benchmark's scenarios, in the order they are run here."""


def _scenarios(workspace: Path, new_users: list[str]) -> dict[str, list[str]]:
    """The serving benchmark's request paths (:func:`serving.scenario_paths`), in :data:`SCENARIOS`' order."""
    from modeling import artifacts

    version = (workspace / "models" / "ACTIVE").read_text().strip()
    paths = serving.scenario_paths(artifacts.load_bundle(workspace / "models" / version).arrays, new_users)
    return {name: paths[name] for name in SCENARIOS}


def _workers(master: int) -> list[dict]:
    rows = serving.service_memory(master)["workers"]
    return [{key: row[key] for key in ("rss_mib", "rss_anon_mib", "rss_file_mib", "pss_mib")} for row in rows]


def run(code: Path, workspace: Path, scenarios: dict[str, list[str]], seconds: int, env: dict[str, str]) -> dict:
    """One gunicorn of the code at ``code`` over ``workspace``: workers' memory at start and after each row."""
    port = serving._free_port()
    log = open(workspace / "gunicorn.log", "w")  # noqa: SIM115
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", str(code / "gunicorn.conf.py")],
                              env={**serving._env(workspace, port), **env}, cwd=code, stdout=log,
                              stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    rows = []
    try:
        if not serving._first_answer(base, scenarios["one known shopper"][0]):
            raise SystemExit(f"the service of {code} did not answer; see {workspace / 'gunicorn.log'}")
        time.sleep(3)  # the other worker loads its model too
        rows.append({"after": "start", "workers": _workers(server.pid)})
        for name, paths in scenarios.items():
            for connections in (2, 8):
                result = serving.settled(serving.run_wrk(base, paths, connections, seconds, workspace))
                rows.append({"after": f"{name}, {connections} connections", "rps": round(result["rps"], 1),
                             "errors": result["errors"], "workers": _workers(server.pid)})
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    final = rows[-1]["workers"]
    return {"rows": rows, "largest_rss_mib": max(w["rss_mib"] for w in final),
            "largest_anon_mib": max(w["rss_anon_mib"] for w in final)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--against", help="the other version: a commit, branch or tag of this repository")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="instead of --against: this checkout with these variables against without them")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each (default 2)")
    parser.add_argument("--seconds", type=int, default=4, help="wrk's seconds per row (default 4)")
    parser.add_argument("--workspace", default=str(WORKSPACE), help="built by benchmarks/serving.py")
    parser.add_argument("--output", default=str(RESULTS / "worker-memory.json"))
    args = parser.parse_args()
    workspace = Path(args.workspace)
    if bool(args.against) == bool(args.env):
        raise SystemExit("give --against REV (another version) or --env NAME=VALUE (a setting), not both")
    if args.rounds < 1 or args.seconds < 1:
        raise SystemExit("--rounds and --seconds must be at least 1")
    if any("=" not in pair for pair in args.env):
        raise SystemExit("--env takes NAME=VALUE")
    info_file = workspace / "workspace.json"
    if not (workspace / "models" / "ACTIVE").is_file() or not info_file.is_file():
        raise SystemExit(f"no serving workspace at {workspace}: run .venv/bin/python benchmarks/serving.py first")
    scenarios = _scenarios(workspace, json.loads(info_file.read_text())["new_users"])
    settings = dict(pair.split("=", 1) for pair in args.env)
    with tempfile.TemporaryDirectory(prefix="worker-memory-code-") as folder:
        other_code, label = ROOT, "without " + ", ".join(settings)
        if args.against:
            commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", f"{args.against}^{{commit}}"],
                                    capture_output=True, text=True)
            if commit.returncode != 0:
                raise SystemExit(f"--against {args.against!r} is not a commit of this repository")
            other_code, label = Path(folder) / "code", commit.stdout.strip()
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(other_code),
                            label], check=True)
        runs: dict[str, list[dict]] = {"other": [], "this": []}
        try:
            for turn in range(args.rounds):
                for name in (("other", "this") if turn % 2 == 0 else ("this", "other")):
                    code, env = (other_code, {}) if name == "other" else (ROOT, settings)
                    runs[name].append(run(code, workspace, scenarios, args.seconds, env))
                    print(f"round {turn + 1}, {name}: workers' RSS at the end "
                          f"{[w['rss_mib'] for w in runs[name][-1]['rows'][-1]['workers']]} MiB (anonymous "
                          f"{[w['rss_anon_mib'] for w in runs[name][-1]['rows'][-1]['workers']]})", flush=True)
        finally:
            if args.against:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(other_code)], check=False)
    report = {"other": label, "this": "this checkout" + (f" with {', '.join(args.env)}" if args.env else ""),
              "rounds": args.rounds, "seconds_per_row": args.seconds,
              "largest_rss_mib": {name: [r["largest_rss_mib"] for r in values] for name, values in runs.items()},
              "largest_anon_mib": {name: [r["largest_anon_mib"] for r in values] for name, values in runs.items()},
              "runs": runs}
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({key: report[key] for key in ("other", "this", "largest_rss_mib", "largest_anon_mib")}, indent=2))
    print(f"\nwritten to {os.path.relpath(output, ROOT)}")


if __name__ == "__main__":
    main()
