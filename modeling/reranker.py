"""The ranking stage: candidates from several sources, features per candidate, a learned order.

For m shoppers with query vectors (the two-tower's query tower on their current histories):

1. candidates: the two-tower's top ``two_tower`` over the whole catalogue, the item-item top
   ``item_item`` of the history, the ``transitions`` top from the last item and the ``popular``
   most popular, without excluded or disallowed products: the same whatever the list's length k, so
   that a list is the head of any longer one (and the evaluation's top 10, cut from its top 100, is the
   API's ``k=10`` answer);
2. :data:`FEATURES` for every (shopper, candidate);
3. an order: a LightGBM LambdaMART model trained on positions the retrieval stage did not train on
   (each shopper's validation item; optionally also one step earlier, with every source fitted without
   that item), a linear blend, or a single feature, whichever cross-validation over those shoppers finds
   best among the orders whose gain over the baselines' own (item-item, transitions, their blend)
   exceeds two standard errors; the baselines' order where none does (a small shop with few
   validation shoppers gets what the baselines would give it).

Both the training of the ranker and serving compute features with :func:`candidate_features`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from modeling import native
from modeling.candidates import (
    CsrArrays,
    HistoryBatch,
    Sources,
    SparseRows,
    entry_keys,
    paired_gain,
    rows_at,
    source_config,
    sparse_values,
)
from modeling.compiled_ranker import (
    COMPILED_FILE,
    CompiledBooster,
    CompileError,
    LazyBooster,
    compile_booster,
    load_compiled,
)
from modeling.errors import IncompatibleBundleError
from modeling.features import ItemAttributes
from modeling.index import ItemIndex
from modeling.optional_imports import hidden
from modeling.ranking import excluded_keys, members, stable_top_rows
from modeling.rows import CODE_LEVELS, QuantizedRows, StackedRows, append_rows, as_float32, mapped, take_rows

logger = logging.getLogger(__name__)

FEATURES: tuple[str, ...] = (
    "two_tower", "two_tower_gap", "item_item", "item_item_share", "transition_last", "transition_previous",
    "popularity_rank", "text_history", "text_last", "category_match", "brand_match", "price_ratio",
    "history_length", "nearest_age_days", "source_count", "item_item_recent", "item_item_recent_share",
    "category_recent", "sequence", "sequence_share",
)
"""Per (shopper, candidate): the two-tower score and its gap to the shopper's best candidate; the
item-item score of the history (each product weighted by recency: halved every
``history_half_life_days``, 365, before the latest interaction) and its share of the shopper's best;
transition probability from the last and the previous item; popularity percentile; text cosine to
the history's mean text and to the last item; share of the 10 most recent history items with the
candidate's category and brand; log price over their median price; log history length; days between
the shopper's latest interaction and the history item whose text is nearest to the candidate (a product
met twice: its first place); how many sources proposed it; the item-item score of the recency-weighted
history (each product's weight halved every ``recent_half_life_days``, 30, before the latest
interaction) and its share of the shopper's best; the recency-weighted share of the 10 most recent
products in the candidate's category; the sequential rules' score of the most recent products
(:attr:`Sources.sequence`) and its share of the shopper's best."""

SINGLE_FEATURES: tuple[str, ...] = ("two_tower", "item_item", "transition_last", "popularity_rank", "text_history",
                                     "sequence")
"""Features that also compete as rankings on their own (the ranker must beat every one of them)."""
BLEND_PARTS: tuple[str, ...] = ("two_tower", "item_item", "item_item_recent", "transition_last", "sequence")
"""The scores a linear blend weighs (a robust choice where too few shoppers are held out to train a ranker)."""
BLEND_STEP = 0.25
DENSE_PARTS: tuple[str, ...] = ("two_tower",)
"""Blend parts scaled min-to-max within the candidates (the others are sparse: divided by their largest value)."""
SEQUENTIAL_STEP = 0.1
"""Grid step of the transitions + item-item blend (the ranking stage's form of the transitions+EASE baseline)."""
REFERENCE_TRIALS: tuple[str, ...] = ("feature:item_item", "feature:transition_last", "transitions+item_item")
"""The trials that rank as the established simple baselines do (EASE or item-kNN, transitions, transitions+EASE):
a richer trial is chosen over the best of them only when its gain on the selection shoppers exceeds
:data:`CHOICE_STANDARD_ERRORS` standard errors of the paired difference. The sequential rules' ranking
(``feature:sequence``) is not one of them: it competes as a richer trial and must gain as clearly (where it
led narrowly on validation, All Beauty's 0.753 against transitions + item-item's 0.748, serving it cost 0.024
NDCG@10 on the test items: a narrow validation lead is no reason to leave the established rankings)."""
GENERAL_REFERENCE = "transitions+item_item"
"""What the stage serves when no richer trial clears the bar, unless a single source beats it clearly (see
:func:`fit_ranker`): the blend holds both sources (its weights, chosen on the other folds, may be all on one), so
where validation cannot tell them apart it keeps each one's evidence. Serving the best reference by its mean
alone served the last product's transitions on a shop whose validation items favoured them by chance (a
300-shopper rating log of 6,009 products: transitions led transitions + item-item by 0.0015 on validation, then
served 0.0127 NDCG@10 on the test items against the blend baseline's 0.0171), and the popular products to
shoppers whose last product had no transitions. The bar stays the best reference by its mean: a weaker bar lets
more richer trials win by chance."""
CHOICE_STANDARD_ERRORS = 2.0
"""Two, not one: the best of a dozen trials is compared, so a one-error gain is often chance."""

STAGE_DIR = "ranking_stage"
ROUNDS: tuple[int, ...] = (25, 50, 100, 200, 400)
PRIOR_SCALE = 16.0
"""LambdaMART boosted from a blend (trials ``lightgbm+prior:R``) starts from this multiple of the blend's score
(each part scaled to [0, 1] within the shopper's candidates): the trees then learn corrections to the blend's
order instead of an order from nothing, which needs fewer held-out shoppers to beat it. Chosen on the
validation lists of the shared data sets (`benchmarks/rankers.py` builds them): scales 1, 4, 16 and 64 gave
cross-validated NDCG@10 0.064, 0.072, 0.074 and 0.068 on MovieLens (its best trial each; plain LambdaMART
0.065, the transitions + item-item blend 0.063) and changed little on Gift Cards and All Beauty."""
LIGHTGBM_TRIALS: tuple[str, ...] = ("lightgbm", "lightgbm+prior", "lightgbm+earlier", "lightgbm+prior+earlier")
"""LambdaMART from nothing and boosted from a blend, each learning from the validation lists alone and with the
:class:`EarlierLists` too (the towers trained on those earlier positions, so their scores there are flattered
on some shops: cross-validation decides which serves). The trials with the earlier lists stop at
:data:`PRIOR_ROUNDS` trees: each of their trees costs about twice as much."""
PRIOR_ROUNDS: tuple[int, ...] = (25, 50, 100)
"""Rounds of the boosted-from-a-blend trials: corrections need few trees (more overfit the small sets where
the prior helps), and each round costs as much as a plain LambdaMART round on a large validation set."""
TEXT_HISTORY = 50  # most recent history items compared by text
RECENT_HISTORY = 10  # most recent history items the category, brand and price matches look at


@dataclass
class StageConfig:
    """How many candidates each source gives (per shopper)."""

    two_tower: int = 100
    item_item: int = 100
    transitions: int = 30
    popular: int = 30
    item_item_recent: int = 50
    sequence: int = 50
    history_half_life_days: float = 365.0
    recent_half_life_days: float = 30.0
    folds: int = 3
    earlier_positions: int = 1
    """Steps before the validation item at which each validation shopper's list is held out too, for
    LambdaMART to learn from (:class:`EarlierLists`; 0: none)."""
    seed: int = 0


