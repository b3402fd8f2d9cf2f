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

import gzip
import hashlib
import html
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from modeling.errors import DataValidationError

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
CATEGORY_SEPARATOR = " > "

SNAPSHOT_FILES: dict[str, str] = {
    "items": "items.parquet",
    "users": "users.parquet",
    "interactions": "interactions.parquet",
}
SNAPSHOT_MANIFEST = "manifest.json"
SOURCES: tuple[str, ...] = ("amazon2018",)


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
    """

    items: pd.DataFrame
    users: pd.DataFrame
    interactions: pd.DataFrame
    report: dict[str, int] = field(default_factory=dict)
    fingerprint: str = ""

    def counts(self) -> dict[str, int]:
        """Row counts of the three tables."""
        return {
            "items": len(self.items),
            "users": len(self.users),
            "interactions": len(self.interactions),
        }


# --------------------------------------------------------------------------- helpers


def _open_text(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def _json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any], str]]:
    """Yield ``(line_number, record, raw_line)`` for each non-blank line of a JSON-lines file."""
    try:
        with _open_text(path) as handle:
            for number, raw in enumerate(handle, start=1):
                line = raw.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataValidationError(
                        f"not valid JSON ({exc.msg} at column {exc.colno})", path=str(path), line=number
                    ) from exc
                if not isinstance(record, dict):
                    raise DataValidationError("expected a JSON object", path=str(path), line=number)
                yield number, record, line
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise DataValidationError(f"cannot read file ({exc})", path=str(path)) from exc


_TAG_RE = re.compile(r"<[^>]+>")
_SPACE_RE = re.compile(r"\s+")
_PRICE_RE = re.compile(r"^\$?\s*([0-9][0-9,]*(?:\.[0-9]+)?)$")


def clean_text(value: Any) -> str:
    """Flatten a string or list of strings into one clean line (HTML tags and entities removed)."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        value = " ".join(str(v) for v in value if v)
    text = html.unescape(_TAG_RE.sub(" ", str(value)))
    return _SPACE_RE.sub(" ", text).strip()


