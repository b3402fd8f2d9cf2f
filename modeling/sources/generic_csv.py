"""Generic CSV: the canonical tables as plain files a shop can export.

A directory with:

- ``interactions.csv`` (required). Columns: ``user_id``, ``item_id``,
  ``timestamp`` (unix seconds or ISO 8601) required; ``event`` (view, cart,
  purchase, review, rating; default ``purchase``), ``weight`` (0.001 to 1000, as
  ``POST /events`` takes it; default 1, also for an empty cell), ``rating`` (0 to 5
  or empty), ``text`` (review text or empty) optional.
- ``items.csv`` (optional). Columns: ``item_id`` required; ``title``,
  ``description``, ``brand``, ``category`` (breadcrumb, levels joined by `` > ``),
  ``price`` (non-negative number or empty) optional. Every listed product is kept in the
  catalogue, even without interactions.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from modeling import datasets as ds
from modeling.errors import DataValidationError
from modeling.sources._files import (
    check_ids,
    read_table,
    repeated_products,
    row_error,
    to_float,
    to_unix_seconds,
    unread_note,
)

logger = logging.getLogger(__name__)

LOADER_VERSION = "csv-1"
INTERACTIONS_FILE = "interactions.csv"
ITEMS_FILE = "items.csv"
MAX_RATING = 5.0  # ratings are 0 to 5, as POST /events takes them


def _check_storable(table: pd.DataFrame, raw: pd.DataFrame, path: Path) -> None:
    """Refuse the first value of ``table`` that the database cannot store, naming its line.

    Args:
        table: the rows as they will be imported (ids stripped, texts cleaned), in the order of ``raw``.
        raw: the file's rows as :func:`read_table` read them (for the line numbers).
        path: the file, for the message.

    Raises:
        DataValidationError: a value too long for its column or holding a NUL character.
    """
    for column in ds.STORED_TEXT_COLUMNS:
        if column in table:
            mask, reason = ds.unstorable(table[column], column)
            if mask.any():
                raise row_error(raw, mask, f"column {column!r}: {reason}", path)


def _unlisted_note(named: pd.Series, listed: pd.Series, items_file: Path, shown: int = 3) -> list[str]:
    """A note when products the interactions name are not in ``items.csv``: they are imported bare (no title,
    category or price). Ids written differently in the two files (``294.0`` against ``294``, as pandas writes a
    column of integers with a gap; ``007`` against ``7``) leave every product bare and every listed one without an
    interaction, which only a count in the report showed."""
    missing = pd.unique(named[~named.isin(set(listed))])
    if len(missing) == 0:
        return []
    total = named.nunique()
    examples = ", ".join(repr(str(item)) for item in missing[:shown])
    note = (f"{items_file.name}: {len(missing)} of the {total} products the interactions name are not in it (e.g. "
            f"{examples}); they are imported without title, category or price")
    if 2 * len(missing) >= total:
        note += "; check that both files write the product ids the same way"
    return [note]


def load_csv(
    path: Path | str,
    *,
    filters: ds.InteractionFilters | None = None,
    time_bounds: ds.TimeBounds | None = None,
) -> ds.CanonicalData:
    """Load ``interactions.csv`` and optional ``items.csv`` from ``path``.

    Raises:
        DataValidationError: missing file or column, malformed value (with its line).
    """
    path = Path(path)
    inter_file = path / INTERACTIONS_FILE
    if not path.is_dir() or not inter_file.is_file():
        raise DataValidationError(f"expected a directory with {INTERACTIONS_FILE}", path=str(path))
    raw = read_table(inter_file, columns=list(ds.INTERACTION_COLUMNS),
                     required=[ds.USER_ID, ds.ITEM_ID, ds.TIMESTAMP])
    interactions = pd.DataFrame({
        ds.USER_ID: raw[ds.USER_ID].str.strip().to_numpy(),
        ds.ITEM_ID: raw[ds.ITEM_ID].str.strip().to_numpy(),
        ds.TIMESTAMP: to_unix_seconds(raw, ds.TIMESTAMP, inter_file),
    })
    for column in (ds.USER_ID, ds.ITEM_ID):
        check_ids(raw, interactions[column], column, inter_file)
    if ds.EVENT in raw:
        events = raw[ds.EVENT].str.strip().str.lower().replace("", "purchase")
        unknown = ~events.isin(ds.EVENT_TYPES)
        if unknown.any():
            bad = events[unknown].iloc[0]
            raise row_error(raw, unknown, f"column 'event': {bad!r} is not one of {', '.join(ds.EVENT_TYPES)}",
                            inter_file)
        interactions[ds.EVENT] = events.to_numpy()
    else:
        interactions[ds.EVENT] = "purchase"
    if ds.WEIGHT in raw:
        low, high = ds.WEIGHT_RANGE
        weights = to_float(raw, ds.WEIGHT, inter_file, allow_empty=True,
                           rule=(lambda v: (v >= low) & (v <= high), f"is not a weight from {low:g} to {high:g}"))
        interactions[ds.WEIGHT] = np.where(np.isnan(weights), 1.0, weights)  # an empty cell: the default, 1
    if ds.RATING in raw:
        ratings = to_float(raw, ds.RATING, inter_file, allow_empty=True,
                           rule=(lambda v: (v >= 0) & (v <= MAX_RATING), f"is outside 0 to {MAX_RATING:g}"))
        interactions[ds.RATING] = ratings
    # As POST /events: a rating event without its rating is no rating.
    unrated = (interactions[ds.EVENT] == "rating").to_numpy() & (
        np.isnan(interactions[ds.RATING].to_numpy(dtype=float)) if ds.RATING in interactions else True)
    if unrated.any():
        raise row_error(raw, unrated, "a rating event needs its rating (0 to 5) in column 'rating'", inter_file)
    if ds.TEXT in raw:
        interactions[ds.TEXT] = raw[ds.TEXT].map(ds.clean_text).replace("", None).to_numpy()
    _check_storable(interactions, raw, inter_file)
    files = [inter_file]
    notes = unread_note(raw, inter_file, list(ds.INTERACTION_COLUMNS))

    items_file = path / ITEMS_FILE
    items = pd.DataFrame({ds.ITEM_ID: pd.Series(dtype=str)})
    if items_file.is_file():
        raw_items = read_table(items_file, columns=list(ds.ITEM_COLUMNS), required=[ds.ITEM_ID])
        items = pd.DataFrame({ds.ITEM_ID: raw_items[ds.ITEM_ID].str.strip().to_numpy()})
        for column in (ds.TITLE, ds.DESCRIPTION, ds.BRAND, ds.CATEGORY):
            if column in raw_items:
                items[column] = raw_items[column].map(ds.clean_text).to_numpy()
        if ds.PRICE in raw_items:
            prices = to_float(raw_items, ds.PRICE, items_file, allow_empty=True, rule=(lambda v: v >= 0, "is negative"))
            items[ds.PRICE] = prices
        check_ids(raw_items, items[ds.ITEM_ID], ds.ITEM_ID, items_file)
        _check_storable(items, raw_items, items_file)
        notes += unread_note(raw_items, items_file, list(ds.ITEM_COLUMNS))
        repeated = repeated_products(items, raw_items, items_file)
        items = items[~repeated].reset_index(drop=True)
        files.append(items_file)
        notes += _unlisted_note(interactions[ds.ITEM_ID], items[ds.ITEM_ID], items_file)
    else:
        repeated = np.zeros(0, dtype=bool)
    report = {"interaction_rows": len(interactions), "catalogue_rows": len(items) + int(repeated.sum()),
              "repeated_product_rows": int(repeated.sum())}
    fingerprint = ds.file_fingerprint(files, salt=LOADER_VERSION)
    data = ds.finish_tables(items, interactions, report=report, fingerprint=fingerprint,
                            source_name=str(inter_file), keep_items="all", filters=filters,
                            time_bounds=time_bounds)
    data.notes = notes
    return data
