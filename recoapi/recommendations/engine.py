"""The in-process serving engine and the registry that swaps it.

An :class:`Engine` holds one bundle (memory-mapped arrays) plus the product
metadata the responses need. The :class:`EngineRegistry` keeps one engine per
process and replaces the reference in one assignment, so a request works on one
complete model from start to end. Every worker process looks at
``models/ACTIVE`` at most once per ``RECO_ACTIVE_CHECK_SECONDS`` and loads a newer
version by itself; a version that fails to load is logged and the old engine
keeps serving.

Products written after the engine was built (``POST /products``, the admin) reach every worker on
its next request: each request compares the newest ``Product.updated_at`` with the engine's, and a
newer one gives a new engine with the changed products (:meth:`Engine.with_products`).
"""

from __future__ import annotations

import atexit
import copy
import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from django.conf import settings
from django.db import DatabaseError, connections
from django.utils import timezone

from modeling import artifacts
from modeling import datasets as ds
from modeling.artifacts import Bundle
from modeling.errors import ArtifactError
from modeling.exported_text import OnnxTextEncoder
from modeling.features import item_attributes_of_rows
from modeling.index import IvfIndex
from modeling.recommender import Recommender
from recoapi import allocator, metrics, text_process
from recoapi.catalog import selectors as catalog_selectors
from recoapi.recommendations import model_store
from recoapi.recommendations.product_table import ItemInfo, ProductTable
from recoapi.text_process import RemoteTextEncoder

if TYPE_CHECKING:
    from modeling.embeddings import TextEncoder

logger = logging.getLogger(__name__)


CATALOGUE_MARGIN = timedelta(seconds=10)
"""How far before its stamp an engine re-reads changed products (commits may land out of timestamp order)."""


