"""Top-k retrieval over the item vectors: exact (numpy) or approximate (FAISS IVF), one interface.

Exact search is a matrix product and a partial sort; at 100,000 items and 64 dimensions it
costs about a millisecond per query, and its cost grows with the catalogue (about 35 ms at
1,000,000 on a busy 2-core machine). From a configurable catalogue size, :class:`IvfIndex`
(a FAISS inverted-file index over the same vectors, with inner product) scans only the lists of
the ``nprobe`` closest centroids. The index is built when a bundle is published, its ``nprobe``
tuned there on the shop's own shopper vectors to a stated recall@10 against exact search, and
stored in the bundle (``item_index.faiss``), which every worker maps read-only: the operating
system shares the pages, no worker builds or copies it.

Published indexes store each vector as 8-bit codes (``IndexIVFScalarQuantizer``) rather than the
vector itself (``IndexIVFFlat``): the candidates a scan finds (``k`` plus :data:`EXTRA`) are scored
again exactly from the float32 vectors the bundle holds anyway, so the answers and their scores are
exact, while a scan reads a quarter of the memory. Measured with ``benchmarks/item_index.py
--compare-flat`` (docs/performance.md): the same recall@10 at the same ``nprobe``, a quarter of the
file, and at 500,000 to 1,000,000 products a third to a half less time per query, one at a time or 100
at once; bundles published before hold IVF-Flat, which is read and searched as before.

Why IVF and not HNSW: on trained two-tower vectors (unit length, clustered by category) an IVF
index reached recall@10 0.955 at 0.9 ms per query over 1,000,000 items, where HNSW (M 32,
efConstruction 200) stayed at 0.93 with efSearch 512 at 100,000 items; IVF builds in seconds
instead of minutes, and FAISS maps its inverted lists from disk (``IO_FLAG_MMAP``).

The products' text vectors (text queries) get an index beside it (``text_index.faiss``,
:func:`write_text_index`): from :data:`PQ_MIN_ITEMS` products on, product-quantizer codes of
:data:`TEXT_PQ_BYTES` bytes per product (``IndexIVFPQ``: an eighth of the 8-bit codes' 384 bytes), below that
8-bit codes; either way the candidates it finds (:data:`PQ_EXTRA` beyond ``k`` for the product codes, whose
ranking errors are larger) are scored exactly from the 384-d text vectors the bundle already holds. Every
worker that answers text queries ends up with the whole index file resident (docs/performance.md): 8-bit
codes were 38 MB per worker at 100,000 products and 384 MB at a million. Measured on 12,543 real MiniLM
vectors (the shared sets' product and review texts) with 1,000 two-word queries and 1,000 held-out texts, at
the same ``nprobe``: recall@10 against exact search within 0.004 of the 8-bit codes', a third of the file
(``benchmarks/text_index.py``). Where a shop's text vectors defeat product codes (near-uniform noise does),
the text index keeps 8-bit codes (:data:`PQ_MAX_SCAN`).

Filters and exclusions stay exact: the approximate index fetches extra candidates, drops the
excluded and disallowed ones, and a row left with fewer than ``k`` candidates is answered by exact
search. Products added after publishing (beyond the index's ``ntotal``) are scored exactly and
merged.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from modeling.ranking import excluded_keys, members, top_k
from modeling.rows import as_float32, dot_rows, take_rows

logger = logging.getLogger(__name__)


def penalty(allowed: np.ndarray) -> np.ndarray:
    """(n_items,) float32: 0 where allowed, -inf elsewhere (added to scores: cheaper than masked assignment)."""
    return np.where(allowed, np.float32(0.0), np.float32(-np.inf)).astype(np.float32)


class ItemIndex(Protocol):
    """What the recommender needs of an index over the (n_items, d) item vectors."""

    def search(self, queries: np.ndarray, k: int, exclude: Sequence[np.ndarray],
               allowed: np.ndarray | None = None, *, excluded: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k items by dot product per query.

        Args:
            queries: (m, d) float32.
            k: items per row.
            exclude: m arrays of item positions never returned.
            allowed: optional (n_items,) bool mask of returnable items.
            excluded: :func:`~modeling.ranking.excluded_keys` of ``exclude`` over the n_items, if the caller
                already has them (an index that reads the keys then does not build them again).

        Returns:
            ``(positions (m, k) int64, scores (m, k) float32)``, best first; -1 / -inf pad rows with
            fewer returnable items.
        """
        ...


