"""Descriptive statistics of the canonical tables, for the EDA report.

Pure functions over :class:`~modeling.datasets.CanonicalData`; the notebook only plots them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from modeling import datasets as ds


def per_user_counts(data: ds.CanonicalData) -> pd.Series:
    """Interactions per user, (n_users,) int, descending."""
    return data.interactions.groupby(ds.USER_ID, observed=True).size().sort_values(ascending=False)


def per_item_counts(data: ds.CanonicalData) -> pd.Series:
    """Interactions per catalogue item (zeros included), (n_items,) int, descending."""
    counts = data.interactions.groupby(ds.ITEM_ID, observed=True).size()
    return counts.reindex(data.items[ds.ITEM_ID], fill_value=0).sort_values(ascending=False)


def long_tail_curve(data: ds.CanonicalData) -> pd.DataFrame:
    """Cumulative share of interactions against the share of items, most popular first.

    Returns:
        DataFrame with ``item_share`` and ``interaction_share`` columns, (n_items,) rows, both in (0, 1].
    """
    counts = per_item_counts(data).to_numpy(dtype=float)
    total = counts.sum()
    return pd.DataFrame({
        "item_share": np.arange(1, len(counts) + 1) / max(len(counts), 1),
        "interaction_share": np.cumsum(counts) / total if total else np.zeros(len(counts)),
    })


def interactions_per_month(data: ds.CanonicalData) -> pd.Series:
    """Interactions per calendar month (UTC), indexed by month start."""
    moments = pd.to_datetime(data.interactions[ds.TIMESTAMP], unit="s")  # naive UTC
    return moments.dt.to_period("M").value_counts().sort_index()


def top_level_categories(data: ds.CanonicalData, top: int = 15) -> pd.Series:
    """Interactions per top-level category (first breadcrumb level; "(none)" for bare items)."""
    first = data.items.set_index(ds.ITEM_ID)[ds.CATEGORY].fillna("").str.split(ds.CATEGORY_SEPARATOR).str[0]
    first = first.replace("", "(none)")
    mixed = data.interactions[ds.ITEM_ID].map(first).fillna("(none)")
    return mixed.value_counts().head(top)


def text_lengths(data: ds.CanonicalData) -> dict[str, pd.Series]:
    """Word counts of item titles, item descriptions and interaction texts (empty texts left out)."""
    def words(values: pd.Series) -> pd.Series:
        values = values.dropna().astype(str)
        values = values[values.str.len() > 0]
        return values.str.split().str.len()

    return {"title": words(data.items[ds.TITLE]), "description": words(data.items[ds.DESCRIPTION]),
            "review": words(data.interactions[ds.TEXT])}


def summary(data: ds.CanonicalData) -> dict[str, Any]:
    """Headline figures of a data set: sizes, density, time span, concentration, ratings."""
    users, items = per_user_counts(data), per_item_counts(data)
    n_users, n_items, n_inter = len(data.users), len(data.items), len(data.interactions)
    timestamps = data.interactions[ds.TIMESTAMP]
    tail = long_tail_curve(data)
    top20 = tail.loc[tail["item_share"] <= 0.2, "interaction_share"]
    ratings = data.interactions[ds.RATING].dropna()
    return {
        "users": n_users,
        "items": n_items,
        "interactions": n_inter,
        "density": n_inter / (n_users * n_items) if n_users and n_items else 0.0,
        "interactions_per_user_median": float(users.median()) if len(users) else 0.0,
        "interactions_per_item_median": float(items.median()) if len(items) else 0.0,
        "items_never_interacted": int((items == 0).sum()),
        "top_20pct_items_share": float(top20.iloc[-1]) if len(top20) else 0.0,
        "first_interaction": pd.to_datetime(timestamps.min(), unit="s", utc=True).isoformat(),
        "last_interaction": pd.to_datetime(timestamps.max(), unit="s", utc=True).isoformat(),
        "events": data.interactions[ds.EVENT].value_counts().to_dict(),
        "rating_mean": float(ratings.mean()) if len(ratings) else None,
        "items_with_title": int((data.items[ds.TITLE].fillna("").str.len() > 0).sum()),
    }
