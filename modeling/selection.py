"""Tables and projections for the model-selection report (report/model_selection.ipynb).

The notebook runs the evaluation protocols; these functions only reshape their results
(JSON-friendly dicts from :mod:`modeling.evaluate` and :mod:`modeling.cold_start`) into
tables, and project the trained item vectors to two dimensions.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from modeling import datasets as ds
from modeling.cold_start import served_label

logger = logging.getLogger(__name__)

def results_table(comparison: dict[str, Any]) -> pd.DataFrame:
    """One row per (model, protocol, metric) with its value.

    Args:
        comparison: :func:`modeling.evaluate.compare_leave_last_out` output, optionally with
            ``cold_users`` and ``cold_items`` from :mod:`modeling.cold_start` (the served model's cold-shopper
            results, keyed ``two_tower`` there, become ``hybrid`` rows, as in leave-last-out).

    Returns:
        DataFrame with columns ``model``, ``protocol``, ``metric``, ``value``.
    """
    rows = []
    for model, metrics in comparison.get("models", {}).items():
        rows += [(model, "leave_last_out", metric, value) for metric, value in metrics.items() if metric != "users"]
    for given, models in comparison.get("cold_users", {}).items():
        if not given.startswith("given_"):
            continue
        protocol = f"cold_users_{given}"
        for model, metrics in models.items():  # the served model under its leave-last-out name, hybrid
            rows += [(served_label(model), protocol, metric, value) for metric, value in metrics.items()]
    for model, metrics in comparison.get("cold_items", {}).items():
        if isinstance(metrics, dict) and model not in ("differences", "over_promotion"):
            rows += [(model, "cold_items", metric, value) for metric, value in metrics.items()]
    return pd.DataFrame(rows, columns=["model", "protocol", "metric", "value"])


def wide_table(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`results_table` as model rows x (protocol, metric) columns."""
    return table.pivot_table(index="model", columns=["protocol", "metric"], values="value", sort=False)


def curves_table(comparison: dict[str, Any], metric: str = "hr") -> pd.DataFrame:
    """Metric@k per model: rows k (int, ascending), one column per model."""
    curves = comparison.get("curves", {})
    frame = pd.DataFrame({model: {int(k): v for k, v in values[metric].items()} for model, values in curves.items()})
    return frame.sort_index()


def cold_users_table(cold: dict[str, Any], metric: str = "hr@10") -> pd.DataFrame:
    """Cold-user results: rows = interactions given (int), columns = models (the served model as ``hybrid``)."""
    frame = pd.DataFrame({int(given.removeprefix("given_")): {served_label(model): values[metric]
                                                              for model, values in models.items()}
                          for given, models in cold.items() if given.startswith("given_")})
    return frame.T.sort_index()


def pca_2d(vectors: np.ndarray) -> np.ndarray:
    """Project (n, d) vectors on their first two principal components. Returns (n, 2) float32.

    Deterministic: each component's sign is fixed so that its largest loading is positive.
    """
    centred = np.asarray(vectors, dtype=np.float64) - np.mean(vectors, axis=0)
    if len(centred) < 2:
        return np.zeros((len(centred), 2), dtype=np.float32)
    _, _, components = np.linalg.svd(centred, full_matrices=False)
    components = components[:2]
    signs = np.sign(components[np.arange(len(components)), np.argmax(np.abs(components), axis=1)])
    projected = centred @ (components * signs[:, None]).T
    if projected.shape[1] < 2:
        projected = np.pad(projected, ((0, 0), (0, 2 - projected.shape[1])))
    return projected.astype(np.float32)


def item_map(item_vectors: np.ndarray, items: pd.DataFrame, *, top_categories: int = 8,
             level: int = 0) -> pd.DataFrame:
    """2-d map of item vectors for plotting, labelled by category.

    Args:
        item_vectors: (n, d) candidate vectors aligned with the rows of ``items``.
        items: canonical items table (n rows).
        top_categories: the most frequent categories keep their name; the rest become "other".
        level: breadcrumb level used as the label (0: top level); items without one get "(none)".

    Returns:
        DataFrame with ``item_id``, ``x``, ``y``, ``category`` (n rows).
    """
    xy = pca_2d(item_vectors)
    parts = items[ds.CATEGORY].fillna("").astype(str).str.split(ds.CATEGORY_SEPARATOR)
    labels = parts.map(lambda p: p[level] if len(p) > level and p[level] else "(none)")
    keep = set(labels.value_counts().head(top_categories).index)
    labels = labels.where(labels.isin(keep), "other")
    return pd.DataFrame({"item_id": items[ds.ITEM_ID].astype(str).to_numpy(), "x": xy[:, 0], "y": xy[:, 1],
                         "category": labels.to_numpy()})
