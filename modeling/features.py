"""Model inputs computed with numpy: history windows, pooled text and product attributes.

The same functions feed training (one window per training interaction, built per batch),
evaluation, the published shopper vectors and the serving path for new shoppers, so the
query tower always sees features computed the same way.

A history window is the ``L`` most recent interactions before a point in a shopper's
time-ordered history, most recent first: item positions (-1 pads) and weights (the
interaction weight, halved every ``half_life_days`` before the window's latest interaction
unless that is 0; 0 on pads).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from modeling import datasets as ds
from modeling.rows import QuantizedRows, as_float32, take_rows

if TYPE_CHECKING:  # pandas is imported where training needs it; web workers do not load it
    import pandas as pd

logger = logging.getLogger(__name__)

HISTORY_HALF_LIFE_DAYS = 180.0
BRAND_MIN_ITEMS = 2


@dataclass
class SortedHistory:
    """Interactions sorted by (user, time), with each user's row range.

    Attributes:
        items: (n,) int64 item positions.
        timestamps: (n,) int64 unix seconds.
        weights: (n,) float32 interaction weights.
        users: (n,) int64 user positions.
        starts: (n_users,) first row of each user (rows of user u: ``starts[u]:ends[u]``).
        ends: (n_users,) one past the last row of each user.
        reviews: (n,) int64 position of each row's review text in a review-vector table (-1: none).
    """

    items: np.ndarray
    timestamps: np.ndarray
    weights: np.ndarray
    users: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    reviews: np.ndarray


def sort_history(user_pos: np.ndarray, item_pos: np.ndarray, timestamps: np.ndarray, weights: np.ndarray,
                 n_users: int, reviews: np.ndarray | None = None) -> SortedHistory:
    """Sort interactions (n,) by user, then time (stable); rows with a negative position are dropped.

    ``reviews`` (n,) are positions of the rows' review texts in a vector table (-1 or None: none).
    """
    keep = (np.asarray(user_pos) >= 0) & (np.asarray(item_pos) >= 0)
    reviews = np.full(len(keep), -1, dtype=np.int64) if reviews is None else np.asarray(reviews, dtype=np.int64)
    users = np.asarray(user_pos, dtype=np.int64)[keep]
    stamps = np.asarray(timestamps, dtype=np.int64)[keep]
    order = np.lexsort((stamps, users))
    users = users[order]
    bounds = np.searchsorted(users, np.arange(n_users + 1))
    return SortedHistory(items=np.asarray(item_pos, dtype=np.int64)[keep][order], timestamps=stamps[order],
                         weights=np.asarray(weights, dtype=np.float32)[keep][order], users=users,
                         starts=bounds[:-1], ends=bounds[1:], reviews=reviews[keep][order])


def history_windows(history: SortedHistory, rows: np.ndarray, starts: np.ndarray, length: int, *,
                    targets: np.ndarray | None = None,
                    half_life_days: float = HISTORY_HALF_LIFE_DAYS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``length`` interactions before each row, most recent first.

    Args:
        history: sorted interactions.
        rows: (m,) window ends (exclusive): the window of row r is rows ``[max(start, r - length), r)``.
        starts: (m,) first row of each window's user.
        length: L.
        targets: (m,) item positions left out of their window (the item being predicted), or None.
        half_life_days: recency decay of the weights (0: none).

    Returns:
        ``(positions (m, L) int64 item positions, weights (m, L) float32, source_rows (m, L) int64 rows of
        ``history``)``; pads are -1, 0.0 and -1.
    """
    rows = np.asarray(rows, dtype=np.int64)
    index = rows[:, None] - 1 - np.arange(length)[None, :]
    valid = index >= np.asarray(starts, dtype=np.int64)[:, None]
    index = np.where(valid, index, 0)
    if len(history.items) == 0:
        pads = np.full(index.shape, -1, dtype=np.int64)
        return pads, np.zeros(index.shape, dtype=np.float32), pads.copy()
    positions = history.items[index]
    if targets is not None:
        valid &= positions != np.asarray(targets)[:, None]
    stamps = history.timestamps[index]
    latest = np.where(valid, stamps, np.iinfo(np.int64).min).max(axis=1, keepdims=True)
    weights = history.weights[index]
    if half_life_days > 0:
        age_days = np.maximum(latest - stamps, 0) / 86_400.0
        weights = weights * np.power(0.5, age_days / half_life_days)
    return (np.where(valid, positions, -1), np.where(valid, weights, 0.0).astype(np.float32),
            np.where(valid, index, -1))


