"""Rules of the layout: `modeling` is the core and never imports Django; heavy libraries load on demand."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import modeling

ROOT = Path(__file__).resolve().parents[1]


def modules_loaded_by(imports: str, watched: tuple[str, ...]) -> list[str]:
    """Run ``imports`` in a fresh interpreter; return the loaded modules that start with a watched prefix."""
    code = (
        "import os, sys\n"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'recoapi.settings')\n"
        f"{imports}\n"
        f"print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in {watched!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return [m for m in result.stdout.strip().split(",") if m]


def test_modeling_never_imports_django() -> None:
    modules = sorted(f"modeling.{m.name}" for m in pkgutil.iter_modules(modeling.__path__))
    assert len(modules) >= 8
    assert modules_loaded_by("\n".join(f"import {m}" for m in modules), ("django", "recoapi")) == []


def test_every_entry_point_imports_the_runtime_module_first() -> None:
    for path in ("manage.py", "recoapi/wsgi.py", "recoapi/asgi.py", "recoapi/settings.py", "tests/conftest.py"):
        lines = [line for line in (ROOT / path).read_text().splitlines()
                 if line.startswith(("import ", "from ")) and "__future__" not in line]
        assert lines[0].startswith("from modeling import runtime"), path


def test_the_web_process_starts_without_tensorflow_torch_or_pandas() -> None:
    """Workers boot fast and small (no request loads them either: tests/serving/test_lean_workers.py); pandas
    and pyarrow (about 100 MB of a worker's memory) are for imports, training and the admin's reports."""
    imports = ("import modeling.runtime\nimport recoapi.wsgi, recoapi.urls, recoapi.catalog.admin, "
               "recoapi.recommendations.admin")
    assert modules_loaded_by(imports, ("tensorflow", "torch", "sentence_transformers", "pandas", "pyarrow")) == []


def test_serving_never_imports_evaluation_code() -> None:
    """The serving path ranks with modeling.ranking; splits, metrics, baselines and the harness stay out."""
    loaded = modules_loaded_by("import modeling.recommender, modeling.index, modeling.artifacts", ("modeling",))
    assert "modeling.ranking" in loaded
    evaluation = {"modeling.evaluate", "modeling.metrics", "modeling.splits", "modeling.baselines",
                  "modeling.cold_start", "modeling.tuning", "modeling.grid_search"}
    assert evaluation.isdisjoint(loaded), sorted(evaluation & set(loaded))


def test_training_does_not_import_the_evaluation_harness() -> None:
    assert "modeling.evaluate" not in modules_loaded_by("import modeling.train", ("modeling",))


def test_the_canonical_tables_are_the_bottom_layer_below_the_loaders() -> None:
    """modeling.datasets imports no loader; modeling.sources (the loaders and load_source) builds on it."""
    loaded = modules_loaded_by("import modeling.datasets", ("modeling",))
    assert not [m for m in loaded if m.startswith("modeling.sources")]
