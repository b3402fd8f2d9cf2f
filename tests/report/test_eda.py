"""EDA statistics against hand-computed values, and the notebook executed on demo data."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pandas as pd
import pytest

from modeling import datasets as ds
from modeling import eda
from tests.conftest import Pipeline

REPORT = Path(__file__).resolve().parents[2] / "report"


def small() -> ds.CanonicalData:
    items = pd.DataFrame({ds.ITEM_ID: ["a", "b", "c", "d"], ds.TITLE: ["A x", "B", "", "D"],
                          ds.CATEGORY: ["Toys > Cars", "Toys", "Books", ""]})
    inter = pd.DataFrame({ds.USER_ID: ["u1", "u1", "u1", "u2"], ds.ITEM_ID: ["a", "a", "b", "a"],
                          ds.TIMESTAMP: [0, 86_400 * 40, 86_400 * 40, 5], ds.RATING: [5.0, 3.0, None, 4.0]})
    return ds.finish_tables(items, inter, report={}, fingerprint="x", source_name="t", keep_items="all")


def test_counts_long_tail_and_categories_hand_computed() -> None:
    data = small()
    assert eda.per_user_counts(data).to_dict() == {"u1": 3, "u2": 1}
    assert eda.per_item_counts(data).tolist() == [3, 1, 0, 0]
    tail = eda.long_tail_curve(data)
    assert tail["interaction_share"].tolist() == [0.75, 1.0, 1.0, 1.0]
    assert eda.top_level_categories(data).to_dict() == {"Toys": 4}
    assert eda.interactions_per_month(data).tolist() == [2, 2]
    summary = eda.summary(data)
    assert summary["density"] == pytest.approx(4 / 8)
    assert summary["items_never_interacted"] == 2
    assert summary["rating_mean"] == pytest.approx(4.0)
    assert summary["items_with_title"] == 3
    assert eda.text_lengths(data)["title"].tolist() == [2, 1, 1]


def test_eda_notebook_runs_on_demo_data(pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import papermill

    monkeypatch.setenv("PYTHONPATH", str(REPORT.parent))  # the kernel imports this checkout's `modeling`
    output = tmp_path / "eda.ipynb"
    papermill.execute_notebook(str(REPORT / "eda.ipynb"), str(output), cwd=str(REPORT), progress_bar=False,
                               parameters={"data_source": "amazon2018", "data_path": str(pipeline.raw)})
    notebook = nbformat.read(output, as_version=4)
    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 6
    text = "".join(o.get("text", "") for o in outputs)
    assert f'"users": {pipeline.data.counts()["users"]}' in text
