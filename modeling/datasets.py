"""Canonical tables and the loaders that produce them.

Every data source becomes three pandas DataFrames with fixed columns:

- items: ``ITEM_COLUMNS`` (one row per product)
- users: ``USER_COLUMNS`` (one row per shopper)
- interactions: ``INTERACTION_COLUMNS`` (one row per event)

Loaders validate while they read: a malformed line, a missing field or an
empty file raises :class:`~modeling.errors.DataValidationError` naming the
file, the line and the problem, before anything is written anywhere.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modeling.atomic import atomic_file, atomic_write
from modeling.errors import DataValidationError, StoredDataError

if TYPE_CHECKING:  # pandas is imported where tables are built or read: web workers, which only need the
    import pandas as pd  # column names, do not load it

logger = logging.getLogger(__name__)

# Column names of the canonical tables, defined once.
ITEM_ID = "item_id"
USER_ID = "user_id"
TITLE = "title"
DESCRIPTION = "description"
BRAND = "brand"
CATEGORY = "category"
PRICE = "price"
TIMESTAMP = "timestamp"
EVENT = "event"
WEIGHT = "weight"
RATING = "rating"
TEXT = "text"

ITEM_COLUMNS: tuple[str, ...] = (ITEM_ID, TITLE, DESCRIPTION, BRAND, CATEGORY, PRICE)
USER_COLUMNS: tuple[str, ...] = (USER_ID,)
INTERACTION_COLUMNS: tuple[str, ...] = (USER_ID, ITEM_ID, TIMESTAMP, EVENT, WEIGHT, RATING, TEXT)

EVENT_TYPES: tuple[str, ...] = ("view", "cart", "purchase", "review", "rating")
WEIGHT_RANGE: tuple[float, float] = (0.001, 1000.0)
"""The weights an interaction may have in the csv source's files and in ``POST /events`` (the other sources give
fixed weights, 1 to 3): one of 1e300 was accepted by the import, then overflowed float32 in training and ended it
with "exported towers differ ... by nan"."""
# The longest values the database stores (recoapi.catalog.models declares its columns with them); the other
# text columns have no bound.
MAX_LENGTHS: dict[str, int] = {USER_ID: 128, ITEM_ID: 128, BRAND: 255, CATEGORY: 512}
# Columns of free text or ids, checked by :func:`unstorable` before anything is written.
STORED_TEXT_COLUMNS: tuple[str, ...] = (USER_ID, ITEM_ID, TITLE, DESCRIPTION, BRAND, CATEGORY, TEXT)
CATEGORY_SEPARATOR = " > "

SNAPSHOT_FILES: dict[str, str] = {
    "items": "items.parquet",
    "users": "users.parquet",
    "interactions": "interactions.parquet",
}
SNAPSHOT_MANIFEST = "manifest.json"
@dataclass
class CanonicalData:
    """The three canonical tables plus an import report.

    Attributes:
        items: DataFrame with ``ITEM_COLUMNS``; ``item_id`` unique.
        users: DataFrame with ``USER_COLUMNS``; ``user_id`` unique.
        interactions: DataFrame with ``INTERACTION_COLUMNS``, sorted by user and time.
        report: counts gathered while loading (rows read, duplicates dropped, bare items...).
        fingerprint: sha256 of the source files and loader version; identical inputs give
            an identical fingerprint.
        notes: what the importer should be told in words (e.g. columns of a file that were not read).
    """

    items: pd.DataFrame
    users: pd.DataFrame
    interactions: pd.DataFrame
    report: dict[str, int] = field(default_factory=dict)
    fingerprint: str = ""
    notes: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Row counts of the three tables."""
        return {
            "items": len(self.items),
            "users": len(self.users),
            "interactions": len(self.interactions),
        }


# --------------------------------------------------------------------------- helpers