@dataclass
class Engine:
    """One loaded model version with its product metadata.

    Attributes:
        recommender: scoring over the bundle (plus products added after training).
        products: (n_items,) metadata aligned with the recommender's item positions, by column; a
            product the database does not have is not ``known``.
    """

    recommender: Recommender
    products: ProductTable
    data_stamp: int | None = None
    catalogue_stamp: datetime | None = None
    catalogue_checked_at: float = float("-inf")
    _available: np.ndarray | None = None
    _available_at: float = float("-inf")
    _category_masks: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    CATEGORY_MASKS_KEPT = 32  # masks of the most asked-for category prefixes, kept per engine

    @property
    def known(self) -> np.ndarray:
        """(n_items,) bool: products the database has."""
        return self.products.known

    @property
    def prices(self) -> np.ndarray:
        """(n_items,) float64 prices, NaN where unknown."""
        return self.products.price

    def info(self, position: int) -> ItemInfo:
        """Title, brand, category and price of the product at ``position``."""
        return self.products.info(position)

    def item_columns(self, positions: np.ndarray) -> tuple[list[str], list[str], list[str], list[float | None]]:
        """The titles, brands, categories and prices of the products at (m,) ``positions``, in order
        (:meth:`ProductTable.columns`)."""
        return self.products.columns(positions)

    @property
    def available(self) -> np.ndarray:
        """(n_items,) bool: in the database and not marked out of stock.

        Stock changes often, so the unavailable products are re-read at most every
        ``RECO_AVAILABILITY_SECONDS`` (one indexed query for the few unavailable ones).
        """
        now = time.monotonic()
        if self._available is None or now - self._available_at >= settings.RECO_AVAILABILITY_SECONDS:
            unavailable = catalog_selectors.product_unavailable_ids()
            mask = self.known.copy()
            mask[self.recommender.item_positions(unavailable)] = False
            self._available, self._available_at = mask, now
        return self._available

    @property
    def version(self) -> str:
        return self.recommender.version

    def category_mask(self, category: str) -> np.ndarray:
        """(n_items,) bool: products in the database whose category path starts with ``category``.

        Matching ignores case and surrounding spaces: ``sports``, ``Sports > swim`` and
        ``SPORTS > Swimming`` all match ``Sports > Swimming``.
        """
        prefix = category.strip().lower()
        mask = self._category_masks.get(prefix)
        if mask is None:
            mask = self.products.category_mask(prefix)
            if len(self._category_masks) < self.CATEGORY_MASKS_KEPT:
                self._category_masks[prefix] = mask
        return mask

    @cached_property
    def has_prices(self) -> bool:
        """Whether any product has a price (a price filter on a catalogue without prices allows nothing)."""
        return bool(np.isfinite(self.prices).any())

    @cached_property
    def top_level_categories(self) -> list[str]:
        """The distinct first levels of the products' category paths (``Sports`` of ``Sports > Swimming``), sorted."""
        return self.products.top_level_categories()

    def allowed(self, *, category: str | None = None, min_price: float | None = None,
                max_price: float | None = None) -> np.ndarray:
        """(n_items,) bool mask of recommendable products under the given filters.

        Unavailable products are never allowed; a price filter excludes products without a price.
        """
        mask = self.available.copy()
        if category:
            mask &= self.category_mask(category)
        if min_price is not None:
            mask &= self.prices >= min_price
        if max_price is not None:
            mask &= self.prices <= max_price
        return mask

    def with_products(self, rows: list[tuple], stamp: datetime | None) -> Engine:
        """A new engine with the products of ``rows`` changed or added (this one is left as it was).

        ``rows``: ``(id, title, description, brand, category, price, available)``. Products the
        model has no vector for get one from their text (as at load time, when RECO_ENCODE_NEW_PRODUCTS
        is on); for known ones the metadata (title, brand, category, price) and availability change;
        their vectors stay the trained ones until the next training.
        """
        rows = list(rows)
        positions = self.recommender.item_lookup([str(row[0]) for row in rows])
        present = positions >= 0
        differs = np.ones(len(rows), dtype=bool)
        stored = [row for row, k in zip(rows, present, strict=True) if k]
        differs[present] = self.products.differs(positions[present], stored)
        changed = [row for row, d in zip(rows, differs, strict=True) if d]
        if not changed:  # availability is read apart (it may be all that changed)
            return replace(self, catalogue_stamp=stamp, catalogue_checked_at=time.monotonic(), _available=None)
        new = [row for row, p, d in zip(rows, positions, differs, strict=True) if d and p < 0]
        recommender = copy.copy(self.recommender)  # add_items replaces arrays; the serving engine keeps its own
        if not _add_new_products(recommender, new):
            recommender = self.recommender
        products = _with_rows(self.products, recommender, changed)
        logger.info("model %s: %d products changed, %d of them new", recommender.version, len(changed), len(new))
        return replace(self, recommender=recommender, products=products, catalogue_stamp=stamp,
                       catalogue_checked_at=time.monotonic(), _available=None, _category_masks={})

    def synced(self) -> Engine:
        """This engine, or a new one with the products changed since it was built or last synced.

        One indexed query per call (the newest ``updated_at``; hand-written, as it runs on every request).
        Changes are read from a little before the engine's stamp, since transactions may commit out of their
        timestamps' order; while the stamp is that recent, the window is also re-read every
        RECO_AVAILABILITY_SECONDS, for a commit older than the newest.
        """
        latest = catalog_selectors.product_latest_update()
        # A commit older than the stamp can only land within the margin of it: re-read that window while
        # it is that recent (not forever: after an import every product shares one recent time).
        stale = (time.monotonic() - self.catalogue_checked_at >= settings.RECO_AVAILABILITY_SECONDS
                 and self.catalogue_stamp is not None and timezone.now() - self.catalogue_stamp < CATALOGUE_MARGIN)
        if latest is None or (self.catalogue_stamp is not None and latest <= self.catalogue_stamp and not stale):
            return self
        since = self.catalogue_stamp - CATALOGUE_MARGIN if self.catalogue_stamp is not None else None
        rows = catalog_selectors.product_rows_changed(since=since)
        return self.with_products(rows, max(latest, self.catalogue_stamp or latest))


_encoders: dict[str, TextEncoder | OnnxTextEncoder | RemoteTextEncoder] = {}
_encoder_lock = threading.Lock()


