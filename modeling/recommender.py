"""Scoring over a loaded bundle: the one code path of the API and the evaluation.

Every shopper with a history is scored from their current history, in two stages: the query
tower runs on the history at request time (so an event changes the next list), its top items over
the whole catalogue join the item-item, transition and popular candidates of the same history, and
the bundle's ranking stage (:mod:`modeling.reranker`) orders them. Strategies, best first:

- ``two_tower``: the shopper is known to the model (the query tower uses their id embedding); a
  known shopper without any history is queried with the vector stored at training time.
- ``content``: the shopper is not in the model but has a history (or review text); the id is in
  the out-of-vocabulary bucket. A text alone is a search of the products' text vectors; a history of
  products added after training only (:meth:`Recommender.add_items`) gets the products nearest to theirs in
  the model's product space (the candidate tower's vectors, which ``similar_items`` searches too): the query
  tower knows none of them by id and the ranking stage has no neighbour or transition for them.
- ``popular``: nothing is known; items by training popularity.

Items the shopper already has are excluded in every strategy.
"""

from __future__ import annotations

import logging
from collections.abc import Container
from dataclasses import dataclass

import numpy as np

from modeling.artifacts import Bundle
from modeling.candidates import HistoryBatch, entries_at
from modeling.features import (
    HISTORY_HALF_LIFE_DAYS,
    ItemAttributes,
    pooled_vectors,
    sort_history,
    user_windows,
)
from modeling.id_index import IdIndex
from modeling.index import ExactIndex, ItemIndex, make_index
from modeling.reranker import RETRIEVAL_ORDER, ItemTables, RankingStage, popular_lists, stage_kernel
from modeling.rows import append_rows, as_float32, release_pages

logger = logging.getLogger(__name__)

TWO_TOWER = "two_tower"
CONTENT = "content"
POPULAR = "popular"
STRATEGIES = (TWO_TOWER, CONTENT, POPULAR)

SERVED = "served"
RETRIEVAL = "retrieval"
VARIANTS = (SERVED, RETRIEVAL, POPULAR)
"""How :meth:`Recommender.recommend` orders (an experiment's arms compare them): ``served``, both stages as
trained; ``retrieval``, the same candidates in the two-tower's order (no learned ranking); ``popular``,
every shopper gets the recent-popularity list (no personalisation at all)."""


@dataclass
class History:
    """What is known of one shopper at request time.

    Attributes:
        item_ids: (n,) item ids of past interactions (unknown ids are ignored).
        timestamps: (n,) int seconds.
        weights: (n,) float.
        text: (t,) float32 review-text embedding, or None.
    """

    item_ids: np.ndarray
    timestamps: np.ndarray
    weights: np.ndarray
    text: np.ndarray | None = None


@dataclass
class Ranking:
    """Top-k for one shopper: item positions into the bundle and their scores (best first)."""

    strategy: str
    items: np.ndarray
    scores: np.ndarray


