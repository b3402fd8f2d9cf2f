"""Session clickstreams: product views grouped by session, without shopper ids.

Two layouts, found in the given directory (or given directly as a file):

- ``clicks.csv`` (comma or semicolon separated, UTF-8). Columns: ``session_id``
  and ``item_id`` required; the time as ``timestamp`` (unix seconds or ISO 8601)
  or as ``order`` (position of the click in its session, 0 to 86,399) with
  optional ``year``, ``month``, ``day`` (the session's date, all three or none);
  product attributes ``title``, ``category``, ``colour`` (or ``color``) and
  ``price`` (number or empty) optional.
- The UCI "clickstream data for online shopping" file (e-shop clothing 2008),
  any ``*.csv`` in the directory whose semicolon-separated header is
  ``year;month;day;order;country;session ID;page 1 (main category);page 2
  (clothing model);colour;location;model photography;price;price 2;page`` (the
  fourth column may read ``order(sells)``). Category and colour codes become
  names (categories 1 trousers, 2 skirts, 3 blouses, 4 sale; colours 1 beige to
  14 white), ``price`` is in US dollars. Country (the session's) is ignored, and so
  are the photo location and page, although each product has one of each (where
  the site showed it): the transitions between products already carry that layout
  (weighting the candidates on the last product's page changed the transitions'
  next-click NDCG@10 by at most +0.001 on the UCI file, ad hoc).

Each click becomes a ``view`` with weight 1. The session is the shopper, with
id ``s<session_id>`` so it cannot collide with the ids of real shoppers. With
``order``, the time is the date (UTC midnight; 2000-01-01 without a date) plus
``order`` seconds, which keeps the clicks of a session in order. A product's
attributes are the values most of its clicks carry (the import report counts
the products whose clicks disagree); without a ``title`` the title is made from
the attributes, e.g. ``"Blouses C56, blue"``, so every product has some text.
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
    row_error,
    to_float,
    to_int,
    to_unix_seconds,
    unread_note,
)

logger = logging.getLogger(__name__)

LOADER_VERSION = "clickstream-2"  # 2: undated clicks on 2000-01-01
CLICKS_FILE = "clicks.csv"
SESSION_PREFIX = "s"
SECONDS_PER_DAY = 86_400
UNDATED = 946_684_800
"""The day of clicks given without a date: 2000-01-01 (UTC midnight), inside the default time bounds (which drop
interactions before 1995 as a broken clock): only their order matters."""
ENCODING = "utf-8-sig"  # UTF-8, with or without a byte-order mark

# Generic layout: role -> accepted column names (first found wins).
GENERIC_COLUMNS: dict[str, tuple[str, ...]] = {
    "session": ("session_id",),
    "item": (ds.ITEM_ID,),
    "timestamp": (ds.TIMESTAMP,),
    "order": ("order",),
    "year": ("year",),
    "month": ("month",),
    "day": ("day",),
    "title": (ds.TITLE,),
    "category": (ds.CATEGORY,),
    "colour": ("colour", "color"),
    "price": (ds.PRICE,),
}
# UCI e-shop clothing 2008 layout (the published header, semicolon separated).
UCI_COLUMNS: dict[str, tuple[str, ...]] = {
    "session": ("session ID",),
    "item": ("page 2 (clothing model)",),
    "order": ("order", "order(sells)"),
    "year": ("year",),
    "month": ("month",),
    "day": ("day",),
    "category": ("page 1 (main category)",),
    "colour": ("colour",),
    "price": ("price",),
}
UCI_SIGNATURE = ("session ID", "page 2 (clothing model)", "page 1 (main category)")
UCI_CATEGORIES = {1: "Trousers", 2: "Skirts", 3: "Blouses", 4: "Sale"}
UCI_COLOURS = {1: "beige", 2: "black", 3: "blue", 4: "brown", 5: "burgundy", 6: "gray", 7: "green",
               8: "navy blue", 9: "of many colors", 10: "olive", 11: "pink", 12: "red", 13: "violet", 14: "white"}


def load_clickstream(path: Path | str, *, filters: ds.InteractionFilters | None = None,
                     time_bounds: ds.TimeBounds | None = None) -> ds.CanonicalData:
    """Load a session clickstream (see the module docstring for the layouts).

    Args:
        path: a directory holding ``clicks.csv`` or one UCI-layout ``*.csv``, or the file itself.
        filters: optional interaction filters.
        time_bounds: plausible click times; clicks outside are dropped and counted.

    Returns:
        Canonical tables: one ``view`` (weight 1) per click, shoppers ``s<session_id>``,
        products with the category, colour, price and title their clicks carry.

    Raises:
        DataValidationError: no clickstream file, missing column, malformed value (with its line).
    """
    file = find_clicks_file(Path(path))
    header = _first_line(file)
    uci = is_uci_header(header)
    sep = ";" if header.count(";") > header.count(",") else ","
    layout = UCI_COLUMNS if uci else GENERIC_COLUMNS
    raw = read_table(file, columns=[name for names in layout.values() for name in names], required=[],
                     sep=sep, encoding=ENCODING)
    columns = {role: next((n for n in names if n in raw.columns), None) for role, names in layout.items()}
    _require(columns, [name.strip() for name in header.split(sep)], file, uci)

    sessions = raw[str(columns["session"])].str.strip()
    item_ids = raw[str(columns["item"])].str.strip()
    for column, values in ((columns["session"], sessions), (columns["item"], item_ids)):
        check_ids(raw, values, str(column), file)
    _check_id_lengths(raw, sessions, item_ids, columns, file)
    interactions = pd.DataFrame({
        ds.USER_ID: (SESSION_PREFIX + sessions).to_numpy(),
        ds.ITEM_ID: item_ids.to_numpy(),
        ds.TIMESTAMP: _times(raw, columns, file),
        ds.EVENT: "view",
        ds.WEIGHT: 1.0,
    })
    items, mixed = _items(raw, columns, file, uci)
    report = {"click_rows": len(interactions), "products_with_mixed_attributes": mixed}
    fingerprint = ds.file_fingerprint([file], salt=LOADER_VERSION)
    logger.info("clickstream %s (%s layout): %d clicks", file, "UCI" if uci else "generic", len(interactions))
    hint = (ds.DEFAULT_TIME_HINT if columns.get("timestamp") is not None else
            "each click's time is its session's year, month and day plus its order in seconds, "
            "2000-01-01 without a date")
    data = ds.finish_tables(items, interactions, report=report, fingerprint=fingerprint,
                            source_name=str(file), keep_items="interacted", filters=filters,
                            time_bounds=time_bounds, time_hint=hint)
    if not uci:  # the UCI file's other columns (country, page, ...) are left unread by design
        data.notes = unread_note(raw, file, [name for names in GENERIC_COLUMNS.values() for name in names])
    return data


def _check_id_lengths(raw: pd.DataFrame, sessions: pd.Series, item_ids: pd.Series, columns: dict[str, str | None],
                      file: Path) -> None:
    """Refuse, with its line, the first session or product id the database cannot store (a session's shopper id is
    :data:`SESSION_PREFIX` and the session id, so a session id has one character less: the message quoted the
    shopper id's length, with no line)."""
    longest = ds.MAX_LENGTHS[ds.USER_ID] - len(SESSION_PREFIX)
    too_long = (sessions.str.len() > longest).to_numpy()
    if too_long.any():
        value = str(sessions[too_long].iloc[0])
        raise row_error(raw, too_long, f"column {columns['session']!r}: {value[:20]!r}... is {len(value)} characters "
                        f"long; a session id may have at most {longest} (its shopper is {SESSION_PREFIX!r} and the "
                        "session id)", file)
    mask, reason = ds.unstorable(item_ids, ds.ITEM_ID)
    if mask.any():
        raise row_error(raw, mask, f"column {columns['item']!r}: {reason}", file)


def find_clicks_file(path: Path) -> Path:
    """The clickstream file: ``path`` itself, ``path/clicks.csv``, or the one UCI-layout ``*.csv`` in ``path``.

    Raises:
        DataValidationError: when there is none, or several UCI-layout files.
    """
    if path.is_file():
        return path
    if not path.is_dir():
        raise DataValidationError("no such file or directory", path=str(path))
    if (path / CLICKS_FILE).is_file():
        return path / CLICKS_FILE
    candidates = [file for file in sorted(path.glob("*.csv")) if file.is_file() and is_uci_header(_peek_header(file))]
    if len(candidates) > 1:
        raise DataValidationError(f"several clickstream files ({', '.join(f.name for f in candidates)}); "
                                  "give one with --path", path=str(path))
    if not candidates:
        raise DataValidationError(f"expected a directory with {CLICKS_FILE} or a UCI e-shop clickstream file "
                                  "(header year;month;day;order;country;session ID;...)", path=str(path))
    return candidates[0]


def is_uci_header(header: str) -> bool:
    """Whether a header line is the UCI e-shop clothing 2008 layout."""
    names = {name.strip() for name in header.split(";")}
    return all(name in names for name in UCI_SIGNATURE)


def _peek_header(file: Path) -> str:
    """The first line of ``file`` (undecodable bytes replaced; "" when unreadable), for layout detection."""
    try:
        with open(file, encoding=ENCODING, errors="replace") as handle:
            return handle.readline(65_536)
    except OSError:
        return ""


def _first_line(file: Path) -> str:
    """The header line; the whole file is decoded so that a bad byte is reported with its line."""
    try:
        content = file.read_bytes()
    except OSError as exc:
        raise DataValidationError(f"cannot read file ({exc})", path=str(file)) from exc
    try:
        text = content.decode(ENCODING)
    except UnicodeDecodeError as exc:
        line = content.count(b"\n", 0, exc.start) + 1
        raise DataValidationError(f"not valid UTF-8 (byte {content[exc.start]:#04x})", path=str(file),
                                  line=line) from exc
    if not text.strip():
        raise DataValidationError("file is empty", path=str(file))
    return text.lstrip("\r\n").splitlines()[0]


def _require(columns: dict[str, str | None], found: list[str], file: Path, uci: bool) -> None:
    """Refuse a file that lacks the session, the product or a time column, or has part of a date."""
    missing = [role for role in ("session", "item") if columns[role] is None]
    if columns.get("timestamp") is None and columns["order"] is None:
        missing.append("order" if uci else "timestamp or order")
    if uci:
        missing += [role for role in ("year", "month", "day", "category", "colour", "price") if columns[role] is None]
    if missing:
        names = [(UCI_COLUMNS if uci else GENERIC_COLUMNS).get(role, (role,))[0] for role in missing]
        raise DataValidationError(f"missing required column(s) {', '.join(names)}; found {', '.join(found)}",
                                  path=str(file))
    date_parts = [columns[role] for role in ("year", "month", "day")]
    if any(date_parts) and not all(date_parts):
        absent = [role for role in ("year", "month", "day") if columns[role] is None]
        raise DataValidationError(f"columns year, month and day go together; missing {', '.join(absent)}",
                                  path=str(file))


def _times(raw: pd.DataFrame, columns: dict[str, str | None], file: Path) -> np.ndarray:
    """Unix seconds per click: ``timestamp``, or the session date plus ``order`` seconds."""
    if columns.get("timestamp") is not None:
        return to_unix_seconds(raw, str(columns["timestamp"]), file)
    order_column = str(columns["order"])
    order = to_int(raw, order_column, file, rule=(lambda v: (v >= 0) & (v < SECONDS_PER_DAY),
                                                  f"is not a click position (0 to {SECONDS_PER_DAY - 1})"))
    if columns["year"] is None:
        return UNDATED + order
    parts = {role: to_int(raw, str(columns[role]), file) for role in ("year", "month", "day")}
    plausible = (parts["year"] >= 1970) & (parts["year"] <= 9999)
    frame = pd.DataFrame(parts)
    frame.loc[~plausible, ["year", "month", "day"]] = 1970, 1, 1  # refused below; keeps to_datetime in range
    dates = pd.to_datetime(frame, errors="coerce")  # naive, read as UTC
    bad = dates.isna().to_numpy() | ~plausible
    if bad.any():
        at = int(np.flatnonzero(bad)[0])
        value = f"{parts['year'][at]}-{parts['month'][at]}-{parts['day'][at]}"
        raise row_error(raw, bad, f"year-month-day {value} is not a date from 1970 on", file)
    midnight = dates.to_numpy().astype("datetime64[s]").astype(np.int64)
    return midnight + order


def _decoded(raw: pd.DataFrame, column: str, names: dict[int, str], file: Path) -> pd.Series:
    """A UCI code column as names; an unknown code raises with its line."""
    codes = to_int(raw, column, file,
                   rule=(lambda v: np.isin(v, list(names)), f"is not a code from {min(names)} to {max(names)}"))
    return pd.Series([names[int(c)] for c in codes], index=raw.index, dtype=object)


def _items(raw: pd.DataFrame, columns: dict[str, str | None], file: Path,
           uci: bool) -> tuple[pd.DataFrame, int]:
    """One row per product with its most frequent attributes, and how many products had mixed ones."""
    clicks = pd.DataFrame({ds.ITEM_ID: raw[str(columns["item"])].str.strip()})
    attributes: list[str] = []
    for role in ("title", "category", "colour"):
        column = columns.get(role)
        if column is None:
            continue
        if uci:
            clicks[role] = _decoded(raw, column, UCI_CATEGORIES if role == "category" else UCI_COLOURS, file)
        else:
            clicks[role] = raw[column].map(ds.clean_text)
        attributes.append(role)
    if columns["price"] is not None:
        prices = to_float(raw, str(columns["price"]), file, allow_empty=True, rule=(lambda v: v >= 0, "is negative"))
        clicks["price"] = prices
        attributes.append("price")

    items = pd.DataFrame({ds.ITEM_ID: pd.unique(clicks[ds.ITEM_ID])})
    mixed = pd.Series(False, index=items[ds.ITEM_ID])
    for role in attributes:
        values = clicks[[ds.ITEM_ID, role]]
        if role != "price":
            values = values[values[role] != ""]
        counts = values.groupby([ds.ITEM_ID, role]).size().rename("n").reset_index()
        mixed |= counts.groupby(ds.ITEM_ID).size().reindex(mixed.index, fill_value=0) > 1
        most = counts.sort_values([ds.ITEM_ID, "n", role], ascending=[True, False, True], kind="stable")
        chosen = most.drop_duplicates(ds.ITEM_ID).set_index(ds.ITEM_ID)[role]
        items[role] = items[ds.ITEM_ID].map(chosen).to_numpy()
    text = {role: items[role].map(lambda v: v if isinstance(v, str) else "") if role in items
            else pd.Series("", index=items.index) for role in ("title", "category", "colour")}
    made = [_title(item, category, colour) for item, category, colour
            in zip(items[ds.ITEM_ID], text["category"], text["colour"], strict=True)]
    result = pd.DataFrame({
        ds.ITEM_ID: items[ds.ITEM_ID].to_numpy(),
        ds.TITLE: text["title"].where(text["title"] != "", pd.Series(made, index=items.index)).to_numpy(),
        ds.CATEGORY: text["category"].to_numpy(),
        ds.PRICE: items["price"].to_numpy(dtype=float) if "price" in items else np.nan,
    })
    return result, int(mixed.sum())


def _title(item_id: str, category: str, colour: str) -> str:
    """``"Blouses C56, blue"`` from the attributes (empty without any)."""
    if not category and not colour:
        return ""
    name = f"{category} {item_id}".strip()
    return f"{name}, {colour}" if colour else name
