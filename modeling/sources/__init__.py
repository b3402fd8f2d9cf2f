"""One loader per data source, each returning :class:`modeling.datasets.CanonicalData`.

Every loader reads and validates its files completely (raising
:class:`~modeling.errors.DataValidationError` with file, line and problem) and
ends with :func:`modeling.datasets.finish_tables`, the shared validation step.
"""

from __future__ import annotations

from collections.abc import Callable

from modeling.datasets import CanonicalData, InteractionFilters
from modeling.sources.amazon import load_amazon2018
from modeling.sources.clickstream import load_clickstream
from modeling.sources.generic_csv import load_csv
from modeling.sources.movielens import load_movielens
from modeling.sources.retailrocket import load_retailrocket

Loader = Callable[..., CanonicalData]

LOADERS: dict[str, Loader] = {
    "amazon2018": load_amazon2018,
    "movielens": load_movielens,
    "retailrocket": load_retailrocket,
    "csv": load_csv,
    "clickstream": load_clickstream,
}

__all__ = ["LOADERS", "InteractionFilters", "load_amazon2018", "load_clickstream", "load_csv", "load_movielens",
           "load_retailrocket"]