class Recommender:
    """Ranks a bundle's catalogue for known, new and anonymous shoppers.

    Args:
        bundle: a loaded :class:`~modeling.artifacts.Bundle`.
        ann_min_items: catalogues of at least this many items are searched with an approximate
            (FAISS IVF) index, the bundle's own when it has one; None: always exact.
        ann_nprobe: inverted lists the approximate index scans per query (None: the value tuned
            when the bundle was published, or 64 for an index built here).
    """

    def __init__(self, bundle: Bundle, *, ann_min_items: int | None = None, ann_nprobe: int | None = None) -> None:
        self.bundle = bundle
        self.ann_min_items = ann_min_items
        self.ann_nprobe = ann_nprobe
        arrays = bundle.arrays
        self.item_ids = np.asarray(arrays.item_ids)
        self.user_ids = np.asarray(arrays.user_ids)
        self._item_index = IdIndex(self.item_ids)
        self._user_index = IdIndex(self.user_ids)
        for ids in (self.item_ids, self.user_ids):  # read in full for the indexes above, then a few at a time
            release_pages(ids)
        self.item_vectors = arrays.item_vectors
        self.item_content = arrays.item_content
        self.user_vectors = arrays.user_vectors
        self.popularity = np.asarray(arrays.popularity, dtype=np.float32)
        self.n_items = len(self.item_ids)
        self.n_trained_items = self.n_items
        params = bundle.manifest.get("params", {})
        self.history_length = int(params.get("history_length", 50))
        self.history_half_life_days = float(params.get("history_half_life_days", HISTORY_HALF_LIFE_DAYS))
        self.index: ItemIndex = self._make_index()
        self.text_index: ItemIndex = self._make_text_index()
        tower = bundle.query_tower()
        # Each product's index in the query tower's history vocabulary, looked up once (not per request; 20 ms at
        # 100,000 products), as int32 (a vocabulary is far smaller than 2**31): 0.4 MB per worker at that size.
        self._history_rows = tower.history_lookup(self.item_ids).astype(np.int32)
        if bundle.stage is None or bundle.attributes is None:
            raise ValueError(f"bundle {bundle.version} has no ranking stage")
        self.stage: RankingStage = bundle.stage
        self.attributes = bundle.attributes
        self.tables = self._tables()
        stage_kernel()  # the stage's native code, compiled and checked now (once per process), not in a request

    def _make_index(self) -> ItemIndex:
        """Exact search, or the approximate index (the bundle's; products added later are scored exactly)."""
        stored = self.bundle.item_index
        tuned = (self.bundle.manifest.get("item_index") or {}).get("nprobe")
        nprobe = self.ann_nprobe or (int(tuned) if stored is not None and tuned else 64)
        if self.ann_min_items is not None and self.n_items >= self.ann_min_items and stored is None:
            logger.warning("bundle %s has no approximate index (published below the threshold): building one in "
                           "this process over %d items", self.bundle.version, self.n_items)
        return make_index(self.item_vectors, self.ann_min_items, stored=stored, nprobe=nprobe)

    def _make_text_index(self) -> ItemIndex:
        """Exact search over the products' text vectors, or the bundle's approximate text index (from the
        same catalogue size as the item index; products added later are scored exactly). Without a stored
        one, text queries stay exact: building one per worker would cost more than the scans it saves."""
        stored = self.bundle.text_index
        if stored is None:
            return ExactIndex(self.item_content)
        tuned = (self.bundle.manifest.get("text_index") or {}).get("nprobe")
        return make_index(self.item_content, self.ann_min_items, stored=stored, nprobe=int(tuned or 64))

    def _tables(self) -> ItemTables:
        attributes = self.attributes
        unit = self.bundle.manifest.get("item_content_unit")  # recorded when published (older bundles: None)
        return ItemTables.build(attributes.category, attributes.brand, attributes.price, self.item_content,
                                self.popularity, content_unit=unit if isinstance(unit, bool) else None,
                                codes=self.bundle.attribute_codes)

    def add_items(self, item_ids: np.ndarray, item_text: np.ndarray, attributes: ItemAttributes | None = None) -> None:
        """Make products unseen in training recommendable: candidate vectors from their content.

        The candidate tower runs with the ids in the out-of-vocabulary bucket, on the text,
        category, brand and price. The new products get zero popularity. Their vectors are
        stacked after the bundle's (:mod:`modeling.rows`): the bundle's memory-mapped arrays stay
        shared and are not copied; ``attributes`` keeps the published products' only (the added
        ones' are in ``tables``).

        Args:
            item_ids: (m,) new product ids (ids already present are ignored).
            item_text: (m, t) float32 text embeddings of those products.
            attributes: their category, brand and price (None: unknown).
        """
        keep = self._item_index.positions(np.asarray(item_ids)) < 0
        attributes = attributes or ItemAttributes.empty(len(keep))
        item_ids, item_text = np.asarray(item_ids)[keep], np.asarray(item_text, dtype=np.float32)[keep]
        if len(item_ids) == 0:
            return
        tower = self.bundle.candidate_tower()
        vectors = tower.serve(item_id=np.full(len(item_ids), ""), item_text=item_text,
                              item_category=np.asarray(attributes.category, dtype=str)[keep],
                              item_brand=np.asarray(attributes.brand, dtype=str)[keep],
                              item_price=np.asarray(attributes.price, dtype=np.float32)[keep])
        self.item_ids = np.concatenate([self.item_ids.astype(str), item_ids.astype(str)])
        self.item_vectors = append_rows(self.item_vectors, np.asarray(vectors, dtype=np.float32))
        self.item_content = append_rows(self.item_content, item_text)
        self.popularity = np.concatenate([self.popularity, np.zeros(len(item_ids), dtype=np.float32)])
        self._history_rows = np.concatenate([self._history_rows,
                                             self.bundle.query_tower().history_lookup(item_ids).astype(np.int32)])
        self._item_index = IdIndex(self.item_ids)
        self.n_items = len(self.item_ids)
        self.index = self._make_index()
        self.text_index = self._make_text_index()
        self.stage = RankingStage(self.stage.sources.resized(self.n_items), self.stage.ranker, self.stage.config,
                                  self.stage.report)
        self.tables = self.tables.appended(np.asarray(attributes.category, dtype=str)[keep],
                                           np.asarray(attributes.brand, dtype=str)[keep],
                                           np.asarray(attributes.price, dtype=np.float32)[keep], item_text,
                                           np.zeros(len(item_ids), dtype=np.float32))

    @property
    def version(self) -> str:
        return self.bundle.version

    def knows_user(self, user_id: str) -> bool:
        """Whether the model has a trained vector for ``user_id``."""
        return user_id in self._user_index

    def item_lookup(self, item_ids: np.ndarray | list[str]) -> np.ndarray:
        """(m,) int64 positions of ``item_ids`` in order, -1 for ids not in the bundle."""
        if len(item_ids) == 0:
            return np.zeros(0, dtype=np.int64)
        return self._item_index.positions(item_ids)

    def _lookups(self, id_lists: list[np.ndarray]) -> list[np.ndarray]:
        """:meth:`item_lookup` of each of m id arrays, in one search of the index when they hold ids of one kind
        (bytes ids beside text ids are looked up list by list, as each kind is read differently)."""
        arrays = [np.asarray(ids).reshape(-1) for ids in id_lists]
        filled = [ids for ids in arrays if len(ids)]
        if len(filled) <= 1 or len({ids.dtype.kind == "S" for ids in filled}) > 1:
            return [self.item_lookup(ids) for ids in arrays]
        found = self.item_lookup(np.concatenate(filled))
        return np.split(found, np.cumsum([len(ids) for ids in arrays])[:-1])

    def item_positions(self, item_ids: np.ndarray | list[str]) -> np.ndarray:
        """Positions of ``item_ids`` in the bundle; ids not in the bundle are dropped. Returns (<=n,) int64."""
        if len(item_ids) == 0:
            return np.zeros(0, dtype=np.int64)
        positions = self._item_index.positions(item_ids)
        return positions[positions >= 0].astype(np.int64)

    def known_user_vectors(self, user_ids: list[str]) -> np.ndarray:
        """Query vectors of users known to the model. Returns (m, d) float32.

        Raises:
            KeyError: when a user is not in the model.
        """
        positions = self._user_index.positions(user_ids)
        if (positions < 0).any():
            missing = [u for u, p in zip(user_ids, positions, strict=True) if p < 0]
            raise KeyError(f"users not in the model: {missing[:5]}")
        return np.asarray(self.user_vectors[positions], dtype=np.float32)

    def content_vectors(self, histories: list[History], user_ids: list[str] | None = None,
                        looked_up: list[np.ndarray] | None = None) -> np.ndarray:
        """Run the query tower on history-derived features: the one place the tower runs at request time.

        Each history is cut to the model's window (its ``history_length`` most recent
        interactions), exactly as the published shopper vectors were.

        Args:
            histories: m shopper histories.
            user_ids: m ids for the id embedding ("" or an unknown id: the out-of-vocabulary bucket);
                None: all out of vocabulary.
            looked_up: the histories' :meth:`item_lookup`, if already known (m arrays (n_u,) int64).

        Returns:
            (m, d) float32 query vectors.
        """
        content = self.item_content  # rows gathered below (a stack of added rows is not joined)
        texts = np.zeros((len(histories), content.shape[1]), dtype=np.float32)
        for row, history in enumerate(histories):
            if history.text is not None:
                texts[row] = history.text
        positions, weights = self._windows(histories, looked_up)
        tower = self.bundle.query_tower()
        present = positions >= 0
        vectors = tower.serve_rows(  # the window's ids as serve() takes them would be: window_ids(positions, ids)
            user_id=np.full(len(histories), "") if user_ids is None else np.asarray([str(u) for u in user_ids]),
            user_text=texts,
            user_behaviour=pooled_vectors(positions, weights, content),
            history_rows=np.where(present, self._history_rows[np.maximum(positions, 0)],
                                  tower.history_lookup.pad_index),
            present=present,
            history_weight=weights,
        )
        return np.asarray(vectors, dtype=np.float32)

    def _windows(self, histories: list[History],
                 looked_up: list[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Each history's window as the query tower reads it: its ``history_length`` most recent products known
        to the bundle and their weights (recency-weighted). Returns ``(positions (m, L) int64 with -1 pads,
        weights (m, L))``.

        Raises:
            ValueError: a history whose item ids, timestamps and weights differ in length.
        """
        m = len(histories)
        found = [self.item_lookup(h.item_ids) for h in histories] if looked_up is None else looked_up
        # The batch's interactions joined first and masked once (a few array operations for any m, not five per
        # history): the same rows, in the same order, as masking each history and joining the parts.
        stamps = [np.asarray(h.timestamps, dtype=np.int64).reshape(-1) for h in histories]
        weights = [np.asarray(h.weights, dtype=np.float64).reshape(-1) for h in histories]
        lengths = np.fromiter((len(p) for p in found), dtype=np.int64, count=m)
        if any(len(t) != size or len(w) != size for t, w, size in zip(stamps, weights, lengths.tolist(), strict=True)):
            raise ValueError("a history's item ids, timestamps and weights differ in length")
        empty = np.zeros(0, dtype=np.int64)
        positions = np.concatenate([np.asarray(p, dtype=np.int64).reshape(-1) for p in found]) if m else empty
        keep = positions >= 0
        users = np.repeat(np.arange(m, dtype=np.int64), lengths)[keep]
        joined = sort_history(users, positions[keep], np.concatenate(stamps)[keep] if m else empty,
                              np.concatenate(weights)[keep] if m else np.zeros(0, dtype=np.float64), m)
        windows, window_weights, _ = user_windows(joined, self.history_length,
                                                  half_life_days=self.history_half_life_days)
        return windows, window_weights

    def added_only(self, positions: np.ndarray) -> bool:
        """Whether a history's products known to the bundle (``positions``, -1 for unknown ids) are all products
        added after training (:meth:`add_items`), and there is one: the query tower knows none of them by id (each
        is its out-of-vocabulary row, the same for all) and the ranking stage has no neighbour or transition for
        any, so what is known of them is their content alone."""
        known = np.asarray(positions)
        known = known[known >= 0]
        return len(known) > 0 and bool((known >= self.n_trained_items).all())

    def text_vectors(self, texts: np.ndarray) -> np.ndarray:
        """Vectors in the model's product space of (m, t) text embeddings: the candidate tower on each text
        alone, as for a product with that text and nothing else known (no id, category, brand or price).
        Returns (m, d) float32."""
        texts = np.asarray(texts, dtype=np.float32).reshape(-1, self.item_content.shape[1])
        m = len(texts)
        vectors = self.bundle.candidate_tower().serve(
            item_id=np.full(m, ""), item_text=texts, item_category=np.full(m, ""), item_brand=np.full(m, ""),
            item_price=np.full(m, -1.0, dtype=np.float32))
        return np.asarray(vectors, dtype=np.float32)

    def product_space_queries(self, histories: list[History],
                              looked_up: list[np.ndarray] | None = None) -> np.ndarray:
        """Queries in the model's product space for histories of products added after training (see
        :meth:`added_only`): the mean of the window's product vectors, weighted as the query tower weighs its
        window, unit norm; a visitor's text, as a product of that text alone (:meth:`text_vectors`), weighs as
        much as the products together. The dot product of a query with a product's vector is then the cosine
        ``similar_items`` ranks by (for one product, its ``similar_items`` order). Returns (m, d) float32."""
        positions, weights = self._windows(histories, looked_up)
        queries = pooled_vectors(positions, weights, self.item_vectors)  # (m, d), unit rows
        texted = [row for row, history in enumerate(histories) if history.text is not None]
        if texted:
            text = self.text_vectors(np.stack([histories[row].text for row in texted]))
            text /= np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-12)
            both = queries[texted] + text
            queries[texted] = both / np.maximum(np.linalg.norm(both, axis=1, keepdims=True), 1e-12)
        return queries

    def rank(self, query_vectors: np.ndarray, exclude: list[np.ndarray], k: int,
             allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Full-catalogue top-k by dot product (exact, or approximate above ``ann_min_items``).

        Args:
            query_vectors: (m, d) float32.
            exclude: m arrays of item positions to leave out.
            k: items per row.
            allowed: optional (n_items,) bool mask of items that may be returned.

        Returns:
            ``(positions (m, k), scores (m, k))``; -1 / -inf pad rows with fewer allowed items.
        """
        return self.index.search(query_vectors, k, exclude, allowed)

    def popular(self, exclude: list[np.ndarray], k: int,
                allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by popularity for each of ``len(exclude)`` shoppers (equal popularity in position order). Shapes as
        :meth:`rank`."""
        return popular_lists(self.tables, exclude, k, allowed)

    def explain(self, history: History, items: np.ndarray, *, trained: bool = False) -> np.ndarray:
        """Which of the shopper's products each recommended item comes from. Returns (k,) int64 positions
        (-1 where the history holds no product known to the model).

        The history product contributing most to the item's item-item score, as the ranking stage sums it
        (the product's recency weight times its item-item weight to the item); where no history product
        links to the item, the one whose text is nearest (cosine of the text embeddings). A history of products
        added after training only (:meth:`added_only`), whose list is the products nearest to theirs in the
        model's product space, names the one nearest to the item there (what its score is made of); with a
        visitor's text, -1 where the text is nearer there than every product (the item comes from the text).
        A trained shopper's list comes from both stages whatever their history holds: explained as such.

        Args:
            history: the shopper's history, as given to :meth:`recommend`.
            items: (k,) item positions (a :class:`Ranking`'s ``items``).
            trained: the shopper is known to the model (strategy ``two_tower``).
        """
        items = np.asarray(items, dtype=np.int64)
        _, products, weights = self.history_batch([history]).entries(self.stage.config.history_half_life_days)
        if len(products) == 0 or len(items) == 0:
            return np.full(len(items), -1, dtype=np.int64)
        if not trained and self.added_only(products):  # as recommend() chose the product-space search
            vectors = self.item_vectors  # rows gathered (a stack of added rows is not joined)
            near = as_float32(vectors[products]) @ as_float32(vectors[items]).T  # (h, k)
            nearest = products[np.argmax(near, axis=0)]
            if history.text is None:
                return nearest
            text = self.text_vectors(history.text)[0]
            from_text = text @ as_float32(vectors[items]).T > near.max(axis=0)  # cosines: the tower's vectors are unit
            return np.where(from_text, -1, nearest)
        contribution = weights[:, None] * entries_at(self.stage.sources.item_item, products, items)  # (h, k)
        content = self.tables.content
        nearest_text = np.argmax(as_float32(content[products]) @ as_float32(content[items]).T, axis=0)  # (k,)
        best = np.where(contribution.max(axis=0) > 0, np.argmax(contribution, axis=0), nearest_text)
        return products[best]

    def history_batch(self, histories: list[History], looked_up: list[np.ndarray] | None = None) -> HistoryBatch:
        """Item positions and times of m histories, oldest first (ids not in the bundle dropped);
        ``looked_up``: the histories' :meth:`item_lookup`, if already known."""
        items, stamps = [], []
        for row, history in enumerate(histories):
            positions = self.item_lookup(history.item_ids) if looked_up is None else looked_up[row]
            keep = positions >= 0
            times = np.asarray(history.timestamps, dtype=np.int64)[keep]
            order = np.argsort(times, kind="stable")
            items.append(positions[keep][order])
            stamps.append(times[order])
        return HistoryBatch(items, stamps)

    def recommend(self, user_ids: list[str], histories: dict[str, History], k: int,
                  allowed: np.ndarray | None = None, *, exclude_seen: bool = True,
                  variant: str = SERVED, stored_for: Container[str] | None = None) -> dict[str, Ranking]:
        """Top-k for each shopper with the best strategy available.

        Args:
            user_ids: m shopper ids (any mix of known, new and unknown).
            histories: what is known of each shopper (missing: nothing known).
            k: items per shopper.
            allowed: optional (n_items,) bool mask.
            exclude_seen: leave out every item of the shopper's history.
            variant: one of :data:`VARIANTS`.
            stored_for: the shoppers the model knows whom ``histories`` lacks that are answered from their stored
                vectors; the others of them get the popular products, as any shopper without a history (the
                service passes the shoppers its database still holds: one removed by an import's ``--replace`` or
                by staff is not answered from what the model kept of them). None: every one of them.

        Returns:
            user id -> :class:`Ranking` (padding removed).

        Raises:
            ValueError: an unknown ``variant``.
        """
        if variant not in VARIANTS:
            raise ValueError(f"unknown variant {variant!r}; one of {', '.join(VARIANTS)}")
        empty = History(np.zeros(0, dtype=object), np.zeros(0, dtype=np.int64), np.zeros(0))
        nothing = np.zeros(0, dtype=np.int64)
        # Each history's ids are looked up once (the exclusions, the query tower and the ranking stage read them),
        # every history's in one search of the index (one search per shopper cost 14 µs each, 1.4 ms for 100).
        looked_up = dict(zip(user_ids, self._lookups([histories.get(u, empty).item_ids for u in user_ids]),
                             strict=True))
        # and each shopper once (trained or not decides the path, the id embedding and the strategy's name).
        trained = dict(zip(user_ids, (self._user_index.positions(user_ids) >= 0).tolist(), strict=True))
        seen = {u: positions[positions >= 0] for u, positions in looked_up.items()}
        exclude = seen if exclude_seen else {u: nothing for u in user_ids}
        described = [u for u in user_ids if u in histories and variant != POPULAR
                     and (len(seen[u]) > 0 or histories[u].text is not None)]
        described_set = set(described)
        # Text alone (no product known to the model): the products whose text is nearest, by the same
        # sentence encoder's cosine; the towers and the ranker have nothing else to go on.
        searched = [u for u in described if len(seen[u]) == 0 and not trained[u]]
        # Products added after training only: the query tower knows none of them by id (every one is its
        # out-of-vocabulary row) and the ranking stage has no neighbour or transition for them, so the two-tower
        # order of the stage's candidates was nearly the popular list (the same one for a swim fin and for
        # headphones). What is known of them is their content, in the candidate tower's vectors: the products
        # nearest to theirs there, as similar_items finds.
        near = [u for u in described if not trained[u] and self.added_only(looked_up[u])]
        set_aside = set(searched) | set(near)
        described = [u for u in described if u not in set_aside]
        stored = [u for u in user_ids if u not in described_set and trained[u] and variant != POPULAR
                  and (stored_for is None or u in histories or u in stored_for)]
        ranked_users = described + stored
        popular = [u for u in user_ids if u not in described_set and u not in set(stored)]
        results: dict[str, Ranking] = {}
        if ranked_users:
            parts = []
            if described:
                parts.append(self.content_vectors([histories[u] for u in described],
                                                  [u if trained[u] else "" for u in described],
                                                  [looked_up[u] for u in described]))
            if stored:
                parts.append(self.known_user_vectors(stored))
            query = np.concatenate(parts)
            batch = self.history_batch([histories.get(u, empty) for u in ranked_users],
                                       [looked_up[u] for u in ranked_users])
            positions, scores = self.stage.rank(query, self.item_vectors, self.index, self.tables, batch,
                                                [exclude[u] for u in ranked_users], k, allowed,
                                                ranker=RETRIEVAL_ORDER if variant == RETRIEVAL else None)
            for row, user in enumerate(ranked_users):
                valid = positions[row] >= 0
                strategy = TWO_TOWER if trained[user] else CONTENT
                results[user] = Ranking(strategy, positions[row][valid], scores[row][valid])
        if searched:
            texts = np.stack([np.asarray(histories[u].text, dtype=np.float32) for u in searched])
            positions, scores = self.text_index.search(texts, k, [exclude[u] for u in searched], allowed)
            for row, user in enumerate(searched):
                valid = positions[row] >= 0
                results[user] = Ranking(CONTENT, positions[row][valid], scores[row][valid])
        if near:
            query = self.product_space_queries([histories[u] for u in near], [looked_up[u] for u in near])
            positions, scores = self.index.search(query, k, [exclude[u] for u in near], allowed)
            for row, user in enumerate(near):
                valid = positions[row] >= 0
                results[user] = Ranking(CONTENT, positions[row][valid], scores[row][valid])
        if popular:
            positions, scores = self.popular([exclude[u] for u in popular], k, allowed)
            for row, user in enumerate(popular):
                valid = positions[row] >= 0
                results[user] = Ranking(POPULAR, positions[row][valid], scores[row][valid])
        return results
