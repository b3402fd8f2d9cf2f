"""The ranking stage's batched features equal, entry for entry, the per-shopper loop they replaced.

``reference_features`` is that loop as it was served and trained on (kept here as the specification):
candidates from every source, one shopper at a time, and their features. The batched version must give
the same candidates in the same order and the same features, with filters, exclusions, empty and long
histories, products without category, brand or price, and shoppers whose last product has no transitions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
import scipy.sparse as sp

from modeling.candidates import HistoryBatch, Sources
from modeling.index import ExactIndex, ItemIndex
from modeling.reranker import (
    BLEND_PARTS,
    FEATURES,
    RECENT_HISTORY,
    SINGLE_FEATURES,
    TEXT_HISTORY,
    ItemTables,
    Ranker,
    RankingStage,
    StageConfig,
    _popular_needed,
    _popular_order,
    _row_dots,
    candidate_features,
)
from modeling.rows import QuantizedRows, quantize_rows


def _sparse_top(indices: np.ndarray, values: np.ndarray, k: int, excluded: np.ndarray,
                allowed: np.ndarray | None) -> np.ndarray:
    """Positions of the ``k`` largest positive ``values`` (a sparse row) that are neither excluded nor disallowed."""
    keep = values > 0
    if allowed is not None:
        keep &= allowed[indices]
    if len(excluded):
        keep &= ~np.isin(indices, excluded)
    indices, values = indices[keep], values[keep]
    if len(indices) > k:
        best = np.argpartition(-values, k - 1)[:k]
        indices = indices[best]
    return indices


def _sparse_lookup(indices: np.ndarray, values: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Values of a sparse row (sorted ``indices``) at ``positions`` (0 where absent). Returns float32."""
    if len(indices) == 0:
        return np.zeros(len(positions), dtype=np.float32)
    at = np.minimum(np.searchsorted(indices, positions), len(indices) - 1)
    return np.where(indices[at] == positions, values[at], 0.0).astype(np.float32)