def text_encoder(bundle: Bundle | None = None) -> TextEncoder | OnnxTextEncoder | RemoteTextEncoder:
    """The process's sentence encoder for ``bundle`` (loaded on first use).

    The ONNX export the bundle names (no torch; a fraction of a second to load), run by the text process
    beside the web workers where gunicorn runs one (:mod:`recoapi.text_process`), else in this process;
    without an export, sentence-transformers with RECO_TEXT_MODEL_PATH (torch; a few seconds).
    """
    export = artifacts.text_export_path(bundle) if bundle is not None else None
    key = str(export) if export is not None else ""
    with _encoder_lock:
        if key not in _encoders:
            if export is not None and text_process.available():  # under gunicorn: the shared text process
                _encoders[key] = RemoteTextEncoder(export, local=lambda: OnnxTextEncoder(export))
            elif export is not None:
                _encoders[key] = OnnxTextEncoder(export)
            else:
                logger.info("no text encoder export named by the model: loading sentence-transformers (torch)")
                from modeling.embeddings import TextEncoder  # torch and pandas: only for bundles without an export
                _encoders[key] = TextEncoder(settings.RECO_TEXT_MODEL_PATH)
        return _encoders[key]


def _add_new_products(recommender: Recommender, rows: list[tuple]) -> bool:
    """Give the products of ``rows`` (:data:`recoapi.catalog.selectors.PRODUCT_COLUMNS`) vectors from their
    text, in place, when RECO_ENCODE_NEW_PRODUCTS is on; returns whether any were added."""
    if not rows or not settings.RECO_ENCODE_NEW_PRODUCTS:
        return False
    recommender.add_items(np.asarray([str(row[0]) for row in rows]),
                          text_encoder(recommender.bundle).encode(ds.item_text_of_rows(rows)),
                          item_attributes_of_rows(rows))
    return True


def data_stamp() -> int | None:
    """Modification time (ns) of the imported-data manifest; it changes with every completed import."""
    try:
        return (Path(settings.RECO_PROCESSED_DIR) / ds.SNAPSHOT_MANIFEST).stat().st_mtime_ns
    except OSError:
        return None


def build_engine(bundle_path: Path, check: Callable[[artifacts.Bundle], None] | None = None) -> Engine:
    """Load a bundle and the metadata of its products from the database.

    Products in the database that the model was not trained on get candidate vectors
    from their text (encoded now), so they can be recommended without retraining.

    Args:
        bundle_path: the bundle's folder.
        check: called with the loaded bundle before the database's products are read and the new ones encoded
            (the work another shop's model would spend on the whole catalogue); what it raises ends the load.

    Raises:
        ArtifactError: when the bundle is missing or broken.
    """
    stamp = data_stamp()
    catalogue = catalog_selectors.product_latest_update()  # before the rows: nothing is missed
    bundle = artifacts.load_bundle(bundle_path, compiled_ranker=settings.RECO_COMPILED_RANKER)
    if check is not None:
        check(bundle)
    recommender = Recommender(bundle, ann_min_items=settings.RECO_ANN_MIN_ITEMS or None,
                              ann_nprobe=settings.RECO_ANN_NPROBE or None)
    products, new = _product_table(recommender)
    if _add_new_products(recommender, new):
        logger.info("model %s: %d products added after training get text-based vectors", bundle.version, len(new))
        products = _with_rows(products, recommender, new)
    logger.info("engine loaded model %s (%d items, %d users)", bundle.version, recommender.n_items,
                len(recommender.user_ids))
    return Engine(recommender=recommender, products=products, data_stamp=stamp, catalogue_stamp=catalogue,
                  catalogue_checked_at=time.monotonic())


def _with_rows(products: ProductTable, recommender: Recommender, rows: list[tuple]) -> ProductTable:
    """``products`` grown to the recommender's catalogue, with the rows of the products it has written in
    (a new product has no position when RECO_ENCODE_NEW_PRODUCTS is off: it stays out)."""
    at = recommender.item_lookup([str(row[0]) for row in rows])
    found = at >= 0
    return products.updated(recommender.n_items, at[found], [row for row, k in zip(rows, found, strict=True) if k])


