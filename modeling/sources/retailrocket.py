"""RetailRocket event logs.

Files in the directory:
- ``events.csv`` (required): timestamp (milliseconds), visitorid, event
  (view | addtocart | transaction), itemid, transactionid. Events become
  view / cart / purchase interactions with weights 1 / 2 / 3; a row repeated exactly
  (same millisecond, visitor, event and item) is read once.
- ``item_properties_part1.csv`` / ``item_properties_part2.csv`` (optional):
  timestamp, itemid, property, value. The latest ``categoryid`` of each item is
  kept, and the latest value of property ``790`` that is a number, which holds prices in the
  published data (values such as ``n5880.000``).
- ``category_tree.csv`` (optional): categoryid, parentid; categories become
  breadcrumb paths of ids (``"1016 > 213"`` from the root down).

RetailRocket item properties are hashed, so products have no readable titles;
their text is the category path.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from modeling import datasets as ds
from modeling.errors import DataValidationError
from modeling.sources._files import (
    check_ids,
    file_row_line,
    header_names,
    not_text,
    read_table,
    row_error,
    to_int,
    unread_note,
    whole_numbers,
)

logger = logging.getLogger(__name__)

LOADER_VERSION = "retailrocket-4"  # 3: property ids and values stripped; 4: whole-number category ids, latest price
EVENT_MAP = {"view": ("view", 1.0), "addtocart": ("cart", 2.0), "transaction": ("purchase", 3.0)}
PRICE_PROPERTY = "790"
CATEGORY_PROPERTY = "categoryid"
PROPERTY_FILES = ("item_properties_part1.csv", "item_properties_part2.csv")
PROPERTY_COLUMNS = ("timestamp", "itemid", "property", "value")


def load_retailrocket(
    path: Path | str,
    *,
    filters: ds.InteractionFilters | None = None,
    time_bounds: ds.TimeBounds | None = None,
) -> ds.CanonicalData:
    """Load a RetailRocket directory (see the module docstring for the files).

    Raises:
        DataValidationError: missing events.csv, unknown event types, malformed values.
    """
    path = Path(path)
    events_file = path / "events.csv"
    if not path.is_dir() or not events_file.is_file():
        compressed = " (events.csv.gz is compressed: this source reads it unpacked, `gunzip events.csv.gz`)" if (
            path / "events.csv.gz").is_file() else ""
        raise DataValidationError(f"expected a directory with events.csv{compressed}", path=str(path))
    events = read_table(events_file, columns=["timestamp", "visitorid", "event", "itemid"],
                        required=["timestamp", "visitorid", "event", "itemid"])
    kinds = events["event"].str.strip()
    unknown = ~kinds.isin(list(EVENT_MAP))
    if unknown.any():
        bad = kinds[unknown].iloc[0]
        raise row_error(events, unknown, f"column 'event': {bad!r} is not one of {', '.join(EVENT_MAP)}",
                        events_file)
    for column in ("visitorid", "itemid"):
        check_ids(events, events[column].str.strip(), column, events_file)
    millis = to_int(events, "timestamp", events_file)
    # The same event twice (same millisecond, visitor, kind and product) is a row the export repeated, not a
    # second event: kept, it would count twice in every model and in the evaluation's histories.
    repeated = pd.DataFrame({"t": millis, "v": events["visitorid"].str.strip(), "e": kinds,
                             "i": events["itemid"].str.strip()}).duplicated().to_numpy()
    if repeated.any():
        events, kinds, millis = events[~repeated], kinds[~repeated], millis[~repeated]
    interactions = pd.DataFrame({
        ds.USER_ID: events["visitorid"].str.strip().to_numpy(),
        ds.ITEM_ID: events["itemid"].str.strip().to_numpy(),
        ds.TIMESTAMP: millis // 1000,
        ds.EVENT: kinds.map(lambda k: EVENT_MAP[k][0]).to_numpy(),
        ds.WEIGHT: kinds.map(lambda k: EVENT_MAP[k][1]).to_numpy(dtype=float),
    })
    report = {"event_rows": len(interactions), "repeated_rows": int(repeated.sum())}
    for kind in EVENT_MAP:
        report[f"events_{kind}"] = int((kinds == kind).sum())

    files = [events_file]
    properties = _latest_properties(path, files)
    tree_file = path / "category_tree.csv"
    paths: dict[str, str] = {}
    if tree_file.is_file():
        paths = category_paths(tree_file)
        files.append(tree_file)
    items = pd.DataFrame({ds.ITEM_ID: pd.unique(interactions[ds.ITEM_ID])})
    categories = properties.get(CATEGORY_PROPERTY)
    category_ids = items[ds.ITEM_ID].map({} if categories is None else dict(
        zip(categories["itemid"], categories["value"], strict=True))).fillna("")
    items[ds.CATEGORY] = [paths.get(c, c) for c in category_ids]
    items[ds.PRICE] = _prices(items[ds.ITEM_ID], properties.get(PRICE_PROPERTY), path)
    items[ds.TITLE] = ""
    report["items_with_category"] = int((items[ds.CATEGORY] != "").sum())
    report["items_with_price"] = int(items[ds.PRICE].notna().sum())
    fingerprint = ds.file_fingerprint(files, salt=LOADER_VERSION)
    data = ds.finish_tables(items, interactions, report=report, fingerprint=fingerprint,
                            source_name=str(events_file), keep_items="interacted", filters=filters,
                            time_bounds=time_bounds,
                            time_hint="events.csv's timestamps are read as unix milliseconds, as RetailRocket writes "
                                      "them")
    # transactionid is in every RetailRocket export and not read by design; another column would go unseen.
    events.attrs["unread_columns"] = [c for c in events.attrs.get("unread_columns", []) if c != "transactionid"]
    data.notes = (unread_note(events, events_file, ["timestamp", "visitorid", "event", "itemid"])
                  + _without_properties_note(items[ds.ITEM_ID], properties))
    return data


def _without_properties_note(item_ids: pd.Series, properties: dict[str, pd.DataFrame], shown: int = 3) -> list[str]:
    """A note when more than half of the products events.csv names have neither a category nor a price property
    while the property files give some: item ids written differently in the files (``150103.0`` against
    ``150103``) left every product without both, with only the report's counts to show for it."""
    described = set().union(*(set(frame["itemid"]) for frame in properties.values())) if properties else set()
    if not described:
        return []
    missing = item_ids[~item_ids.isin(described)]
    if 2 * len(missing) <= len(item_ids):
        return []
    examples = ", ".join(repr(str(item)) for item in missing.iloc[:shown])
    return [f"{', '.join(PROPERTY_FILES)}: {len(missing)} of the {len(item_ids)} products events.csv names have "
            f"neither a category nor a price there (e.g. {examples}); check that the files write the item ids the "
            "same way"]