def reference_features(query: np.ndarray, item_vectors: np.ndarray, index: ItemIndex, sources: Sources,
                       tables: ItemTables, histories: HistoryBatch, exclude: Sequence[np.ndarray],
                       allowed: np.ndarray | None, config: StageConfig,
                       popular_order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The previous implementation, one shopper at a time (shapes as candidate_features)."""
    m, n = len(histories), len(item_vectors)
    item_item = histories.propagate(sources.item_item, config.history_half_life_days)
    recent = histories.propagate(sources.item_item, config.recent_half_life_days)
    transitions = sources.transitions
    rules = sources.sequence.toarray()
    last, previous = histories.last(1), histories.last(2)
    n_popular = config.popular
    if popular_order is None:
        popular_order = _popular_order(tables, allowed, _popular_needed(config, exclude))
    tt_top, _ = index.search(query, min(config.two_tower, n), exclude, allowed)
    column = {name: position for position, name in enumerate(FEATURES)}
    rows_out: list[np.ndarray] = []
    feats_out: list[np.ndarray] = []
    query = np.asarray(query, dtype=np.float32)
    for row in range(m):
        excluded = np.asarray(exclude[row], dtype=np.int64)
        ii_idx = item_item.indices[item_item.indptr[row]:item_item.indptr[row + 1]]
        ii_val = item_item.data[item_item.indptr[row]:item_item.indptr[row + 1]]
        rc_idx = recent.indices[recent.indptr[row]:recent.indptr[row + 1]]
        rc_val = recent.data[recent.indptr[row]:recent.indptr[row + 1]]
        tr_idx = pv_idx = np.zeros(0, dtype=np.int64)
        tr_val = pv_val = np.zeros(0, dtype=np.float32)
        if last[row] >= 0:
            start, end = transitions.indptr[last[row]], transitions.indptr[last[row] + 1]
            tr_idx, tr_val = transitions.indices[start:end], transitions.data[start:end]
        if previous[row] >= 0:
            start, end = transitions.indptr[previous[row]], transitions.indptr[previous[row] + 1]
            pv_idx, pv_val = transitions.indices[start:end], transitions.data[start:end]
        weights = np.zeros(n)  # the most recent products (consecutive repeats once) weighted 1, 1/2, 1/3, ...
        distinct = [item for at, item in enumerate(histories.items[row])
                    if at + 1 == len(histories.items[row]) or histories.items[row][at + 1] != item]
        for place, item in enumerate(reversed(distinct[-sources.sequence_history:])):
            weights[item] += 1.0 / (place + 1)
        dense = weights @ rules
        sq_idx = np.flatnonzero(dense != 0)
        sq_val = dense[sq_idx].astype(np.float32)
        head = popular_order[: n_popular + len(excluded)]
        popular = head[~np.isin(head, excluded)][:n_popular] if len(excluded) else head[:n_popular]
        proposals = [tt_top[row][tt_top[row] >= 0],
                     _sparse_top(ii_idx, ii_val, config.item_item, excluded, allowed),
                     _sparse_top(rc_idx, rc_val, config.item_item_recent, excluded, allowed),
                     _sparse_top(tr_idx, tr_val, config.transitions, excluded, allowed),
                     _sparse_top(sq_idx, sq_val, config.sequence, excluded, allowed), popular]
        cand, count = np.unique(np.concatenate(proposals).astype(np.int64), return_counts=True)
        feats = np.zeros((len(cand), len(FEATURES)), dtype=np.float32)
        two_tower = np.asarray(item_vectors[cand], dtype=np.float32) @ query[row]
        feats[:, column["two_tower"]] = two_tower
        if len(cand):
            feats[:, column["two_tower_gap"]] = two_tower - two_tower.max()
        ii = _sparse_lookup(ii_idx, ii_val, cand)
        feats[:, column["item_item"]] = ii
        if len(cand) and ii.max() > 0:
            feats[:, column["item_item_share"]] = ii / ii.max()
        rc = _sparse_lookup(rc_idx, rc_val, cand)
        feats[:, column["item_item_recent"]] = rc
        if len(cand) and rc.max() > 0:
            feats[:, column["item_item_recent_share"]] = rc / rc.max()
        sq = _sparse_lookup(sq_idx, sq_val, cand)
        feats[:, column["sequence"]] = sq
        if len(cand) and sq.max() > 0:
            feats[:, column["sequence_share"]] = sq / sq.max()
        feats[:, column["transition_last"]] = _sparse_lookup(tr_idx, tr_val, cand)
        feats[:, column["transition_previous"]] = _sparse_lookup(pv_idx, pv_val, cand)
        feats[:, column["popularity_rank"]] = tables.popularity_rank[cand]
        feats[:, column["history_length"]] = np.log1p(len(histories.items[row]))
        feats[:, column["source_count"]] = count
        items = histories.items[row][-TEXT_HISTORY:]
        stamps = histories.timestamps[row][-TEXT_HISTORY:]
        if len(items) == 0:
            feats[:, column["nearest_age_days"]] = np.nan
            feats[:, column["price_ratio"]] = np.nan
        else:
            content = tables.content[cand]
            history_text = tables.content[items]
            similarity = content @ history_text.T  # (C, h)
            mean = history_text.mean(axis=0)
            norm = float(np.linalg.norm(mean))
            feats[:, column["text_history"]] = content @ (mean / norm) if norm > 0 else 0.0
            feats[:, column["text_last"]] = similarity[:, -1]
            first = np.sort(np.unique(items, return_index=True)[1])  # each product once, at its first place
            nearest = first[similarity[:, first].argmax(axis=1)]
            feats[:, column["nearest_age_days"]] = (stamps[-1] - stamps[nearest]) / 86_400.0
            cats, brands = tables.category[items[-RECENT_HISTORY:]], tables.brand[items[-RECENT_HISTORY:]]
            same = (tables.category[cand][:, None] == cats[None, :]) & (cats[None, :] >= 0)  # (C, h)
            feats[:, column["category_match"]] = same.mean(axis=1)
            recent_stamps = stamps[-RECENT_HISTORY:]
            decay = np.power(0.5, (recent_stamps[-1] - recent_stamps) / (max(config.recent_half_life_days, 1e-9)
                                                                          * 86_400.0))
            feats[:, column["category_recent"]] = same @ decay / decay.sum()
            feats[:, column["brand_match"]] = (
                (tables.brand[cand][:, None] == brands[None, :]) & (brands[None, :] >= 0)).mean(axis=1)
            prices = tables.price[items[-RECENT_HISTORY:]]
            prices = prices[np.isfinite(prices) & (prices > 0)]
            if len(prices):
                with np.errstate(divide="ignore", invalid="ignore"):
                    feats[:, column["price_ratio"]] = np.log(tables.price[cand] / np.median(prices))
            else:
                feats[:, column["price_ratio"]] = np.nan
        rows_out.append(cand)
        feats_out.append(feats)
    width = max((len(c) for c in rows_out), default=0)
    candidates = np.full((m, width), -1, dtype=np.int64)
    features = np.zeros((m, width, len(FEATURES)), dtype=np.float32)
    for row, (cand, feats) in enumerate(zip(rows_out, feats_out, strict=True)):
        candidates[row, : len(cand)] = cand
        features[row, : len(cand)] = feats
    return candidates, features


def _shop(seed: int, n: int = 300, *, quantized: bool = False) -> tuple[np.ndarray, Sources, ItemTables]:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(n, 8)).astype(np.float32)
    item_item = sp.random(n, n, density=0.05, random_state=seed, format="csr", dtype=np.float32)
    item_item.data = (item_item.data - 0.2).astype(np.float32)  # some weights negative, as EASE's are
    transitions = sp.random(n, n, density=0.02, random_state=seed + 1, format="csr", dtype=np.float32).toarray()
    transitions[np.arange(0, n, 7)] = 0.0  # products nobody moved on from
    transitions = sp.csr_matrix(transitions)
    category = np.array(["" if i % 9 == 0 else f"c{i % 6}" for i in range(n)])
    brand = np.array(["" if i % 4 == 0 else f"b{i % 5}" for i in range(n)])
    price = np.where(np.arange(n) % 8 == 0, np.nan, rng.uniform(-5, 50, n)).astype(np.float32)
    content = rng.normal(size=(n, 16)).astype(np.float32)
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    stored = quantize_rows(content) if quantized else content  # a bundle's 8-bit codes, or float32 rows
    tables = ItemTables.build(category, brand, price, stored, rng.random(n).astype(np.float32), content_unit=True)
    rules = sp.random(n, n, density=0.03, random_state=seed + 2, format="csr", dtype=np.float32)
    return vectors, Sources(item_item, transitions, "ease", 10.0, rules, 5, 3), tables


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("filtered", [False, True])
@pytest.mark.parametrize("quantized", [False, True])
def test_batched_features_equal_the_per_shopper_loop(seed: int, filtered: bool, quantized: bool) -> None:
    """Also with the text vectors as a bundle stores them (8-bit codes, whose scales the batch applies to the
    products with the history instead of the rows: the loop reads the decoded rows)."""
    rng = np.random.default_rng(100 + seed)
    vectors, sources, tables = _shop(seed, quantized=quantized)
    assert isinstance(tables.content, QuantizedRows) == quantized  # the stage reads the codes as they are
    n = len(vectors)
    sizes = [0, 1, 2, 5, 12, TEXT_HISTORY + 30, 3, 0, 40]
    items = [rng.integers(0, n, size) for size in sizes]
    stamps = [np.sort(rng.integers(0, 400 * 86_400, size)) for size in sizes]
    histories = HistoryBatch(items, stamps)
    exclude = [np.unique(h) for h in items[:-2]] + [np.zeros(0, dtype=np.int64), rng.integers(0, n, 150)]
    allowed = rng.random(n) > 0.3 if filtered else None
    query = rng.normal(size=(len(sizes), 8)).astype(np.float32)
    config = StageConfig(two_tower=20, item_item=15, transitions=6, popular=8, item_item_recent=10, sequence=7)
    index = ExactIndex(vectors)
    want_candidates, want = reference_features(query, vectors, index, sources, tables, histories, exclude,
                                               allowed, config)
    got_candidates, got = candidate_features(query, vectors, index, sources, tables, histories, exclude,
                                             allowed, config)
    np.testing.assert_array_equal(got_candidates, want_candidates)
    for column, name in enumerate(FEATURES):
        np.testing.assert_allclose(got[:, :, column], want[:, :, column], rtol=1e-5, atol=1e-5, equal_nan=True,
                                   err_msg=name)


@pytest.mark.parametrize("dim", [8, 32, 48, 64, 96, 128])
def test_two_tower_scores_per_shopper_are_the_repeated_query_einsums_bit_for_bit(dim: int) -> None:
    """The two-tower feature, one einsum per shopper against its query, gives exactly what one einsum of every
    candidate against its repeated query gave (the values the stage was trained and served on before), for runs
    of every length, empty ones and a shopper alone included."""
    rng = np.random.default_rng(dim)
    sizes = np.array([0, 1, 2, 3, 7, 8, 9, 31, 241, 0, 100])
    starts = np.cumsum(sizes) - sizes
    vectors = rng.normal(size=(int(sizes.sum()), dim)).astype(np.float32)
    query = rng.normal(size=(len(sizes), dim)).astype(np.float32)
    rows = np.repeat(np.arange(len(sizes)), sizes)
    want = np.einsum("ed,ed->e", vectors, query[rows])
    assert np.array_equal(_row_dots(vectors, query, starts, sizes), want)
    alone = _row_dots(vectors[starts[8]:starts[8] + 241], query[8:9], np.zeros(1, dtype=np.int64), sizes[8:9])
    assert np.array_equal(alone, want[starts[8]:starts[8] + 241])


@pytest.mark.parametrize("ranker", [Ranker("feature", name) for name in FEATURES]
                         + [Ranker("blend", weights=weights) for weights in
                            [(0.25, 0.5, 0.0, 0.25, 0.0), (0.0, 0.0, 0.5, 0.0, 0.5), (1.0, 0.0, 0.0, 0.0, 0.0)]],
                         ids=lambda r: f"{r.kind}:{r.feature if r.kind == 'feature' else r.weights}")
@pytest.mark.parametrize("quantized", [False, True])
def test_a_ranker_that_reads_a_few_features_ranks_as_it_would_with_all_of_them(ranker: Ranker,
                                                                               quantized: bool) -> None:
    """A single-feature or blended order computes only the columns it reads (and the two-tower score, which
    orders shoppers without evidence): the same candidates, the same values in those columns, the same top k
    (with the text vectors as float32 rows and as 8-bit codes; with a filter and without)."""
    assert set(SINGLE_FEATURES) <= set(FEATURES) and len(BLEND_PARTS) == len(ranker.weights or BLEND_PARTS)
    rng = np.random.default_rng(7)
    vectors, sources, tables = _shop(3, quantized=quantized)
    n = len(vectors)
    sizes = [0, 1, 3, 8, TEXT_HISTORY + 5]
    histories = HistoryBatch([rng.integers(0, n, size) for size in sizes],
                             [np.sort(rng.integers(0, 90 * 86_400, size)) for size in sizes])
    exclude = [np.unique(h) for h in histories.items]
    allowed = rng.random(n) > 0.2 if quantized else None
    query = rng.normal(size=(len(sizes), 8)).astype(np.float32)
    index, config = ExactIndex(vectors), StageConfig(two_tower=20, item_item=15, transitions=6, popular=8)
    columns = ranker.columns()
    assert columns is not None and "popularity_rank" in columns and len(columns) <= 6
    every = candidate_features(query, vectors, index, sources, tables, histories, exclude, allowed, config)
    some = candidate_features(query, vectors, index, sources, tables, histories, exclude, allowed, config,
                              columns=columns)
    np.testing.assert_array_equal(some[0], every[0])
    for column, name in enumerate(FEATURES):
        if name in columns:
            np.testing.assert_array_equal(some[1][:, :, column], every[1][:, :, column], err_msg=name)
    groups = (("text_history", "text_last", "nearest_age_days"),  # the costly ones, computed a group at a time
              ("category_match", "category_recent", "brand_match", "price_ratio"))
    skipped = [FEATURES.index(name) for group in groups if not columns & set(group) for name in group]
    assert not some[1][:, :, skipped].any()  # not computed
    stage = RankingStage(sources, ranker, config)
    want = ranker.order(*every, 10)
    blind = ~stage.has_evidence(histories)
    want[0][blind] = Ranker("feature", "two_tower").order(every[0][blind], every[1][blind], 10)[0]
    got, _ = stage.rank(query, vectors, index, tables, histories, exclude, 10, allowed)
    np.testing.assert_array_equal(got, want[0])
    assert Ranker("lightgbm").columns() is None  # a learned ranker reads every feature
    assert Ranker("feature", "item_item", weights=(1.0, 0.0, 0.0, 0.0, 0.0), prior_scale=16.0).columns() is None


def test_an_empty_batch_has_no_candidates() -> None:
    vectors, sources, tables = _shop(0)
    candidates, features = candidate_features(np.zeros((0, 8), dtype=np.float32), vectors, ExactIndex(vectors),
                                              sources, tables, HistoryBatch([], []), [], None, StageConfig())
    assert candidates.shape == (0, 0) and features.shape == (0, 0, len(FEATURES))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sparse_tops_keep_each_rows_best_positive_scores_ties_in_item_order(seed: int) -> None:
    """Each row's k largest positive scores, neither excluded nor disallowed; among equal scores the lower item
    positions first (scores rounded to a few values, so ties straddle the cut)."""
    from modeling.candidates import SparseRows, entry_keys
    from modeling.reranker import _sparse_tops

    rng = np.random.default_rng(seed)
    m, n, k = 7, 60, 5
    dense = np.round(rng.random((m, n)), 1).astype(np.float32) * (rng.random((m, n)) < 0.5)
    dense[0] = 0.0  # a row without any score
    dense[1, :3] = [-0.5, 0.0, 0.3]  # negative and zero scores are never proposed
    matrix = sp.csr_matrix(dense)
    matrix.eliminate_zeros()
    rows = SparseRows(matrix.indptr.astype(np.int64), matrix.indices.astype(np.int64), matrix.data)
    excluded = np.unique(rng.integers(0, m, 20) * n + rng.integers(0, n, 20))
    allowed = rng.random(n) < 0.8
    expected = []
    for row in range(m):
        scores = matrix[row].toarray()[0]
        items = [j for j in range(n) if scores[j] > 0 and row * n + j not in set(excluded) and allowed[j]]
        items.sort(key=lambda j: (-scores[j], j))
        expected += [(row, j) for j in items[:k]]
    # keys row * n + item; a catalogue too large for row, value and item to share one int64 sorts another way
    for width in (n, 2**31):
        wide = np.unique((excluded // n) * width + excluded % n)
        got = np.sort(_sparse_tops(rows, entry_keys(rows, width), k, width, wide, allowed))
        assert got.tolist() == sorted(row * width + j for row, j in expected)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_candidates_are_ordered_by_score_then_place_alone_as_in_a_padded_batch(seed: int) -> None:
    """Tied scores (a few distinct values, as a ranker's leaves give) keep their candidates' order in the row, at
    the cut too, so a row ordered alone gives what it gives padded among wider rows; pads and NaN are never
    chosen, and a row with fewer candidates than asked is padded with -1."""
    from modeling.reranker import order_candidates

    rng = np.random.default_rng(seed)
    rows = []
    for width in rng.integers(3, 40, 6):
        candidates = np.sort(rng.choice(500, width, replace=False))
        scores = rng.integers(-1, 4, width).astype(np.float32)
        scores[scores == -1] = -0.0  # equal to 0 (a tie), whatever its sign
        scores[rng.random(width) < 0.1] = np.nan
        scores[rng.random(width) < 0.1] = -np.inf
        rows.append((candidates, scores))
    widest = max(len(c) for c, _ in rows) + 5
    batch_candidates = np.full((len(rows), widest), -1, dtype=np.int64)
    batch_scores = rng.random((len(rows), widest)).astype(np.float32) * 10  # pads' scores are never read
    for row, (candidates, scores) in enumerate(rows):
        batch_candidates[row, :len(candidates)], batch_scores[row, :len(candidates)] = candidates, scores
    for k in (1, 5, 12):
        in_batch, in_batch_scores = order_candidates(batch_candidates, batch_scores, k)
        for row, (candidates, scores) in enumerate(rows):
            places = sorted((place for place in range(len(scores)) if np.isfinite(scores[place])),
                            key=lambda place: (-scores[place], place))[:k]
            expected = [int(candidates[place]) for place in places] + [-1] * (k - len(places))
            alone, alone_scores = order_candidates(candidates[None, :], scores[None, :], k)
            assert alone[0].tolist() == expected and in_batch[row].tolist() == expected
            assert np.array_equal(alone_scores[0], in_batch_scores[row])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_rows_entries_and_keys_are_the_general_cases(seed: int) -> None:
    """A single row's entries and keys (a shopper answered alone) are what the general case gives for it, empty
    rows and -1 (no row) included."""
    from modeling.candidates import SparseRows, entry_keys, row_entries

    rng = np.random.default_rng(seed)
    lengths = rng.integers(0, 6, 30)
    lengths[rng.random(30) < 0.3] = 0
    indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    for position in [-1, *range(30)]:
        take, sizes = row_entries(indptr, np.array([position]))
        padded_take, padded_sizes = row_entries(indptr, np.array([position, -1]))  # the general case
        assert take.dtype == sizes.dtype == np.int64
        assert take.tolist() == padded_take.tolist() and sizes.tolist() == padded_sizes[:1].tolist()
        indices = np.sort(rng.choice(500, int(sizes[0]), replace=False)).astype(np.int32)
        one = SparseRows(np.array([0, len(indices)], dtype=np.int64), indices, np.ones(len(indices), np.float32))
        two = SparseRows(np.array([0, len(indices), len(indices)], dtype=np.int64), indices, one.data)
        assert entry_keys(one, 500).dtype == np.int64
        assert entry_keys(one, 500).tolist() == entry_keys(two, 500).tolist()


@pytest.mark.parametrize("seed", range(6))
def test_popular_lists_are_the_stable_order_of_allowed_unexcluded_items(seed: int) -> None:
    """The popular strategy ranked a (m, n) copy of the popularity row with a partition, which left equal scores in
    an order that depended on k; now: popularity descending, equal popularity by position, whatever k."""
    from modeling.reranker import popular_lists

    rng = np.random.default_rng(seed)
    n, m = int(rng.integers(5, 400)), int(rng.integers(1, 30))
    popularity = rng.integers(0, 6, n).astype(np.float32)  # many ties, zeros included
    tables = ItemTables.build(np.full(n, ""), np.full(n, ""), np.full(n, -1.0),
                              np.eye(n, 8, dtype=np.float32) + 1e-3, popularity)
    allowed = rng.random(n) < 0.8 if seed % 2 else None
    exclude = [rng.choice(n, int(rng.integers(0, min(n, 40))), replace=False) for _ in range(m)]
    for k in (1, 5, 10, 60):
        positions, scores = popular_lists(tables, exclude, k, allowed)
        assert positions.shape == scores.shape == (m, k)
        for row in range(m):
            keep = np.ones(n, dtype=bool) if allowed is None else allowed.copy()
            keep[exclude[row]] = False
            expected = [p for p in np.argsort(-popularity, kind="stable") if keep[p]][:k]
            assert positions[row, :len(expected)].tolist() == expected
            assert (positions[row, len(expected):] == -1).all() and np.isneginf(scores[row, len(expected):]).all()
            assert scores[row, :len(expected)].tolist() == popularity[expected].tolist()