def parse_price(value: Any) -> float | None:
    """Parse a price such as ``"$29.99"`` or ``12.5``; anything else gives ``None``."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if np.isfinite(value) and value >= 0 else None
    match = _PRICE_RE.match(str(value).strip())
    if not match:
        return None
    return float(match.group(1).replace(",", ""))


def file_fingerprint(paths: list[Path], salt: str = "") -> str:
    """sha256 over the contents of ``paths`` (in the given order) and ``salt``."""
    digest = hashlib.sha256(salt.encode())
    for path in paths:
        digest.update(path.name.encode())
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _require(record: dict[str, Any], name: str, kinds: tuple[type, ...], path: Path, line: int) -> Any:
    if name not in record or record[name] is None:
        raise DataValidationError(f"missing required field {name!r}", path=str(path), line=line)
    value = record[name]
    if not isinstance(value, kinds) or isinstance(value, bool):
        expected = " or ".join(k.__name__ for k in kinds)
        raise DataValidationError(
            f"field {name!r} must be {expected}, got {type(value).__name__} {value!r}",
            path=str(path),
            line=line,
        )
    return value


# --------------------------------------------------------------------------- Amazon 2018

AMAZON_LOADER_VERSION = "amazon2018-1"


def find_amazon_files(path: Path) -> tuple[Path, Path | None]:
    """Locate the reviews file and the optional ``meta_`` file of an Amazon 2018 category.

    Args:
        path: a directory holding ``<Category>_5.json[.gz]`` (any ``*.json[.gz]`` not starting
            with ``meta_``) and optionally ``meta_<Category>.json[.gz]``, or the reviews file itself.

    Returns:
        ``(reviews_path, meta_path_or_None)``.

    Raises:
        DataValidationError: when the path does not exist or holds no single reviews file.
    """
    path = Path(path)
    if path.is_file():
        meta = sorted(path.parent.glob("meta_*.json*"))
        return path, (meta[0] if meta else None)
    if not path.is_dir():
        raise DataValidationError("no such file or directory", path=str(path))
    candidates = sorted(
        p for p in path.iterdir()
        if p.is_file() and not p.name.startswith(".") and re.search(r"\.json(l)?(\.gz)?$", p.name)
    )
    metas = [p for p in candidates if p.name.startswith("meta_")]
    reviews = [p for p in candidates if not p.name.startswith("meta_")]
    if len(reviews) != 1:
        found = ", ".join(p.name for p in reviews) or "none"
        raise DataValidationError(
            f"expected exactly one reviews file (*.json or *.json.gz not starting with 'meta_'), found {found}",
            path=str(path),
        )
    if len(metas) > 1:
        raise DataValidationError(
            f"expected at most one meta_*.json file, found {', '.join(p.name for p in metas)}", path=str(path)
        )
    return reviews[0], (metas[0] if metas else None)


def load_amazon2018(path: Path | str) -> CanonicalData:
    """Load an Amazon Reviews 2018 category (reviews JSON lines + optional ``meta_`` file).

    Each review becomes one ``review`` interaction with weight 1.0, its star rating and its
    text (summary and review text). Repeated lines are dropped. Items reviewed but missing
    from the metadata become bare items with only an id (``report["bare_items"]``).

    Args:
        path: directory or reviews file, see :func:`find_amazon_files`.

    Returns:
        The canonical tables.

    Raises:
        DataValidationError: on any malformed input, naming file and line.
    """
    reviews_path, meta_path = find_amazon_files(Path(path))
    report: dict[str, int] = {"review_lines": 0, "duplicate_reviews": 0, "meta_lines": 0, "bare_items": 0}

    rows: list[tuple[str, str, int, float, str]] = []
    seen: set[tuple[str, str, int, str]] = set()
    for line, record, _raw in _json_lines(reviews_path):
        report["review_lines"] += 1
        user_id = str(_require(record, "reviewerID", (str,), reviews_path, line)).strip()
        item_id = str(_require(record, "asin", (str,), reviews_path, line)).strip()
        if not user_id or not item_id:
            raise DataValidationError("empty 'reviewerID' or 'asin'", path=str(reviews_path), line=line)
        timestamp = _require(record, "unixReviewTime", (int, float), reviews_path, line)
        rating = _require(record, "overall", (int, float), reviews_path, line)
        if not 0 <= float(rating) <= 5:
            raise DataValidationError(
                f"field 'overall' must be between 0 and 5, got {rating!r}", path=str(reviews_path), line=line
            )
        text = clean_text(" ".join(str(record.get(k) or "") for k in ("summary", "reviewText")))
        key = (user_id, item_id, int(timestamp), text)
        if key in seen:
            report["duplicate_reviews"] += 1
            continue
        seen.add(key)
        rows.append((user_id, item_id, int(timestamp), float(rating), text))
    if not rows:
        raise DataValidationError("file holds no reviews", path=str(reviews_path))

    interactions = pd.DataFrame(rows, columns=[USER_ID, ITEM_ID, TIMESTAMP, RATING, TEXT])
    interactions[EVENT] = "review"
    interactions[WEIGHT] = 1.0
    interactions[TEXT] = interactions[TEXT].replace("", None)

    item_rows: dict[str, tuple[str, str, str, str, str, float | None]] = {}
    if meta_path is not None:
        for line, record, _raw in _json_lines(meta_path):
            report["meta_lines"] += 1
            item_id = str(_require(record, "asin", (str,), meta_path, line)).strip()
            category = record.get("category") or []
            if isinstance(category, str):
                category = [category]
            if not isinstance(category, list):
                raise DataValidationError(
                    f"field 'category' must be a list of strings, got {type(category).__name__}",
                    path=str(meta_path),
                    line=line,
                )
            item_rows[item_id] = (
                item_id,
                clean_text(record.get("title")),
                clean_text(record.get("description")),
                clean_text(record.get("brand")),
                CATEGORY_SEPARATOR.join(clean_text(c) for c in category if clean_text(c)),
                parse_price(record.get("price")),
            )
        if report["meta_lines"] == 0:
            raise DataValidationError("file holds no products", path=str(meta_path))

    interacted = pd.unique(interactions[ITEM_ID])
    for item_id in interacted:
        if item_id not in item_rows:
            item_rows[item_id] = (item_id, "", "", "", "", None)
            report["bare_items"] += 1
    # Keep only products someone interacted with: the catalogue of the shop's active items.
    items = pd.DataFrame([item_rows[i] for i in sorted(interacted)], columns=list(ITEM_COLUMNS))

    fingerprint = file_fingerprint(
        [p for p in (reviews_path, meta_path) if p is not None], salt=AMAZON_LOADER_VERSION
    )
    data = _finish(items, interactions, report, fingerprint)
    logger.info("loaded %s: %s", reviews_path, data.counts())
    return data


def _finish(
    items: pd.DataFrame, interactions: pd.DataFrame, report: dict[str, int], fingerprint: str
) -> CanonicalData:
    """Order columns, fix dtypes and derive the users table."""
    interactions = interactions.loc[:, list(INTERACTION_COLUMNS)]
    interactions = interactions.astype(
        {USER_ID: "string", ITEM_ID: "string", TIMESTAMP: "int64", EVENT: "string", WEIGHT: "float64",
         RATING: "float64", TEXT: "string"}
    )
    interactions = interactions.sort_values([USER_ID, TIMESTAMP, ITEM_ID], kind="stable").reset_index(drop=True)
    items = items.loc[:, list(ITEM_COLUMNS)].astype(
        {ITEM_ID: "string", TITLE: "string", DESCRIPTION: "string", BRAND: "string", CATEGORY: "string",
         PRICE: "float64"}
    )
    items = items.reset_index(drop=True)
    users = pd.DataFrame({USER_ID: pd.unique(interactions[USER_ID])}).astype({USER_ID: "string"})
    users = users.sort_values(USER_ID).reset_index(drop=True)
    return CanonicalData(items=items, users=users, interactions=interactions, report=report,
                         fingerprint=fingerprint)


def load_source(source: str, path: Path | str) -> CanonicalData:
    """Dispatch to the loader of ``source`` (one of ``SOURCES``)."""
    if source == "amazon2018":
        return load_amazon2018(path)
    raise DataValidationError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")


# --------------------------------------------------------------------------- parquet snapshot


def _atomic_write_json(path: Path, payload: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
        target = directory / filename
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{filename}.", suffix=".tmp")
        os.close(fd)
        try:
            frame.to_parquet(tmp, index=False)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
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


def item_text(items: pd.DataFrame) -> list[str]:
    """One text per item for the sentence encoder: title, brand, category and description.

    Args:
        items: canonical items table, n rows.

    Returns:
        n strings; a bare item (no metadata) gives its id so that every item has some text.
    """
    texts: list[str] = []
    for row in items.itertuples(index=False):
        parts = []
        title = getattr(row, TITLE) or ""
        if title:
            parts.append(str(title))
        brand = getattr(row, BRAND) or ""
        if brand:
            parts.append(f"Brand: {brand}")
        category = getattr(row, CATEGORY) or ""
        if category:
            parts.append(f"Category: {category}")
        description = getattr(row, DESCRIPTION) or ""
        if description:
            parts.append(str(description)[:1000])
        texts.append(". ".join(parts) if parts else f"Product {getattr(row, ITEM_ID)}")
    return texts