class ExactIndex:
    """Brute-force inner product over all items (numpy BLAS)."""

    def __init__(self, vectors: np.ndarray) -> None:
        self.vectors = vectors

    def search(self, queries: np.ndarray, k: int, exclude: Sequence[np.ndarray],
               allowed: np.ndarray | None = None, *, excluded: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        scores = dot_rows(queries, self.vectors)
        if allowed is not None:
            blocked = np.flatnonzero(~allowed)
            if len(blocked) * 8 < len(allowed):  # usually a few products out of stock
                scores[:, blocked] = -np.inf
            else:  # a narrow filter (a category, a price range)
                scores += penalty(allowed)
        return top_k(scores, k, exclude, copy=False)


INDEX_FILE = "item_index.faiss"
"""The approximate index over the item vectors inside a bundle folder."""

TEXT_INDEX_FILE = "text_index.faiss"
"""The approximate index over the products' text vectors (text queries) inside a bundle folder."""

ANN_MIN_ITEMS = 100_000
"""Default catalogue size from which serving searches the approximate index (``RECO_ANN_MIN_ITEMS``),
chosen from ``benchmarks/item_index.py`` and ``benchmarks/serving.py`` (docs/performance.md): at 100,000
products the exact scan was the largest single cost of a one-shopper request, while the index left 99% of
the served top 10 unchanged (the ranking stage re-orders candidates from every source)."""

TARGET_RECALL = 0.97
"""The recall@10 against exact search that publishing tunes ``nprobe`` to reach."""


NPROBE_STEPS = 8
"""How finely :func:`tune_nprobe` bisects between the last power of two that missed the target and the first
that reached it: in steps of that power's eighth (at 128 and 256, to within 16 lists)."""

EXTRA = 50
"""Candidates an approximate search fetches beyond ``k`` (and the excluded items), to survive filtering
and, with 8-bit codes, the codes' ranking errors near the top (they are scored exactly)."""

PQ_EXTRA = 200
"""As :data:`EXTRA`, for an index of product-quantizer codes, whose ranking errors near the top are larger."""

TEXT_PQ_BYTES = 48
"""Bytes per product of the text index's product-quantizer codes (48 sub-vectors of 8 of the 384 dimensions)."""

PQ_MAX_SCAN = 8
"""Product-quantizer codes are kept for the text index only when they reach :data:`TARGET_RECALL` scanning at
most this fraction (1/8) of the lists; else the index stores 8-bit codes (:func:`write_text_index`)."""

PQ_MIN_ITEMS = 10_000
"""Products from which the text index stores product-quantizer codes (below, 8-bit codes): each of its
sub-quantizers learns 256 centroids, from at least 39 products each."""


class IvfIndex:
    """Approximate inner-product search with a FAISS IVF index (IVF-Flat, 8-bit codes or product-quantizer codes).

    Args:
        vectors: (n_items, d) float32 item vectors; the first ``index.ntotal`` are in the index, the
            rest (products added after publishing) are scored exactly.
        index: a FAISS ``IndexIVFFlat`` over ``vectors[:ntotal]`` (None: built on first use, in
            this process, with :func:`build_ivf`).
        nprobe: inverted lists scanned per query (recall vs. speed).
        extra: candidates fetched beyond ``k`` plus the excluded items, to survive filtering (None:
            :data:`PQ_EXTRA` for product-quantizer codes, else :data:`EXTRA`).
        quantized: the index stores codes (:func:`build_ivf` with ``quantized=True``): the
            candidates it finds are scored again exactly from ``vectors`` and re-ordered. None: as
            ``index`` is (flat when it is built here).
    """

    def __init__(self, vectors: np.ndarray, index: Any | None = None, *, nprobe: int = 64, extra: int | None = None,
                 quantized: bool | None = None) -> None:
        import faiss

        self.vectors = vectors
        self.exact = ExactIndex(vectors)
        # nprobe goes with each search, not onto the FAISS object, which other IvfIndex may share (the same bundle
        # served with another nprobe, tuning): setting it there made the last one set win for all of them.
        self._parameters = faiss.SearchParametersIVF(nprobe=nprobe)
        self.extra = extra if extra is not None else PQ_EXTRA if is_product_quantized(index) else EXTRA
        self.quantized = is_quantized(index) if quantized is None and index is not None else bool(quantized)
        self._index = index
        self._lock = threading.Lock()
        if index is not None:
            self._check(index)

    def _check(self, index: Any) -> None:
        if index.d != self.vectors.shape[1] or index.ntotal > len(self.vectors):
            raise ValueError(f"the index holds {index.ntotal} {index.d}-d vectors, the catalogue "
                             f"{len(self.vectors)} {self.vectors.shape[1]}-d")
        codes = is_quantized(index)
        if codes != self.quantized:  # codes' scores served as exact, or exact ones scored again
            held = "product-quantizer codes" if is_product_quantized(index) else "8-bit codes"
            raise ValueError(f"the index {'holds ' + held if codes else 'holds the vectors'}, "
                             f"but was given as {'codes' if self.quantized else 'vectors'}")

    @property
    def nprobe(self) -> int:
        """Inverted lists scanned per query."""
        return int(self._parameters.nprobe)

    @property
    def built(self) -> bool:
        return self._index is not None

    def build(self) -> None:
        """Build the index now (a few seconds per 100,000 items) instead of on the first query."""
        with self._lock:
            if self._index is not None:
                return
            index = build_ivf(self.vectors, quantized=self.quantized)
            self._check(index)
            self._index = index
            logger.info("IVF index built in this process over %d items", index.ntotal)

    def search(self, queries: np.ndarray, k: int, exclude: Sequence[np.ndarray],
               allowed: np.ndarray | None = None, *, excluded: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.vectors)
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        m = len(queries)
        blocked = 0 if allowed is None else n - int(np.count_nonzero(allowed))
        longest = max((len(e) for e in exclude), default=0)
        fetch = k + longest + self.extra
        if blocked > n // 10 or fetch * 4 > n:  # a narrow filter or a tiny catalogue: exact is as fast
            return self.exact.search(queries, k, exclude, allowed)
        if self._index is None:
            self.build()
        indexed = int(self._index.ntotal)
        scores, positions = self._index.search(queries, fetch, params=self._parameters)
        if self.quantized:  # the codes' scores are approximate: the fetched candidates are scored exactly
            scores = _exact_scores(self.vectors, queries, positions)
            order = np.argsort(-scores, axis=1, kind="stable")
            rows = np.arange(m)[:, None]  # (indexing by rows and order: take_along_axis's values, in fewer steps)
            positions, scores = positions[rows, order], scores[rows, order]
        if indexed < n:  # products added after publishing: scored exactly, merged by score
            tail = dot_rows(queries, self.vectors[indexed:])
            positions = np.concatenate([positions, np.broadcast_to(np.arange(indexed, n), tail.shape)], axis=1)
            scores = np.concatenate([scores, tail], axis=1)
            order = np.argsort(-scores, axis=1, kind="stable")
            positions, scores = np.take_along_axis(positions, order, 1), np.take_along_axis(scores, order, 1)
        out_pos = np.full((m, k), -1, dtype=np.int64)
        out_scores = np.full((m, k), -np.inf, dtype=np.float32)
        # Every row's first k candidates that are neither excluded nor disallowed, for the whole batch at once
        # (a loop over the rows took 73 ms in all against 66 ms for 100 searches of 100 at 100,000 products).
        keep = positions >= 0
        if allowed is not None:
            keep &= allowed[np.maximum(positions, 0)]
        if excluded is None:
            excluded = excluded_keys(exclude, n)
        if len(excluded):
            keep &= ~members(np.arange(m, dtype=np.int64)[:, None] * n + np.maximum(positions, 0), excluded)
        place = np.cumsum(keep, axis=1) - 1  # each kept candidate's place in its row's answer
        taken = keep & (place < k)
        rows, places = np.nonzero(taken)[0], place[taken]
        out_pos[rows, places] = positions[taken]
        out_scores[rows, places] = scores[taken]
        fallback = np.flatnonzero(taken.sum(axis=1) < k).tolist()
        if fallback:
            exact_pos, exact_scores = self.exact.search(queries[fallback], k, [exclude[r] for r in fallback], allowed)
            out_pos[fallback], out_scores[fallback] = exact_pos, exact_scores
        return out_pos, out_scores


def is_quantized(index: Any) -> bool:
    """Whether a FAISS IVF index stores codes (8-bit: ``IndexIVFScalarQuantizer``; product-quantizer:
    ``IndexIVFPQ``) rather than the vectors."""
    import faiss

    return isinstance(index, faiss.IndexIVFScalarQuantizer | faiss.IndexIVFPQ)


def is_product_quantized(index: Any) -> bool:
    """Whether a FAISS IVF index stores product-quantizer codes (``IndexIVFPQ``); False for None."""
    import faiss

    return isinstance(index, faiss.IndexIVFPQ)


def build_ivf(vectors: np.ndarray, *, lists: int | None = None, seed: int = 0, quantized: bool = False,
              pq_bytes: int = 0) -> Any:
    """A FAISS IVF inner-product index over ``vectors``.

    Args:
        vectors: (n, d) float32.
        lists: number of inverted lists (default about 4 sqrt(n), at least 16).
        seed: k-means seed (the centroids are trained on at most 40 points per list).
        quantized: store each vector as d 8-bit codes (``IndexIVFScalarQuantizer``, a quarter of the
            float32 size) instead of the vector itself (``IndexIVFFlat``); what publishing writes, as
            serving already maps the float32 vectors and scores the candidates found exactly.
        pq_bytes: with ``quantized``, store ``pq_bytes`` product-quantizer codes of 8 bits per vector
            (``IndexIVFPQ``, encoding each vector's residual to its list's centroid; ``pq_bytes`` must divide
            the dimension) instead of one 8-bit code per dimension; 0: 8-bit codes.

    Returns:
        A FAISS IVF index holding every vector, position = row of ``vectors``.
    """
    import faiss

    data = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = data.shape
    lists = lists or max(16, int(4 * np.sqrt(n)))
    lists = max(1, min(lists, n))
    if quantized and pq_bytes:
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, lists, pq_bytes, 8, faiss.METRIC_INNER_PRODUCT)
    elif quantized:
        index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(dim), dim, lists, faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_INNER_PRODUCT)
    else:
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.cp.min_points_per_centroid = 1  # small catalogues: no warning, the centroids are still usable
    # The lists' centroids learn from 40 vectors per list at most; product-quantizer codes from at least 40 per
    # each of their 256 centroids as well.
    wanted = max(40 * lists, 40 * 256 if quantized and pq_bytes else 0)
    sample = data if n <= wanted else data[np.random.default_rng(seed).choice(n, wanted, replace=False)]
    index.train(sample)
    for start in range(0, n, 100_000):
        index.add(data[start:start + 100_000])
    return index


