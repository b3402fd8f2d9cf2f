"""Write poetry.lock from pip's resolution (constraints.txt), for those who install with poetry.

Poetry's own resolver needs the package index's per-version JSON API, which not every index serves; pip
resolves from the simple index. This script turns pip's resolution into a lock poetry reads:

1. the pinned versions of constraints.txt (what ``make install`` installs);
2. each one's summary, Python requirement and dependencies from its installed metadata in ``.venv``
   (Requires-Dist, markers and extras included);
3. each one's files and SHA-256 hashes from the simple index (PEP 691 JSON; the index pip is configured
   with, or ``--index-url``);
4. which packages the project needs (``main``) and which only its ``dev`` extra needs, by following the
   dependencies from pyproject.toml with the markers evaluated for CPython 3.11 on Linux x86-64;
5. poetry's own ``Locker`` writes the file (its format and its content hash of pyproject.toml).

The lock is therefore pip's resolution for Linux x86-64 and CPython 3.11: a dependency that only another
platform needs (``sys_platform == "win32"``) is listed among its dependents but not locked.

Run with a Python that has poetry (``make poetry-lock`` makes ``.venv-poetry`` for it):
    .venv-poetry/bin/python tools/poetry_lock.py [--index-url URL] [--check]
``--check`` compares poetry.lock with constraints.txt and exits 1 when they differ (no network).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tomllib
import urllib.request
from collections import deque
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_sdist_filename, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[1]
ENVIRONMENT = {"python_version": "3.11", "python_full_version": "3.11.7", "sys_platform": "linux",
               "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
               "implementation_name": "cpython", "platform_python_implementation": "CPython"}
"""Where pip's resolution was made: markers are evaluated for this environment."""


UNPINNED = frozenset({"pip", "setuptools", "wheel"})
"""Installed with every virtualenv, so ``pip freeze`` leaves them out of constraints.txt; locked as installed."""


def pins(path: Path = ROOT / "constraints.txt") -> dict[str, str]:
    """Canonical name -> version of every ``name==version`` line."""
    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[canonicalize_name(name)] = version.strip()
    return out


def installed_metadata(python: Path) -> dict[str, dict]:
    """Canonical name -> {name, version, summary, requires_python, requires_dist} of the venv's distributions."""
    code = ("import json, importlib.metadata as m\n"
            "print(json.dumps({d.metadata['Name']: {'version': d.version, 'summary': d.metadata.get('Summary'),"
            " 'requires_python': d.metadata.get('Requires-Python'), 'requires_dist': d.requires or []}"
            " for d in m.distributions()}))")
    found = json.loads(subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout)
    return {canonicalize_name(name): {"name": name, **meta} for name, meta in found.items()}


