"""The README's papermill lines, run exactly as written from a fresh checkout's root on the demo shop (issue 12).

The lines are read from README.md, so the test fails when the README drifts from what works. The
model-selection notebook is executed only here (it trains every model: once is enough), so this run also
checks what the notebook shows and writes.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import nbformat
import pytest

from tests.conftest import Pipeline

ROOT = Path(__file__).resolve().parents[2]
# Only to keep the test short: one epoch and one EASE strength; the README's parameters all stay. Two search
# trials and the results file: the notebook's search and its JSON output are checked by the same run.
TINY = {"model_selection.ipynb": " -p epochs 1 -y 'ease_l2: [50.0]' -p search_trials 2 -p output_json {results}"}


def readme_papermill_lines() -> list[str]:
    """The papermill command lines of the README's "Reports" section (continuation lines joined)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Reports\n", 1)[1].split("\n## ", 1)[0]
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        lines += [line.strip() for line in block.replace("\\\n", " ").splitlines() if "papermill" in line]
    return lines


def test_readme_shows_a_demo_line_and_an_own_data_line_per_notebook() -> None:
    lines = readme_papermill_lines()
    for notebook in ("report/eda.ipynb", "report/model_selection.ipynb"):
        mine = [line for line in lines if f" {notebook} " in line]
        assert len(mine) == 2, mine
        assert "-p data_path data/raw/demo" in mine[0] and "-p data_path data/raw/demo" not in mine[1]
        assert all(line.startswith("mkdir -p output && .venv/bin/papermill ") for line in mine)


@pytest.fixture
def fresh_checkout(pipeline: Pipeline, tmp_path: Path) -> Path:
    """A directory laid out like a clone after `make demo`: report/, manage.py, .venv and data/raw/demo only."""
    checkout = tmp_path / "checkout"
    (checkout / "data" / "raw").mkdir(parents=True)
    for name in ("report", "manage.py", ".venv"):
        (checkout / name).symlink_to((ROOT / name).resolve())
    (checkout / "data" / "raw" / "demo").symlink_to(pipeline.raw)
    return checkout


@pytest.mark.parametrize("notebook", ["eda.ipynb", "model_selection.ipynb"])
def test_readme_papermill_line_runs_on_the_demo_shop_from_a_fresh_checkout(fresh_checkout: Path,
                                                                           notebook: str) -> None:
    line = next(line for line in readme_papermill_lines()
                if f" report/{notebook} " in line and "data/raw/demo" in line)
    assert not (fresh_checkout / "output").exists()
    # PYTHONPATH: the kernel imports this checkout's `modeling`, as the editable install of a clone would.
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    results = fresh_checkout / "results.json"
    command = line + TINY.get(notebook, "").format(results=results)
    done = subprocess.run(command, shell=True, cwd=fresh_checkout, env=env,  # noqa: S602
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    written = fresh_checkout / shlex.split(line.split("&&", 1)[1])[2]
    notebook_out = nbformat.read(written, as_version=4)
    outputs = [o for cell in notebook_out.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert "amazon2018 from data/raw/demo" in "".join(o.get("text", "") for o in outputs)
    if notebook == "model_selection.ipynb":
        check_model_selection(outputs, json.loads(results.read_text()))


def check_model_selection(outputs: list[dict], written: dict) -> None:
    """What the model-selection notebook must show and write (parameters as in :data:`TINY`)."""
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 5  # metric@k curves, ranking stage, training curves, cold start, item map
    assert written["ranking_stage"]["selection"]["cross_validation"]
    assert set(written["models"]) == {"popularity", "item_knn", "ease", "ials", "transitions", "transitions+ease",
                                      "sequential_rules", "two_tower", "hybrid"}
    assert len(written["search"]["trials"]) == 2
    assert written["params"]["epochs"] == 1
    assert set(written["curves"]["two_tower"]["hr"]) == {"1", "5", "10", "20", "50", "100"}
    hr = written["curves"]["ease"]["hr"]
    assert hr["1"] <= hr["10"] <= hr["100"]
    assert {"given_0", "given_1", "given_3"} <= set(written["cold_users"])
