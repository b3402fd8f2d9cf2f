"""One loader per data source, each returning :class:`modeling.datasets.CanonicalData`, and the dispatcher.

:func:`load_source` picks the loader by name; :mod:`modeling.datasets` (the canonical tables and the
shared validation every loader ends with) is the layer below and imports no loader.

Every loader reads and validates its files completely (raising
:class:`~modeling.errors.DataValidationError` with file, line and problem) and
ends with :func:`modeling.datasets.finish_tables`, the shared validation step.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modeling.errors import DataValidationError

if TYPE_CHECKING:
    from modeling import datasets as ds
    from modeling.datasets import CanonicalData

logger = logging.getLogger(__name__)

Loader = Callable[..., "CanonicalData"]

LOADERS: dict[str, str] = {
    "amazon2018": "amazon:load_amazon2018",
    "movielens": "movielens:load_movielens",
    "retailrocket": "retailrocket:load_retailrocket",
    "csv": "generic_csv:load_csv",
    "clickstream": "clickstream:load_clickstream",
}
"""Each source's loader as ``module:function`` under this package, imported when first used: the names are
needed where no data is read (the settings of every web worker, the commands' help), and the loaders need
pandas, which a web worker does not import."""

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
    if source not in LOADERS:
        raise DataValidationError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")
    loader = loader_of(source)
    try:
        data = loader(Path(path), filters=filters if filters is not None and filters.is_active() else None,
                      time_bounds=time_bounds)
    except DataValidationError as exc:
        other = looks_like(Path(path))
        if exc.line is None and other is not None and other != source:  # the folder's layout, not a bad line
            raise DataValidationError(f"{exc} (the folder looks like the {other} source's: --source {other}, or "
                                      f"RECO_DATA_SOURCE={other})") from exc
        raise
    if filters is not None and filters.is_active():
        # Different filters over the same files are different data.
        data.fingerprint = hashlib.sha256((data.fingerprint + filters.describe()).encode()).hexdigest()
    from modeling.datasets import dominant_shopper_note  # here: pandas is loaded by now (the loaders need it)

    dominant = dominant_shopper_note(data.interactions)
    if dominant is not None:
        data.notes = [*data.notes, dominant]
    logger.info("loaded %s from %s: %s", source, path, data.counts())
    for note in data.notes:
        logger.info("%s", note)  # the command prints the notes, and /reload_data returns them
    return data


SIGNATURES: tuple[tuple[str, str], ...] = (
    ("retailrocket", "events.csv"), ("csv", "interactions.csv"), ("clickstream", "clicks.csv"),
    ("movielens", "ratings.csv"), ("movielens", "u.data"), ("amazon2018", "*_5.json"), ("amazon2018", "*_5.json.gz"),
    ("retailrocket", "events.csv.gz"), ("csv", "interactions.csv.gz"),
)
"""A file name (or pattern) that only one source's folder holds, and that source."""


def looks_like(path: Path) -> str | None:
    """The source whose files ``path`` (a folder) holds, by their names; None when it holds none of them or the
    names of several sources."""
    if not path.is_dir():
        return None
    found = {source for source, pattern in SIGNATURES if any(path.glob(pattern))}
    return found.pop() if len(found) == 1 else None


def loader_of(source: str) -> Loader:
    """The loader function of ``source`` (a key of :data:`LOADERS`), imported on first use."""
    module, function = LOADERS[source].split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), function)


def __getattr__(name: str) -> Any:
    """The loaders by their function names (``from modeling.sources import load_movielens``) and
    ``InteractionFilters``, imported on use."""
    if name == "InteractionFilters":
        from modeling.datasets import InteractionFilters
        return InteractionFilters
    for source, target in LOADERS.items():
        if target.endswith(f":{name}"):
            return loader_of(source)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["SOURCES", "InteractionFilters", "load_amazon2018", "load_clickstream", "load_csv", "load_movielens",
           "load_retailrocket", "load_source"]
