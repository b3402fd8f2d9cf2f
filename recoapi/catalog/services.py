"""Writes to the catalogue: importing a data source into the database."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from django.conf import settings
from django.db import transaction

from modeling import datasets as ds
from modeling.errors import DataValidationError
from recoapi.catalog.models import Interaction, Product, Shopper
from recoapi.exceptions import ApplicationError

logger = logging.getLogger(__name__)

BATCH_SIZE = 5000


@dataclass
class ImportResult:
    """What an import did."""

    source: str
    path: str
    skipped: bool
    counts: dict[str, int]
    report: dict[str, int] = field(default_factory=dict)
    fingerprint: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"source": self.source, "path": self.path, "skipped": self.skipped, "counts": self.counts,
                "report": self.report}


def _database_counts() -> dict[str, int]:
    return {"items": Product.objects.count(), "users": Shopper.objects.count(),
            "interactions": Interaction.objects.count()}


def _batches(n: int, size: int = BATCH_SIZE) -> list[slice]:
    return [slice(start, start + size) for start in range(0, n, size)]


def data_import(
    *,
    source: str,
    path: Path | str,
    processed_dir: Path | str | None = None,
    force: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> ImportResult:
    """Import a data source into the database and write its parquet snapshot.

    The file is read and validated completely before the database is touched; the
    database writes and the snapshot happen in one transaction, so a failure leaves
    both as they were. Re-importing unchanged files is skipped (same fingerprint and
    the same row counts in the database). The interactions table is replaced; products
    and shoppers are upserted.

    Args:
        source: one of ``modeling.datasets.SOURCES``.
        path: the source's file or directory.
        processed_dir: snapshot directory (default ``settings.RECO_PROCESSED_DIR``).
        force: import even when unchanged.
        progress: called as ``progress(table, done, total)`` while writing.

    Raises:
        ApplicationError: for an unknown source or invalid files (message names file and line).
    """
    processed = Path(processed_dir or settings.RECO_PROCESSED_DIR)
    try:
        data = ds.load_source(source, path)
    except DataValidationError as exc:
        raise ApplicationError(str(exc), code="invalid_data") from exc

    manifest = ds.read_snapshot_manifest(processed)
    if (not force and manifest is not None and manifest.get("fingerprint") == data.fingerprint
            and _database_counts() == data.counts()):
        logger.info("data unchanged (%s), import skipped", data.fingerprint[:12])
        return ImportResult(source=source, path=str(path), skipped=True, counts=data.counts(), report=data.report,
                            fingerprint=data.fingerprint)

    report = progress or (lambda table, done, total: None)
    items = data.items
    products = [
        Product(id=row.item_id, title=row.title or "", description=row.description or "", brand=row.brand or "",
                category=row.category or "", price=None if pd.isna(row.price) else float(row.price))
        for row in items.itertuples(index=False)
    ]
    shoppers = [Shopper(id=user_id) for user_id in data.users[ds.USER_ID].astype(str)]
    frame = data.interactions
    times = pd.to_datetime(frame[ds.TIMESTAMP].to_numpy(), unit="s", utc=True).to_pydatetime()
    ratings = frame[ds.RATING].astype(object).where(frame[ds.RATING].notna(), None).tolist()
    texts = frame[ds.TEXT].astype(object).where(frame[ds.TEXT].notna(), None).tolist()
    users = frame[ds.USER_ID].astype(str).tolist()
    item_ids = frame[ds.ITEM_ID].astype(str).tolist()
    events = frame[ds.EVENT].astype(str).tolist()
    weights = frame[ds.WEIGHT].astype(float).tolist()

    with transaction.atomic():
        Interaction.objects.all().delete()
        for sl in _batches(len(products)):
            Product.objects.bulk_create(
                products[sl], update_conflicts=True, unique_fields=["id"],
                update_fields=["title", "description", "brand", "category", "price"],
            )
            report("products", min(sl.stop, len(products)), len(products))
        for sl in _batches(len(shoppers)):
            Shopper.objects.bulk_create(shoppers[sl], ignore_conflicts=True)
            report("shoppers", min(sl.stop, len(shoppers)), len(shoppers))
        total = len(frame)
        for sl in _batches(total):
            Interaction.objects.bulk_create([
                Interaction(shopper_id=u, product_id=i, occurred_at=t, event=e, weight=w, rating=r, text=x)
                for u, i, t, e, w, r, x in zip(users[sl], item_ids[sl], times[sl], events[sl], weights[sl],
                                                ratings[sl], texts[sl], strict=True)
            ])
            report("interactions", min(sl.stop, total), total)
        # Last step inside the transaction: if the snapshot cannot be written, nothing is committed.
        ds.write_snapshot(data, processed, source=source)
    logger.info("imported %s from %s: %s", source, path, data.counts())
    return ImportResult(source=source, path=str(path), skipped=False, counts=data.counts(), report=data.report,
                        fingerprint=data.fingerprint)

