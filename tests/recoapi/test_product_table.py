"""The engine's product metadata by column: known answers, copies on update, and its size per product."""

from __future__ import annotations

import numpy as np
import pytest

from recoapi.recommendations.product_table import ItemInfo, ProductTable, row_info


def row(i: int, category: str | None = None, price: float | None = 9.5) -> tuple:
    return (f"P{i}", f"Title {i}", "a description", f"Brand {i % 3}", category or f"Dept {i % 2} > Sub {i % 4}", price,
            True)


@pytest.fixture
def table() -> ProductTable:
    rows = [row(i, price=None if i == 4 else i + 0.5) for i in range(8)]
    # two pages, the second with its rows in reverse order; 8 and 9 are products the database does not have
    return ProductTable.from_rows(10, [(np.arange(4), rows[:4]), (np.arange(4, 8), rows[4:][::-1])])


def test_rows_land_at_their_positions(table: ProductTable) -> None:
    assert len(table) == 10
    assert table.info(1) == ItemInfo("Title 1", "Brand 1", "Dept 1 > Sub 1", 1.5)
    assert table.info(7) == ItemInfo("Title 4", "Brand 1", "Dept 0 > Sub 0", None)  # the reversed page
    assert table.info(4) == ItemInfo("Title 7", "Brand 1", "Dept 1 > Sub 3", 7.5)
    assert table.info(9) == ItemInfo("", "", "", None)
    assert list(table.known) == [True] * 8 + [False] * 2
    assert table.titles([2, 9, 0]) == ["Title 2", "", "Title 0"]
    assert np.isnan(table.price[[7, 8, 9]]).all() and table.price[0] == 0.5


def _infos(table: ProductTable, positions: np.ndarray) -> list[ItemInfo]:
    return [ItemInfo(*details) for details in zip(*table.columns(positions), strict=True)]


def test_many_at_once_read_as_one_at_a_time(table: ProductTable) -> None:
    positions = np.array([9, 1, 7, 4, 1, 0, 8])
    assert _infos(table, positions) == [table.info(int(p)) for p in positions]
    assert _infos(table, np.array([9])) == [ItemInfo("", "", "", None)]
    assert table.columns(np.zeros(0, dtype=np.int64)) == ([], [], [], [])


def test_category_prefixes_ignore_case_and_unknown_products(table: ProductTable) -> None:
    assert list(np.flatnonzero(table.category_mask("dept 1"))) == [1, 3, 4, 6]
    assert list(np.flatnonzero(table.category_mask("dept 1 > sub 3"))) == [3, 4]
    assert not table.category_mask("garden").any()
    assert table.top_level_categories() == ["Dept 0", "Dept 1"]


def test_a_number_ending_the_category_filter_matches_whole_numbers() -> None:
    """A RetailRocket export's categories are id paths: ``43`` matched ``431 > 1009`` (another category)."""
    from recoapi.recommendations.product_table import starts_category

    assert starts_category("431 > 1009", "431") and starts_category("431 > 1009", "431 > 1009")
    assert not starts_category("431 > 1009", "43") and not starts_category("431 > 1009", "431 > 10")
    assert starts_category("43 > 1009", "43") and starts_category("sports > swimming", "sports > swim")
    assert starts_category("size 4xl", "size 4") and not starts_category("size 42", "size 4")


def test_updates_copy_grow_and_add_new_values(table: ProductTable) -> None:
    changes = [row(1, "Garden > Tools", 3.0), row(11, "Toys", None)]
    assert list(table.differs(np.array([1, 2]), [changes[0], row(2, price=2.5)])) == [True, False]
    assert list(table.differs(np.array([8]), [row(8)])) == [True]  # not known yet
    updated = table.updated(12, np.array([1, 11]), changes)
    assert len(updated) == 12 and updated.known[11] and not updated.known[10]
    assert updated.info(1) == row_info(changes[0]) and updated.info(11) == ItemInfo("Title 11", "Brand 2", "Toys", None)
    assert list(np.flatnonzero(updated.category_mask("garden"))) == [1]
    assert _infos(updated, np.arange(12)) == [updated.info(i) for i in range(12)]
    assert updated.top_level_categories() == ["Dept 0", "Dept 1", "Garden", "Toys"]
    assert table.info(1) == ItemInfo("Title 1", "Brand 1", "Dept 1 > Sub 1", 1.5) and len(table) == 10  # unchanged


def test_a_product_costs_tens_of_bytes() -> None:
    n = 200_000
    pages = [(np.arange(s, s + 10_000), [row(i) for i in range(s, s + 10_000)]) for s in range(0, n, 10_000)]
    table = ProductTable.from_rows(n, pages)
    held = (table.title.nbytes + table.brand.codes.nbytes + table.category.codes.nbytes + table.price.nbytes
            + table.known.nbytes)
    # An ItemInfo per product with its strings, as before, took several hundred bytes per product; here a
    # title's start and end (16 bytes), its 12 bytes of text, two codes, a price and a flag.
    assert held / n < 48, held / n
    assert table.info(n - 1).title == f"Title {n - 1}"