@dataclass
class ItemTables:
    """Per-item inputs of the features, aligned to item positions (n items).

    Attributes:
        category: (n,) int32 category code (-1: unknown).
        brand: (n,) int32 brand code (-1: unknown).
        price: (n,) float32 price (nan: unknown).
        content: (n, t) float32, float16 or 8-bit codes (:class:`QuantizedRows`; a bundle's) unit-norm text embeddings;
            rows are read as float32.
        popularity_rank: (n,) float32 popularity percentile in [0, 1] (1: most popular).
        popularity: (n,) float32 popularity scores (the popular source).
        popular_order: (n,) int64 item positions by decreasing popularity.
        category_names, brand_names: the strings the codes stand for (code i: ``names[i]``).
    """

    category: np.ndarray
    brand: np.ndarray
    price: np.ndarray
    content: np.ndarray | QuantizedRows | StackedRows
    popularity_rank: np.ndarray
    popularity: np.ndarray
    popular_order: np.ndarray
    category_names: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))
    brand_names: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=str))

    @classmethod
    def build(cls, category: np.ndarray, brand: np.ndarray, price: np.ndarray, content: np.ndarray | QuantizedRows,
              popularity: np.ndarray, *, content_unit: bool | None = None,
              codes: AttributeCodes | None = None) -> ItemTables:
        """From strings ("" unknown), prices (< 0 unknown), text embeddings and popularity scores;
        ``content_unit``: whether the text embeddings are known to be unit rows (None: checked here);
        ``codes``: the strings' codes, when already known (a bundle stores them; None: coded here)."""
        codes = codes if codes is not None else AttributeCodes.of(category, brand)
        popularity = np.asarray(popularity, dtype=np.float32)
        return cls(codes.category, codes.brand, _known_prices(price), _unit_rows(content, content_unit),
                   *_popularity_order(popularity), codes.category_names, codes.brand_names)

    def appended(self, category: np.ndarray, brand: np.ndarray, price: np.ndarray, content: np.ndarray,
                 popularity: np.ndarray) -> ItemTables:
        """These tables with m items added after the last (this one is left as it was).

        The text embeddings are stacked without copying the existing ones (:mod:`modeling.rows`), the
        strings are coded with the existing codes (new strings get new ones), and only the popularity
        order is computed again: at 1,000,000 products, building the tables again for one new product took
        8 s (the distinct strings sorted again, every text embedding's norm checked again).

        Args:
            category, brand: (m,) strings ("" unknown); price: (m,) (< 0 unknown).
            content: (m, t) text embeddings; popularity: (m,) scores.
        """
        def extend(codes: np.ndarray, names: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            lookup = {str(name): n for n, name in enumerate(names)}  # the distinct strings: few
            added: list[str] = []
            new = np.empty(len(values), dtype=np.int32)
            for row, value in enumerate(np.asarray(values, dtype=str)):
                if value == "":
                    new[row] = -1
                    continue
                if value not in lookup:
                    lookup[value] = len(names) + len(added)
                    added.append(value)
                new[row] = lookup[value]
            names = np.concatenate([np.asarray(names, dtype=str), np.asarray(added, dtype=str)])
            return np.concatenate([codes, new]), names

        category_codes, category_names = extend(self.category, self.category_names, category)
        brand_codes, brand_names = extend(self.brand, self.brand_names, brand)
        popularity = np.concatenate([self.popularity, np.asarray(popularity, dtype=np.float32)])
        return ItemTables(category_codes, brand_codes, np.concatenate([self.price, _known_prices(price)]),
                          append_rows(self.content, _unit_rows(content)), *_popularity_order(popularity),
                          category_names, brand_names)


def string_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(codes (n,) int32, names (d,) str)`` of (n,) strings: ``names`` sorted and distinct, ``names[codes[i]]
    == values[i]``, code -1 for "" (unknown)."""
    values = np.asarray(values, dtype=str)
    names, inverse = np.unique(values, return_inverse=True)
    return np.where(values == "", -1, inverse).astype(np.int32), names


CODE_FILES = ("item_category_codes", "item_category_names", "item_brand_codes", "item_brand_names")
"""The files of :class:`AttributeCodes` in a stage folder (``.npy``)."""


@dataclass(frozen=True)
class AttributeCodes:
    """The products' category and brand strings as codes (:func:`string_codes`), written with the stage.

    Coding sorts every product's strings: 1.4 s of each web worker's start at 1,000,000 products (more with
    a real shop's longer category paths), and private memory in every worker; stored, the codes are mapped
    and shared like the other arrays. Bundles written before them are coded at load, as before.

    Attributes:
        category, brand: (n,) int32 codes (-1: unknown).
        category_names, brand_names: the strings the codes stand for (code i: ``names[i]``).
    """

    category: np.ndarray
    category_names: np.ndarray
    brand: np.ndarray
    brand_names: np.ndarray

    @classmethod
    def of(cls, category: np.ndarray, brand: np.ndarray) -> AttributeCodes:
        """The codes of (n,) category and brand strings ("" unknown)."""
        category_codes, category_names = string_codes(category)
        brand_codes, brand_names = string_codes(brand)
        return cls(category_codes, category_names, brand_codes, brand_names)

    def save(self, directory: Path) -> None:
        """Write the four arrays into ``directory`` (:data:`CODE_FILES`)."""
        for name, values in zip(CODE_FILES, (self.category, self.category_names, self.brand, self.brand_names),
                                strict=True):
            np.save(directory / f"{name}.npy", values, allow_pickle=False)

    @classmethod
    def load(cls, directory: Path, n_items: int) -> AttributeCodes | None:
        """The codes :meth:`save` wrote for ``n_items`` products, memory-mapped; None when the stage has none.

        Raises:
            ValueError: some of the files are missing, or they do not fit (lengths, codes out of range).
        """
        present = [(directory / f"{name}.npy").is_file() for name in CODE_FILES]
        if not any(present):
            return None
        if not all(present):
            missing = [name for name, there in zip(CODE_FILES, present, strict=True) if not there]
            raise ValueError(f"attribute codes incomplete: {', '.join(missing)} missing")
        category, category_names, brand, brand_names = (
            mapped(directory / f"{name}.npy") for name in CODE_FILES)
        for codes, names, what in ((category, category_names, "category"), (brand, brand_names, "brand")):
            if codes.shape != (n_items,) or codes.dtype != np.int32 or names.ndim != 1:
                raise ValueError(f"{what} codes of shape {codes.shape} ({codes.dtype}) for {n_items} products")
            if len(codes) and (int(codes.min()) < -1 or int(codes.max()) >= len(names)):
                raise ValueError(f"{what} codes outside their {len(names)} names")
        return cls(category, np.asarray(category_names), brand, np.asarray(brand_names))


def _known_prices(price: np.ndarray) -> np.ndarray:
    """(n,) float32 prices, NaN where unknown (< 0)."""
    price = np.asarray(price, dtype=np.float32)
    return np.where(price >= 0, price, np.nan).astype(np.float32)


UNIT_TOLERANCE = 1e-4
"""How far from 1 a text vector's norm may be for the vectors to count as already normalised."""


def rows_are_unit(content: np.ndarray | QuantizedRows) -> bool:
    """Whether every row of (n, t) ``content`` has norm 1 (within :data:`UNIT_TOLERANCE`) or 0. Reads every row:
    publishing records the answer in the bundle (``item_content_unit``), so serving need not read them."""
    norms = np.linalg.norm(as_float32(content), axis=1)
    return bool(np.all((np.abs(norms - 1) < UNIT_TOLERANCE) | (norms == 0)))


def _unit_rows(content: np.ndarray | QuantizedRows, unit: bool | None = None) -> np.ndarray | QuantizedRows:
    """Text embeddings at unit norm: kept as they are (memory-mapped) when they already are (the usual case).

    ``unit``: whether they are, when known (a bundle records it); None: every row is read to find out (at
    100,000 products, 0.8 s of each worker's start)."""
    if not isinstance(content, QuantizedRows):  # 8-bit codes and float16 rows stay as stored (read as float32)
        content = np.asarray(content)
        if content.dtype != np.float16:
            content = as_float32(content)
    if unit is None:
        unit = rows_are_unit(content)
    if not unit:
        content = as_float32(content)
        norms = np.linalg.norm(content, axis=1, keepdims=True)
        content = np.divide(content, norms, out=np.zeros_like(content), where=norms > 0)
    return content


def _popularity_order(popularity: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(percentile rank (n,) float32, popularity (n,), positions by decreasing popularity (n,) int64)``."""
    order = np.argsort(popularity, kind="stable")
    rank = np.empty(len(popularity), dtype=np.float32)
    rank[order] = np.arange(len(popularity), dtype=np.float32) / max(1, len(popularity) - 1)
    return rank, popularity, np.argsort(-popularity, kind="stable")


def _sparse_tops(scores: SparseRows, stored: np.ndarray, k: int, n: int, excluded: np.ndarray,
                 allowed: np.ndarray | None) -> np.ndarray:
    """Keys (``row * n + item``) of each row's ``k`` largest positive scores that are neither excluded
    (``excluded``: sorted keys) nor disallowed; ``stored``: :func:`~modeling.candidates.entry_keys` of ``scores``.
    Returns (e,) int64, unordered."""
    keep = (scores.data > 0) & ~members(stored, excluded)
    if allowed is not None:
        keep &= allowed[scores.indices]
    keys, values = stored[keep], np.asarray(scores.data[keep], dtype=np.float32)
    rows, items = keys // n, keys % n
    # By row, best first within it, ties in item order: one sort of (row, value, item) packed into an int64 (a
    # positive float32's bits order as the float does), twice as fast as np.lexsort of the arrays. The packed
    # keys are unique, so numpy's default (vectorised) sort gives the stable sort's order, 4 to 5 times
    # faster from a few thousand entries (a batch of 100 shoppers: 100,000); where row and item do not fit
    # beside the value's 31 bits, a stable sort of (row, value) keeps the entries' item order instead.
    descending = np.int64(0x7FFFFFFF) - values.view(np.int32).astype(np.int64)
    m = int(rows[-1]) + 1 if len(rows) else 0
    item_bits, row_bits = max(1, int(n - 1).bit_length()), max(1, (m - 1).bit_length())
    if row_bits + 31 + item_bits <= 63:
        order = np.argsort((rows << (31 + item_bits)) | (descending << item_bits) | items)
    else:
        order = np.argsort(rows * (np.int64(1) << 32) + descending, kind="stable")
    rows = rows[order]
    counts = np.bincount(rows, minlength=m)
    rank = np.arange(len(rows)) - (np.cumsum(counts) - counts)[rows]  # place within the row
    return keys[order[rank < k]]


def _row_dots(vectors: np.ndarray, query: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """(e,) float32 dot product of each of (e, d) ``vectors`` with its shopper's query: shopper r's run
    ``vectors[starts[r]:starts[r] + sizes[r]]`` with ``query[r]`` of (m, d).

    One einsum per shopper against its own query: the same values as one einsum of every row against its
    query repeated (``np.einsum("ed,ed->e", vectors, query[rows])``, what this did before), without making that
    (e, d) copy of the queries (100 shoppers' 22,000 candidates: 1.0 instead of 2.4 ms)."""
    out = np.empty(len(vectors), dtype=np.float32)
    for row in np.flatnonzero(sizes).tolist():
        part = slice(int(starts[row]), int(starts[row] + sizes[row]))
        out[part] = np.einsum("ed,d->e", vectors[part], query[row])
    return out


def _row_max(values: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(m,) largest of each row's run ``values[starts[r]:starts[r] + lengths[r]]`` (-inf for an empty run)."""
    out = np.full(len(starts), -np.inf, dtype=np.float64)
    filled = lengths > 0
    if filled.any():
        out[filled] = np.maximum.reduceat(values, starts[filled])
    return out


def _recent_table(histories: HistoryBatch, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each history's ``length`` most recent items, right-aligned: ``(items (m, length) int64 with -1 pads,
    timestamps (m, length) int64, counts (m,) int64)``."""
    m = len(histories)
    items = np.full((m, length), -1, dtype=np.int64)
    stamps = np.zeros((m, length), dtype=np.int64)
    counts = np.zeros(m, dtype=np.int64)
    for row, (positions, times) in enumerate(zip(histories.items, histories.timestamps, strict=True)):
        count = min(len(positions), length)
        if count:
            items[row, length - count:] = positions[-count:]
            stamps[row, length - count:] = times[-count:]
        counts[row] = count
    return items, stamps, counts


def _popular_order(tables: ItemTables, allowed: np.ndarray | None, needed: int | None = None) -> np.ndarray:
    """Allowed item positions by decreasing popularity (the sort is done once per table, not per request).

    With ``needed``, only the most popular items are looked at, until ``needed`` allowed ones are found (or
    the catalogue ends): the head of the full answer, at least ``needed`` long. Filtering the whole order
    cost 4 ms per request at 1,000,000 products for the few dozen popular candidates a shopper gets.
    """
    order = tables.popular_order
    if allowed is None:
        return order
    if needed is None:
        return order[allowed[order]]
    size = max(2 * needed, 1024)
    while True:
        head = order[:size]
        kept = head[allowed[head]]
        if len(kept) >= needed or size >= len(order):
            return kept
        size *= 4


def _popular_needed(config: StageConfig, exclude: Sequence[np.ndarray]) -> int:
    """How much of the allowed popularity order a batch reads: its popular candidates plus the most any
    shopper in it excludes (excluded items are skipped in that order)."""
    return config.popular + max((len(e) for e in exclude), default=0)


def candidate_features(query: np.ndarray, item_vectors: np.ndarray, index: ItemIndex, sources: Sources,
                       tables: ItemTables, histories: HistoryBatch, exclude: Sequence[np.ndarray],
                       allowed: np.ndarray | None, config: StageConfig,
                       popular_order: np.ndarray | None = None,
                       columns: Collection[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Candidates and their features for m shoppers.

    The item-item and transition scores stay sparse (only the items linked to the history are
    touched), so the cost per shopper grows with the history and the candidates, not the catalogue,
    except for the two-tower search itself. Every (shopper, candidate) pair of the batch is one entry
    of flat arrays, keyed ``row * n + item``: the batch costs a few dozen array operations, not a few
    dozen per shopper (100 shoppers at 100,000 products took 40 ms in a per-shopper loop).

    Args:
        query: (m, d) float32 query vectors.
        item_vectors: (n, d) float32.
        index: search over ``item_vectors``.
        sources: item-item and transition matrices over n items.
        tables: per-item feature inputs.
        histories: m histories (positions, oldest first).
        exclude: m arrays of positions never proposed.
        allowed: optional (n,) bool mask of proposable items.
        config: candidates per source.
        popular_order: :func:`_popular_order` of ``tables`` and ``allowed``, if already known.
        columns: the features the caller reads (:meth:`Ranker.columns`); the others are left 0 and not
            computed (a single-feature or blended order reads two to six of them). None: every feature.

    Returns:
        ``(candidates (m, C) int64 with -1 pads, features (m, C, len(FEATURES)) float32)``; each row's
        candidates are in increasing position order. The candidates never depend on ``columns``.
    """
    m, n = len(histories), len(item_vectors)
    query = np.asarray(query, dtype=np.float32)
    lengths = np.fromiter((len(e) for e in exclude), dtype=np.int64, count=m)
    excluded = excluded_keys(exclude, n)

    def wanted(*names: str) -> bool:
        return columns is None or any(name in columns for name in names)

    if popular_order is None:
        popular_order = _popular_order(tables, allowed, _popular_needed(config, exclude))
    tt_top, _ = index.search(query, min(config.two_tower, n), exclude, allowed, excluded=excluded)
    history_sizes = np.fromiter((len(h) for h in histories.items), dtype=np.int64, count=m)
    text, attributes = wanted(*TEXT_FEATURES), wanted(*ATTRIBUTE_FEATURES)
    recent = _recent_table(histories, TEXT_HISTORY) if text or attributes else None
    proposals = Proposals(histories, sources, tables, np.asarray(tt_top, dtype=np.int64), excluded, lengths, allowed,
                          config, np.asarray(popular_order, dtype=np.int64), n, np.log1p(history_sizes),
                          (recent[0][:, -RECENT_HISTORY:], recent[1][:, -RECENT_HISTORY:])
                          if recent is not None and attributes else None)
    kernel = stage_kernel()  # the stage's native code, where it compiled and gives numpy's values
    computed = kernel(proposals, wanted) if kernel is not None else None
    rows, cand, feats = computed if computed is not None else numpy_candidates(proposals, wanted)
    sizes = np.bincount(rows, minlength=m).astype(np.int64)
    starts = np.cumsum(sizes) - sizes
    column = {name: position for position, name in enumerate(FEATURES)}
    if wanted("two_tower", "two_tower_gap"):
        two_tower = _row_dots(np.asarray(take_rows(item_vectors, cand), dtype=np.float32), query, starts, sizes)
        feats[:, column["two_tower"]] = two_tower
        feats[:, column["two_tower_gap"]] = two_tower - _row_max(two_tower, starts, sizes)[rows]
    if recent is not None and text:
        _text_features(feats, column, tables, *recent, rows, cand, starts, sizes)

    width = int(sizes.max(initial=0))
    candidates = np.full((m, width), -1, dtype=np.int64)
    features = np.zeros((m, width, len(FEATURES)), dtype=np.float32)
    places = np.arange(len(rows), dtype=np.int64) - starts[rows]
    candidates[rows, places] = cand
    features[rows, places] = feats
    return candidates, features


@dataclass(frozen=True)
class Proposals:
    """What the candidates of m shoppers and their sparse features are made from (:func:`numpy_candidates` and
    the native code of :mod:`modeling.native` compute the same from it).

    Attributes:
        histories: the m histories.
        sources: the item-item, transition and sequential-rules matrices over n items.
        tables: the products' popularity ranks, categories, brands and prices.
        two_tower: (m, T) int64 the two-tower's top positions, -1 pads.
        excluded: sorted keys ``row * n + item`` never proposed.
        excluded_counts: (m,) how many items each shopper excludes.
        allowed: optional (n,) bool mask of proposable items.
        config: candidates per source.
        popular_order: allowed item positions by decreasing popularity (at least the head each shopper reads).
        n: items.
        history_length: (m,) float64 the history-length feature (log1p of each history's length).
        recent: each shopper's :data:`RECENT_HISTORY` most recent products and their times ``(items (m, R) int64,
            -1 pads, timestamps (m, R) int64)``, right-aligned, for the attribute features (None: none read).
    """

    histories: HistoryBatch
    sources: Sources
    tables: ItemTables
    two_tower: np.ndarray
    excluded: np.ndarray
    excluded_counts: np.ndarray
    allowed: np.ndarray | None
    config: StageConfig
    popular_order: np.ndarray
    n: int
    history_length: np.ndarray
    recent: tuple[np.ndarray, np.ndarray] | None = None


NATIVE_FEATURES: tuple[str, ...] = (
    "item_item", "item_item_share", "item_item_recent", "item_item_recent_share", "sequence", "sequence_share",
    "transition_last", "transition_previous", "popularity_rank", "history_length", "source_count",
    "category_match", "category_recent", "brand_match", "price_ratio",
)
"""The features the candidates' computation fills (:func:`numpy_candidates`), in the order of the native code's
``COLUMN_*`` constants; the others (two-tower and text features) are computed from its candidates."""


def numpy_candidates(proposals: Proposals, wanted: Callable[..., bool]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The candidates of :class:`Proposals` and their :data:`NATIVE_FEATURES` (those ``wanted`` reads; a share
    with its score), with numpy: ``(rows (e,) int64 ascending, items (e,) int64, features (e, len(FEATURES))
    float32)``, each shopper's items ascending, the other features 0."""
    p, config, n = proposals, proposals.config, proposals.n
    histories, sources, m = p.histories, p.sources, len(p.histories)
    item_item, recent = histories.propagate_each(sources.item_item, (config.history_half_life_days,
                                                                   config.recent_half_life_days))
    sequence = histories.propagate_recent(sources.sequence, sources.sequence_history)
    following = rows_at(sources.transitions, histories.last(1))
    # Candidates: the union of every source's proposals per shopper, and how many sources proposed each.
    popular = _popular_keys(p.popular_order, config.popular, p.excluded_counts, n, p.excluded)
    tt_top = p.two_tower
    tt_rows = np.repeat(np.arange(m, dtype=np.int64), tt_top.shape[1]).reshape(tt_top.shape)
    stored = {name: entry_keys(scores, n) for name, scores in
              (("item_item", item_item), ("item_item_recent", recent), ("following", following),
               ("sequence", sequence))}
    excluded, allowed = p.excluded, p.allowed
    proposed = [(tt_rows * n + tt_top)[tt_top >= 0],
                _sparse_tops(item_item, stored["item_item"], config.item_item, n, excluded, allowed),
                _sparse_tops(recent, stored["item_item_recent"], config.item_item_recent, n, excluded, allowed),
                _sparse_tops(following, stored["following"], config.transitions, n, excluded, allowed),
                _sparse_tops(sequence, stored["sequence"], config.sequence, n, excluded, allowed), popular]
    keys, count = np.unique(np.concatenate(proposed).astype(np.int64), return_counts=True)
    rows, cand = keys // n, keys % n
    sizes = np.bincount(rows, minlength=m).astype(np.int64)
    starts = np.cumsum(sizes) - sizes

    column = {name: position for position, name in enumerate(FEATURES)}
    feats = np.zeros((len(keys), len(FEATURES)), dtype=np.float32)
    for name, scores in (("item_item", item_item), ("item_item_recent", recent), ("sequence", sequence)):
        if not wanted(name, f"{name}_share"):
            continue
        values = sparse_values(scores, stored[name], keys)
        feats[:, column[name]] = values
        best = _row_max(values, starts, sizes)[rows]
        feats[:, column[f"{name}_share"]] = np.where(best > 0, values / np.where(best > 0, best, 1.0), 0.0)
    if wanted("transition_last"):
        feats[:, column["transition_last"]] = sparse_values(following, stored["following"], keys)
    if wanted("transition_previous"):
        preceding = rows_at(sources.transitions, histories.last(2))
        feats[:, column["transition_previous"]] = sparse_values(preceding, entry_keys(preceding, n), keys)
    feats[:, column["popularity_rank"]] = p.tables.popularity_rank[cand]
    feats[:, column["history_length"]] = p.history_length[rows]
    feats[:, column["source_count"]] = count
    if p.recent is not None and wanted(*ATTRIBUTE_FEATURES):
        _attribute_features(feats, column, p.tables, *p.recent, rows, cand, config)
    return rows, cand, feats


def _native_columns(wanted: Callable[..., bool]) -> np.ndarray:
    """(len(NATIVE_FEATURES),) int64: the column of each feature the native code fills, -1 where it is not read (a
    score and its share go together, as in :func:`numpy_candidates`)."""
    column = {name: position for position, name in enumerate(FEATURES)}
    read = {name: wanted(name, f"{name}_share") for name in ("item_item", "item_item_recent", "sequence")}
    read.update({f"{name}_share": value for name, value in read.items()})
    read.update(transition_last=wanted("transition_last"), transition_previous=wanted("transition_previous"))
    read.update({name: wanted(*ATTRIBUTE_FEATURES) for name in ATTRIBUTE_FEATURES})
    return np.asarray([column[name] if read.get(name, True) else -1 for name in NATIVE_FEATURES], dtype=np.int64)


def native_candidates(function: Any, proposals: Proposals,
                      wanted: Callable[..., bool]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """:func:`numpy_candidates` by the native code's ``function`` (:func:`modeling.native.stage_function`); None
    where it cannot read the inputs as they are (a matrix of float64 values, e.g. while sources are fitted)."""
    p, config = proposals, proposals.config
    matrices = tuple(matrix.native_view if isinstance(matrix, CsrArrays) else native.csr(matrix)
                     for matrix in (p.sources.item_item, p.sources.sequence, p.sources.transitions))
    tables = p.tables
    arrays = (tables.popularity_rank, tables.category, tables.brand, tables.price)
    if (any(matrix is None for matrix in matrices) or any(len(array) != p.n for array in arrays)
            or [array.dtype for array in arrays] != [np.float32, np.int32, np.int32, np.float32]):
        return None
    attributes = p.recent is not None and wanted(*ATTRIBUTE_FEATURES)
    rows, items, feats = native.stage_candidates(
        function, n=p.n, excluded=p.excluded, allowed=p.allowed, matrices=matrices,  # type: ignore[arg-type]
        history_items=p.histories.items,
        decays=tuple(p.histories.decays_each(  # type: ignore[arg-type]
            (config.history_half_life_days, config.recent_half_life_days))),
        sequence_length=max(1, int(p.sources.sequence_history)), popular_order=p.popular_order,
        excluded_counts=p.excluded_counts, two_tower=p.two_tower,
        counts=(config.item_item, config.item_item_recent, config.transitions, config.sequence, config.popular),
        popularity_rank=tables.popularity_rank, history_length=p.history_length,
        attributes=(tables.category, tables.brand, tables.price, _recent_decay(*p.recent, config))
        if attributes and p.recent is not None else None, columns=_native_columns(wanted), n_features=len(FEATURES))
    if attributes:  # the C code leaves the price's ratio to its median (numpy's logarithm is not C's)
        price_ratio = FEATURES.index("price_ratio")
        with np.errstate(divide="ignore", invalid="ignore"):
            feats[:, price_ratio] = np.log(feats[:, price_ratio])
    return rows, items, feats


def synthetic_proposals(seed: int, *, n: int = 60, m: int = 5) -> Proposals:
    """Random :class:`Proposals` over ``n`` items for ``m`` shoppers that exercise every case of the candidates'
    computation: matrices with negative, zero and tied values and each kind of position arrays, empty and
    repeating histories, exclusions, a filter, pads in the two-tower's top, sources cut short by their counts."""
    rng = np.random.default_rng(seed)

    def matrix(indptr_type: type, indices_type: type) -> CsrArrays:
        dense = np.where(rng.random((n, n)) < 0.15, rng.choice([-0.5, 0.0, 0.25, 0.5, 1.0, 2.0], (n, n)), 0.0)
        noise = rng.random((n, n)) < 0.05
        dense[noise] = rng.normal(size=int(noise.sum()))
        rows, cols = np.nonzero(dense)
        indptr = np.searchsorted(rows, np.arange(n + 1)).astype(indptr_type)
        return CsrArrays(dense[rows, cols].astype(np.float32), cols.astype(indices_type), indptr, (n, n))

    sources = Sources(matrix(np.int64, np.int32), matrix(np.int32, np.int32), "ease", 10.0,
                      matrix(np.int64, np.int64), 3, int(rng.choice([1, 2, 3, 10])))
    items, stamps = [], []
    for row in range(m):
        length = 0 if row == 0 else int(rng.integers(1, 12) if rng.random() < 0.7 else rng.integers(33, 80))
        drawn = rng.integers(0, n, length).astype(np.int64)
        items.append(np.repeat(drawn, rng.integers(1, 3, length))[:length])  # some consecutive repeats
        stamps.append(np.sort(rng.integers(1_600_000_000, 1_700_000_000, length)).astype(np.int64))
    histories = HistoryBatch(items, stamps)
    exclude = [np.unique(h) for h in items]
    allowed = rng.random(n) > 0.1 if seed % 2 else None
    order = np.argsort(-rng.random(n), kind="stable")
    order = order[allowed[order]] if allowed is not None else order
    two_tower = np.full((m, 8), -1, dtype=np.int64)
    for row in range(m):
        free = [i for i in rng.permutation(n) if i not in set(exclude[row].tolist())
                and (allowed is None or allowed[i])][:int(rng.integers(0, 9))]
        two_tower[row, :len(free)] = free
    config = StageConfig(two_tower=8, item_item=int(rng.integers(1, 8)), transitions=int(rng.integers(0, 4)),
                         popular=int(rng.integers(1, 6)), item_item_recent=int(rng.integers(0, 6)),
                         sequence=int(rng.integers(1, 6)), recent_half_life_days=float(rng.choice([0.0, 30.0])))
    lengths = np.asarray([len(e) for e in exclude], dtype=np.int64)
    sizes = np.asarray([len(h) for h in items], dtype=np.int64)
    prices = rng.choice([np.nan, 0.0, 9.99, 10.0, 25.5, 100.0], n) * rng.choice([1.0, 1.0, 1.1], n)
    tables = ItemTables(rng.integers(-1, 4, n).astype(np.int32), rng.integers(-1, 3, n).astype(np.int32),
                        prices.astype(np.float32), np.zeros((n, 1), dtype=np.float32),
                        (rng.permutation(n) / max(n - 1, 1)).astype(np.float32), np.zeros(n, dtype=np.float32),
                        np.arange(n, dtype=np.int64))
    recent_items, recent_stamps, _ = _recent_table(histories, RECENT_HISTORY)
    return Proposals(histories, sources, tables, two_tower, excluded_keys(exclude, n), lengths, allowed, config,
                     order.astype(np.int64), n, np.log1p(sizes), (recent_items, recent_stamps))


SYNTHETIC_CHECKS = 8
"""Synthetic shops on which the native code must give numpy's candidates and features before it serves."""
_kernel_lock = threading.Lock()
_kernel: dict[str, Any] = {}


def stage_kernel() -> Callable[[Proposals, Callable[..., bool]],
                               tuple[np.ndarray, np.ndarray, np.ndarray] | None] | None:
    """The native computation of the candidates (:func:`native_candidates`), once it gave the same candidates and
    features as :func:`numpy_candidates`, bit for bit, on :data:`SYNTHETIC_CHECKS` synthetic shops (checked once
    per process); None when native code is off or unavailable, or differed (numpy then computes them)."""
    function = native.stage_function()
    if function is None or not _checked_once("candidates", function, _check_kernel):
        return None
    return lambda proposals, wanted: native_candidates(function, proposals, wanted)


def _checked_once(name: str, function: Any, check: Callable[[Any], bool]) -> bool:
    """``check(function)``, made once per process for each ``name`` (the native code's candidates, its text
    features) and remembered."""
    with _kernel_lock:
        if name not in _kernel:
            _kernel[name] = check(function)
        return bool(_kernel[name])


def _check_kernel(function: Any) -> bool:
    """Whether ``function`` gives :func:`numpy_candidates`' results on the synthetic shops (a log line if not)."""
    def same(seed: int) -> bool:
        proposals = synthetic_proposals(seed)
        for wanted in (lambda *names: True, lambda *names: "sequence" in names):
            got = native_candidates(function, proposals, wanted)
            expected = numpy_candidates(proposals, wanted)
            if got is None or not all(np.array_equal(a, b, equal_nan=True) for a, b in zip(got, expected, strict=True)):
                return False
        return True

    return _same_on_synthetic_cases("the candidates", same)


def _same_on_synthetic_cases(what: str, same: Callable[[int], bool]) -> bool:
    """Whether ``same(seed)`` holds for each of the :data:`SYNTHETIC_CHECKS` seeds: the native code gives numpy's
    values for ``what`` on that seed's synthetic case (a log line where it does not, or fails)."""
    try:
        for seed in range(SYNTHETIC_CHECKS):
            if not same(seed):
                logger.warning("the ranking stage's native code differs from numpy on a synthetic case (seed %d); "
                               "numpy computes %s", seed, what)
                return False
    except (MemoryError, ValueError) as exc:
        logger.warning("the ranking stage's native code failed its check (%s); numpy computes %s", exc, what)
        return False
    return True


def text_kernel() -> Callable[..., None] | None:
    """The native computation of the text features from 8-bit codes (:func:`modeling.native.text_features`), once
    it gave the same values as numpy (:func:`_code_similarities`, :func:`_write_text_features`), bit for bit, on
    :data:`SYNTHETIC_CHECKS` synthetic batches (checked once per process); None when native code is off or
    unavailable, or differed (numpy then computes them)."""
    function = native.text_function()
    if function is None or not _checked_once("text features", function, _check_text_kernel):
        return None
    return lambda **arguments: native.text_features(function, **arguments)


def synthetic_text_batch(seed: int, *, dims: int = 24) -> dict[str, Any]:
    """A batch of 1 to 6 shoppers' text-feature inputs over 40 products of 8-bit codes, as :func:`_text_features`
    gets them: right-aligned histories of 0 to 12 products with repeats, shoppers without candidates, candidates
    that may be history products, products whose codes cancel (a history's mean of 0) or are equal (ties for the
    nearest product), and a feature table of zeros (``features``, 5 columns)."""
    rng = np.random.default_rng(seed)
    n, width = 40, 12
    codes = rng.integers(-CODE_LEVELS, CODE_LEVELS + 1, size=(n, dims)).astype(np.int8)
    codes[1] = -codes[0]  # products 0 and 1 cancel: a history of both has a mean of 0
    codes[2] = codes[3]  # equal rows: ties for the nearest product
    scales = rng.uniform(0.001, 0.02, size=n).astype(np.float32)
    scales[1] = scales[0]
    m = int(rng.integers(1, 7))
    counts = rng.integers(0, width + 1, size=m).astype(np.int64)
    items = rng.integers(0, n, size=(m, width)).astype(np.int64)
    items[np.arange(width)[None, :] < (width - counts)[:, None]] = -1
    if m > 1:
        counts[0] = 2
        items[0, -2:] = (0, 1)
    sizes = rng.integers(0, 30, size=m).astype(np.int64)
    return {"content": QuantizedRows(codes, scales), "items": items,
            "stamps": np.sort(rng.integers(0, 10**8, size=(m, width)), axis=1), "counts": counts,
            "cand": rng.integers(0, n, size=int(sizes.sum())).astype(np.int64),
            "starts": (np.cumsum(sizes) - sizes).astype(np.int64), "sizes": sizes,
            "features": np.zeros((int(sizes.sum()), 5), dtype=np.float32)}


def _check_text_kernel(function: Any) -> bool:
    """Whether ``function`` gives numpy's text features (:func:`numpy_text_features`) on the synthetic batches (a log
    line if not)."""
    targets = (1, 3, 0)

    def same(seed: int) -> bool:
        batch = synthetic_text_batch(seed)
        content, expected = batch.pop("content"), batch.pop("features")
        got = expected.copy()
        numpy_text_features(content, **batch, feats=expected, targets=targets)
        native.text_features(function, codes=content.codes, scales=content.scales, features=got, columns=targets,
                             **batch)
        return np.array_equal(got, expected, equal_nan=True)

    return _same_on_synthetic_cases("the text features", same)


def _popular_keys(order: np.ndarray, count: int, excluded_counts: np.ndarray, n: int,
                  excluded: np.ndarray) -> np.ndarray:
    """Keys (``row * n + item``) of the first ``count`` items of ``order`` each shopper has not excluded: row r
    reads ``count + excluded_counts[r]`` items of the order at most. Returns (e,) int64."""
    reads = np.minimum(count + excluded_counts, len(order))
    firsts = np.cumsum(reads) - reads
    rows = np.repeat(np.arange(len(reads), dtype=np.int64), reads)
    keys = rows * n + order[np.arange(int(reads.sum()), dtype=np.int64) - np.repeat(firsts, reads)]
    kept = ~members(keys, excluded)
    keys, rows = keys[kept], rows[kept]
    return keys[np.arange(len(rows)) - np.searchsorted(rows, rows) < count]


def _fill_short(positions: np.ndarray, scores: np.ndarray, tables: ItemTables, exclude: Sequence[np.ndarray],
                allowed: np.ndarray | None) -> None:
    """Complete, in place, the rows of ``positions`` and ``scores`` (m, k) that hold fewer than k items (a narrow
    filter or a long exclusion left fewer candidates) with the most popular allowed items neither excluded nor
    listed, after the ranked ones: the candidates do not grow with k (a longer list's head would then be
    ranked among other candidates), so a short list is completed from outside them. They take the score of
    the row's last ranked item (their popularity where the row has none)."""
    short = np.flatnonzero((positions < 0).any(axis=1))
    if len(short) == 0:
        return
    k = positions.shape[1]
    counts = (positions[short] >= 0).sum(axis=1)
    taken = [np.concatenate([np.asarray(exclude[row], dtype=np.int64), positions[row, :count]])
             for row, count in zip(short.tolist(), counts.tolist(), strict=True)]
    extra, popularity = popular_lists(tables, taken, k, allowed)
    for at, (row, count) in enumerate(zip(short.tolist(), counts.tolist(), strict=True)):
        added = extra[at, :k - count]
        added = added[added >= 0]
        positions[row, count:count + len(added)] = added
        scores[row, count:count + len(added)] = scores[row, count - 1] if count else popularity[at, :len(added)]


def popular_lists(tables: ItemTables, exclude: Sequence[np.ndarray], k: int,
                  allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The k most popular allowed items for each of m shoppers, each shopper's ``exclude`` left out: ``(positions
    (m, k) int64, popularity scores (m, k) float32)``, -1 / -inf pads; equal popularity in position order.

    Read from the popularity order sorted once per table, as far as each shopper needs it: ranking a
    (m, n) copy of the popularity row cost 12 ms and 40 MB for 100 shoppers at 100,000 products, and its
    partition left equal scores in an order that depended on k (zero-popularity products, e.g. added since
    training: ``k=5`` was not always the head of ``k=10``)."""
    m, n = len(exclude), len(tables.popularity)
    lengths = np.fromiter((len(e) for e in exclude), dtype=np.int64, count=m)
    order = _popular_order(tables, allowed, k + int(lengths.max(initial=0)))
    keys = _popular_keys(np.asarray(order, dtype=np.int64), k, lengths, n, excluded_keys(exclude, n))
    rows, items = keys // n, keys % n
    places = np.arange(len(keys), dtype=np.int64) - np.searchsorted(rows, rows)  # each row's keys in order
    positions = np.full((m, k), -1, dtype=np.int64)
    scores = np.full((m, k), -np.inf, dtype=np.float32)
    positions[rows, places] = items
    scores[rows, places] = tables.popularity[items]
    return positions, scores


TEXT_FEATURES: tuple[str, ...] = ("text_history", "text_last", "nearest_age_days")
ATTRIBUTE_FEATURES: tuple[str, ...] = ("category_match", "category_recent", "brand_match", "price_ratio")


def _text_features(feats: np.ndarray, column: dict[str, int], tables: ItemTables, items: np.ndarray,
                   stamps: np.ndarray, counts: np.ndarray, rows: np.ndarray, cand: np.ndarray, starts: np.ndarray,
                   sizes: np.ndarray) -> None:
    """Text cosine to the history's mean and to its last product, and the nearest product's age (NaN without a
    history), from each shopper's :data:`TEXT_HISTORY` most recent products (``items``, ``stamps`` (m, T), the
    last ``counts`` (m,) of each row present).

    A candidate's cosine to each history product is computed once, and the cosine to the history's mean from their
    sum: c . mean / |mean| = (sum of c . h_i) / (count |mean|), summed in float64 in history order. With a bundle's
    8-bit codes (:class:`~modeling.rows.QuantizedRows`) each cosine is the codes' integer dot product times both
    rows' scales (:func:`_code_similarities`), and the mean's norm comes from the history's integer dot products
    (:func:`_code_mean_norm`): exact whatever the order of the additions, so the stage's native code
    (:func:`text_kernel`) gives numpy's values bit for bit, for the whole batch in one call. Other rows (float
    vectors; products added after publishing) are multiplied by BLAS. Either way each shopper's values are the same
    whether it is answered alone or in a batch.
    """
    targets = (column["text_history"], column["text_last"], column["nearest_age_days"])
    content = tables.content
    kernel = text_kernel() if isinstance(content, QuantizedRows) else None
    if kernel is not None:
        kernel(codes=content.codes, scales=content.scales, items=items, stamps=stamps, counts=counts, cand=cand,
               starts=starts, sizes=sizes, features=feats, columns=targets)
        return
    numpy_text_features(content, items, stamps, counts, cand, starts, sizes, feats, targets)


def numpy_text_features(content: Any, items: np.ndarray, stamps: np.ndarray, counts: np.ndarray, cand: np.ndarray,
                        starts: np.ndarray, sizes: np.ndarray, feats: np.ndarray,
                        targets: tuple[int, int, int]) -> None:
    """:func:`_text_features` by numpy, one shopper at a time: the native code's values for 8-bit codes (see
    ``text_features`` in stage_kernel.c), ``content`` being the (n, t) text rows and ``targets`` the columns of
    ``feats`` for text_history, text_last and nearest_age_days."""
    width = items.shape[1]
    codes = isinstance(content, QuantizedRows)
    for row in np.flatnonzero(sizes > 0).tolist():
        part = slice(int(starts[row]), int(starts[row] + sizes[row]))
        count = int(counts[row])
        if count == 0:
            feats[part, targets[2]] = np.nan
            continue
        history, times = items[row, width - count:], stamps[row, width - count:]
        if codes:
            similarity = _code_similarities(content, cand[part], history)
            norm = _code_mean_norm(content, history)
        else:  # (C, h) float32; the history rows transposed into a contiguous copy, which BLAS multiplies faster
            rows = as_float32(take_rows(content, history))
            similarity = as_float32(take_rows(content, cand[part])) @ np.ascontiguousarray(rows.T)
            norm = float(np.linalg.norm(rows.astype(np.float64).mean(axis=0)))
        first = np.zeros(count, dtype=bool)
        first[np.unique(history, return_index=True)[1]] = True  # a product met twice: its first place
        _write_text_features(feats, targets, part, similarity, first, times, norm)


def _code_mean_norm(content: QuantizedRows, history: np.ndarray) -> float:
    """The norm of the mean of the 8-bit-coded rows at ``history`` (h,): the square root of the sum, in order, of
    (scale_i * scale_j) * (the integer dot product of rows i and j) over i, then j, divided by h (the native code's
    value)."""
    rows = take_rows(content.codes, history).astype(np.float64)
    gram = rows @ rows.T  # integers below 2 ** 53: exact in any order
    scale = content.scales[history].astype(np.float64)
    total = float(np.cumsum(((scale[:, None] * scale[None, :]) * gram).ravel())[-1])
    return float(np.sqrt(max(total, 0.0))) / len(history)


def _code_similarities(content: QuantizedRows, candidates: np.ndarray, history: np.ndarray) -> np.ndarray:
    """(C, h) float32 cosines of the 8-bit-coded rows at ``candidates`` (C,) with those at ``history`` (h,): each
    pair's integer dot product of codes, times the candidate's scale, times the history product's scale (the
    native code's values: see ``text_features`` in stage_kernel.c)."""
    left = take_rows(content.codes, candidates)
    right = take_rows(content.codes, history)
    # Products of codes are integers up to 127 * 127 and so are their sums: as long as every partial sum stays below
    # 2 ** 24, float32 holds each exactly and the matrix product is exact in any order (else float64, below 2 ** 53).
    exact = np.float32 if left.shape[1] * CODE_LEVELS**2 < 2**24 else np.float64
    dots = (left.astype(exact) @ np.ascontiguousarray(right.astype(exact).T)).astype(np.float32)
    return dots * content.scales[candidates].astype(np.float32)[:, None] * content.scales[history].astype(np.float32)


def _write_text_features(feats: np.ndarray, targets: tuple[int, int, int], part: slice, similarity: np.ndarray,
                         first: np.ndarray, times: np.ndarray, norm: float) -> None:
    """One shopper's text features at rows ``part`` of ``feats`` from its candidates' (C, h) float32 cosines to its
    h history products (oldest first), which of them are a product's first place, their times and the norm of the
    history's mean: in the native code's arithmetic (the float64 sum in history order, the earliest of equal
    nearest products)."""
    text_history, text_last, age = targets
    feats[part, text_last] = similarity[:, -1]
    if norm > 0:
        summed = np.cumsum(similarity.astype(np.float64), axis=1)[:, -1]  # cumsum adds in order (sum pairs them)
        feats[part, text_history] = (summed / (similarity.shape[1] * norm)).astype(np.float32)
    else:
        feats[part, text_history] = 0.0
    columns = np.flatnonzero(first)
    nearest = columns[similarity[:, columns].argmax(axis=1)]
    feats[part, age] = (times[-1] - times[nearest]) / 86_400.0


def _attribute_features(feats: np.ndarray, column: dict[str, int], tables: ItemTables, recent: np.ndarray,
                        recent_stamps: np.ndarray, rows: np.ndarray, cand: np.ndarray, config: StageConfig) -> None:
    """Category, brand and price matches with each shopper's :data:`RECENT_HISTORY` most recent products
    (``recent``, ``recent_stamps`` (m, 10), -1 pads), the category's weighed by recency (price ratio NaN without a
    known price, as the median is)."""
    present = recent >= 0
    count = np.maximum(present.sum(axis=1), 1)[rows]
    safe = np.maximum(recent, 0)
    cats = np.where(present, tables.category[safe], -1)[rows]  # (e, 10), -1: none or unknown
    brands = np.where(present, tables.brand[safe], -1)[rows]
    same = (tables.category[cand][:, None] == cats) & (cats >= 0)
    feats[:, column["category_match"]] = same.sum(axis=1) / count
    decay = _recent_decay(recent, recent_stamps, config)  # (m, 10)
    total = decay.sum(axis=1)
    feats[:, column["category_recent"]] = (same * decay[rows]).sum(axis=1) / np.where(total > 0, total, 1.0)[rows]
    feats[:, column["brand_match"]] = ((tables.brand[cand][:, None] == brands) & (brands >= 0)).sum(axis=1) / count
    prices = np.where(present, tables.price[safe], np.nan).astype(np.float32)
    prices = np.where(np.isfinite(prices) & (prices > 0), prices, np.nan)
    median = _row_medians(prices)
    with np.errstate(divide="ignore", invalid="ignore"):
        feats[:, column["price_ratio"]] = np.log(tables.price[cand] / median[rows])


def _recent_decay(recent: np.ndarray, recent_stamps: np.ndarray, config: StageConfig) -> np.ndarray:
    """(m, R) float32: each recent product's weight for the category's recency-weighted match, halved every
    ``recent_half_life_days`` before the shopper's latest product (0 on pads)."""
    half_life = max(config.recent_half_life_days, 1e-9) * 86_400.0
    return np.where(recent >= 0, np.power(0.5, (recent_stamps[:, -1:] - recent_stamps) / half_life), 0.0
                    ).astype(np.float32)


def _row_medians(values: np.ndarray) -> np.ndarray:
    """(m,) median of each row's non-NaN values of (m, w) float32 ``values`` (NaN for a row without any).

    ``np.nanmedian`` gives the same, but on rows shorter than 600 it works through masked arrays: 0.28 ms
    for one shopper's 10 recent prices against 0.035 ms here (measured side by side on a busy 2-core
    machine), out of a ranking stage budget of 2 ms."""
    ordered = np.sort(values, axis=1)  # NaN sorts last: a row without any value reads NaN at both places
    count = (~np.isnan(ordered)).sum(axis=1)
    rows = np.arange(len(ordered))
    return (ordered[rows, np.maximum(count - 1, 0) // 2] + ordered[rows, count // 2]) / np.float32(2)


def batched_candidate_features(query: np.ndarray, item_vectors: np.ndarray, index: ItemIndex, sources: Sources,
                               tables: ItemTables, histories: HistoryBatch, exclude: Sequence[np.ndarray],
                               config: StageConfig, *, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """:func:`candidate_features` for many shoppers, ``chunk`` at a time (shapes as there, no filter)."""
    parts = []
    order = _popular_order(tables, None)
    for start in range(0, len(histories), chunk):
        part = slice(start, start + chunk)
        parts.append(candidate_features(query[part], item_vectors, index, sources, tables,
                                        HistoryBatch(histories.items[part], histories.timestamps[part]),
                                        list(exclude[part]), None, config, order))
    return stack_lists(parts)


def stack_lists(parts: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Candidate lists (m_i, C_i) and their features (m_i, C_i, F), one after another, padded to the widest
    list (-1 candidates, 0 features). Returns (sum m_i, max C_i) and (sum m_i, max C_i, F)."""
    width = max((c.shape[1] for c, _ in parts), default=0)
    candidates = np.concatenate([np.pad(c, ((0, 0), (0, width - c.shape[1])), constant_values=-1)
                                 for c, _ in parts]) if parts else np.zeros((0, 0), dtype=np.int64)
    features = np.concatenate([np.pad(f, ((0, 0), (0, width - f.shape[1]), (0, 0))) for _, f in parts]
                              ) if parts else np.zeros((0, 0, len(FEATURES)), dtype=np.float32)
    return candidates, features


@dataclass
class Ranker:
    """Orders candidates: a LightGBM booster over :data:`FEATURES` (``kind="lightgbm"``), one feature
    (``"feature"``), or a weighted sum of :data:`BLEND_PARTS` each scaled to [0, 1] within the shopper's
    candidates (``"blend"``, popularity breaking ties).

    A booster with ``prior_scale`` > 0 was boosted from ``prior_scale`` times the blend of ``weights``: its
    score is that plus the trees' sum."""

    kind: str
    feature: str = "two_tower"
    booster: Any = None
    rounds: int = 0
    weights: tuple[float, ...] = ()
    prior_scale: float = 0.0
    compiled: CompiledBooster | None = None
    """The booster compiled to native code (:class:`modeling.compiled_ranker.CompiledBooster`): the same scores,
    faster; None: the booster scores."""

    def blend(self, candidates: np.ndarray, features: np.ndarray) -> np.ndarray:
        """(m, C) blended scores of (m, C, F) features (-inf on pads).

        The two-tower score is scaled to [0, 1] within the shopper's candidates (min to max); the sparse
        scores (item-item, transitions: 0 where there is no evidence) are divided by their largest
        absolute value, as the transitions+EASE baseline scales its parts."""
        valid = candidates >= 0
        total = 1e-3 * features[:, :, FEATURES.index("popularity_rank")]
        for weight, name in zip(self.weights, BLEND_PARTS, strict=True):
            if weight == 0:
                continue
            values = np.where(valid, features[:, :, FEATURES.index(name)], 0.0)
            if name in DENSE_PARTS:
                low = np.where(valid, values, np.inf).min(axis=1, keepdims=True)
                high = np.where(valid, values, -np.inf).max(axis=1, keepdims=True)
                span = np.where(np.isfinite(high - low) & (high > low), high - low, 1.0)
                values = np.where(np.isfinite(low), (values - low) / span, 0.0)
            else:
                scale = np.abs(values).max(axis=1, keepdims=True)
                values = values / np.where(scale > 0, scale, 1.0)
            total = total + weight * values
        return np.where(valid, total, -np.inf).astype(np.float32)

    def columns(self) -> frozenset[str] | None:
        """The features :meth:`order` reads (what :func:`candidate_features` must compute); None: every one."""
        if self.prior_scale > 0:  # boosted from a blend: the trees read every feature
            return None
        if self.kind == "feature":
            return frozenset((self.feature, "popularity_rank"))
        if self.kind == "blend":
            return frozenset([name for weight, name in zip(self.weights, BLEND_PARTS, strict=True) if weight != 0]
                             + ["popularity_rank"])
        return None

    def score(self, features: np.ndarray) -> np.ndarray:
        """(r,) float32 scores of (r, len(FEATURES)) feature rows (higher: better)."""
        if self.kind == "feature":  # popularity breaks ties (a sparse score is 0 for most candidates)
            values = features[:, FEATURES.index(self.feature)].astype(np.float64)
            return (values + 1e-6 * features[:, FEATURES.index("popularity_rank")]).astype(np.float32)
        if len(features) == 0:
            return np.zeros(0, dtype=np.float32)
        if self.compiled is not None:
            try:
                return np.asarray(self.compiled.predict(features), dtype=np.float32)
            except Exception:  # noqa: BLE001  (e.g. the library's file removed since load): LightGBM from now on
                logger.exception("the compiled ranker failed; LightGBM scores from now on")
                self.compiled = None
        return np.asarray(self.booster.predict(features, num_threads=1), dtype=np.float32)

    def order(self, candidates: np.ndarray, features: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of each row: ``(positions (m, k) int64, scores (m, k) float32)``, -1 / -inf pads."""
        m, width = candidates.shape
        if width == 0:  # nothing may be recommended (a filter that allows nothing new)
            return np.full((m, k), -1, dtype=np.int64), np.full((m, k), -np.inf, dtype=np.float32)
        if self.kind == "blend":
            scores = self.blend(candidates, features)
        else:  # the pads of shorter rows are not scored (a learned ranker's cost grows with the rows scored)
            valid = candidates >= 0
            scores = np.full((m, width), -np.inf, dtype=np.float32)
            scores[valid] = self.score(features[valid])
            if self.prior_scale > 0:
                scores[valid] += np.float32(self.prior_scale) * self.blend(candidates, features)[valid]
        return order_candidates(candidates, scores, k)


def order_candidates(candidates: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k best-scored of each row's candidates: ``(positions (m, k) int64, scores (m, k) float32)``.

    Equal scores keep their candidates' order in the row (increasing product position), at the cut too
    (:func:`modeling.ranking.stable_top_rows`): a shopper's list is the same whether the shopper is answered
    alone or in a batch, whose rows are padded to the widest (a partition's order of tied scores depends on the
    row's width; LightGBM gives tied scores to candidates whose features fall in the same leaves, and 7% of the
    serving benchmark's shoppers got tied products in another order alone than in a batch of 100).

    Args:
        candidates: (m, C) item positions, -1 pads; scores: (m, C), higher first (pads and NaN never chosen).
    """
    scores = np.where((candidates >= 0) & ~np.isnan(scores), scores, -np.inf).astype(np.float32)
    columns, values = stable_top_rows(scores, k)
    positions = np.where(columns >= 0, np.take_along_axis(candidates, np.maximum(columns, 0), axis=1), -1)
    return positions.astype(np.int64), values


RETRIEVAL_ORDER = Ranker("feature", "two_tower")
"""The order of shoppers whose history gives the ranker nothing to go on (see :meth:`RankingStage.has_evidence`)."""

LIGHTGBM_PARAMS: dict[str, Any] = {
    "objective": "lambdarank", "num_leaves": 15, "learning_rate": 0.05, "min_data_in_leaf": 20,
    "feature_fraction": 0.8, "bagging_fraction": 0.8, "bagging_freq": 1, "lambda_l2": 1.0,
    "lambdarank_truncation_level": 20, "verbosity": -1, "num_threads": 1, "deterministic": True,
    "force_row_wise": True,
}


def _ndcg_at_10(positions: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(m,) NDCG@10 of one held-out item per row."""
    top = positions[:, :10]
    hit = top == targets[:, None]
    ranks = np.argmax(hit, axis=1)
    return np.where(hit.any(axis=1), 1.0 / np.log2(ranks + 2.0), 0.0)


def lightgbm_module() -> Any:
    """The ``lightgbm`` module, imported (on first use) without its scikit-learn, pandas and pyarrow interfaces.

    Importing lightgbm imports scikit-learn, pandas and pyarrow whenever they are installed (for the
    estimator classes and data frame inputs, which this project never uses: it trains with
    ``lightgbm.train`` on numpy arrays and predicts with ``Booster``). scikit-learn's import was most of a
    web worker's start (2.1-2.7 s against 0.4 s without it, measured on the 2-core machine); pandas and
    pyarrow cost a worker about 100 MB of resident memory, and nothing else in a web worker imports them.
    Each of them not yet imported is hidden while lightgbm imports (its import then fails, which lightgbm
    handles) and visible again right after, for any other library that wants it. Only the first call
    hides them, for the length of that import: a web worker makes it while loading its model at start,
    before any request thread runs.
    """
    loaded = _IMPORTED.get("lightgbm")
    if loaded is not None:
        return loaded
    with _IMPORT_LOCK:  # sys.modules holds a module from the start of its import: other threads wait for its end
        loaded = sys.modules.get("lightgbm")
        if loaded is None:
            with hidden(_HIDDEN_FROM_LIGHTGBM):
                import lightgbm as loaded
        _IMPORTED["lightgbm"] = loaded
    return loaded


def _read_booster(text: str) -> Any:
    """A LightGBM booster from its model text."""
    return lightgbm_module().Booster(model_str=text)


_HIDDEN_FROM_LIGHTGBM = ("sklearn", "pandas", "pyarrow")
_IMPORT_LOCK = threading.Lock()
_IMPORTED: dict[str, Any] = {}


def _train_booster(candidates: np.ndarray, features: np.ndarray, targets: np.ndarray, rounds: int,
                   seed: int, init: np.ndarray | None = None, names: Sequence[str] = FEATURES,
                   params: Mapping[str, Any] | None = None) -> Any:
    """LambdaMART over the lists that hold their target; ``init`` (m, C): the scores boosting starts from
    (none: 0); ``names``: the features' names (benchmarks try columns beyond :data:`FEATURES`); ``params``:
    LightGBM settings that replace :data:`LIGHTGBM_PARAMS`' for this booster (benchmarks try others; None: the
    stage's)."""
    lightgbm = lightgbm_module()
    labels = (candidates == targets[:, None]) & (candidates >= 0)
    useful = labels.any(axis=1)
    cand, feats, labs = candidates[useful], features[useful], labels[useful]
    lengths = (cand >= 0).sum(axis=1)
    rows = np.concatenate([f[:n] for f, n in zip(feats, lengths, strict=True)])
    y = np.concatenate([lab[:n] for lab, n in zip(labs, lengths, strict=True)]).astype(np.float32)
    start = None if init is None else np.concatenate([s[:n] for s, n in zip(init[useful], lengths, strict=True)])
    data = lightgbm.Dataset(rows, y, group=lengths, init_score=start, feature_name=list(names),
                            free_raw_data=True)
    return lightgbm.train({**LIGHTGBM_PARAMS, **(params or {}), "seed": seed}, data, num_boost_round=rounds)


@dataclass
class EarlierLists:
    """Candidate lists held out one or more steps before the validation items: LambdaMART learns from them too.

    Each row is a validation shopper's list at an earlier position of their history (the item they
    chose there held out, with every source fitted without it): candidates (e, C) positions, -1 pads;
    features (e, C, len(FEATURES)); targets (e,) the held-out items; owner (e,) the row of the
    validation lists whose shopper it is (it joins that shopper's cross-validation fold).
    """

    candidates: np.ndarray
    features: np.ndarray
    targets: np.ndarray
    owner: np.ndarray

    def __len__(self) -> int:
        return len(self.targets)


def _joined(candidates: np.ndarray, features: np.ndarray, targets: np.ndarray, earlier: EarlierLists | None,
            keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The lists followed by the earlier lists' rows ``keep`` (all when None), padded to one width."""
    if earlier is None or not len(earlier):
        return candidates, features, targets
    keep = np.ones(len(earlier), dtype=bool) if keep is None else keep
    joined = stack_lists([(candidates, features), (earlier.candidates[keep], earlier.features[keep])])
    return *joined, np.concatenate([targets, earlier.targets[keep]])


def fit_ranker(candidates: np.ndarray, features: np.ndarray, targets: np.ndarray, *, config: StageConfig,
               selection: np.ndarray | None = None, earlier: EarlierLists | None = None,
               say: Callable[[str], None] = lambda message: None) -> tuple[Ranker, dict[str, Any]]:
    """Choose and fit the ranker on held-out positions, by cross-validation over shoppers.

    Every shopper counts in the validation NDCG@10, those whose item is not among their candidates as 0,
    so a source that finds more of them wins too. Trials: each of :data:`SINGLE_FEATURES` on its own,
    a linear blend of :data:`BLEND_PARTS` and one of transitions and item-item only (weights chosen on
    the other folds), LambdaMART after each of :data:`ROUNDS` boosting rounds, and LambdaMART boosted from
    :data:`PRIOR_SCALE` times the better of the two blends (``lightgbm+prior:R``, the blend's weights chosen
    on the other folds); with ``earlier`` lists, both LambdaMART trials again learning from them too
    (``lightgbm+earlier:R``, ``lightgbm+prior+earlier:R``).

    The best trial whose paired gain over the reference, the best of :data:`REFERENCE_TRIALS` (the baselines' own
    rankings, compared on every shopper: they do not use the two-tower), exceeds :data:`CHOICE_STANDARD_ERRORS`
    standard errors on the selection shoppers is chosen. Where none does, a small or noisy validation set serves
    what the simple baselines would: :data:`GENERAL_REFERENCE`, unless item-item or the transitions alone beats
    it by as many standard errors on every shopper (the "fallback"; the reference keeps its role as the bar).

    Args:
        candidates: (m, C) positions, -1 pads.
        features: (m, C, F).
        targets: (m,) the held-out item of each shopper.
        selection: (m,) bool, the shoppers whose NDCG@10 chooses among the trials and the blend's weights
            (all when None); LambdaMART trains on every shopper of the other folds.
        earlier: more lists LambdaMART learns from, never measured on (those of the other folds' shoppers
            while a fold is measured; all of them for the ranker returned).

    Returns:
        ``(ranker fitted on all m shoppers, report)``; the report has every trial's mean NDCG@10 on the
        selection shoppers ("cross_validation"), the reference trials' means on every shopper
        ("reference_trials"), the reference, the best trial and its gain over the reference, the choice,
        the feature importances (gain) and the seconds spent.
    """
    started = time.perf_counter()
    m = len(targets)
    select = np.ones(m, dtype=bool) if selection is None else np.asarray(selection, dtype=bool)
    if not select.any():
        select = np.ones(m, dtype=bool)
    rng = np.random.default_rng(config.seed)
    folds = max(2, config.folds)
    fold_of = rng.permutation(m) % folds
    trials: dict[str, np.ndarray] = {}
    for name in SINGLE_FEATURES:
        ranked, _ = Ranker("feature", name).order(candidates, features, 10)
        trials[f"feature:{name}"] = _ndcg_at_10(ranked, targets)
    grids = {"blend": _blend_grid(), "transitions+item_item": _sequential_grid()}
    chosen_weights: dict[str, tuple[float, ...]] = {}
    fold_weights: dict[str, list[tuple[float, ...]]] = {}
    for trial, grid in grids.items():
        trials[trial], chosen_weights[trial], fold_weights[trial] = _cross_validated_weights(
            candidates, features, targets, grid, fold_of, folds, select)
    prior = max(grids, key=lambda name: float(np.mean(trials[name][select])) if m else 0.0)
    has_positive = _holds_target(candidates, targets)
    if has_positive.sum() >= 2 * folds:
        has_earlier = earlier is not None and len(earlier) > 0
        variants = [label for label in LIGHTGBM_TRIALS if has_earlier or "+earlier" not in label]

        def fold_trial(fold: int, label: str) -> dict[str, np.ndarray]:
            """NDCG@10 of fold ``fold``'s shoppers under trial ``label`` after each of its tree counts."""
            test = fold_of == fold
            learn = candidates[~test], features[~test], targets[~test]
            if "+earlier" in label:
                learn = _joined(*learn, earlier, fold_of[earlier.owner] != fold)
            blend = Ranker("blend", weights=fold_weights[prior][fold])
            with_prior = "+prior" in label
            start = PRIOR_SCALE * blend.blend(learn[0], learn[1]) if with_prior else None
            weights, scale = (blend.weights, PRIOR_SCALE) if with_prior else ((), 0.0)
            booster = _train_booster(*learn, max(_rounds_of(label)), config.seed, start)
            scores = {}
            for rounds in _rounds_of(label):
                ranker = Ranker("lightgbm", booster=_Truncated(booster, rounds), weights=weights, prior_scale=scale)
                ranked, _ = ranker.order(candidates[test], features[test], 10)
                scores[f"{label}:{rounds}"] = _ndcg_at_10(ranked, targets[test])
            return scores

        # Each (fold, trial) trains its own single-threaded booster (the same trees whichever thread trains it):
        # they run side by side, the most rounds first, on as many threads as the process may use cores.
        # LightGBM releases the GIL while it trains and predicts.
        tasks = sorted(((fold, label) for fold in range(folds) for label in variants),
                       key=lambda task: -max(_rounds_of(task[1])))
        with ThreadPoolExecutor(max_workers=min(len(tasks), training_threads())) as pool:
            done = {task: pool.submit(fold_trial, *task) for task in tasks}
        per_round: dict[str, np.ndarray] = {}
        for fold in range(folds):
            for label in variants:
                for name, values in done[(fold, label)].result().items():
                    per_round.setdefault(name, np.zeros(m))[fold_of == fold] = values
        trials.update(per_round)
    means = {name: float(np.mean(values[select])) if m else 0.0 for name, values in trials.items()}
    # The baselines' rankings do not use the two-tower, so every validation shopper may choose among them
    # (twice the shoppers of the selection half, where the two-tower's early stopping could not have looked).
    everyone = {name: float(np.mean(trials[name])) if m else 0.0 for name in REFERENCE_TRIALS}
    reference = max(REFERENCE_TRIALS, key=lambda name: everyone[name])  # the bar a richer trial must clear
    best = max(means, key=lambda name: (means[name], name.startswith("lightgbm")))
    gain, error = paired_gain(trials[best][select], trials[reference][select])
    choice = choose_trial({name: values[select] for name, values in trials.items()}, reference)
    fallback = choose_reference({name: trials[name] for name in REFERENCE_TRIALS})
    if choice == reference:  # no richer trial cleared the bar: the general blend, unless a single source is clearly
        choice = fallback   # better (the best reference by its mean alone may lead by chance)
    report: dict[str, Any] = {"shoppers": int(m), "selection_shoppers": int(select.sum()),
                              "with_item_in_candidates": int(has_positive.sum()),
                              **({} if earlier is None else {"earlier_lists": _earlier_summary(earlier)}),
                              "cross_validation": {name: round(v, 5) for name, v in means.items()},
                              "reference": reference, "fallback": fallback, "best": best,
                              "reference_trials": {name: round(v, 5) for name, v in everyone.items()},
                              "gain_over_reference": {"mean": round(gain, 5), "standard_error": round(error, 5)},
                              "choice": choice}
    if choice not in (best, reference, fallback):
        chosen_gain, chosen_error = paired_gain(trials[choice][select], trials[reference][select])
        report["choice_gain_over_reference"] = {"mean": round(chosen_gain, 5), "standard_error": round(chosen_error, 5)}
    if choice.startswith("lightgbm"):
        label, rounds = choice.split(":")[0], int(choice.split(":")[1])
        weights, scale = (chosen_weights[prior], PRIOR_SCALE) if "+prior" in label else ((), 0.0)
        learn = _joined(candidates, features, targets, earlier) if "+earlier" in label else (
            candidates, features, targets)
        init = scale * Ranker("blend", weights=weights).blend(learn[0], learn[1]) if scale else None
        booster = _train_booster(*learn, rounds, config.seed, init)
        ranker = Ranker("lightgbm", booster=booster, rounds=rounds, weights=weights, prior_scale=scale)
        if scale:
            report["prior"] = {"blend": prior, "scale": scale, "weights": dict(zip(BLEND_PARTS, weights, strict=True))}
        gains = booster.feature_importance(importance_type="gain")
        total = float(gains.sum()) or 1.0
        report["importance"] = {name: round(float(g) / total, 4) for name, g in zip(FEATURES, gains, strict=True)}
    elif choice in grids:
        weights = chosen_weights[choice]
        if choice == GENERAL_REFERENCE and choice == fallback:  # no two-tower in it: every shopper may choose
            weights = _weights_on_everyone(candidates, features, targets, grids[choice])
        ranker = Ranker("blend", weights=weights)
        report["weights"] = dict(zip(BLEND_PARTS, weights, strict=True))
    else:
        ranker = Ranker("feature", choice.split(":")[1])
    report["seconds"] = round(time.perf_counter() - started, 2)
    best_single = max((v for name, v in means.items() if name.startswith("feature")), default=0.0)
    how = (f"the fallback: no richer trial gained {CHOICE_STANDARD_ERRORS:g} standard errors over {reference}"
           if choice == fallback and choice != best else f"chosen by {folds}-fold cross-validation")
    # The bar led the general blend served, by less than the rule asks: say so (the line read as an error). As the
    # rule compared them (cross-validated blend weights; the blend served is weighed on every shopper), and not where
    # the weights served keep the reference's own source alone (then the blend served is the reference's ranking).
    own = dict(zip(BLEND_PARTS, ranker.weights, strict=False)).get(reference.removeprefix("feature:"))
    if choice == fallback == GENERAL_REFERENCE != reference and choice != best and own != 1.0:
        lead, lead_error = paired_gain(trials[reference], trials[fallback])
        if lead > 0:
            report["reference_over_fallback"] = {"mean": round(lead, 5), "standard_error": round(lead_error, 5)}
            how += (f", which led {fallback} by {lead:+.4f} ± {lead_error:.4f} cross-validated over all {m} validation "
                    f"shoppers: under the {CHOICE_STANDARD_ERRORS:g} standard errors a single source needs to be "
                    "served instead")
    weighed = ""
    if ranker.kind == "blend":  # the weights chosen may leave out a part the trial's name holds (all on item-item)
        weighed = " weighing " + describe_blend(dict(zip(BLEND_PARTS, ranker.weights, strict=True)))
    say(f"ranking stage: {choice}{weighed} ({how}) on {int(select.sum())} of {m} validation shoppers (NDCG@10 "
        f"{means[choice]:.4f}; best single feature {best_single:.4f}; best trial {best} {gain:+.4f} ± {error:.4f} "
        f"over {reference})")
    return ranker, report


def describe_blend(weights: dict[str, float]) -> str:
    """The scores a blend weighs, as the stage's lines name them: ``{"item_item": 0.7, "transition_last": 0.3,
    "sequence": 0.0}`` is ``"item_item x 0.7, transition_last x 0.3"`` (a part weighed 0 is left out)."""
    return ", ".join(f"{name} x {weight:g}" for name, weight in weights.items() if weight > 0)


def _rounds_of(label: str) -> tuple[int, ...]:
    """The tree counts a LambdaMART trial (one of :data:`LIGHTGBM_TRIALS`) is measured after."""
    return PRIOR_ROUNDS if "+prior" in label or "+earlier" in label else ROUNDS


def training_threads() -> int:
    """How many of the ranking stage's boosters train at once: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def choose_trial(trials: dict[str, np.ndarray], reference: str) -> str:
    """The trial of best mean whose paired gain over ``reference`` exceeds :data:`CHOICE_STANDARD_ERRORS` standard
    errors; ``reference`` when none does.

    A richer trial that leads by a noisy margin thus does not hide a simpler one that is clearly better than
    the reference. ``trials``: name to (s,) NDCG@10 of the same s shoppers; ties go to LambdaMART trials.
    """
    means = {name: float(np.mean(values)) if len(values) else 0.0 for name, values in trials.items()}
    for name in sorted(means, key=lambda name: (means[name], name.startswith("lightgbm")), reverse=True):
        if name == reference or means[name] <= means[reference]:
            break
        gain, error = paired_gain(trials[name], trials[reference])
        if gain > CHOICE_STANDARD_ERRORS * error:
            return name
    return reference


def choose_reference(trials: dict[str, np.ndarray]) -> str:
    """The reference among :data:`REFERENCE_TRIALS` (``trials``: each one's (m,) NDCG@10 on every validation
    shopper): :data:`GENERAL_REFERENCE`, unless a single source's paired gain over it exceeds
    :data:`CHOICE_STANDARD_ERRORS` standard errors (:func:`choose_trial`)."""
    return choose_trial(trials, GENERAL_REFERENCE)


def _holds_target(candidates: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """(m,) bool: whether each list of ``candidates`` (m, C), -1 pads, holds its held-out item ``targets`` (m,)."""
    return ((candidates == targets[:, None]) & (candidates >= 0)).any(axis=1)


def _earlier_summary(earlier: EarlierLists) -> dict[str, Any]:
    """How many earlier lists there were, how many hold their item, and the two-tower's NDCG@10 on them."""
    ranked, _ = Ranker("feature", "two_tower").order(earlier.candidates, earlier.features, 10)
    with_item = _holds_target(earlier.candidates, earlier.targets)
    return {"lists": len(earlier), "with_item_in_candidates": int(with_item.sum()),
            "two_tower_ndcg@10": round(float(_ndcg_at_10(ranked, earlier.targets).mean()), 5) if len(earlier) else 0.0}


def _blend_grid(step: float = BLEND_STEP) -> list[tuple[float, ...]]:
    """Every weight vector over :data:`BLEND_PARTS` on a simplex grid of ``step`` (each sums to 1)."""
    n = round(1 / step)
    parts = len(BLEND_PARTS)

    def split(total: int, slots: int) -> list[tuple[int, ...]]:
        if slots == 1:
            return [(total,)]
        return [(first, *rest) for first in range(total + 1) for rest in split(total - first, slots - 1)]

    return [tuple(count * step for count in counts) for counts in split(n, parts)]


def _sequential_grid(step: float = SEQUENTIAL_STEP) -> list[tuple[float, ...]]:
    """Weights over :data:`BLEND_PARTS` that mix item-item and the last item's transitions only."""
    n = round(1 / step)
    grid = []
    for count in range(n + 1):
        weights = dict.fromkeys(BLEND_PARTS, 0.0)
        weights["transition_last"], weights["item_item"] = count * step, 1.0 - count * step
        grid.append(tuple(weights[name] for name in BLEND_PARTS))
    return grid


def _cross_validated_weights(candidates: np.ndarray, features: np.ndarray, targets: np.ndarray,
                             grid: list[tuple[float, ...]], fold_of: np.ndarray, folds: int,
                             select: np.ndarray
                             ) -> tuple[np.ndarray, tuple[float, ...], list[tuple[float, ...]]]:
    """A blend's (m,) NDCG@10, each fold's with the weights best on the other folds' selection shoppers;
    the weights best on all selection shoppers (the ones served); and each fold's weights."""
    m = len(targets)
    if m == 0:
        return np.zeros(0), grid[0], [grid[0]] * folds
    values = np.stack([_ndcg_at_10(Ranker("blend", weights=w).order(candidates, features, 10)[0], targets)
                       for w in grid])
    cross = np.zeros(m)
    per_fold = []
    for fold in range(folds):
        test = fold_of == fold
        chooser = ~test & select
        chosen = int(np.argmax(values[:, chooser].mean(axis=1))) if chooser.any() else 0
        cross[test] = values[chosen, test]
        per_fold.append(grid[chosen])
    return cross, grid[int(np.argmax(values[:, select].mean(axis=1)))], per_fold


def _weights_on_everyone(candidates: np.ndarray, features: np.ndarray, targets: np.ndarray,
                         grid: list[tuple[float, ...]]) -> tuple[float, ...]:
    """The weights of ``grid`` whose blend has the best mean NDCG@10 over all (m,) shoppers (the first on ties).

    What the served fallback blend weighs with: like the reference trials it is compared by, it reads no two-tower
    score, so every validation shopper may choose its weights, as the transitions+EASE baseline chooses its own
    (twice the selection half: the half is what the two-tower's early stopping never looked at)."""
    values = [float(_ndcg_at_10(Ranker("blend", weights=w).order(candidates, features, 10)[0], targets).mean())
              for w in grid]
    return grid[int(np.argmax(values))]


class _Truncated:
    """A booster predicting with its first ``rounds`` trees."""

    def __init__(self, booster: Any, rounds: int) -> None:
        self.booster, self.rounds = booster, rounds

    def predict(self, features: np.ndarray, num_threads: int = 1) -> np.ndarray:
        return self.booster.predict(features, num_iteration=self.rounds, num_threads=num_threads)


RANK_CHUNK = 50
"""Shoppers whose candidates and features :meth:`RankingStage.rank` holds at a time. A request for 100 shoppers
gathered about 20 MB at its peak in one pass (chunks of 256) and about 11 MB in two of 50 (Python's tracemalloc,
on the serving benchmark's workspace): each web worker's request threads hold their peaks at the same time. The
answers do not depend on it (a shopper's list is the same alone as in any batch)."""


@dataclass
class RankingStage:
    """The second stage in a bundle: candidate sources, item tables' raw inputs and the ranker."""

    sources: Sources
    ranker: Ranker
    config: StageConfig = field(default_factory=StageConfig)
    report: dict[str, Any] = field(default_factory=dict)

    def rank(self, query: np.ndarray, item_vectors: np.ndarray, index: ItemIndex, tables: ItemTables,
             histories: HistoryBatch, exclude: Sequence[np.ndarray], k: int,
             allowed: np.ndarray | None = None, *, chunk: int = RANK_CHUNK,
             ranker: Ranker | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k for m shoppers: ``(positions (m, k) int64, scores (m, k) float32)``, -1 / -inf pads.

        ``ranker`` replaces the stage's own (e.g. :data:`RETRIEVAL_ORDER`: the two-tower's order of the same
        candidates)."""
        ranker = ranker or self.ranker
        columns = ranker.columns()
        if columns is not None:  # shoppers without evidence are ordered by the two-tower score (RETRIEVAL_ORDER)
            columns = columns | (RETRIEVAL_ORDER.columns() or frozenset(FEATURES))
        m = len(histories)
        out_pos = np.full((m, k), -1, dtype=np.int64)
        out_scores = np.full((m, k), -np.inf, dtype=np.float32)
        popular_order = _popular_order(tables, allowed, _popular_needed(self.config, exclude))
        for start in range(0, m, chunk):
            part = slice(start, min(m, start + chunk))
            batch = HistoryBatch(histories.items[part], histories.timestamps[part])
            candidates, features = candidate_features(query[part], item_vectors, index, self.sources, tables,
                                                      batch, list(exclude[part]), allowed, self.config,
                                                      popular_order, columns)
            positions, scores = ranker.order(candidates, features, k)
            blind = ~self.has_evidence(batch)
            if blind.any():  # nothing for the learned order to go on: the two-tower's own order
                positions[blind], scores[blind] = RETRIEVAL_ORDER.order(candidates[blind], features[blind], k)
            _fill_short(positions, scores, tables, exclude[part], allowed)
            out_pos[part], out_scores[part] = positions, scores
        return out_pos, out_scores

    @cached_property
    def _linked(self) -> np.ndarray:
        """(n,) bool: items with item-item neighbours or transitions (computed once, not per request: two
        passes over the matrices' row pointers cost about 2 ms at 1,000,000 products)."""
        return ((np.diff(self.sources.item_item.indptr) > 0) | (np.diff(self.sources.transitions.indptr) > 0)
                | (np.diff(self.sources.sequence.indptr) > 0))

    def has_evidence(self, histories: HistoryBatch) -> np.ndarray:
        """(m,) bool: whether a shopper's history holds a product with item-item neighbours or transitions.

        Without one (products the bundle holds without any neighbour or transition, or such products beside
        products added after training) every item-item and transition feature is 0, a case the ranker never
        saw in training: such shoppers are ordered by the two-tower score (:data:`RETRIEVAL_ORDER`) instead.
        :class:`~modeling.recommender.Recommender` answers a text alone, and a history of products added after
        training only, without this stage.
        """
        known = self._linked
        m = len(histories.items)
        if m < 4:  # a few shoppers: one by one is the quicker (6 against 15 µs for one)
            return np.asarray([bool(len(items)) and bool(known[items[(items >= 0) & (items < len(known))]].any())
                               for items in histories.items], dtype=bool)
        lengths = np.fromiter((len(items) for items in histories.items), dtype=np.int64, count=m)
        flat = np.concatenate([np.asarray(items, dtype=np.int64).reshape(-1) for items in histories.items])
        valid = (flat >= 0) & (flat < len(known))
        linked = np.zeros(len(flat), dtype=bool)
        linked[valid] = known[flat[valid]]
        # every history's products at once: a shopper has evidence where one of its products is linked
        return np.bincount(np.repeat(np.arange(m), lengths)[linked], minlength=m) > 0

    def save(self, directory: Path, attributes: ItemAttributes) -> None:
        """Write the stage and the items' category, brand and price (n,) into ``directory`` (created), with
        the category and brand codes (:class:`AttributeCodes`)."""
        directory.mkdir(parents=True, exist_ok=True)
        self.sources.save(directory)
        np.save(directory / "item_category.npy", np.asarray(attributes.category, dtype=str), allow_pickle=False)
        np.save(directory / "item_brand.npy", np.asarray(attributes.brand, dtype=str), allow_pickle=False)
        np.save(directory / "item_price.npy", np.asarray(attributes.price, dtype=np.float32), allow_pickle=False)
        AttributeCodes.of(attributes.category, attributes.brand).save(directory)
        compiled: dict[str, Any] | None = None
        if self.ranker.kind == "lightgbm":
            booster = self.ranker.booster
            booster = booster.get() if isinstance(booster, LazyBooster) else booster  # a loaded stage published again
            text = booster.model_to_string()
            (directory / "ranker.txt").write_text(text, encoding="utf-8")
            try:
                compiled = compile_booster(booster, text, directory / COMPILED_FILE)
            except CompileError as exc:
                logger.warning("%s; the ranking stage will score with LightGBM", exc)
                compiled = {"error": str(exc)}
        meta = {"features": list(FEATURES), "ranker": {"kind": self.ranker.kind, "feature": self.ranker.feature,
                                                       "rounds": self.ranker.rounds,
                                                       "weights": list(self.ranker.weights),
                                                       "prior_scale": self.ranker.prior_scale},
                "config": asdict(self.config), "sources": source_config(self.sources), "report": self.report,
                **({"compiled": compiled} if compiled else {})}
        (directory / "stage.json").write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")

    @staticmethod
    def load_attributes(directory: Path) -> ItemAttributes:
        """The items' attributes :meth:`save` wrote."""
        return ItemAttributes(mapped(directory / "item_category.npy"),
                              mapped(directory / "item_brand.npy"),
                              mapped(directory / "item_price.npy"))

    @classmethod
    def load(cls, directory: Path, *, compiled: bool = True) -> RankingStage:
        """Read what :meth:`save` wrote (the attributes: :meth:`load_attributes`); ``compiled``: score with the
        compiled ranker when there is one that scores as its booster (False: LightGBM always).

        Raises:
            IncompatibleBundleError: the stage was written by a version with other features.
            ValueError: the stage is incomplete.
        """
        meta = json.loads((directory / "stage.json").read_text(encoding="utf-8"))
        if tuple(meta.get("features", ())) != FEATURES:
            raise IncompatibleBundleError(stage_mismatch(meta))
        rules = meta["sources"].get("sequence") or {}
        sources = Sources.load(directory, meta["sources"]["item_item"], meta["sources"].get("l2"),
                               rules.get("window", 1), rules.get("history", 1), meta["sources"].get("knn_neighbours"))
        spec = meta["ranker"]
        booster = compiled_ranker = None
        if spec["kind"] == "lightgbm":
            text = (directory / "ranker.txt").read_text(encoding="utf-8")
            booster = LazyBooster(text, _read_booster)
            if compiled:
                compiled_ranker = load_compiled(directory, booster, text, published=meta.get("compiled"))
            if compiled_ranker is None:  # LightGBM scores: read it now (a damaged text fails the load, not a request)
                booster.get()
        return cls(sources, Ranker(spec["kind"], spec.get("feature", "two_tower"), booster, spec.get("rounds", 0),
                                   tuple(spec.get("weights", ())), float(spec.get("prior_scale", 0.0)),
                                   compiled_ranker),
                   StageConfig(**meta.get("config", {})), meta.get("report", {}))


def stage_mismatch(meta: dict[str, Any]) -> str:
    """Why a ranking stage whose ``stage.json`` holds ``meta`` cannot be served by this version ("" when it can):
    its ranker reads another list of features, by name and place."""
    features = tuple(meta.get("features", ()))
    if features == FEATURES:
        return ""
    added, dropped = [f for f in FEATURES if f not in features], [f for f in features if f not in FEATURES]
    detail = " and ".join(part for part in (f"this version adds {', '.join(added)}" if added else "",
                                            f"drops {', '.join(dropped)}" if dropped else "") if part)
    return (f"its ranking stage was trained by another version of the service, on other features "
            f"({detail or 'in another order'})")


def stage_choice_line(report: dict[str, Any]) -> str:
    """One line on what the ranking stage chose and why, from its selection ``report`` (:func:`fit_ranker`)."""
    if not report.get("choice"):
        return "ranking stage: no choice recorded"
    if "reference" not in report:  # fitted without validation shoppers (none has three distinct products)
        return f"ranking stage: serves {report['choice']} (no validation shopper to choose on)"
    gain = report.get("gain_over_reference") or {}
    kept = report["choice"] in (report["reference"], report.get("fallback", report["reference"]))
    why = ("no richer trial gained two standard errors over the reference" if kept
           else "its gain over the reference exceeded two standard errors")
    lead = report.get("reference_over_fallback")
    led = (f"; the reference led it by {lead['mean']:+.4f} ± {lead['standard_error']:.4f} cross-validated over all "
           "validation shoppers, under the two standard errors a single source needs to be served instead"
           ) if lead else ""
    return (f"ranking stage: serves {report['choice']} ({why}; reference {report['reference']}, best trial "
            f"{report['best']} {gain.get('mean', 0.0):+.4f} ± {gain.get('standard_error', 0.0):.4f}, on "
            f"{report.get('selection_shoppers', 0)} of {report.get('shoppers', 0)} validation shoppers{led})")


def stage_summary(stage: RankingStage) -> dict[str, Any]:
    """What the manifest records of a stage."""
    ranker = {"feature": f"feature:{stage.ranker.feature}"}.get(stage.ranker.kind, stage.ranker.kind)
    if stage.ranker.prior_scale > 0:
        ranker = f"{ranker}+prior"  # boosted from the blend of its weights
    return {"ranker": ranker,
            "weights": dict(zip(BLEND_PARTS, stage.ranker.weights, strict=True)) if stage.ranker.weights else None,
            "rounds": stage.ranker.rounds, "prior_scale": stage.ranker.prior_scale, "config": asdict(stage.config),
            "sources": source_config(stage.sources), "selection": stage.report}