def _latest_properties(path: Path, files: list[Path]) -> dict[str, pd.DataFrame]:
    """property -> the latest value of each item, for the category and price properties: rows ``itemid``,
    ``value`` (stripped text), ``file`` (its name) and ``position`` (its data row in that file, for messages).

    The files are read in chunks (the published ones hold 20 million rows).

    Raises:
        DataValidationError: an empty or unreadable file, text that is not UTF-8, or a missing column.
    """
    wanted = {CATEGORY_PROPERTY, PRICE_PROPERTY}
    parts = []
    for name in PROPERTY_FILES:
        file = path / name
        if not file.is_file():
            continue
        files.append(file)
        try:
            for chunk in pd.read_csv(file, dtype=str, keep_default_na=False, chunksize=1_000_000,
                                     usecols=list(PROPERTY_COLUMNS)):
                kept = chunk[chunk["property"].str.strip().isin(wanted)].copy()
                kept["position"] = kept.index.to_numpy()  # the chunks' index runs on: the file's data row
                kept["file"] = name
                parts.append(kept)
        except pd.errors.EmptyDataError as exc:
            raise DataValidationError("file is empty", path=str(file)) from exc
        except UnicodeDecodeError as exc:
            raise not_text(file, exc) from exc
        except ValueError as exc:  # usecols mismatch, parser errors
            found = [name.strip() for name in header_names(file, ",", csv.QUOTE_MINIMAL, "utf-8")]
            missing = [c for c in PROPERTY_COLUMNS if c not in found]
            if found and missing:  # pandas said "Usecols do not match columns, columns expected but not found"
                raise DataValidationError(f"missing required column(s) {', '.join(missing)}; found "
                                          f"{', '.join(found)}", path=str(file), line=1) from exc
            raise DataValidationError(f"cannot read item properties ({exc})", path=str(file)) from exc
    if not parts:
        return {}
    frame = pd.concat(parts, ignore_index=True)
    for column in ("itemid", "property", "value"):  # as events.csv's ids are read
        frame[column] = frame[column].str.strip()
    frame["ts"] = pd.to_numeric(frame["timestamp"].str.strip(), errors="coerce")
    untimed = frame["ts"].isna().to_numpy()
    if untimed.any():  # it sorted last, so it counted as the latest value (events.csv refuses such a time)
        at = int(np.flatnonzero(untimed)[0])
        file = path / frame["file"].iloc[at]
        line = file_row_line(file, int(frame["position"].iloc[at]))
        raise DataValidationError(f"column 'timestamp': {frame['timestamp'].iloc[at]!r} is not a time in unix "
                                  "milliseconds", path=str(file), line=line)
    category = (frame["property"] == CATEGORY_PROPERTY).to_numpy()
    frame.loc[category, "value"] = whole_numbers(frame.loc[category, "value"])
    # The latest price that is a number: an unreadable latest value ("n5,880.000", empty) left the product without
    # the price it had.
    price = (frame["property"] == PRICE_PROPERTY).to_numpy()
    unreadable = price & np.isnan(_price_numbers(frame["value"]))
    frame = frame[~unreadable]
    frame = frame.sort_values("ts", kind="stable").drop_duplicates(["itemid", "property"], keep="last")
    return {str(prop): group[["itemid", "value", "file", "position"]].reset_index(drop=True)
            for prop, group in frame.groupby("property")}


