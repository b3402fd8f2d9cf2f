"""One loader per data source, each returning :class:`modeling.datasets.CanonicalData`, and the dispatcher.

:func:`load_source` picks the loader by name; :mod:`modeling.datasets` (the canonical tables and the
shared validation every loader ends with) is the layer below and imports no loader.

Every loader reads and validates its files completely (raising
:class:`~modeling.errors.DataValidationError` with file, line and problem) and
ends with :func:`modeling.datasets.finish_tables`, the shared validation step.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path

from modeling import datasets as ds
from modeling.datasets import CanonicalData, InteractionFilters
from modeling.errors import DataValidationError
from modeling.sources.amazon import load_amazon2018
from modeling.sources.clickstream import load_clickstream
from modeling.sources.generic_csv import load_csv
from modeling.sources.movielens import load_movielens
from modeling.sources.retailrocket import load_retailrocket

logger = logging.getLogger(__name__)

Loader = Callable[..., CanonicalData]

LOADERS: dict[str, Loader] = {
    "amazon2018": load_amazon2018,
    "movielens": load_movielens,
    "retailrocket": load_retailrocket,
    "csv": load_csv,
    "clickstream": load_clickstream,
}

SOURCES: tuple[str, ...] = tuple(LOADERS)
"""The names of the data sources (``load_data --source``, ``RECO_DATA_SOURCE``)."""


def load_source(
    source: str,
    path: Path | str,
    *,
    filters: ds.InteractionFilters | None = None,
    time_bounds: ds.TimeBounds | None = None,
) -> ds.CanonicalData:
    """Load ``path`` with the loader of ``source`` (one of ``SOURCES``) into the canonical tables.

    Interactions whose time is outside ``time_bounds`` are dropped and counted (see
    :class:`modeling.datasets.TimeBounds`); None: every time is accepted.

    Raises:
        DataValidationError: unknown source or invalid input (naming file, line and problem).
    """
    loader = LOADERS.get(source)
    if loader is None:
        raise DataValidationError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    data = loader(Path(path), filters=filters if filters is not None and filters.is_active() else None,
                  time_bounds=time_bounds)
    if filters is not None and filters.is_active():
        # Different filters over the same files are different data.
        data.fingerprint = hashlib.sha256((data.fingerprint + filters.describe()).encode()).hexdigest()
    logger.info("loaded %s from %s: %s", source, path, data.counts())
    return data


__all__ = ["SOURCES", "InteractionFilters", "load_amazon2018", "load_clickstream", "load_csv", "load_movielens",
           "load_retailrocket", "load_source"]