def _product_table(recommender: Recommender, page: int = 10_000) -> tuple[ProductTable, list[tuple]]:
    """The database's products as a table aligned with the model, read a page at a time, and the rows of
    the products the model was not trained on (kept whole: they are few, and get vectors from their text)."""
    new: list[str] = []

    def chunks() -> Iterator[tuple[np.ndarray, list[tuple]]]:
        for rows in catalog_selectors.product_pages(page=page):
            positions = recommender.item_lookup([str(row[0]) for row in rows])
            new.extend(str(row[0]) for row, p in zip(rows, positions, strict=True) if p < 0)
            known = positions >= 0
            yield positions[known], [row for row, k in zip(rows, known, strict=True) if k]

    table = ProductTable.from_rows(recommender.n_items, chunks())
    return table, catalog_selectors.product_rows(ids=new)  # the new products' whole rows: their text is encoded


PREWARM_EXIT_WAIT_SECONDS = 60.0
"""How long a process that is exiting waits for its background loading to finish (see :func:`_prewarm`)."""
_prewarming: list[threading.Thread] = []


def _prewarm(engine: Engine) -> None:
    """Load the text encoder (and build an approximate index) in the background, so no request waits for them.

    A process that exits meanwhile (a command such as ``recommend_batch`` answers in a second) first waits for
    them: interpreter shutdown stopping a thread inside ONNX Runtime's or FAISS's native code aborts the process
    ("terminate called without an active exception", exit status 134) after its work was done."""
    if settings.RECO_PREWARM:
        started = [threading.Thread(target=_load_text_encoder, args=(engine,), name="prewarm", daemon=True)]
        if isinstance(engine.recommender.index, IvfIndex) and not engine.recommender.index.built:
            started.append(threading.Thread(target=engine.recommender.index.build, name="prewarm-index",
                                            daemon=True))
        for thread in started:
            thread.start()
        _prewarming[:] = [thread for thread in _prewarming if thread.is_alive()] + started


@atexit.register
def _finish_prewarming() -> None:
    """At exit: wait (at most :data:`PREWARM_EXIT_WAIT_SECONDS` in all) for background loading still running."""
    deadline = time.monotonic() + PREWARM_EXIT_WAIT_SECONDS
    for thread in list(_prewarming):
        thread.join(max(0.0, deadline - time.monotonic()))


STORE_RETRY_SECONDS = 30.0
"""How long a worker waits before trying again a version it could not load (with a model store; and an
experiment arm's model in any case)."""

_freeze_after_load = False  # set in web workers by start_worker()


def start_worker() -> None:
    """Prepare a web worker before its first request (gunicorn's ``post_worker_init``).

    Limits the C allocator's arenas (``RECO_MALLOC_ARENAS``, :mod:`recoapi.allocator`) before any
    request thread allocates, loads the active model now, so the first request does not wait for it,
    and from then on freezes the heap after every model load (:func:`_freeze_heap`). A worker that
    cannot load (no model yet, database down) starts anyway; requests retry the load as before.
    """
    global _freeze_after_load
    _freeze_after_load = True
    allocator.limit_arenas(settings.RECO_MALLOC_ARENAS)
    try:
        registry.current()
    except Exception:  # logged; the service answers 503 until a request can load the model
        logger.exception("the worker could not load the model at start; requests will retry")
    finally:
        connections.close_all()  # the connection of this (main) thread: requests use their own


def _freeze_heap() -> None:
    """In web workers: collect once, then move every object alive now (the engine's per-product
    records, the loaded libraries) into the collector's permanent generation, so later full
    collections walk only what requests create instead of pausing a request for the whole heap.
    Reference counting still frees a replaced engine; its cyclic garbage waits for the next load.
    What the load freed (the product rows read from the database, a replaced engine) goes back to
    the system instead of staying in malloc's arenas."""
    if _freeze_after_load:
        gc.unfreeze()
        gc.collect()
        gc.freeze()
        allocator.release_free_memory()


RELEASE_DELAY_SECONDS = 1.0
"""How long a web worker waits after its last request for many shoppers before it hands the free memory back."""

