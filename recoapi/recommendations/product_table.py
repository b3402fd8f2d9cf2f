"""Product metadata aligned with the model's item positions, stored by column.

Every web worker holds the title, brand, category, price and presence of every product it can
recommend. As Python objects (a row tuple and an ``ItemInfo`` per product, and a fixed-width copy of
every category path) that took about 1 KB of private memory per product in each worker: 700 MB at
400,000 products. By column it is tens of bytes: the titles in one UTF-8 buffer with each product's
start and end, brands and categories as codes into their distinct values, prices and flags as numpy
arrays. Category filters match the few distinct category paths, then look the products up by code.

Written with numpy alone (pandas' Arrow strings and categoricals did the same before): pandas and
pyarrow cost each web worker about 100 MB of resident memory, for these few columns.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

CATEGORY_SEPARATOR = " > "


@dataclass(frozen=True)
class ItemInfo:
    """Product metadata shown with every recommended item."""

    title: str
    brand: str
    category: str
    price: float | None


def _price(value: object) -> float:
    """A stored price as a float: NaN when there is none (the database holds only finite prices: see the
    ``catalog_product_price_finite`` constraint)."""
    return np.nan if value is None else float(value)  # type: ignore[arg-type]


def row_info(row: Sequence) -> ItemInfo:
    """ItemInfo of a product row ``(id, title, description, brand, category, price, ...)``."""
    price = _price(row[5])
    return ItemInfo(title=row[1] or "", brand=row[3] or "", category=row[4] or "",
                    price=None if np.isnan(price) else price)


def _columns(rows: Sequence[Sequence]) -> tuple[list[str], list[str], list[str], np.ndarray]:
    """Titles, brands, categories ("" for none) and prices (NaN for none) of product
    rows."""
    return ([row[1] or "" for row in rows], [row[3] or "" for row in rows], [row[4] or "" for row in rows],
            np.asarray([_price(row[5]) for row in rows], dtype=np.float64))


@dataclass(frozen=True)
class Strings:
    """(n,) strings in one UTF-8 buffer: string i is ``data[start[i]:end[i]]`` ("" where start == end)."""

    data: bytes
    start: np.ndarray
    end: np.ndarray

    @classmethod
    def build(cls, n: int, positions: np.ndarray, parts: list[list[str]]) -> Strings:
        """(n,) strings with the values of ``parts`` (concatenated, in order) at ``positions``, "" elsewhere."""
        encoded = [value.encode("utf-8") for part in parts for value in part]
        lengths = np.fromiter((len(value) for value in encoded), dtype=np.int64, count=len(encoded))
        ends = np.cumsum(lengths)
        start, end = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
        start[positions], end[positions] = ends - lengths, ends
        return cls(b"".join(encoded), start, end)

    @property
    def nbytes(self) -> int:
        return len(self.data) + self.start.nbytes + self.end.nbytes

    def __len__(self) -> int:
        return len(self.start)

    def __getitem__(self, position: int) -> str:
        return self.data[int(self.start[position]):int(self.end[position])].decode("utf-8")

    def take(self, positions: np.ndarray) -> list[str]:
        """The strings at (m,) ``positions``, in order."""
        data = self.data
        return [data[a:b].decode("utf-8") for a, b in zip(self.start[positions].tolist(),
                                                          self.end[positions].tolist(), strict=True)]

    def updated(self, n: int, positions: np.ndarray, values: list[str]) -> Strings:
        """A copy grown to ``n`` ("" for the new ones) with ``values`` at ``positions`` (appended to the buffer:
        the old bytes of a replaced string stay, unused, until the table is next built from the database)."""
        grow = n - len(self)
        start = np.concatenate([self.start, np.zeros(grow, dtype=np.int64)])
        end = np.concatenate([self.end, np.zeros(grow, dtype=np.int64)])
        added = Strings.build(len(values), np.arange(len(values)), [values])
        start[positions], end[positions] = added.start + len(self.data), added.end + len(self.data)
        return Strings(self.data + added.data, start, end)


@dataclass(frozen=True)
class Codes:
    """(n,) strings as int32 codes into their distinct ``values`` (code 0 is always "")."""

    codes: np.ndarray
    values: list[str]

    @classmethod
    def build(cls, n: int, positions: np.ndarray, parts: list[list[str]]) -> Codes:
        """(n,) codes with the values of ``parts`` (concatenated, in order) at ``positions``, "" elsewhere."""
        return cls(np.zeros(n, dtype=np.int32), [""]).updated(n, positions, [v for part in parts for v in part])

    def __getitem__(self, position: int) -> str:
        return self.values[int(self.codes[position])]

    def take(self, positions: np.ndarray) -> list[str]:
        """The strings at (m,) ``positions``, in order."""
        values = self.values
        return [values[c] for c in self.codes[positions].tolist()]

    def updated(self, n: int, positions: np.ndarray, new: list[str]) -> Codes:
        """A copy grown to ``n`` ("" for the new ones) with ``new`` at ``positions``."""
        values = list(self.values)
        known = {value: code for code, value in enumerate(values)}
        codes = np.concatenate([self.codes, np.zeros(n - len(self.codes), dtype=np.int32)])
        codes[np.asarray(positions, dtype=np.int64)] = np.asarray(
            [known.setdefault(value, len(known)) for value in new], dtype=np.int32)
        values.extend(list(known)[len(values):])  # dicts keep insertion order: the new values, by code
        return Codes(codes, values)


def starts_category(path: str, prefix: str) -> bool:
    """Whether a category ``path`` starts with ``prefix`` (both as given: the caller lower-cases them), a number at
    the prefix's end matching whole numbers only.

    ``sports`` and ``sports > swim`` start ``sports > swimming`` (a word may be cut: the filter is typed by hand),
    but ``43`` does not start ``431 > 1009``: shops whose categories are ids (a RetailRocket export's are numbers)
    would get another category's products."""
    if not path.startswith(prefix):
        return False
    return not (prefix[-1:].isdigit() and path[len(prefix):len(prefix) + 1].isdigit())


@dataclass(frozen=True)
class ProductTable:
    """Metadata of the n products of an engine, position = the recommender's item position.

    Attributes:
        title: (n,) :class:`Strings` ("" where unknown).
        brand, category: (n,) :class:`Codes` ("" where unknown); category paths use " > ".
        price: (n,) float64, NaN where unknown.
        known: (n,) bool; False for products the database does not have.
    """

    title: Strings
    brand: Codes
    category: Codes
    price: np.ndarray
    known: np.ndarray

    @classmethod
    def from_rows(cls, n: int, chunks: Iterable[tuple[np.ndarray, list[Sequence]]]) -> ProductTable:
        """Build from product rows given in chunks of ``(positions, rows)``, e.g. one database page at a time.

        Args:
            n: number of products (positions 0..n-1).
            chunks: each chunk's (m,) int positions and its m rows ``(id, title, description, brand,
                category, price, ...)``; a position may appear once.
        """
        positions, titles, brands, categories, prices = [], [], [], [], []
        for where, rows in chunks:  # a chunk's rows are dropped once their columns are read
            positions.append(np.asarray(where, dtype=np.int64))
            title, brand, category, price = _columns(rows)
            titles.append(title)
            brands.append(brand)
            categories.append(category)
            prices.append(price)
        at = np.concatenate(positions) if positions else np.zeros(0, dtype=np.int64)
        price = np.full(n, np.nan)
        price[at] = np.concatenate(prices) if prices else np.zeros(0)
        known = np.zeros(n, dtype=bool)
        known[at] = True
        return cls(title=Strings.build(n, at, titles), brand=Codes.build(n, at, brands),
                   category=Codes.build(n, at, categories), price=price, known=known)

    def __len__(self) -> int:
        return len(self.known)

    def info(self, position: int) -> ItemInfo:
        """The metadata of one product."""
        price = self.price[position]
        return ItemInfo(title=self.title[position], brand=self.brand[position],
                        category=self.category[position], price=None if np.isnan(price) else float(price))

    def columns(self, positions: Sequence[int] | np.ndarray) -> tuple[list[str], list[str], list[str],
                                                                        list[float | None]]:
        """The titles, brands, categories and prices (None: no price) of the products at ``positions``, in
        order: :meth:`info` for many at once, a column read per field and no object per product (an answer's
        payload is built from the columns: 100 shoppers' answers are 1,000 products)."""
        at = np.asarray(positions, dtype=np.int64)
        prices = [None if price != price else price for price in self.price[at].tolist()]  # NaN: no price
        return self.title.take(at), self.brand.take(at), self.category.take(at), prices

    def titles(self, positions: Sequence[int] | np.ndarray) -> list[str]:
        """Titles of the products at ``positions``."""
        return self.title.take(np.asarray(positions, dtype=np.int64))

    def category_mask(self, prefix: str) -> np.ndarray:
        """(n,) bool: known products whose category path, lower-cased, starts with ``prefix`` (lower-case; see
        :func:`starts_category`)."""
        matching = np.asarray([starts_category(c.lower(), prefix) for c in self.category.values], dtype=bool)
        return matching[self.category.codes] & self.known

    def top_level_categories(self) -> list[str]:
        """The distinct first levels of the known products' category paths, sorted."""
        used = np.unique(self.category.codes[self.known])
        tops = {self.category.values[c].split(CATEGORY_SEPARATOR)[0].strip() for c in used.tolist()}
        return sorted(top for top in tops if top)

    def path_holding(self, level: str) -> str | None:
        """The first (sorted) of the known products' category paths that holds ``level`` (any case) as one of its
        levels after the first, cut after it (``"1003 > 108"`` for ``108``); None when none does."""
        wanted = level.strip().lower()
        used = np.unique(self.category.codes[self.known])
        for path in sorted(self.category.values[c] for c in used.tolist()):
            levels = [part.strip() for part in path.split(CATEGORY_SEPARATOR)]
            for depth, part in enumerate(levels[1:], start=1):
                if part.lower() == wanted:
                    return CATEGORY_SEPARATOR.join(levels[:depth + 1])
        return None

    def differs(self, positions: np.ndarray, rows: Sequence[Sequence]) -> np.ndarray:
        """(m,) bool: which of ``rows`` (at ``positions``) change what is stored, or are not known yet."""
        return np.asarray([not self.known[p] or self.info(int(p)) != row_info(row)
                           for p, row in zip(positions, rows, strict=True)], dtype=bool)

    def updated(self, n: int, positions: np.ndarray, rows: Sequence[Sequence]) -> ProductTable:
        """A copy grown to ``n`` products (new ones unknown) with ``rows`` written at ``positions``."""
        grow = n - len(self)
        positions = np.asarray(positions, dtype=np.int64)
        price = np.concatenate([self.price, np.full(grow, np.nan)])
        known = np.concatenate([self.known, np.zeros(grow, dtype=bool)])
        new_title, new_brand, new_category, price[positions] = _columns(rows)
        known[positions] = True
        return ProductTable(title=self.title.updated(n, positions, new_title),
                            brand=self.brand.updated(n, positions, new_brand),
                            category=self.category.updated(n, positions, new_category), price=price, known=known)
