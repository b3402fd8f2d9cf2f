"""The in-process serving engine and the registry that swaps it.

An :class:`Engine` holds one bundle (memory-mapped arrays) plus the product
metadata the responses need. The :class:`EngineRegistry` keeps one engine per
process and replaces the reference in one assignment, so a request works on one
complete model from start to end. Every worker process looks at
``models/ACTIVE`` at most once per ``RECO_ACTIVE_CHECK_SECONDS`` and loads a newer
version by itself; a version that fails to load is logged and the old engine
keeps serving.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from django.conf import settings

from modeling import artifacts
from modeling.errors import ArtifactError
from modeling.recommender import Recommender
from recoapi.catalog.models import Product

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ItemInfo:
    """Product metadata shown with every recommended item."""

    title: str
    brand: str
    category: str
    price: float | None


@dataclass
class Engine:
    """One loaded model version with its product metadata.

    Attributes:
        recommender: scoring over the bundle.
        items: (n_items,) metadata aligned with the bundle's item positions.
        categories: (n_items,) lower-cased category paths, for filtering.
    """

    recommender: Recommender
    items: list[ItemInfo]
    categories: np.ndarray

    @property
    def version(self) -> str:
        return self.recommender.version

    def category_mask(self, category: str) -> np.ndarray:
        """(n_items,) bool: items whose category path starts with ``category`` (case-insensitive)."""
        prefix = category.strip().lower()
        return np.char.startswith(self.categories.astype(str), prefix)


def build_engine(bundle_path: Path) -> Engine:
    """Load a bundle and the metadata of its products from the database.

    Raises:
        ArtifactError: when the bundle is missing or broken.
    """
    bundle = artifacts.load_bundle(bundle_path)
    recommender = Recommender(bundle)
    rows = {pid: (title, brand, category, price) for pid, title, brand, category, price in
            Product.objects.values_list("id", "title", "brand", "category", "price").iterator(chunk_size=10000)}
    items = []
    for item_id in recommender.item_ids:
        title, brand, category, price = rows.get(str(item_id), ("", "", "", None))
        items.append(ItemInfo(title=title, brand=brand, category=category, price=price))
    categories = np.asarray([info.category.lower() for info in items], dtype=str)
    logger.info("engine loaded model %s (%d items, %d users)", bundle.version, recommender.n_items,
                len(recommender.user_ids))
    return Engine(recommender=recommender, items=items, categories=categories)


class EngineRegistry:
    """Holds the process's engine; follows ``models/ACTIVE``."""

    def __init__(self) -> None:
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self._checked_at = float("-inf")
        self._failed: str | None = None

    @property
    def models_dir(self) -> Path:
        return Path(settings.RECO_MODELS_DIR)

    def current(self) -> Engine | None:
        """The engine of the active version (loading it when ACTIVE changed), or None without a model."""
        now = time.monotonic()
        if now - self._checked_at >= settings.RECO_ACTIVE_CHECK_SECONDS:
            self._checked_at = now
            active = artifacts.read_active(self.models_dir)
            engine = self._engine
            if active and (engine is None or engine.version != active) and active != self._failed:
                self._follow(active)
        return self._engine

    def _follow(self, version: str) -> None:
        if not self._lock.acquire(blocking=self._engine is None):
            return  # another thread is loading; keep serving the current engine meanwhile
        try:
            if self._engine is not None and self._engine.version == version:
                return
            try:
                self._engine = build_engine(self.models_dir / version)
                self._failed = None
            except ArtifactError as exc:
                self._failed = version
                logger.error("cannot load model %s, keeping %s: %s", version,
                             self._engine.version if self._engine else "none", exc)
        finally:
            self._lock.release()

    def activate(self, version: str) -> Engine:
        """Load ``version``, and only if that works, point ACTIVE at it and swap.

        Raises:
            ArtifactError: when the bundle is broken; nothing changes then.
        """
        with self._lock:
            engine = build_engine(self.models_dir / version)
            artifacts.set_active(self.models_dir, version)
            self._engine = engine
            self._failed = None
            self._checked_at = time.monotonic()
            return engine

    def refresh(self) -> Engine | None:
        """Rebuild the current engine (same version) with fresh product metadata."""
        with self._lock:
            if self._engine is None:
                return None
            self._engine = build_engine(self._engine.recommender.bundle.path)
            return self._engine

    def reset(self) -> None:
        """Forget the engine (tests)."""
        with self._lock:
            self._engine = None
            self._failed = None
            self._checked_at = float("-inf")


registry = EngineRegistry()
