"""The report notebooks refuse out-of-range parameters in the cell after their parameters, with a ValueError that
says what each accepts (before: `-p epochs -1` ended in pandas' "None of ['epoch'] are in the columns", `-p
cold_fraction 2` in numpy's "Cannot take a larger sample than population"), and list every data source."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from modeling.report_params import check_eda_parameters, check_model_selection_parameters
from modeling.sources import SOURCES

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / "report"

MODEL_SELECTION = {"data_source": "amazon2018", "data_path": "data/raw/demo",
                   "embeddings_dir": "data/evaluation/report", "params_file": "", "epochs": 0, "search_trials": 0,
                   "seed": 42, "cold_fraction": 0.1, "ease_l2": [10.0, 50.0], "output_json": ""}


def test_the_defaults_pass() -> None:
    check_model_selection_parameters(**MODEL_SELECTION)
    check_eda_parameters(data_source="clickstream", data_path="data/raw/demo", top_categories=15)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("epochs", -1, "epochs must be a whole number of at least 0 (0: as in the parameters); got -1"),
    ("epochs", 1.5, "epochs must be a whole number"),
    ("search_trials", -2, "search_trials must be a whole number of at least 0"),
    ("seed", True, "seed must be a whole number"),
    ("cold_fraction", 2, "cold_fraction must be a number between 0 and 1"),
    ("cold_fraction", 0, "cold_fraction must be a number between 0 and 1"),
    ("cold_fraction", 1.0, "cold_fraction must be a number between 0 and 1"),
    ("ease_l2", [], "ease_l2 must be a non-empty list of positive numbers"),
    ("ease_l2", [10.0, -1.0], "ease_l2 must be a non-empty list of positive numbers"),
    ("ease_l2", "10", "ease_l2 must be a non-empty list of positive numbers"),
    ("data_source", "amazon", "data_source must be one of amazon2018, movielens, retailrocket, csv, clickstream; "
                              "got 'amazon'"),
    ("data_path", "", "data_path must be a path"),
    ("output_json", 3, "output_json must be a path or empty"),
])
def test_model_selection_parameters_out_of_range_are_refused(name: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        check_model_selection_parameters(**{**MODEL_SELECTION, name: value})


@pytest.mark.parametrize(("top_categories", "source"), [(0, "amazon2018"), (15, "csv2")])
def test_eda_parameters_out_of_range_are_refused(top_categories: object, source: str) -> None:
    with pytest.raises(ValueError, match="top_categories must be|data_source must be one of .*clickstream"):
        check_eda_parameters(data_source=source, data_path="data/raw/demo", top_categories=top_categories)


@pytest.mark.parametrize("notebook", ["eda.ipynb", "model_selection.ipynb"])
def test_the_parameter_comment_lists_every_source(notebook: str) -> None:
    cells = nbformat.read(REPORT / notebook, as_version=4).cells
    parameters = next(cell for cell in cells if "parameters" in cell.metadata.get("tags", []))
    line = next(line for line in parameters.source.splitlines() if line.startswith("data_source ="))
    assert line.split("#", 1)[1].strip().split(" | ") == list(SOURCES)


@pytest.mark.parametrize(("notebook", "parameters", "message"), [
    ("model_selection.ipynb", {"epochs": -1}, "epochs must be a whole number of at least 0"),
    ("model_selection.ipynb", {"cold_fraction": 2}, "cold_fraction must be a number between 0 and 1"),
    ("eda.ipynb", {"data_source": "clicks"}, "data_source must be one of amazon2018, movielens, retailrocket, csv, "
                                             "clickstream"),
])
def test_the_notebook_stops_at_its_parameter_check(notebook: str, parameters: dict, message: str,
                                                   tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run as papermill runs it: the check is the cell right after the injected parameters, before any data is
    read (a bad data path would fail later, with another message)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the kernel imports this checkout's `modeling`
    output = tmp_path / notebook
    with pytest.raises(PapermillExecutionError) as error:
        papermill.execute_notebook(str(REPORT / notebook), str(output), cwd=str(REPORT), progress_bar=False,
                                   parameters={**parameters, "data_path": str(tmp_path / "no-such-folder")})
    assert error.value.ename == "ValueError"
    assert message in error.value.evalue
    cells = [cell for cell in nbformat.read(output, as_version=4).cells if cell.cell_type == "code"]
    injected = next(i for i, cell in enumerate(cells) if "injected-parameters" in cell.metadata.get("tags", []))
    assert "check_" in cells[injected + 1].source and cells[injected + 1].outputs[0]["ename"] == "ValueError"
    assert not cells[injected + 2].outputs  # nothing after it ran
