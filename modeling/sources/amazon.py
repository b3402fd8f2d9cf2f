"""Amazon Reviews 2018: a per-category reviews file (5-core) and its ``meta_`` file."""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path

import pandas as pd

from modeling import datasets as ds
from modeling.errors import DataValidationError
from modeling.sources._files import INT_LIMIT, json_lines, require_field

logger = logging.getLogger(__name__)

LOADER_VERSION = "amazon2018-2"
_JSON_FILE = re.compile(r"\.json(l)?(\.gz)?$")


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
    candidates = sorted(p for p in path.iterdir()
                        if p.is_file() and not p.name.startswith(".") and _JSON_FILE.search(p.name))
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


def load_amazon2018(
    path: Path | str,
    *,
    filters: ds.InteractionFilters | None = None,
    time_bounds: ds.TimeBounds | None = None,
) -> ds.CanonicalData:
    """Load an Amazon Reviews 2018 category.

    Each review becomes one ``review`` interaction with weight 1.0, its star rating and its
    text (summary and review text). Exact duplicate lines are dropped (``report["duplicate_lines"]``),
    and so are repeats of a review (same user, product, time and text) that differ only in other
    fields such as the product variant (``report["repeated_reviews"]``). Titles, descriptions and
    prices are cleaned of HTML and CSS. The catalogue keeps the reviewed products; those missing
    from the metadata become bare items (``report["bare_items"]``).

    Args:
        path: directory or reviews file, see :func:`find_amazon_files`.
        filters: optional interaction filters.
        time_bounds: plausible review times; reviews outside are dropped and counted.

    Raises:
        DataValidationError: on any malformed input, naming file and line.
    """
    reviews_path, meta_path = find_amazon_files(Path(path))
    report: dict[str, int] = {"review_lines": 0, "duplicate_lines": 0, "repeated_reviews": 0, "meta_lines": 0}

    rows: list[tuple[str, str, int, float, str]] = []
    seen: set[tuple[str, str, int, str]] = set()
    seen_lines: set[int] = set()
    for line, record, raw in json_lines(reviews_path):
        report["review_lines"] += 1
        raw_hash = hash(raw)
        if raw_hash in seen_lines:
            report["duplicate_lines"] += 1
            continue
        seen_lines.add(raw_hash)
        user_id = str(require_field(record, "reviewerID", (str,), reviews_path, line)).strip()
        item_id = str(require_field(record, "asin", (str,), reviews_path, line)).strip()
        if not user_id or not item_id:
            raise DataValidationError("empty 'reviewerID' or 'asin'", path=str(reviews_path), line=line)
        timestamp = require_field(record, "unixReviewTime", (int, float), reviews_path, line)
        if not math.isfinite(timestamp) or abs(timestamp) >= INT_LIMIT:  # JSON readers accept NaN and Infinity
            raise DataValidationError(f"field 'unixReviewTime' must be a unix time in seconds, got {timestamp!r}",
                                      path=str(reviews_path), line=line)
        rating = require_field(record, "overall", (int, float), reviews_path, line)
        if not 0 <= float(rating) <= 5:
            raise DataValidationError(
                f"field 'overall' must be between 0 and 5, got {rating!r}", path=str(reviews_path), line=line
            )
        text = ds.clean_text(" ".join(str(record.get(k) or "") for k in ("summary", "reviewText")))
        key = (user_id, item_id, int(timestamp), text)
        if key in seen:  # same review again with other variant fields (style, votes...)
            report["repeated_reviews"] += 1
            continue
        seen.add(key)
        rows.append((user_id, item_id, int(timestamp), float(rating), text))
    if not rows:
        raise DataValidationError("file holds no reviews", path=str(reviews_path))

    interactions = pd.DataFrame(rows, columns=[ds.USER_ID, ds.ITEM_ID, ds.TIMESTAMP, ds.RATING, ds.TEXT])
    interactions[ds.EVENT] = "review"
    interactions[ds.WEIGHT] = 1.0
    interactions[ds.TEXT] = interactions[ds.TEXT].replace("", None)

    item_rows: list[tuple[str, str, str, str, str, float | None]] = []
    if meta_path is not None:
        for line, record, _raw in json_lines(meta_path):
            report["meta_lines"] += 1
            item_id = str(require_field(record, "asin", (str,), meta_path, line)).strip()
            category = record.get("category") or []
            if isinstance(category, str):
                category = [category]
            if not isinstance(category, list):
                raise DataValidationError(
                    f"field 'category' must be a list of strings, got {type(category).__name__}",
                    path=str(meta_path), line=line,
                )
            levels = [ds.clean_text(c) for c in category]
            item_rows.append((
                item_id,
                ds.clean_text(record.get("title")),
                ds.clean_text(record.get("description")),
                ds.clean_text(record.get("brand")),
                ds.CATEGORY_SEPARATOR.join(level for level in levels if level),
                ds.parse_price(record.get("price")),
            ))
        if report["meta_lines"] == 0:
            raise DataValidationError("file holds no products", path=str(meta_path))
    items = pd.DataFrame(item_rows, columns=list(ds.ITEM_COLUMNS))

    fingerprint = ds.file_fingerprint([p for p in (reviews_path, meta_path) if p is not None], salt=LOADER_VERSION)
    return ds.finish_tables(items, interactions, report=report, fingerprint=fingerprint,
                            source_name=str(reviews_path), keep_items="interacted", filters=filters,
                            time_bounds=time_bounds, time_hint="'unixReviewTime' is read as unix seconds")