def default_index_url(python: Path) -> str:
    """The index pip of ``python`` uses (its configuration, else PyPI)."""
    done = subprocess.run([str(python), "-m", "pip", "config", "get", "global.index-url"], capture_output=True,
                          text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "https://pypi.org/simple"


def index_files(index_url: str, name: str, version: str) -> list[dict[str, str]]:
    """``[{"file", "hash"}]`` of ``name`` ``version`` on the simple index (PEP 691 JSON)."""
    request = urllib.request.Request(f"{index_url.rstrip('/')}/{name}/",
                                     headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310  (the configured index)
        page = json.loads(response.read())
    files = []
    for entry in page.get("files", []):
        filename = entry["filename"]
        try:
            found = parse_wheel_filename(filename)[1] if filename.endswith(".whl") else \
                parse_sdist_filename(filename)[1]
        except ValueError:
            continue
        if str(found) == version and "sha256" in entry.get("hashes", {}):
            files.append({"file": filename, "hash": "sha256:" + entry["hashes"]["sha256"]})
    return sorted(files, key=lambda f: f["file"])


LOCAL_BUILDS = {"cpu": ("pytorch-cpu", "https://download.pytorch.org/whl/cpu")}
"""Where a version with a local label (``torch==2.13.0+cpu``) is published: not on the simple index."""


def find_links(python: Path) -> list[Path]:
    """The local wheel folders pip of ``python`` is configured with (``find-links``)."""
    done = subprocess.run([str(python), "-m", "pip", "config", "get", "global.find-links"], capture_output=True,
                          text=True, check=False)
    return [Path(p) for p in done.stdout.split()] if done.returncode == 0 else []


def local_files(folders: list[Path], name: str, version: str) -> list[dict[str, str]]:
    """``[{"file", "hash"}]`` of the wheels of ``name`` ``version`` in local folders (hashed here)."""
    import hashlib

    files = []
    for folder in folders:
        for path in sorted(folder.glob("*.whl")) if folder.is_dir() else []:
            try:
                wheel_name, wheel_version, _, _ = parse_wheel_filename(path.name)
            except ValueError:
                continue
            if wheel_name == name and str(wheel_version) == version:
                files.append({"file": path.name, "hash": "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()})
    return files


def _needed(requirements: list[str], extras: set[str]) -> list[Requirement]:
    """The requirements that apply here, for a package installed with ``extras``."""
    out = []
    for text in requirements:
        requirement = Requirement(text)
        marker: Marker | None = requirement.marker
        if marker is None or any(marker.evaluate({**ENVIRONMENT, "extra": extra}) for extra in extras or {""}):
            out.append(requirement)
    return out


def reachable(start: list[Requirement], metadata: dict[str, dict]) -> dict[str, int]:
    """Canonical names reachable from ``start`` with their depth (0: named by the project)."""
    depth: dict[str, int] = {}
    queue = deque((requirement, 0) for requirement in start)
    extras_seen: dict[str, set[str]] = {}
    while queue:
        requirement, level = queue.popleft()
        name = canonicalize_name(requirement.name)
        extras = set(requirement.extras)
        if name in depth and extras <= extras_seen.get(name, set()):
            continue
        depth[name] = min(level, depth.get(name, level))
        extras_seen[name] = extras_seen.get(name, set()) | extras
        meta = metadata.get(name)
        if meta is None:
            raise SystemExit(f"{requirement.name} is needed but not installed in the virtualenv: run make install")
        queue.extend((dep, level + 1) for dep in _needed(meta["requires_dist"], extras_seen[name]))
    return depth


def write_lock(index_url: str, python: Path) -> None:
    from poetry.core.packages.dependency_group import MAIN_GROUP
    from poetry.core.version.markers import parse_marker
    from poetry.factory import Factory
    from poetry.inspection.info import PackageInfo
    from poetry.packages.transitive_package_info import TransitivePackageInfo

    pinned = pins()
    metadata = installed_metadata(python)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    main = reachable(_needed(project["dependencies"], set()), metadata)
    dev = {name: level for name, level in reachable(
        _needed(project["optional-dependencies"]["dev"], set()), metadata).items() if name not in main}
    poetry = Factory().create_poetry(ROOT)
    packages = {}
    for name, level in sorted({**dev, **main}.items()):
        meta = metadata[name]
        if pinned.get(name, meta["version"] if name in UNPINNED else None) != meta["version"]:
            raise SystemExit(f"{meta['name']} {meta['version']} is installed but constraints.txt pins "
                             f"{pinned.get(name)}: run make install")
        label = meta["version"].partition("+")[2]
        if label in LOCAL_BUILDS:  # e.g. the CPU build of torch: the same wheel as on its publisher's index
            files = local_files(find_links(python), name, meta["version"])
        else:
            files = index_files(index_url, name, meta["version"])
        if not files:
            raise SystemExit(f"{meta['name']} {meta['version']}: no files with hashes on {index_url}")
        package = PackageInfo(name=meta["name"], version=meta["version"], summary=meta["summary"],
                              requires_dist=meta["requires_dist"], requires_python=meta["requires_python"],
                              files=files).to_package()
        if label in LOCAL_BUILDS:
            package._source_type, package._source_reference = "legacy", LOCAL_BUILDS[label][0]
            package._source_url = LOCAL_BUILDS[label][1]
        if name in main:
            info = TransitivePackageInfo(level, {MAIN_GROUP}, {MAIN_GROUP: parse_marker("")})
        else:
            package.optional = True
            info = TransitivePackageInfo(level, {MAIN_GROUP}, {MAIN_GROUP: parse_marker('extra == "dev"')})
        packages[package] = info
        print(f"{meta['name']} {meta['version']}: {len(files)} files", file=sys.stderr)
    poetry.locker.set_lock_data(poetry.package, packages)
    print(f"wrote {ROOT / 'poetry.lock'}: {len(main)} packages for the project, {len(dev)} for dev only",
          file=sys.stderr)


def lock_versions(path: Path = ROOT / "poetry.lock") -> dict[str, str]:
    """Canonical name -> version of every package in a poetry.lock."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return {canonicalize_name(p["name"]): p["version"] for p in data.get("package", [])}


def differences(lock: dict[str, str], constraints: dict[str, str]) -> list[str]:
    """Packages whose locked version is not the pinned one, locked but not pinned, or pinned but not locked."""
    out = [f"{name}: poetry.lock {version}, constraints.txt {constraints.get(name, 'not pinned')}"
           for name, version in lock.items() if constraints.get(name) != version and name not in UNPINNED]
    out += [f"{name}: constraints.txt {version}, not in poetry.lock" for name, version in constraints.items()
            if name not in lock and name not in build_requirements()]
    return sorted(out)


def build_requirements() -> set[str]:
    """What pyproject.toml's build backend needs (pinned for ``pip install -e .``, not a dependency)."""
    build = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8")).get("build-system", {})
    return {canonicalize_name(Requirement(text).name) for text in build.get("requires", [])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index-url", help="simple index to read the files' hashes from (default: pip's)")
    parser.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"),
                        help="the virtualenv's Python whose installed metadata is read")
    parser.add_argument("--check", action="store_true", help="only compare poetry.lock with constraints.txt")
    args = parser.parse_args()
    if args.check:
        problems = differences(lock_versions(), pins())
        for problem in problems:
            print(problem, file=sys.stderr)
        raise SystemExit(1 if problems else 0)
    python = Path(args.python)
    write_lock(args.index_url or default_index_url(python), python)


if __name__ == "__main__":
    main()
