"""Loader and snapshot tests on small hand-written fixtures (and real samples when present)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modeling import datasets as ds
from modeling.errors import DataValidationError, StoredDataError
from modeling.sources import load_source
from tests.conftest import shared_dataset


def review(user: str, item: str, ts: int = 1_600_000_000, rating: float = 5.0, text: str = "Nice") -> dict:
    return {"reviewerID": user, "asin": item, "unixReviewTime": ts, "overall": rating, "reviewText": text,
            "summary": "Five Stars"}


def write_lines(path: Path, rows: list[object]) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def category(tmp_path: Path) -> Path:
    write_lines(tmp_path / "Toys_5.json", [
        review("u1", "i1", 100), review("u1", "i2", 200), review("u2", "i1", 150),
        review("u2", "i3", 300, 2.0, "Broke fast"),
        review("u1", "i1", 100),  # exact duplicate line: dropped
        {**review("u2", "i1", 150), "style": {"Size": "XL"}},  # same review, other variant: dropped
    ])
    write_lines(tmp_path / "meta_Toys.json", [
        {"asin": "i1", "title": "Red <b>Car</b> &amp; Track", "brand": "Acme", "category": ["Toys", "Cars"],
         "description": ["Fast.", "Fun."], "price": "$12.50"},
        {"asin": "i2", "title": "Blue Kite", "brand": "", "category": ["Toys"], "price": "bad price"},
        {"asin": "unused", "title": "Never reviewed"},
    ])
    return tmp_path


def test_amazon_loader_builds_canonical_tables(category: Path) -> None:
    data = load_source("amazon2018", category)
    assert list(data.items.columns) == list(ds.ITEM_COLUMNS)
    assert list(data.interactions.columns) == list(ds.INTERACTION_COLUMNS)
    assert data.counts() == {"items": 3, "users": 2, "interactions": 4}
    item = data.items.set_index(ds.ITEM_ID).loc["i1"]
    assert item[ds.TITLE] == "Red Car & Track"
    assert item[ds.CATEGORY] == "Toys > Cars"
    assert item[ds.PRICE] == 12.5
    assert item[ds.DESCRIPTION] == "Fast. Fun."
    assert data.items.set_index(ds.ITEM_ID).loc["i2"][ds.PRICE] != data.items.set_index(ds.ITEM_ID).loc["i2"][
        ds.PRICE]  # NaN: unparseable price becomes null
    assert set(data.interactions[ds.EVENT]) == {"review"}
    assert data.report["duplicate_lines"] == 1
    assert data.report["repeated_reviews"] == 1


def test_items_missing_from_meta_become_bare_items(category: Path) -> None:
    data = load_source("amazon2018", category)
    assert data.report["bare_items"] == 1
    bare = data.items.set_index(ds.ITEM_ID).loc["i3"]
    assert bare[ds.TITLE] == "" and bare[ds.BRAND] == ""


def test_loader_reads_gzip_and_works_without_meta(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "Gifts_5.json.gz", "wt", encoding="utf-8") as handle:
        handle.write(json.dumps(review("u1", "i1")) + "\n" + json.dumps(review("u2", "i1")) + "\n")
    data = load_source("amazon2018", tmp_path)
    assert data.counts() == {"items": 1, "users": 2, "interactions": 2}
    assert data.report["bare_items"] == 1


def test_malformed_line_names_file_and_line(tmp_path: Path) -> None:
    write_lines(tmp_path / "Toys_5.json", [review("u1", "i1"), '{"reviewerID": "u2", "asin": '])
    with pytest.raises(DataValidationError, match=r"Toys_5\.json, line 2: not valid JSON"):
        load_source("amazon2018", tmp_path)


def test_missing_field_names_field_and_line(tmp_path: Path) -> None:
    bad = review("u2", "i1")
    del bad["asin"]
    write_lines(tmp_path / "Toys_5.json", [review("u1", "i1"), review("u1", "i2"), bad])
    with pytest.raises(DataValidationError, match=r"line 3: missing required field 'asin'"):
        load_source("amazon2018", tmp_path)


def test_wrong_type_is_rejected(tmp_path: Path) -> None:
    write_lines(tmp_path / "Toys_5.json", [{**review("u1", "i1"), "unixReviewTime": "yesterday"}])
    with pytest.raises(DataValidationError, match=r"line 1: field 'unixReviewTime' must be int or float"):
        load_source("amazon2018", tmp_path)


def test_rating_out_of_range_is_rejected(tmp_path: Path) -> None:
    write_lines(tmp_path / "Toys_5.json", [{**review("u1", "i1"), "overall": 11}])
    with pytest.raises(DataValidationError, match="between 0 and 5"):
        load_source("amazon2018", tmp_path)


def test_empty_file_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "Toys_5.json").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataValidationError, match="holds no reviews"):
        load_source("amazon2018", tmp_path)


def test_directory_without_reviews_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="exactly one reviews file"):
        load_source("amazon2018", tmp_path)
    with pytest.raises(DataValidationError, match="no such file"):
        load_source("amazon2018", tmp_path / "missing")


def test_unknown_source_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="unknown source 'nope'"):
        load_source("nope", tmp_path)


def test_snapshot_round_trip(category: Path, tmp_path: Path) -> None:
    data = load_source("amazon2018", category)
    ds.write_snapshot(data, tmp_path / "processed", source="amazon2018")
    again = ds.read_snapshot(tmp_path / "processed")
    assert again.fingerprint == data.fingerprint
    assert again.counts() == data.counts()
    assert again.interactions[ds.USER_ID].tolist() == data.interactions[ds.USER_ID].tolist()
    assert not list((tmp_path / "processed").glob("*.tmp"))


def test_fingerprint_changes_with_content(category: Path) -> None:
    first = load_source("amazon2018", category).fingerprint
    assert load_source("amazon2018", category).fingerprint == first
    with open(category / "Toys_5.json", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(review("u3", "i2")) + "\n")
    assert load_source("amazon2018", category).fingerprint != first


def test_reading_a_missing_snapshot_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="load_data"):
        ds.read_snapshot(tmp_path)


def test_item_text_uses_every_field_and_falls_back_to_id(category: Path) -> None:
    data = load_source("amazon2018", category)
    texts = dict(zip(data.items[ds.ITEM_ID], ds.item_text(data.items), strict=True))
    assert texts["i1"] == "Red Car & Track. Brand: Acme. Category: Toys > Cars. Fast. Fun."
    assert texts["i3"] == "Product i3"


def test_real_gift_cards_category_loads() -> None:
    data = load_source("amazon2018", shared_dataset("amazon2018_gift_cards"))
    # Figures from the dataset's README: 2,972 rows, 458 users, 148 items, all with metadata.
    assert data.counts() == {"items": 148, "users": 458, "interactions": 2972}
    assert data.report["bare_items"] == 0
    assert (data.items[ds.TITLE].str.len() > 0).all()


def test_real_category_without_meta_loads_as_bare_items() -> None:
    data = load_source("amazon2018", shared_dataset("amazon2018_appliances"))
    assert data.report["bare_items"] == data.counts()["items"] == 48
    assert data.report["duplicate_lines"] > 2000  # README: only 206 of 2,277 rows are distinct


@pytest.mark.parametrize("name, lines, distinct_lines, users, items", [
    # Figures from each dataset's README.
    ("amazon2018_all_beauty", 5269, 4242, 991, 85),
    ("amazon2018_amazon_fashion", 3176, 3108, 406, 31),
])
def test_real_categories_drop_upstream_duplicate_lines(name: str, lines: int, distinct_lines: int, users: int,
                                                        items: int) -> None:
    data = load_source("amazon2018", shared_dataset(name))
    assert data.report["review_lines"] == lines
    assert lines - data.report["duplicate_lines"] == distinct_lines
    # Distinct lines that repeat a review with another variant (style) count once.
    assert data.counts()["interactions"] == distinct_lines - data.report["repeated_reviews"]
    assert data.counts()["users"] == users and data.counts()["items"] == items


@pytest.mark.parametrize("price", [float("inf"), float("-inf"), -3.0])
def test_every_source_ends_refusing_a_price_that_is_no_price(price: float) -> None:
    # The last guard for every loader: an answer holding an infinite price could not be written as JSON.
    items = pd.DataFrame({ds.ITEM_ID: ["a", "b"], ds.PRICE: [2.5, price]})
    interactions = pd.DataFrame({ds.USER_ID: ["u", "u"], ds.ITEM_ID: ["a", "b"], ds.TIMESTAMP: [1, 2]})
    with pytest.raises(DataValidationError, match=r"shop\.csv: product 'b': price .* is not a price"):
        ds.finish_tables(items, interactions, report={}, fingerprint="f", source_name="shop.csv")
    items[ds.PRICE] = [2.5, np.nan]  # unknown: fine
    assert ds.finish_tables(items, interactions, report={}, fingerprint="f", source_name="shop.csv").items[
        ds.PRICE].isna().sum() == 1
    # The database's own rows (only one that has not run the migrations that clear such prices holds one): the
    # message says what mends it, not how to write a file.
    items[ds.PRICE] = [2.5, price]
    with pytest.raises(StoredDataError, match=r"an earlier version stored it; `manage.py migrate` clears"):
        ds.finish_tables(items, interactions, report={}, fingerprint="f", source_name="database", from_files=False)