def _prices(item_ids: pd.Series, latest: pd.DataFrame | None, path: Path) -> np.ndarray:
    """(n,) float prices of ``item_ids`` from their latest price property (``"n5880.000"``: a number after an "n";
    anything else is no price, NaN).

    Raises:
        DataValidationError: the price of one of these items is infinite or negative (with its file and line; a
            product no event names is not imported, so its price is not looked at).
    """
    if latest is None:
        return np.full(len(item_ids), np.nan)
    latest = latest[latest["itemid"].isin(set(item_ids))].reset_index(drop=True)
    numbers = _price_numbers(latest["value"])
    broken = ds.unpriceable(numbers)
    if broken.any():
        at = int(np.flatnonzero(broken)[0])
        file = path / latest["file"].iloc[at]
        raise DataValidationError(
            f"property {PRICE_PROPERTY} (the price) of item {latest['itemid'].iloc[at]!r}: "
            f"{latest['value'].iloc[at]!r} is not a price (a finite number of at least 0)", path=str(file),
            line=file_row_line(file, int(latest["position"].iloc[at])))
    return item_ids.map(dict(zip(latest["itemid"], numbers, strict=True))).to_numpy(dtype=float, na_value=np.nan)


def _price_numbers(values: pd.Series) -> np.ndarray:
    """(n,) float: the number of each price property value (``"n5880.000"``: a number after an "n"), NaN for
    anything else."""
    return pd.to_numeric(values.str.lstrip("n"), errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def category_paths(tree_file: Path) -> dict[str, str]:
    """categoryid -> breadcrumb of ids from the root (``"root > ... > id"``).

    Raises:
        DataValidationError: on malformed rows or a cycle in the tree.
    """
    tree = read_table(tree_file, columns=["categoryid", "parentid"], required=["categoryid", "parentid"])
    to_int(tree, "categoryid", tree_file)
    # Whole numbers as integers: a tree saved again by pandas writes the parents as 1000.0 (a column of integers
    # with gaps), and every path read "1000.0 > 100" while the products' categoryid said 1000.
    ids = whole_numbers(tree["categoryid"].str.strip())
    parent = dict(zip(ids, whole_numbers(tree["parentid"].str.strip()), strict=True))
    paths: dict[str, str] = {}
    for category in parent:
        chain, node = [], category
        while node:
            if node in chain:
                raise row_error(tree, (ids == category).to_numpy(),
                                f"category {category} is part of a cycle ({' > '.join([*chain, node])})", tree_file)
            chain.append(node)
            node = parent.get(node, "")
        paths[category] = ds.CATEGORY_SEPARATOR.join(reversed(chain))
    return paths