def tune_nprobe(index: Any, vectors: np.ndarray, queries: np.ndarray, *, k: int = 10,
                target: float = TARGET_RECALL, quantized: bool = False) -> tuple[int, float]:
    """The smallest ``nprobe`` whose recall@k against exact search reaches ``target``, to within a
    :data:`NPROBE_STEPS`-th: doubling from 8 finds the first power of two that reaches it, then bisection
    between it and the half below (which did not) narrows it to an eighth of that half.

    Each list scanned costs time in every query, and recall grows slowly near the target: at
    100,000 products the serving benchmark's index needed 256 lists as a power of two.

    Args:
        index: an IVF index over ``vectors``.
        vectors: (n, d) float32 item vectors.
        queries: (m, d) float32 query vectors (a sample of the shop's shopper vectors).

    Returns:
        ``(nprobe, recall)``; all lists (exact within the index) when no smaller value reaches it.
    """
    lists = int(index.nlist)
    none = [np.zeros(0, dtype=np.int64)] * len(queries)
    exact = _exact_top(vectors, queries, k)
    # Flat: the index's own top k. Codes: the top k of what serving fetches and scores exactly.
    extra = None if quantized else 0

    def recall_at(nprobe: int) -> float:
        approx, _ = IvfIndex(vectors, index, nprobe=nprobe, extra=extra, quantized=quantized).search(queries, k, none)
        return _recall(approx, exact)

    low, nprobe = 0, 8  # low: the largest value measured to miss the target
    while True:
        nprobe = min(nprobe, lists)
        recall = recall_at(nprobe)
        if recall >= target or nprobe >= lists:
            break
        low, nprobe = nprobe, nprobe * 2
    if recall < target or low == 0:
        return nprobe, recall
    step = max(1, low // NPROBE_STEPS)
    while nprobe - low > step:  # low misses the target, nprobe reaches it
        middle = low + max(step, (nprobe - low) // 2 // step * step)
        measured = recall_at(middle)
        if measured >= target:
            nprobe, recall = middle, measured
        else:
            low = middle
    return nprobe, recall


def _exact_top(vectors: np.ndarray, queries: np.ndarray, k: int, batch: int = 64) -> np.ndarray:
    """(m, k) exact top-k positions, a few queries at a time (1,000 x 1,000,000 scores would be 4 GB)."""
    none = [np.zeros(0, dtype=np.int64)] * len(queries)
    exact = ExactIndex(vectors)
    return np.concatenate([exact.search(queries[i:i + batch], k, none[i:i + batch])[0]
                           for i in range(0, len(queries), batch)]) if len(queries) else np.zeros((0, k), np.int64)


def _exact_scores(vectors: np.ndarray, queries: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """(m, c) float32 dot products of each query with its c candidates (-inf where the position is -1)."""
    rows = as_float32(take_rows(vectors, np.maximum(positions, 0).ravel())).reshape(*positions.shape, -1)
    scores = np.einsum("md,mcd->mc", queries, rows).astype(np.float32)
    scores[positions < 0] = -np.inf
    return scores


def _recall(approx: np.ndarray, exact: np.ndarray) -> float:
    k = exact.shape[1]
    return float(np.mean([len(np.intersect1d(a, e)) / k for a, e in zip(approx, exact, strict=True)]))


def write_item_index(directory: Path, item_vectors: np.ndarray, queries: np.ndarray, *,
                     target: float = TARGET_RECALL, seed: int = 0, file: str = INDEX_FILE,
                     quantized: bool = True, pq_bytes: int = 0) -> dict[str, Any]:
    """Build, tune and write the approximate index into a bundle folder being written.

    Args:
        directory: the bundle's (temporary) folder; the index goes to ``file`` there.
        item_vectors: (n_items, d) float32.
        queries: (m, d) float32 query vectors the tuning measures recall on (at most 1,000 are used).
        file: the index's file name (:data:`INDEX_FILE`, or :data:`TEXT_INDEX_FILE`).
        quantized: 8-bit codes instead of the vectors (see :func:`build_ivf`; the module's docstring says
            why they are the default).
        pq_bytes: product-quantizer codes of that many bytes instead of 8-bit codes (:func:`build_ivf`).

    Returns:
        The manifest entry: kind, file, lists, nprobe, the recall@10 measured, items, dim, seconds.
    """
    import faiss

    started = time.perf_counter()
    index = build_ivf(item_vectors, seed=seed, quantized=quantized, pq_bytes=pq_bytes)
    queries = np.asarray(queries, dtype=np.float32)
    if len(queries) > 1000:
        queries = queries[np.random.default_rng(seed).choice(len(queries), 1000, replace=False)]
    if len(queries) == 0:  # no trained shoppers: the products themselves stand in for queries
        queries = np.asarray(item_vectors[:1000], dtype=np.float32)
    nprobe, recall = tune_nprobe(index, item_vectors, queries, target=target, quantized=quantized)
    faiss.write_index(index, str(directory / file))
    kind = f"faiss_ivf_pq{pq_bytes}" if quantized and pq_bytes else "faiss_ivf_sq8" if quantized else "faiss_ivf_flat"
    entry = {"kind": kind, "file": file, "lists": int(index.nlist),
             "nprobe": nprobe, "recall_at_10": round(recall, 4), "target_recall_at_10": target,
             "queries": len(queries), "items": int(index.ntotal), "dim": int(index.d),
             "seconds": round(time.perf_counter() - started, 1)}
    logger.info("approximate index %s over %d items: %d lists, nprobe %d, recall@10 %.3f against exact search",
                file, index.ntotal, index.nlist, nprobe, recall)
    return entry


def write_text_index(directory: Path, item_content: np.ndarray, *, seed: int = 0,
                     pq_bytes: int | None = None) -> dict[str, Any]:
    """The approximate index over the products' (n_items, t) text vectors, for text queries.

    Product-quantizer codes of :data:`TEXT_PQ_BYTES` bytes per product from :data:`PQ_MIN_ITEMS` products
    on (where ``t`` is a multiple of it) when they reach the target recall scanning at most a
    :data:`PQ_MAX_SCAN`-th of the lists, else 8-bit codes, as for the product vectors; the candidates found
    are scored exactly from the text vectors the bundle already holds and serving maps. ``nprobe`` is tuned
    with the text vectors of 1,000 of the products as queries: a text query is encoded by the same model as
    the product texts.

    Args:
        pq_bytes: None: the codes chosen as above (what publishing writes); 0: 8-bit codes; more: product codes
            of that many bytes whatever recall they reach (benchmarks compare both kinds on one catalogue).
    """
    content = np.asarray(item_content, dtype=np.float32)
    queries = content[np.random.default_rng(seed + 1).choice(len(content), min(1000, len(content)), replace=False)]

    def write(codes: int) -> dict[str, Any]:
        return write_item_index(directory, content, queries, seed=seed, file=TEXT_INDEX_FILE, quantized=True,
                                pq_bytes=codes)

    if pq_bytes is not None:
        return write(pq_bytes)
    if len(content) < PQ_MIN_ITEMS or content.shape[1] % TEXT_PQ_BYTES != 0:
        return write(0)
    entry = write(TEXT_PQ_BYTES)
    if entry["recall_at_10"] >= TARGET_RECALL and entry["nprobe"] <= max(1, entry["lists"] // PQ_MAX_SCAN):
        return entry
    # Vectors without the structure of sentence vectors (near-uniform noise) defeat the sub-quantizers: the
    # shop's own text vectors decide, and 8-bit codes are kept where product codes would scan too much.
    logger.info("text index: product-quantizer codes reach recall@10 %.3f only at nprobe %d of %d lists; "
                "8-bit codes instead", entry["recall_at_10"], entry["nprobe"], entry["lists"])
    tried = {key: entry[key] for key in ("kind", "nprobe", "recall_at_10", "seconds")}
    return {**write(0), "tried": tried}


def read_item_index(path: Path) -> Any:
    """A stored index, its inverted lists memory-mapped read-only (shared by every process that maps it).

    Raises:
        ValueError: the file is missing or not a FAISS IVF index.
    """
    import faiss

    if not path.is_file():
        raise ValueError(f"{path.name} is missing")
    try:
        index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY)
    except RuntimeError as exc:
        raise ValueError(f"{path.name} is damaged ({str(exc).splitlines()[0][:200]})") from exc
    if not hasattr(index, "nprobe") or not hasattr(index, "nlist"):
        raise ValueError(f"{path.name} is not an inverted-file index")
    lists = faiss.downcast_InvertedLists(index.invlists)
    if isinstance(lists, faiss.OnDiskInvertedLists):
        # FAISS prefetches the lists a query will scan with 32 threads of its own: 16 times slower than
        # reading the mapped pages directly for one query at a time (3.2 against 0.19 ms at 50,000 products).
        lists.prefetch_nthread = 0
    return index


def make_index(vectors: np.ndarray, ann_min_items: int | None, *, stored: Any | None = None,
               nprobe: int = 64) -> ItemIndex:
    """Exact search, or IVF when the catalogue has at least ``ann_min_items`` items (None: never).

    Args:
        stored: the bundle's index (see :func:`read_item_index`: 8-bit codes, or the vectors in bundles
            published before codes; searched as it is); None: an IVF-Flat index built on first use.
        nprobe: lists scanned per query (the bundle's tuned value, or a setting).
    """
    if ann_min_items is not None and len(vectors) >= ann_min_items:
        return IvfIndex(vectors, stored, nprobe=nprobe)
    return ExactIndex(vectors)


def recall_against_exact(index: ItemIndex, vectors: np.ndarray, queries: np.ndarray, k: int) -> float:
    """Mean fraction of the exact top-k that ``index`` returns, over the (m, d) ``queries``."""
    none = [np.zeros(0, dtype=np.int64)] * len(queries)
    approx, _ = index.search(queries, k, none)
    return _recall(approx, _exact_top(vectors, queries, k))
