"""Shared fixtures: a tiny demo shop run through the real pipeline once per session."""

from __future__ import annotations

from modeling import runtime as _runtime  # noqa: F401  (first: environment for TensorFlow)

import fcntl  # noqa: E402
import functools  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from modeling import datasets as ds  # noqa: E402
from modeling.sources import load_source  # noqa: E402
from modeling.synthetic import DemoParams, generate_demo_data  # noqa: E402

# In the test process the lists the API shows are written only when a test flushes them: a writer thread
# would write outside each test's transaction. Services started by tests (gunicorn) use the shipped thread.
os.environ.setdefault("RECO_IMPRESSIONS_WRITER", "manual")
from django.conf import settings as _django_settings  # noqa: E402

_django_settings.RECO_IMPRESSIONS_WRITER = "manual"  # also when pytest-django loaded the settings already

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
TINY = DemoParams(n_users=150, n_items=60, n_interactions=1800, seed=7)


_DB_FIXTURES = {"db", "transactional_db", "django_db_setup", "service", "staff_client", "shopper_client"}


_LIVE = Path(__file__).resolve().parent / "serving"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that touches the database, so the PostgreSQL run can select them (-m database), and
    every test of tests/serving (live gunicorn processes, some with bounds on how soon they react) as
    ``live``: `make test` runs those one at a time, the others two at a time (pytest-xdist)."""
    for item in items:
        if item.get_closest_marker("django_db") or _DB_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.database)
        if _LIVE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.live)


def pytest_report_header(config: pytest.Config) -> str:
    from django.db import connection

    return f"database engine: {connection.vendor}"


@dataclass
class Pipeline:
    """Paths of a fully built tiny pipeline: raw files -> snapshot -> embeddings -> bundle."""

    raw: Path
    processed: Path
    embeddings: Path
    models: Path
    version: str
    data: ds.CanonicalData


PIPELINE_CACHE = Path(__file__).resolve().parents[1] / ".test-cache"
"""Where the tiny pipeline is built once per version of the code it runs (see :func:`_built_pipeline`)."""
_PIPELINE_INPUTS = ("modeling", "tests/conftest.py", "pyproject.toml", "constraints.txt")
_COMPLETE = "complete"


@functools.cache
def _pipeline_key() -> str:
    """A digest of everything the tiny pipeline's build runs or reads: the modeling package, this file,
    the pinned dependencies and the interpreter; any change to them builds the pipeline again."""
    root = PIPELINE_CACHE.parent
    digest = hashlib.sha256(f"{sys.version}|{TINY}".encode())
    for name in _PIPELINE_INPUTS:
        path = root / name
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            digest.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _build_pipeline(root: Path) -> None:
    """The real pipeline on the tiny shop, under ``root``: raw files, snapshot, MiniLM embeddings, TFRS
    training, the bundle written and set active."""
    from modeling import artifacts
    from modeling.embeddings import build_embeddings, load_embeddings
    from modeling.train import publish, train_model
    from modeling.two_tower import TwoTowerParams

    generate_demo_data(root / "raw", TINY, progress=False)
    data = load_source("amazon2018", root / "raw")
    ds.write_snapshot(data, root / "processed", source="amazon2018")
    build_embeddings(data, root / "embeddings", progress=False)
    embeddings = load_embeddings(root / "embeddings")
    result = train_model(data, embeddings, TwoTowerParams(epochs=3, batch_size=128, seed=1))
    bundle = publish(result, data, embeddings, root / "models")
    artifacts.set_active(root / "models", bundle.name)


def _built_pipeline() -> Path:
    """The tiny pipeline, built once for this version of the code and kept under :data:`PIPELINE_CACHE`.

    Every pytest process of `make test` (two xdist workers, the live run, the PostgreSQL run) needed the same
    pipeline and built it anew, about 30 to 45 s each; the first process to get the lock builds it, the
    others wait for it and copy it (:func:`pipeline`). A build that did not finish (no ``complete`` file)
    is removed and made again; builds of other versions are removed.
    """
    PIPELINE_CACHE.mkdir(exist_ok=True)
    target = PIPELINE_CACHE / f"pipeline-{_pipeline_key()}"
    with open(PIPELINE_CACHE / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file is closed, or the process dies
        if not (target / _COMPLETE).exists():
            for old in PIPELINE_CACHE.glob("pipeline-*"):
                shutil.rmtree(old, ignore_errors=True)
            target.mkdir()
            _build_pipeline(target)
            (target / _COMPLETE).touch()
    return target


@pytest.fixture(scope="session")
def tiny_raw(pipeline: Pipeline) -> Path:
    """Amazon-format files of a tiny demo shop."""
    return pipeline.raw


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    """The real pipeline on the tiny shop (embeddings with MiniLM, TFRS training, bundle written and active).

    A private copy per test process of the one built for this version of the code (:func:`_built_pipeline`),
    so a test that writes into it (new embeddings, a bundle's files) changes no other process's copy.
    """
    from modeling import artifacts

    built = _built_pipeline()
    root = tmp_path_factory.mktemp("pipeline")
    for part in ("raw", "processed", "embeddings"):
        shutil.copytree(built / part, root / part)
    copy_models(built / "models", root / "models")
    return Pipeline(raw=root / "raw", processed=root / "processed", embeddings=root / "embeddings",
                    models=root / "models", version=str(artifacts.read_active(root / "models")),
                    data=load_source("amazon2018", root / "raw"))


LINK_AT_BYTES = 1 << 20


def _copy_or_link(source: str, target: str) -> str:
    """Hard-link the text encoder's large files (about 90 MB, never written in place), copy the rest."""
    if "text_encoder" in Path(source).parts and os.path.getsize(source) >= LINK_AT_BYTES:
        try:
            os.link(source, target)
            return target
        except OSError:
            pass  # another file system: copy
    return shutil.copy2(source, target)


def copy_models(source: Path, target: Path) -> None:
    """Copy a models/ directory for a test to modify; a copy per test of the ONNX weights filled the disk.

    Tests may delete or replace any file of the copy, and rewrite any file under 1 MiB in place; the
    large text encoder files are links to the originals, so writing into one of them would damage them.
    """
    shutil.copytree(source, target, copy_function=_copy_or_link)


@pytest.fixture
def models_copy(pipeline: Pipeline, tmp_path: Path) -> Path:
    """A private copy of the pipeline's models/ directory, safe to modify (see :func:`copy_models`)."""
    target = tmp_path / "models"
    copy_models(pipeline.models, target)
    return target


@pytest.fixture(scope="session", autouse=True)
def _text_export_from_the_pipeline() -> Iterator[None]:
    """Publishing into a new models/ folder exports MiniLM to ONNX (about 20 s); in the tests that publish
    in-process (the commands end to end, the freshness test, a second bundle) the export the tiny pipeline
    made with the same code is copied instead, its large weights linked (see :func:`copy_models`). The
    export itself is tested where the pipeline is built and in tests/modeling/test_exported_text.py, which
    imported it by name before this patch; processes started by tests (gunicorn, commands in a subprocess)
    still export. Session-wide, so fixtures of a wider scope than a test's (a module's second bundle) are
    covered too."""
    from modeling import exported_text

    original = exported_text.export_text_encoder

    def from_the_pipeline(model_path: str | Path, directory: Path) -> dict:
        built = PIPELINE_CACHE / f"pipeline-{_pipeline_key()}"
        made = built / "models" / exported_text.EXPORTS_DIR / Path(directory).name
        if not (built / _COMPLETE).exists() or not (made / exported_text.SETTINGS_FILE).is_file():
            return original(model_path, directory)
        directory = Path(directory)
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = directory.parent / f".{directory.name}.copy"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(made, staging, copy_function=_copy_or_link)
        os.replace(staging, directory)
        return json.loads((directory / exported_text.SETTINGS_FILE).read_text(encoding="utf-8"))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(exported_text, "export_text_encoder", from_the_pipeline)
        yield


def shared_dataset(name: str) -> Path:
    """Path of a dataset under ../shared/datasets, skipping the test when it is absent."""
    path = SHARED_DATASETS / name
    if not path.is_dir():
        pytest.skip(f"shared dataset {name} not available")
    return path