_quiet_release = allocator.QuietRelease(RELEASE_DELAY_SECONDS)


def after_request(shoppers: int) -> bool:
    """In web workers, after answering ``shoppers`` in one request: when they were at least
    RECO_RELEASE_AFTER_SHOPPERS, hand the free memory malloc keeps back to the system once no such request has come
    for :data:`RELEASE_DELAY_SECONDS` (:class:`recoapi.allocator.QuietRelease`: not after each one, whose successor
    would take the pages back at once). Returns whether a release was asked for."""
    threshold = settings.RECO_RELEASE_AFTER_SHOPPERS
    if not _freeze_after_load or not threshold or shoppers < threshold:
        return False
    _quiet_release.request()
    return True


def _load_text_encoder(engine: Engine) -> None:
    try:
        encoder = text_encoder(engine.recommender.bundle)
        if isinstance(encoder, RemoteTextEncoder):
            encoder.warm()
    except Exception:  # a text query will report it; the rest of the service does not need the encoder
        logger.exception("the text encoder of model %s could not be loaded", engine.version)


class EngineRegistry:
    """Holds the process's engine; follows the active version (``models/ACTIVE``, or the database with a
    shared model store: :mod:`recoapi.recommendations.model_store`)."""

    def __init__(self) -> None:
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self._swap_lock = threading.Lock()
        self._checked_at = float("-inf")
        self._failed: str | None = None
        self._failed_at = float("-inf")
        self._failed_reason = ""
        self._others: dict[str, Engine] = {}  # versions beside the active one (experiment arms)
        self._others_failed: dict[str, float] = {}  # version -> when it failed to load
        self._others_lock = threading.Lock()

    @property
    def models_dir(self) -> Path:
        return Path(settings.RECO_MODELS_DIR)

    def current(self) -> Engine | None:
        """The engine of the active version, or None without a model.

        Rebuilt when ``models/ACTIVE`` names another version, or when a data import completed
        since the engine was built (new products, changed metadata), in every worker process.
        """
        now = time.monotonic()
        # Without an engine every request looks (and waits for a load in progress in another thread).
        if self._engine is None or now - self._checked_at >= settings.RECO_ACTIVE_CHECK_SECONDS:
            self._checked_at = now
            active = model_store.active_version()
            engine = self._engine
            if active and not self._failed_recently(active, now) and (
                engine is None or engine.version != active or engine.data_stamp != data_stamp()
            ):
                self._follow(active)
            cached = artifacts.read_active(self.models_dir) if self._engine is None and model_store.store() else None
            if cached and cached != active and not self._failed_recently(cached, now):
                logger.warning("model %s cannot be loaded from the store; serving this host's copy of %s", active,
                               cached)
                self._follow(cached)
        engine = self._engine
        if engine is not None:
            synced = _synced(engine)
            if synced is not engine:
                with self._swap_lock:
                    if self._engine is engine:  # not replaced by a new version meanwhile
                        self._engine = synced
                    engine = self._engine
        return engine

    def engine_for(self, version: str, current: Engine) -> Engine:
        """The engine of ``version`` beside ``current`` (the active one, from :meth:`current`), for an
        experiment's arm; loaded on first use.

        ``current`` when ``version`` is active, or when it cannot be loaded (logged; tried again after
        :data:`STORE_RETRY_SECONDS`; the answer's model version says which model answered).
        """
        if current.version == version:
            return current
        with self._others_lock:
            engine = self._others.get(version)
            if engine is None:
                if time.monotonic() - self._others_failed.get(version, float("-inf")) < STORE_RETRY_SECONDS:
                    return current
                try:
                    engine = build_engine(model_store.local_bundle(version))
                except ArtifactError as exc:
                    self._others_failed[version] = time.monotonic()  # tried again after a while
                    logger.error("cannot load model %s for an experiment arm; the active model answers: %s",
                                 version, exc)
                    return current
                self._others[version] = engine
                logger.info("loaded model %s beside the active %s (experiment arm)", version, current.version)
        synced = _synced(engine)
        if synced is not engine:
            with self._others_lock:
                if self._others.get(version) is engine:
                    self._others[version] = synced
        return synced

    def retain(self, versions: set[str]) -> None:
        """Drop the engines of versions beside the active one that are not in ``versions`` (the running
        experiment's arms), and forget failed loads (a new experiment tries them again)."""
        with self._others_lock:
            for version in set(self._others) - versions:
                del self._others[version]
            self._others_failed = {v: t for v, t in self._others_failed.items() if v in versions}

    def _failed_recently(self, version: str, now: float) -> bool:
        """A version that failed to load is not tried again; with a model store, after
        :data:`STORE_RETRY_SECONDS` it is (the store may have been out of reach)."""
        if version != self._failed:
            return False
        return model_store.store() is None or now - self._failed_at < STORE_RETRY_SECONDS

    def _follow(self, version: str) -> None:
        if not self._lock.acquire(blocking=self._engine is None):
            return  # another thread is loading; keep serving the current engine meanwhile
        try:
            if self._engine is not None and self._engine.version == version and self._engine.data_stamp == data_stamp():
                return
            try:
                self._engine = build_engine(model_store.local_bundle(version))
                if model_store.store() is not None:  # what this host serves if the database goes away
                    artifacts.set_active(self.models_dir, version)
                self._failed = None
                metrics.model_loaded(version)
                _freeze_heap()
                _prewarm(self._engine)
            except ArtifactError as exc:
                metrics.model_loaded(None, ok=False)
                self._failed, self._failed_at, self._failed_reason = version, time.monotonic(), str(exc)
                logger.error("cannot load model %s, keeping %s: %s", version,
                             self._engine.version if self._engine else "none", exc)
            except Exception:  # e.g. the database is briefly unavailable: keep serving, retry next check
                metrics.model_loaded(None, ok=False)
                if self._engine is None:
                    raise  # nothing to serve; the next request tries again (current() always does without one)
                logger.exception("cannot rebuild the engine for model %s; keeping the current one", version)
        finally:
            self._lock.release()

    def failure(self) -> tuple[str, str] | None:
        """``(version, reason)`` when the last attempt to load the active version failed and it is still the active
        one (the worker serves its previous model, or none), else None."""
        failed = self._failed
        if not failed or failed != model_store.active_version():  # e.g. ACTIVE pointed back at the served one
            return None
        return failed, self._failed_reason

    def activate(self, version: str, check: Callable[[artifacts.Bundle], None] | None = None) -> Engine:
        """Load ``version``, and only if that works (and ``check``, see :func:`build_engine`, raises nothing),
        point ACTIVE at it and swap.

        Raises:
            ArtifactError: when the bundle is broken; nothing changes then.
            Whatever ``check`` raises; nothing changes then either.
        """
        with self._lock:
            try:
                engine = build_engine(model_store.local_bundle(version), check)
            except ArtifactError:
                metrics.model_loaded(None, ok=False)
                raise
            model_store.activate(version)
            self._engine = engine
            metrics.model_loaded(version)
            _freeze_heap()
            _prewarm(engine)
            self._failed = None
            self._checked_at = time.monotonic()
            return engine

    def refresh(self) -> Engine | None:
        """Rebuild the current engine (same version) with fresh product metadata."""
        with self._lock:
            if self._engine is None:
                return None
            self._engine = build_engine(self._engine.recommender.bundle.path)
            _freeze_heap()
            return self._engine

    def reset(self) -> None:
        """Forget the engines (tests)."""
        with self._lock:
            self._engine = None
            self._failed = None
            self._checked_at = float("-inf")
        self.retain(set())


def _synced(engine: Engine) -> Engine:
    """``engine.synced()``, or ``engine`` itself when the changes cannot be read or encoded now (logged)."""
    try:
        return engine.synced()
    except DatabaseError as exc:  # the request itself will meet the database and answer 503
        logger.warning("cannot read product changes: %s", exc)
    except ArtifactError as exc:  # new products cannot be encoded: serve the catalogue as it was
        logger.error("cannot add the changed products to model %s: %s", engine.version, exc)
    return engine


registry = EngineRegistry()
