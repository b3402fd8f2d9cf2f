"""The report notebooks' parameter checks (report/eda.ipynb, report/model_selection.ipynb).

Each notebook calls its check in the cell right after its parameters (and the ones papermill injects), so an
out-of-range value stops the run at once with a ValueError that names the parameter and what it accepts, instead
of an error from deep inside the evaluation ("None of ['epoch'] are in the columns", "Cannot take a larger sample
than population"). Imports nothing heavy: it runs before the notebooks load their data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from modeling.sources import SOURCES


def _source(data_source: object) -> None:
    if data_source not in SOURCES:
        raise ValueError(f"data_source must be one of {', '.join(SOURCES)}; got {data_source!r}")


def _path(name: str, value: object, *, may_be_empty: bool) -> None:
    if not isinstance(value, str) or (not value and not may_be_empty):
        raise ValueError(f"{name} must be a path{' or empty' if may_be_empty else ''}; got {value!r}")


def _int_at_least(name: str, value: object, low: int, meaning: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be a whole number of at least {low}{meaning}; got {value!r}")


def check_eda_parameters(*, data_source: object, data_path: object, top_categories: object) -> None:
    """Check report/eda.ipynb's parameters.

    Raises:
        ValueError: a value out of range or of the wrong kind, naming the parameter and what it accepts.
    """
    _source(data_source)
    _path("data_path", data_path, may_be_empty=False)
    _int_at_least("top_categories", top_categories, 1)


def check_model_selection_parameters(*, data_source: object, data_path: object, embeddings_dir: object,
                                     params_file: object, epochs: object, search_trials: object, seed: object,
                                     cold_fraction: object, ease_l2: object, output_json: object) -> None:
    """Check report/model_selection.ipynb's parameters.

    Raises:
        ValueError: a value out of range or of the wrong kind, naming the parameter and what it accepts.
    """
    _source(data_source)
    _path("data_path", data_path, may_be_empty=False)
    _path("embeddings_dir", embeddings_dir, may_be_empty=False)
    _path("params_file", params_file, may_be_empty=True)
    _path("output_json", output_json, may_be_empty=True)
    _int_at_least("epochs", epochs, 0, " (0: as in the parameters)")
    _int_at_least("search_trials", search_trials, 0, " (0: no search)")
    _int_at_least("seed", seed, 0)
    if (isinstance(cold_fraction, bool) or not isinstance(cold_fraction, int | float)
            or not 0 < cold_fraction < 1):
        raise ValueError(f"cold_fraction must be a number between 0 and 1 (the share of shoppers, and of products, "
                         f"held out as cold), both excluded; got {cold_fraction!r}")
    if (not isinstance(ease_l2, Sequence) or isinstance(ease_l2, str) or not ease_l2
            or not all(_positive_number(value) for value in ease_l2)):
        raise ValueError(f"ease_l2 must be a non-empty list of positive numbers (EASE's λ to choose from); "
                         f"got {ease_l2!r}")


def _positive_number(value: object) -> bool:
    return (not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
            and value > 0)