_TAG_RE = re.compile(r"<[^>]+>")
_BLOCK_RE = re.compile(r"<(script|style)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_CSS_RULE_RE = re.compile(r"[.#@][\w-][^{}]*?\{[^{}]*\}")
_SPACE_RE = re.compile(r"\s+")
_PRICE_RE = re.compile(r"^\$?\s*([0-9][0-9,]*(?:\.[0-9]+)?)$")


def clean_text(value: Any) -> str:
    """Flatten a string or list of strings into one clean line.

    HTML tags, script/style blocks, CSS rules and entities are removed; white space is folded.
    """
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        value = " ".join(str(v) for v in value if v)
    text = _BLOCK_RE.sub(" ", str(value))
    text = html.unescape(_TAG_RE.sub(" ", text))
    if "{" in text:
        text = _CSS_RULE_RE.sub(" ", text)
    return _SPACE_RE.sub(" ", text).strip()


def parse_price(value: Any) -> float | None:
    """Parse a price such as ``"$29.99"``, ``"$1,299.00"``, ``"$10 - $20"`` (lower bound) or ``12.5``.

    Anything else (HTML or CSS junk, empty strings) gives ``None``.
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if np.isfinite(value) and value >= 0 else None
    text = str(value).strip()
    if " - " in text:  # a range such as "$10.99 - $24.99": its lower bound
        text = text.split(" - ", 1)[0].strip()
    match = _PRICE_RE.match(text)
    if not match:
        return None
    price = float(match.group(1).replace(",", ""))
    return price if np.isfinite(price) else None  # 400 digits read as inf: no price either

def unpriceable(prices: np.ndarray) -> np.ndarray:
    """(n,) bool: which of (n,) float ``prices`` are no price though given: infinite or negative (NaN, unknown, is
    fine). An answer holding ``inf`` cannot even be written as JSON."""
    prices = np.asarray(prices, dtype=float)
    return ~np.isnan(prices) & (~np.isfinite(prices) | (prices < 0))


def unstorable(values: pd.Series, column: str) -> tuple[np.ndarray, str]:
    """Which of ``values`` the database cannot store in ``column``, and why the first of them cannot.

    A value is unstorable when it holds a NUL character (PostgreSQL refuses it in any text) or is longer
    than ``MAX_LENGTHS[column]``; a missing value (None, NaN, NA) is fine.

    Args:
        values: Series of str or missing values, length n.
        column: a canonical column name (the bound is looked up in ``MAX_LENGTHS``).

    Returns:
        (bool mask of shape (n,), reason for the first masked value, "" when the mask is all false).
    """
    text = values.astype("string")
    has_nul = text.str.contains("\x00", regex=False).fillna(False).to_numpy(dtype=bool)
    limit = MAX_LENGTHS.get(column)
    too_long = (text.str.len() > limit).fillna(False).to_numpy(dtype=bool) if limit else np.zeros(len(text), bool)
    mask = has_nul | too_long
    if not mask.any():
        return mask, ""
    first = int(np.flatnonzero(mask)[0])
    value = str(text.iloc[first])
    shown = repr(value[:40]) + ("..." if len(value) > 40 else "")
    if has_nul[first]:
        return mask, f"{shown} holds a NUL character (\\x00), which the database cannot store"
    return mask, f"{shown} is {len(value)} characters long; the database stores at most {limit}"


def file_fingerprint(paths: list[Path], salt: str = "") -> str:
    """sha256 over the contents of ``paths`` (in the given order) and ``salt``."""
    digest = hashlib.sha256(salt.encode())
    for path in paths:
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------- validation and filters

_INTERACTION_DTYPES = {USER_ID: "string", ITEM_ID: "string", TIMESTAMP: "int64", EVENT: "string",
                       WEIGHT: "float64", RATING: "float64", TEXT: "string"}
_ITEM_DTYPES = {ITEM_ID: "string", TITLE: "string", DESCRIPTION: "string", BRAND: "string", CATEGORY: "string",
                PRICE: "float64"}


ID_COMMA_MESSAGE = ("An id may not hold a comma: the API lists several ids in one value, separated by "
                    "commas (users=a,b), so such a shopper or product could not be asked for.")
"""Why ids with a comma are refused (imports and the API alike)."""

DEFAULT_TIME_HINT = "timestamps are unix seconds, not milliseconds, or ISO 8601 (a date as 2023-11-14)"
"""How the csv sources read times: what the message says when every time is outside the bounds (each source passes
its own to :func:`finish_tables`)."""


def _refuse_comma_ids(ids: pd.Series, column: str, source_name: str) -> None:
    """Raise for the first of ``ids`` (strings, NA allowed) that holds a comma (:data:`ID_COMMA_MESSAGE`)."""
    comma = ids.str.contains(",", regex=False).to_numpy(dtype=bool, na_value=False)
    if comma.any():
        raise DataValidationError(f"{column} {ids.iloc[int(np.argmax(comma))]!r}: {ID_COMMA_MESSAGE}",
                                  path=source_name)


def finish_tables(
    items: pd.DataFrame,
    interactions: pd.DataFrame,
    *,
    report: dict[str, int],
    fingerprint: str,
    source_name: str,
    keep_items: str = "interacted",
    filters: InteractionFilters | None = None,
    time_bounds: TimeBounds | None = None,
    time_hint: str = DEFAULT_TIME_HINT,
    from_files: bool = True,
) -> CanonicalData:
    """The one validation step every loader ends with.

    Fills missing optional columns, fixes dtypes, checks the values, applies the
    optional interaction filters, adds bare items for interacted ids the catalogue
    lacks (``report["bare_items"]``) and derives the users table.

    Args:
        items: catalogue rows (any subset of ``ITEM_COLUMNS``; ``item_id`` required).
        interactions: event rows (``user_id``, ``item_id``, ``timestamp`` required).
        report: counts so far; updated in place and returned in the result.
        fingerprint: the source fingerprint.
        source_name: named in error messages (usually the file).
        keep_items: "interacted" keeps only catalogue items with an interaction after
            filtering; "all" keeps the whole catalogue.
        filters: optional interaction filters (all off by default).
        time_bounds: plausible interaction times; rows outside are dropped and counted in
            ``report["out_of_range_time"]`` (None: no check).
        time_hint: how the source reads its times (the message when every one is outside ``time_bounds``).
        from_files: the rows come from a shop's files (ids with a comma are refused, the last guard behind each
            loader's own checks by line) or, False, from the service's own database, where an earlier version may
            have stored such ids: they must not stop training, so they are kept. Prices that are not a finite
            number of at least 0 are refused either way (the database holds none: its constraint refuses them).

    Raises:
        DataValidationError: on empty input, blank ids, unknown events, non-finite or
            non-positive weights, values the database cannot store (see :func:`unstorable`), or when
            every timestamp is outside ``time_bounds``.
    """
    import pandas as pd
    if len(interactions) == 0:
        raise DataValidationError("no interactions", path=source_name)
    interactions = interactions.copy()
    for column, default in ((EVENT, "review"), (WEIGHT, 1.0), (RATING, np.nan), (TEXT, None)):
        if column not in interactions:
            interactions[column] = default
    interactions = interactions.loc[:, list(INTERACTION_COLUMNS)].astype(_INTERACTION_DTYPES)
    for column in (USER_ID, ITEM_ID):
        blank = interactions[column].isna() | (interactions[column].str.strip() == "")
        if blank.any():
            count = int(blank.sum())
            raise DataValidationError(f"{count} interaction{' has' if count == 1 else 's have'} an empty {column}",
                                      path=source_name)
        if from_files:
            _refuse_comma_ids(interactions[column], column, source_name)
    unknown = ~interactions[EVENT].isin(EVENT_TYPES)
    if unknown.any():
        bad = interactions.loc[unknown, EVENT].iloc[0]
        raise DataValidationError(f"unknown event {bad!r}; expected one of {', '.join(EVENT_TYPES)}",
                                  path=source_name)
    weights = interactions[WEIGHT].to_numpy()
    if not np.all(np.isfinite(weights)) or (weights <= 0).any():
        raise DataValidationError("interaction weights must be finite and positive", path=source_name)

    if time_bounds is not None:
        interactions = time_bounds.apply(interactions, report, source_name=source_name, hint=time_hint)

    if filters is not None:
        interactions = filters.apply(interactions, report)
        if len(interactions) == 0:
            raise DataValidationError("the filters removed every interaction", path=source_name)

    items = items.copy()
    for column in ITEM_COLUMNS:
        if column not in items:
            items[column] = np.nan if column == PRICE else ""
    items = items.loc[:, list(ITEM_COLUMNS)].astype(_ITEM_DTYPES)
    for column in (TITLE, DESCRIPTION, BRAND, CATEGORY):
        items[column] = items[column].fillna("")
    items = items.drop_duplicates(ITEM_ID, keep="last")
    if from_files:
        _refuse_comma_ids(items[ITEM_ID], ITEM_ID, source_name)
    prices = items[PRICE].to_numpy(dtype=float, na_value=np.nan)
    broken = unpriceable(prices)
    if broken.any():
        at = int(np.flatnonzero(broken)[0])
        fix = ("leave it empty when unknown" if from_files else  # the database's own rows: stored before migrate
               "an earlier version stored it; `manage.py migrate` clears such prices")
        error = DataValidationError if from_files else StoredDataError
        raise error(f"product {items[ITEM_ID].iloc[at]!r}: price {prices[at]} is not a price (a finite number of "
                    f"at least 0; {fix})", path=source_name)
    interacted = pd.Index(pd.unique(interactions[ITEM_ID]))
    if keep_items == "interacted":
        items = items[items[ITEM_ID].isin(interacted)]
    missing = interacted.difference(pd.Index(items[ITEM_ID]))
    report["bare_items"] = report.get("bare_items", 0) + len(missing)
    if len(missing):
        bare = pd.DataFrame({ITEM_ID: missing.astype(str)})
        for column in (TITLE, DESCRIPTION, BRAND, CATEGORY):
            bare[column] = ""
        bare[PRICE] = np.nan
        items = pd.concat([items, bare.astype(_ITEM_DTYPES)], ignore_index=True)
    for table, frame in (("interactions", interactions), ("items", items)):
        for column in STORED_TEXT_COLUMNS:
            if column in frame:
                mask, reason = unstorable(frame[column], column)
                if mask.any():
                    raise DataValidationError(f"{table}: column {column!r}: {reason}", path=source_name)
    items = items.sort_values(ITEM_ID, kind="stable").reset_index(drop=True)

    interactions = interactions.sort_values([USER_ID, TIMESTAMP, ITEM_ID], kind="stable").reset_index(drop=True)
    users = pd.DataFrame({USER_ID: pd.unique(interactions[USER_ID])}).astype({USER_ID: "string"})
    users = users.sort_values(USER_ID).reset_index(drop=True)
    return CanonicalData(items=items, users=users, interactions=interactions, report=report,
                         fingerprint=fingerprint)


def _iso_or_number(seconds: int) -> str:
    """``seconds`` (unix) as an ISO 8601 date-time, or as a number where no date-time holds it."""
    import pandas as pd

    try:
        return pd.Timestamp(seconds, unit="s", tz="UTC").isoformat()
    except (OverflowError, ValueError, pd.errors.OutOfBoundsDatetime):
        return f"{seconds} seconds after 1970-01-01"


@dataclass(frozen=True)
class TimeBounds:
    """The plausible range of interaction times, in unix seconds (UTC), both ends included.

    Importers drop the interactions outside it and count them (``report["out_of_range_time"]``):
    a time before any e-commerce existed or in the future is a broken clock or a wrong unit, and a
    future event would stay a shopper's latest forever.

    Attributes:
        earliest: the first accepted time.
        latest: the last accepted time (usually now plus a small tolerance for clock skew).
    """

    earliest: int
    latest: int

    def describe(self) -> str:
        """The range as ISO 8601 date-times, for messages."""
        import pandas as pd
        def iso(seconds: int) -> str:
            return pd.Timestamp(seconds, unit="s", tz="UTC").isoformat()
        return f"{iso(self.earliest)} .. {iso(self.latest)}"

    def apply(self, interactions: pd.DataFrame, report: dict[str, int], *, source_name: str,
              hint: str = DEFAULT_TIME_HINT) -> pd.DataFrame:
        """``interactions`` without the rows whose time is outside the range; adds the count to ``report``.

        ``hint`` says how the source reads its times, for the message when none is left.

        Raises:
            DataValidationError: when no interaction is left.
        """
        times = interactions[TIMESTAMP].to_numpy()
        outside = (times < self.earliest) | (times > self.latest)
        count = int(outside.sum())
        report["out_of_range_time"] = count
        if not count:
            return interactions
        if count == len(interactions):  # the first one as read: 20231114 (a date without dashes) read as seconds
            first = int(times[0])
            raise DataValidationError(f"every interaction's timestamp is outside {self.describe()}: the first, "
                                      f"read as unix second {first}, is {_iso_or_number(first)} ({hint})",
                                      path=source_name)
        first = int(times[outside][0])
        logger.warning("%s: dropped %d interactions with a timestamp outside %s (the first, read as unix second %d, "
                       "is %s)", source_name, count, self.describe(), first, _iso_or_number(first))
        return interactions[~outside]


class FilterError(ValueError):
    """A filter value that cannot work. ``field`` names the :class:`InteractionFilters` attribute, so that each
    caller names it as its user wrote it (a command's ``--outlier-std``, a setting's ``RECO_FILTER_OUTLIER_STD``);
    ``problem`` completes the sentence ("must be 0 (off) or more, got -3")."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field} {problem}")
        self.field, self.problem = field, problem


@dataclass(frozen=True)
class InteractionFilters:
    """Optional clean-up of event logs; every filter is off by default.

    Applied in this order: time window, outlier cut, minimum interactions per user,
    minimum distinct items per user.

    Attributes:
        min_user_interactions: drop users with fewer interactions.
        outlier_std: drop users whose interaction count exceeds mean + this many standard
            deviations of the per-user counts (2.0 is the usual cut); None: off.
        min_distinct_items: drop users with fewer distinct items.
        start: keep interactions at or after this unix time (seconds); None: off.
        end: keep interactions before this unix time (seconds); None: off.
    """

    min_user_interactions: int = 0
    outlier_std: float | None = None
    min_distinct_items: int = 0
    start: int | None = None
    end: int | None = None

    def __post_init__(self) -> None:
        """Refuse values that cannot work; an ``outlier_std`` of 0 means off, as None does.

        Raises:
            FilterError: a negative minimum, an ``outlier_std`` that is negative or not finite, or an ``end`` not
                after ``start`` (a window that keeps nothing).
        """
        for name in ("min_user_interactions", "min_distinct_items"):
            if getattr(self, name) < 0:
                raise FilterError(name, f"must be 0 (off) or more, got {getattr(self, name)}")
        std = self.outlier_std
        if std is not None and not (math.isfinite(std) and std >= 0):
            raise FilterError("outlier_std", f"must be 0 (off) or a positive number of standard deviations (e.g. 2), "
                                             f"got {std}")
        if std == 0:
            object.__setattr__(self, "outlier_std", None)
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise FilterError("end", f"must be after the start ({self.start}), got {self.end}: the window keeps "
                                     "no interaction")

    def is_active(self) -> bool:
        return bool(self.min_user_interactions or self.outlier_std is not None or self.min_distinct_items
                    or self.start is not None or self.end is not None)

    def describe(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def apply(self, interactions: pd.DataFrame, report: dict[str, int]) -> pd.DataFrame:
        """Filter ``interactions`` (canonical columns); adds ``filtered_*`` counts to ``report``."""
        before = len(interactions)
        frame = interactions
        if self.start is not None:
            frame = frame[frame[TIMESTAMP] >= self.start]
        if self.end is not None:
            frame = frame[frame[TIMESTAMP] < self.end]
        report["filtered_time_window"] = before - len(frame)
        if self.outlier_std is not None and len(frame):
            counts = frame.groupby(USER_ID, observed=True).size()
            limit = counts.mean() + self.outlier_std * counts.std(ddof=0)
            outliers = counts.index[counts > limit]
            report["filtered_outlier_users"] = len(outliers)
            frame = frame[~frame[USER_ID].isin(outliers)]
        if self.min_user_interactions > 1 and len(frame):
            sizes = frame.groupby(USER_ID, observed=True)[ITEM_ID].transform("size")
            report["filtered_sparse_users_rows"] = int((sizes < self.min_user_interactions).sum())
            frame = frame[sizes >= self.min_user_interactions]
        if self.min_distinct_items > 1 and len(frame):
            distinct = frame.groupby(USER_ID, observed=True)[ITEM_ID].transform("nunique")
            report["filtered_few_items_rows"] = int((distinct < self.min_distinct_items).sum())
            frame = frame[distinct >= self.min_distinct_items]
        report["filtered_interactions"] = before - len(frame)
        return frame


DOMINANT_SHARE = 0.10
"""A shopper holding at least this share of the interactions (and :data:`DOMINANT_RATIO` times the next largest) is
named in a note: most often an id that stands for many people."""
DOMINANT_RATIO = 10.0
DOMINANT_MIN_SHOPPERS = 20
"""Below this many shoppers a large share is no sign of anything (a small shop's best customer)."""


def dominant_shopper_note(interactions: pd.DataFrame) -> str | None:
    """A note naming a shopper who holds a share of the interactions no person could (canonical columns), or None.

    Shop exports often write every logged-out visit under one id (``guest``, ``0``, ``-1``): read as one shopper,
    its history links products that nothing else links, its sequence joins strangers' sessions, and as a
    held-out shopper it is one of many. Said, not changed: the id may be a real wholesale customer."""
    if interactions.empty:
        return None
    counts = interactions[USER_ID].astype(str).value_counts()
    if len(counts) < DOMINANT_MIN_SHOPPERS:
        return None
    top, runner_up = int(counts.iloc[0]), int(counts.iloc[1])
    share = top / len(interactions)
    if share < DOMINANT_SHARE or top < DOMINANT_RATIO * runner_up:
        return None
    return (f"shopper {counts.index[0]!r} holds {share:.0%} of the interactions ({top:,} of {len(interactions):,}; "
            f"the next largest {runner_up:,}): an id that stands for many people (logged-out visitors, say) is read "
            "as one shopper whose history joins theirs; if it is one, leave its rows out of the files, or import "
            "with load_data --outlier-std 2 (RECO_FILTER_OUTLIER_STD=2 for POST /reload_data), which drops "
            "shoppers far above the others")


# --------------------------------------------------------------------------- parquet snapshot


def _atomic_write_json(path: Path, payload: dict[str, Any]) -> None:
    with atomic_write(path) as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)


def write_snapshot(data: CanonicalData, directory: Path | str, *, source: str) -> Path:
    """Write the canonical tables as parquet plus ``manifest.json``.

    Each file is written to a temporary name and renamed; the manifest goes last,
    so a reader that trusts the manifest never sees a half-written snapshot.

    Returns:
        The snapshot directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, filename in SNAPSHOT_FILES.items():
        frame: pd.DataFrame = getattr(data, name)
        with atomic_file(directory / filename) as tmp:
            frame.to_parquet(tmp, index=False)
    _atomic_write_json(
        directory / SNAPSHOT_MANIFEST,
        {"source": source, "fingerprint": data.fingerprint, "counts": data.counts(), "report": data.report},
    )
    return directory


def read_snapshot_manifest(directory: Path | str) -> dict[str, Any] | None:
    """The snapshot manifest, or ``None`` when there is no complete snapshot."""
    path = Path(directory) / SNAPSHOT_MANIFEST
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as handle:
        manifest: dict[str, Any] = json.load(handle)
    return manifest


def read_snapshot(directory: Path | str) -> CanonicalData:
    """Read a snapshot written by :func:`write_snapshot`.

    Raises:
        DataValidationError: when the directory holds no complete snapshot.
    """
    import pandas as pd
    directory = Path(directory)
    manifest = read_snapshot_manifest(directory)
    if manifest is None:
        raise DataValidationError(
            "no imported data found (missing manifest.json); run `manage.py load_data` first", path=str(directory)
        )
    frames = {name: pd.read_parquet(directory / filename) for name, filename in SNAPSHOT_FILES.items()}
    return CanonicalData(
        items=frames["items"],
        users=frames["users"],
        interactions=frames["interactions"],
        report=manifest.get("report", {}),
        fingerprint=manifest["fingerprint"],
    )


def content_fingerprint(items: pd.DataFrame, interactions: pd.DataFrame, salt: str = "") -> str:
    """sha256 of the canonical tables' contents, independent of row order and of how a missing value
    is spelled (NaN, None, NA): the same catalogue and interactions read from files or from the
    database give the same value.

    Args:
        items: ``ITEM_COLUMNS``; interactions: ``INTERACTION_COLUMNS``.
    """
    import pandas as pd
    digest = hashlib.sha256(f"content-1;{salt}".encode())
    for frame, columns, order in ((items, ITEM_COLUMNS, [ITEM_ID]),
                                  (interactions, INTERACTION_COLUMNS, [USER_ID, TIMESTAMP, ITEM_ID, EVENT, WEIGHT])):
        table = frame.loc[:, list(columns)].astype(object)
        table = table.where(table.notna(), "").astype(str).sort_values(list(columns), kind="stable")
        digest.update(str(order).encode())
        digest.update(pd.util.hash_pandas_object(table, index=False).to_numpy().tobytes())
    return digest.hexdigest()


def interactions_fingerprint(interactions: pd.DataFrame) -> str:
    """:func:`content_fingerprint` of the interactions alone (no catalogue): what a model learned from, the same
    whether read from files or from the database (a bundle records it; a retraining compares it)."""
    import pandas as pd

    return content_fingerprint(pd.DataFrame(columns=list(ITEM_COLUMNS)), interactions)


def item_text(items: pd.DataFrame) -> list[str]:
    """One text per item for the sentence encoder: title, brand, category and description.

    Args:
        items: canonical items table, n rows.

    Returns:
        n strings; a bare item (no metadata) gives its id so that every item has some text.
    """
    return item_text_of_rows(items[list(ITEM_COLUMNS)].itertuples(index=False, name=None))


def item_text_of_rows(rows: Iterable[Sequence[Any]]) -> list[str]:
    """:func:`item_text` of n rows in :data:`ITEM_COLUMNS` order (``(id, title, description, brand, category,
    price)``, e.g. a product table's rows): a web worker encodes products added after training without pandas.

    Returns:
        n strings.
    """
    texts: list[str] = []
    for row in rows:
        item_id, title, description, brand, category = row[:5]
        parts = []
        title = title or ""
        if title:
            parts.append(str(title))
        brand = brand or ""
        if brand:
            parts.append(f"Brand: {brand}")
        category = category or ""
        if category:
            parts.append(f"Category: {category}")
        description = description or ""
        if description:
            parts.append(str(description)[:1000])
        texts.append(". ".join(parts) if parts else f"Product {item_id}")
    return texts
