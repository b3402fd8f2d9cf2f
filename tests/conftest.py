"""Shared fixtures: a tiny demo shop run through the real pipeline once per session."""

from __future__ import annotations

from modeling import runtime as _runtime  # noqa: F401  (first: environment for TensorFlow)

import os  # noqa: E402
import shutil  # noqa: E402
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


@pytest.fixture(scope="session")
def tiny_raw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Amazon-format files of a tiny demo shop."""
    path = tmp_path_factory.mktemp("raw")
    generate_demo_data(path, TINY, progress=False)
    return path


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory, tiny_raw: Path) -> Pipeline:
    """The real pipeline on the tiny shop (embeddings with MiniLM, TFRS training, bundle written and active)."""
    from modeling import artifacts
    from modeling.embeddings import build_embeddings, load_embeddings
    from modeling.train import publish, train_model
    from modeling.two_tower import TwoTowerParams

    root = tmp_path_factory.mktemp("pipeline")
    data = load_source("amazon2018", tiny_raw)
    ds.write_snapshot(data, root / "processed", source="amazon2018")
    build_embeddings(data, root / "embeddings", progress=False)
    embeddings = load_embeddings(root / "embeddings")
    result = train_model(data, embeddings, TwoTowerParams(epochs=3, batch_size=128, seed=1))
    bundle = publish(result, data, embeddings, root / "models")
    artifacts.set_active(root / "models", bundle.name)
    return Pipeline(raw=tiny_raw, processed=root / "processed", embeddings=root / "embeddings",
                    models=root / "models", version=bundle.name, data=data)


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


def shared_dataset(name: str) -> Path:
    """Path of a dataset under ../shared/datasets, skipping the test when it is absent."""
    path = SHARED_DATASETS / name
    if not path.is_dir():
        pytest.skip(f"shared dataset {name} not available")
    return path
