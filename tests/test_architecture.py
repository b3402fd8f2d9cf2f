"""Rules of the layout: `modeling` is the core and never imports Django."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import modeling

ROOT = Path(__file__).resolve().parents[1]


def test_modeling_never_imports_django() -> None:
    modules = sorted(f"modeling.{m.name}" for m in pkgutil.iter_modules(modeling.__path__))
    code = (
        "import sys\n"
        f"for name in {modules!r}:\n"
        "    __import__(name)\n"
        "leaked = sorted(m for m in sys.modules if m == 'django' or m.startswith(('django.', 'recoapi')))\n"
        "print(','.join(leaked))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == ""
    assert len(modules) >= 8


def test_every_entry_point_imports_the_runtime_module_first() -> None:
    for path in ("manage.py", "recoapi/wsgi.py", "recoapi/asgi.py", "recoapi/settings.py", "tests/conftest.py"):
        lines = [line for line in (ROOT / path).read_text().splitlines()
                 if line.startswith(("import ", "from ")) and "__future__" not in line]
        assert lines[0].startswith("from modeling import runtime"), path


def test_the_web_process_starts_without_tensorflow_or_torch() -> None:
    """Workers boot fast and small: TensorFlow and torch load only when a request needs them."""
    code = (
        "import modeling.runtime, os, sys\n"
        "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'recoapi.settings')\n"
        "import recoapi.wsgi, recoapi.urls, recoapi.catalog.admin, recoapi.recommendations.admin\n"
        "print(','.join(m for m in ('tensorflow', 'torch', 'sentence_transformers') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == ""