def user_windows(history: SortedHistory, length: int, *,
                 half_life_days: float = HISTORY_HALF_LIFE_DAYS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each user's window at the end of the history (shapes as :func:`history_windows`, m = n_users)."""
    return history_windows(history, history.ends, history.starts, length, half_life_days=half_life_days)


POOL_BYTES = 2 * 1024 * 1024
"""Bytes of gathered rows pooled at a time, (b, L, t) float32: a few MB bound pooled_vectors' memory, e.g. 27
windows of 50 products with 384-d text vectors. A request for 100 shoppers gathered 7.7 MB at once before, which
each of a web worker's request threads then held, and malloc kept."""


def pool_batch(length: int, width: int) -> int:
    """Windows of ``length`` rows of ``width`` float32 values that :data:`POOL_BYTES` holds (at least 1)."""
    return max(1, POOL_BYTES // max(1, 4 * length * width))


def pooled_vectors(positions: np.ndarray, weights: np.ndarray | None, table: np.ndarray | QuantizedRows) -> np.ndarray:
    """Weighted mean of rows of ``table`` for each window, unit norm.

    Args:
        positions: (m, L) row positions in ``table``, -1 pads.
        weights: (m, L) weights (None: 1 each).
        table: (n, t) float32 (or read as float32: 8-bit codes), e.g. item text vectors or review text vectors.

    Returns:
        (m, t) float32; zero rows for empty windows.
    """
    if weights is None:
        weights = np.ones(positions.shape, dtype=np.float32)
    if len(table) == 0:
        return np.zeros((len(positions), table.shape[1]), dtype=np.float32)
    out = np.zeros((len(positions), table.shape[1]), dtype=np.float32)
    # A few MB of windows at a time (POOL_BYTES): the gathered rows are (m, L, t), e.g. 15 GB for 200,000
    # shoppers with 50-item windows of 384-d text vectors if gathered at once.
    batch = pool_batch(positions.shape[1] if positions.ndim == 2 else 1, table.shape[1])
    for start in range(0, len(positions), batch):
        rows = slice(start, start + batch)
        present = positions[rows] >= 0
        # Only the windows' products are read and converted (a 5-product history in a window of 50 is 45 pads);
        # pads are zero rows of zero weight, so every sum is the same as over gathered rows, bit for bit.
        gathered = np.zeros((*present.shape, table.shape[1]), dtype=np.float32)  # (b, L, t)
        gathered[present] = as_float32(take_rows(table, positions[rows][present]))
        summed = np.einsum("ml,mlt->mt", np.where(present, weights[rows], 0.0).astype(np.float32), gathered)
        norms = np.linalg.norm(summed, axis=1, keepdims=True)
        np.divide(summed, norms, out=out[rows], where=norms > 0)
    return out


def window_reviews(history: SortedHistory, source_rows: np.ndarray) -> np.ndarray:
    """Review-table positions of the rows of windows (m, L) (-1 for pads and rows without a review)."""
    if len(history.reviews) == 0:
        return np.full(source_rows.shape, -1, dtype=np.int64)
    return np.where(source_rows >= 0, history.reviews[np.maximum(source_rows, 0)], -1)


def window_ids(positions: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
    """Item ids of windows (m, L) with "" on pads (the query tower's ``history`` input)."""
    ids = np.asarray(item_ids)[np.maximum(positions, 0)].astype(object)  # only the window's ids are converted
    ids[positions < 0] = ""
    return ids.astype(str) if ids.size else np.zeros(positions.shape, dtype=str)


@dataclass
class ItemAttributes:
    """Product attributes for the candidate tower, aligned to item positions.

    Attributes:
        category: (n,) str, the full category breadcrumb ("" when unknown).
        brand: (n,) str, lower-cased ("" when unknown).
        price: (n,) float32, -1 when unknown.
    """

    category: np.ndarray
    brand: np.ndarray
    price: np.ndarray

    @classmethod
    def empty(cls, n: int) -> ItemAttributes:
        """n products with nothing known."""
        return cls(np.full(n, "", dtype=object).astype(str), np.full(n, "", dtype=object).astype(str),
                   np.full(n, -1.0, dtype=np.float32))


def item_attributes(items: pd.DataFrame) -> ItemAttributes:
    """Attributes of the rows of a canonical items table (n rows)."""
    import pandas as pd
    category = items[ds.CATEGORY].fillna("").astype(str).str.strip().to_numpy(dtype=str)
    brand = items[ds.BRAND].fillna("").astype(str).str.strip().str.lower().to_numpy(dtype=str)
    price = pd.to_numeric(items[ds.PRICE], errors="coerce").to_numpy(dtype=np.float64)
    price = np.where(np.isfinite(price) & (price >= 0), price, -1.0).astype(np.float32)
    return ItemAttributes(category=category, brand=brand, price=price)


def item_attributes_of_rows(rows: Sequence[Sequence[Any]]) -> ItemAttributes:
    """:func:`item_attributes` of n rows in :data:`modeling.datasets.ITEM_COLUMNS` order (``(id, title,
    description, brand, category, price)``): a web worker reads products added after training without pandas."""
    def price_of(value: Any) -> float:
        try:
            price = float(value)
        except (TypeError, ValueError):
            return -1.0
        return price if np.isfinite(price) and price >= 0 else -1.0

    def text_of(value: Any) -> str:  # None (a database's NULL) or NaN: none, as the table's fillna("")
        return "" if value is None or (isinstance(value, float) and value != value) else str(value).strip()

    category = np.asarray([text_of(row[4]) for row in rows], dtype=str)
    brand = np.asarray([text_of(row[3]).lower() for row in rows], dtype=str)
    price = np.asarray([price_of(row[5]) for row in rows], dtype=np.float32)
    return ItemAttributes(category=category.reshape(-1), brand=brand.reshape(-1), price=price.reshape(-1))


def attribute_vocabularies(attributes: ItemAttributes, *, brand_min_items: int = BRAND_MIN_ITEMS
                           ) -> tuple[list[str], list[str]]:
    """Category and brand vocabularies: every non-empty category; brands of at least ``brand_min_items``
    products (rarer brands share the unknown bucket, which is what a new brand gets too)."""
    categories = sorted(set(attributes.category) - {""})
    brands, counts = np.unique(attributes.brand[attributes.brand != ""], return_counts=True)
    return categories, sorted(str(b) for b in brands[counts >= brand_min_items])
