"""Writes to the catalogue: importing a data source into the database."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from modeling import datasets as ds
from modeling.errors import DataValidationError
from modeling.sources import load_source
from recoapi.catalog.models import Interaction, Product, Shopper
from recoapi.catalog.selectors import ID_BATCH_SIZE
from recoapi.exceptions import ApplicationError, Conflict, NotFound
from recoapi.locks import import_lock

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

BATCH_SIZE = 5000
# An import that shares fewer products than this share of the smaller of the two catalogues (the one in the
# database and the new one) is another shop's data: it is refused unless the caller says whether to replace
# the catalogue or merge into it. A shop whose catalogue grew or shrank shares (almost) all of the smaller one.
OTHER_SHOP_SHARED_PRODUCTS = 0.5


@dataclass
class ImportResult:
    """What an import did."""

    source: str
    path: str
    skipped: bool
    counts: dict[str, int]
    report: dict[str, int] = field(default_factory=dict)
    fingerprint: str = ""
    removed: dict[str, int] = field(default_factory=lambda: {"products": 0, "shoppers": 0})
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"source": self.source, "path": self.path, "skipped": self.skipped, "counts": self.counts,
                "report": self.report, "removed": self.removed, "notes": self.notes}


def import_filters_from_settings() -> ds.InteractionFilters:
    """The interaction filters configured by the RECO_FILTER_* settings."""
    return ds.InteractionFilters(
        min_user_interactions=settings.RECO_FILTER_MIN_USER_INTERACTIONS,
        outlier_std=settings.RECO_FILTER_OUTLIER_STD,
        min_distinct_items=settings.RECO_FILTER_MIN_DISTINCT_ITEMS,
        start=settings.RECO_FILTER_START,
        end=settings.RECO_FILTER_END,
    )


def event_time_bounds() -> ds.TimeBounds:
    """The plausible event times now: from RECO_EVENT_MIN_TIME to RECO_EVENT_MAX_FUTURE_SECONDS from now."""
    latest = int(timezone.now().timestamp()) + settings.RECO_EVENT_MAX_FUTURE_SECONDS
    return ds.TimeBounds(earliest=settings.RECO_EVENT_MIN_TIME, latest=latest)


def _database_counts() -> dict[str, int]:
    """Counts to compare with a source: its products and shoppers, and the imported interactions."""
    imported = Interaction.objects.filter(source=Interaction.IMPORTED)
    return {"items": Product.objects.count(),
            "users": Shopper.objects.filter(interactions__source=Interaction.IMPORTED).distinct().count(),
            "interactions": imported.count()}


_ITEM_TEXT_FIELDS = (ds.TITLE, ds.DESCRIPTION, ds.BRAND, ds.CATEGORY)


def _keep_catalogue_fields(items: pd.DataFrame, report: dict[str, int]) -> pd.DataFrame:
    """``items`` with the catalogue's fields for its bare products (no title, description, brand, category or
    price in the data: a product the interactions name that the data's product file lacks, or without one).

    Such a row would otherwise blank a product the catalogue describes (from an earlier import with a product
    file, or ``POST /products``); the snapshot takes the same fields, so training reads what is served. Counts
    them in ``report["bare_items_kept"]``."""
    import numpy as np  # imports only, like pandas

    bare = items[ds.PRICE].isna().to_numpy().copy()
    for column in _ITEM_TEXT_FIELDS:
        bare &= (items[column].fillna("").astype(str) == "").to_numpy()
    ids = items.loc[bare, ds.ITEM_ID].astype(str).tolist()
    if not ids:
        return items
    known: dict[str, tuple] = {}
    for sl in _batches(len(ids), ID_BATCH_SIZE):
        for row in Product.objects.filter(id__in=ids[sl]).values_list("id", "title", "description", "brand",
                                                                       "category", "price"):
            if any(row[1:5]) or row[5] is not None:
                known[row[0]] = row[1:]
    if not known:
        return items
    items = items.copy()
    rows = np.flatnonzero(bare & items[ds.ITEM_ID].astype(str).isin(known).to_numpy())
    values = [known[str(item)] for item in items[ds.ITEM_ID].iloc[rows]]
    for at, column in enumerate((*_ITEM_TEXT_FIELDS, ds.PRICE)):
        filled = [value[at] for value in values]
        if column == ds.PRICE:
            filled = [np.nan if value is None else float(value) for value in filled]
        items.iloc[rows, items.columns.get_loc(column)] = filled
    report["bare_items_kept"] = len(rows)
    logger.info("%d products without fields in the data keep the catalogue's", len(rows))
    return items


def _holds_the_import(database: dict[str, int], data: dict[str, int], *, exact_items: bool = False,
                      merged: bool = False) -> bool:
    """Whether the database's counts (:func:`_database_counts`) are those of an import of ``data``: its shoppers
    and imported interactions exactly, at least its products (products added since through ``POST /products``
    are kept by an import: they alone must not make every later reload import again), or exactly its products
    with ``exact_items`` (a ``replace`` import removes the others); with ``merged``, at least its shoppers and
    interactions too (a ``merge`` import keeps those imported before)."""
    if merged:
        return all(database[name] >= data[name] for name in ("users", "interactions", "items"))
    items = database["items"] == data["items"] if exact_items else database["items"] >= data["items"]
    return database["users"] == data["users"] and database["interactions"] == data["interactions"] and items


def _refuse_another_shop(data: ds.CanonicalData, source: str, path: Path | str) -> None:
    """Raise Conflict when ``data`` (read from ``source`` files at ``path``, named in the message) looks like
    another shop than the catalogue in the database.

    "Another shop": the catalogue is not empty and the two catalogues share fewer than
    ``OTHER_SHOP_SHARED_PRODUCTS`` of the smaller one's products (the demo shop followed by one's own
    export shares none; the same shop with more, or fewer, products shares nearly all of the smaller).
    """
    existing = Product.objects.count()
    if not existing:
        return
    new_ids = data.items[ds.ITEM_ID].astype(str).tolist()
    shared = sum(Product.objects.filter(id__in=new_ids[sl]).count() for sl in _batches(len(new_ids),
                                                                                        ID_BATCH_SIZE))
    if shared >= OTHER_SHOP_SHARED_PRODUCTS * min(existing, len(new_ids)):
        return
    raise Conflict(
        f"The new data (the {source} files at {path}; POST /reload_data reads those RECO_DATA_SOURCE and "
        f"RECO_DATA_PATH name) shares {shared} of its {len(new_ids)} products with the {existing} products in the "
        "database: it looks like another shop, and importing it would mix the two. If these are not the files "
        "you meant, point RECO_DATA_PATH at yours, or import them with `load_data --path`. Import them with replace "
        "(`load_data --replace`, or {\"replace\": true} for POST /reload_data) to remove the products and "
        "shoppers that are not in the new data, or with merge (`load_data --merge`, {\"merge\": true}) to "
        "keep them beside it.", code="other_shop")


def _remove_absent(data: ds.CanonicalData) -> dict[str, int]:
    """Delete the products and shoppers not in ``data``, with all their interactions (live ones too)."""
    removed: dict[str, int] = {}
    for name, model, ids in (("products", Product, data.items[ds.ITEM_ID]),
                             ("shoppers", Shopper, data.users[ds.USER_ID])):
        gone = sorted(set(model.objects.values_list("id", flat=True)) - set(ids.astype(str)))
        for sl in _batches(len(gone), ID_BATCH_SIZE):
            # The foreign keys cascade: their interactions, imported and live, go with them.
            model.objects.filter(id__in=gone[sl]).delete()
        removed[name] = len(gone)
    return removed


def _batches(n: int, size: int = BATCH_SIZE) -> list[slice]:
    return [slice(start, start + size) for start in range(0, n, size)]


_INTERACTION_FIELDS = ("shopper", "product", "occurred_at", "event", "weight", "rating", "text", "source")


def _interaction_rows(frame: pd.DataFrame, vendor: str) -> Iterator[list[tuple[object, ...]]]:
    """Canonical interactions as DB rows, in chunks (column order of ``_INTERACTION_FIELDS``)."""
    import pandas as pd  # imports only: web workers do not load pandas
    for sl in _batches(len(frame), 50_000):
        part = frame.iloc[sl]
        moments = pd.to_datetime(part[ds.TIMESTAMP].to_numpy(), unit="s")
        if vendor == "sqlite":  # Django keeps naive UTC text in SQLite
            occurred = moments.strftime("%Y-%m-%d %H:%M:%S").tolist()
        else:
            occurred = moments.strftime("%Y-%m-%d %H:%M:%S+00:00").tolist()
        ratings = part[ds.RATING].astype(object).where(part[ds.RATING].notna(), None).tolist()
        texts = part[ds.TEXT].astype(object).where(part[ds.TEXT].notna(), None).tolist()
        sources = [Interaction.IMPORTED] * len(part)
        yield list(zip(part[ds.USER_ID].astype(str).tolist(), part[ds.ITEM_ID].astype(str).tolist(), occurred,
                       part[ds.EVENT].astype(str).tolist(), part[ds.WEIGHT].astype(float).tolist(), ratings, texts,
                       sources, strict=True))


def _insert_interactions(frame: pd.DataFrame, report: Callable[[str, int, int], None]) -> None:
    """Bulk-insert interactions: COPY on PostgreSQL, executemany elsewhere.

    Django's ``bulk_create`` builds one model instance per row, which is several times
    slower at a million rows; the rows here are already validated by ``modeling``.
    """
    meta = Interaction._meta
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    columns = ", ".join(quote(meta.get_field(name).column) for name in _INTERACTION_FIELDS)
    total, done = len(frame), 0
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for rows in _interaction_rows(frame, connection.vendor):
                    for row in rows:
                        copy.write_row(row)
                    done += len(rows)
                    report("interactions", done, total)
        else:
            placeholders = ", ".join(["%s"] * len(_INTERACTION_FIELDS))
            sql = f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"
            for rows in _interaction_rows(frame, connection.vendor):
                cursor.executemany(sql, rows)
                done += len(rows)
                report("interactions", done, total)


def _not_yet_imported(interactions: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``interactions`` (canonical columns) that the database does not hold as imported interactions
    already: the same shopper, product, time (to the second) and event (an interaction held already is not
    changed: its weight, rating and text stay). Read shopper by shopper in batches of
    :data:`~recoapi.catalog.selectors.ID_BATCH_SIZE` ids: every imported interaction of the data's shoppers is
    read, a few seconds per million."""
    import pandas as pd

    users = pd.unique(interactions[ds.USER_ID].astype(str))
    parts = []
    for start in range(0, len(users), ID_BATCH_SIZE):
        batch = list(users[start:start + ID_BATCH_SIZE])
        rows = (Interaction.objects.filter(source=Interaction.IMPORTED, shopper_id__in=batch)
                .values_list("shopper_id", "product_id", "occurred_at", "event"))
        parts.extend((user, item, int(when.timestamp()), event) for user, item, when, event in rows.iterator())
    if not parts:
        return interactions
    stored = pd.DataFrame(parts, columns=[ds.USER_ID, ds.ITEM_ID, ds.TIMESTAMP, ds.EVENT]).drop_duplicates()
    keys = [ds.USER_ID, ds.ITEM_ID, ds.TIMESTAMP, ds.EVENT]
    probe = interactions[keys].astype({ds.USER_ID: str, ds.ITEM_ID: str, ds.TIMESTAMP: "int64", ds.EVENT: str})
    found = probe.merge(stored.assign(_stored=True), on=keys, how="left")["_stored"].fillna(False).to_numpy(bool)
    return interactions[~found]


def data_import(
    *,
    source: str,
    path: Path | str,
    processed_dir: Path | str | None = None,
    force: bool = False,
    filters: ds.InteractionFilters | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    replace: bool = False,
    merge: bool = False,
    wait: bool = True,
    on_wait: Callable[[], None] | None = None,
) -> ImportResult:
    """Import a data source into the database and write its parquet snapshot.

    One import runs at a time (:func:`recoapi.locks.import_lock`): with ``wait`` this one waits for another's to
    end (``on_wait`` is called first), else it is refused.

    The file is read and validated completely before the database is touched; the
    database writes and the snapshot happen in one transaction, so a failure leaves
    both as they were. Re-importing unchanged files is skipped (same fingerprint and
    the same row counts in the database; products added since are allowed). Imported interactions are replaced (with
    ``merge``: kept, the new data's added, an interaction in both once), live events recorded through POST /events
    are kept; products and shoppers are upserted.

    Data of another shop (see :func:`_refuse_another_shop`) is refused unless ``replace``
    or ``merge`` says what to do with the current catalogue. With ``replace`` the products
    and shoppers that are not in the new data are deleted in the same transaction, with
    all their interactions (live events too); the database then holds exactly the
    snapshot's products and shoppers. With ``merge`` they are kept beside the new data, with their interactions.

    Args:
        source: one of ``modeling.sources.SOURCES``.
        filters: optional interaction filters (see :class:`modeling.datasets.InteractionFilters`).
        path: the source's file or directory.
        processed_dir: snapshot directory (default ``settings.RECO_PROCESSED_DIR``).
        force: import even when unchanged.
        progress: called as ``progress(table, done, total)`` while writing.
        replace: remove the products and shoppers that are not in the new data.
        merge: keep them, even when the new data looks like another shop.

    Raises:
        ApplicationError: for an unknown source or invalid files (message names file and line),
            or both ``replace`` and ``merge``.
        Conflict: the data looks like another shop and neither ``replace`` nor ``merge`` is given, or another
            import is running and ``wait`` is False (code ``import_running``).
    """
    if replace and merge:
        raise ApplicationError("Choose replace or merge, not both.", code="invalid")
    processed = Path(processed_dir or settings.RECO_PROCESSED_DIR)
    try:
        data = load_source(source, path, filters=filters, time_bounds=event_time_bounds())
    except DataValidationError as exc:
        raise ApplicationError(str(exc), code="invalid_data") from exc

    with import_lock(wait=wait, on_wait=on_wait) as held:
        if not held:
            raise Conflict("Another import is running; try again when it has finished.", code="import_running")
        return _import_locked(data, source, path, processed, force=force, progress=progress, replace=replace,
                              merge=merge)


def _import_locked(data: ds.CanonicalData, source: str, path: Path | str, processed: Path, *, force: bool,
                   progress: Callable[[str, int, int], None] | None, replace: bool, merge: bool) -> ImportResult:
    """:func:`data_import`'s work once it holds the import lock: what the database holds is read under it (whether
    the import is skipped, the catalogue's fields kept), so an import that waited for another sees what that one
    wrote."""
    import pandas as pd  # imports only: web workers do not load pandas

    manifest = ds.read_snapshot_manifest(processed)
    if (not force and manifest is not None and manifest.get("fingerprint") == data.fingerprint
            and _holds_the_import(_database_counts(), data.counts(), exact_items=replace, merged=merge)
            and (not replace or Shopper.objects.count() == data.counts()["users"])):
        logger.info("data unchanged (%s), import skipped", data.fingerprint[:12])
        return ImportResult(source=source, path=str(path), skipped=True, counts=data.counts(), report=data.report,
                            fingerprint=data.fingerprint, notes=data.notes)

    report = progress or (lambda table, done, total: None)
    data.items = _keep_catalogue_fields(data.items, data.report)
    items = data.items
    products = [
        Product(id=row.item_id, title=row.title or "", description=row.description or "", brand=row.brand or "",
                category=row.category or "", price=None if pd.isna(row.price) else float(row.price))
        for row in items.itertuples(index=False)
    ]
    shoppers = [Shopper(id=user_id) for user_id in data.users[ds.USER_ID].astype(str)]

    removed = {"products": 0, "shoppers": 0}
    with transaction.atomic():
        if replace:
            removed = _remove_absent(data)
        elif not merge:
            _refuse_another_shop(data, source, path)
        new_interactions = data.interactions
        if merge:  # the interactions already imported stay: the new data's are added, each one once
            new_interactions = _not_yet_imported(data.interactions)
            data.report["interactions_already_imported"] = len(data.interactions) - len(new_interactions)
        else:
            with connection.cursor() as cursor:
                # Live events (POST /events) survive a reload; imported interactions are replaced.
                source_column = connection.ops.quote_name(Interaction._meta.get_field("source").column)
                cursor.execute(f"DELETE FROM {connection.ops.quote_name(Interaction._meta.db_table)} "
                               f"WHERE {source_column} = %s", [Interaction.IMPORTED])
                if cursor.rowcount > 0:  # said: a later export of new events only drops the history before it
                    data.report["earlier_imported_interactions_replaced"] = cursor.rowcount
        for sl in _batches(len(products)):
            Product.objects.bulk_create(
                products[sl], update_conflicts=True, unique_fields=["id"],
                update_fields=["title", "description", "brand", "category", "price", "updated_at"],
            )
            report("products", min(sl.stop, len(products)), len(products))
        for sl in _batches(len(shoppers)):
            Shopper.objects.bulk_create(shoppers[sl], ignore_conflicts=True)
            report("shoppers", min(sl.stop, len(shoppers)), len(shoppers))
        _insert_interactions(new_interactions, report)
        # Last step inside the transaction: if the snapshot cannot be written, nothing is committed.
        ds.write_snapshot(data, processed, source=source)
    logger.info("imported %s from %s: %s; removed %s", source, path, data.counts(), removed)
    return ImportResult(source=source, path=str(path), skipped=False, counts=data.counts(), report=data.report,
                        fingerprint=data.fingerprint, removed=removed, notes=data.notes)



EVENT_WEIGHTS: dict[str, float] = {"view": 1.0, "cart": 2.0, "purchase": 3.0, "review": 1.0, "rating": 1.0}


PRODUCT_FIELDS: tuple[str, ...] = ("title", "description", "brand", "category", "price", "available")


@dataclass
class UpsertResult:
    """What :func:`products_upsert` did: the products as stored, and which of them are new."""

    products: list[Product]
    created: list[str]


def products_upsert(rows: list[dict[str, object]]) -> UpsertResult:
    """Create or update products, all or none, in one transaction.

    Each row has ``id`` and any of :data:`PRODUCT_FIELDS`; a field left out keeps its stored value
    (a new product gets the model's default: empty text, no price, available). The same id twice in
    one call: the later row wins. Every written product's ``updated_at`` is now, which is how each
    serving worker finds the change on its next request (see the recommendations engine).

    Args:
        rows: validated rows, e.g. ``[{"id": "P1", "title": "Mug", "price": 9.5}, {"id": "P2", "available": False}]``.
    """
    merged: dict[str, dict[str, object]] = {}
    for row in rows:
        merged.setdefault(str(row["id"]), {}).update({k: v for k, v in row.items() if k != "id"})
    ids = sorted(merged)
    now = timezone.now()
    with transaction.atomic():
        stored: dict[str, Product] = {}
        for sl in _batches(len(ids), ID_BATCH_SIZE):
            stored.update((p.id, p) for p in Product.objects.select_for_update().filter(id__in=ids[sl]))
        products = []
        for product_id in ids:
            product = stored.get(product_id) or Product(id=product_id)
            for name, value in merged[product_id].items():
                setattr(product, name, "" if value is None and name != "price" else value)
            product.updated_at = now
            products.append(product)
        for sl in _batches(len(products)):
            Product.objects.bulk_create(products[sl], update_conflicts=True,
                                        unique_fields=["id"], update_fields=[*PRODUCT_FIELDS, "updated_at"])
    created = [product_id for product_id in ids if product_id not in stored]
    logger.info("products upserted: %d new, %d updated", len(created), len(ids) - len(created))
    return UpsertResult(products=products, created=created)


@dataclass(frozen=True)
class EventSpec:
    """One live event as a client sends it (``event_id``: the client's id that makes a retry harmless)."""

    user_id: str
    item_id: str
    event: str
    occurred_at: datetime | None = None
    weight: float | None = None
    rating: float | None = None
    text: str | None = None
    event_id: str | None = None
    recommendation_id: str | None = None


@dataclass
class RecordResult:
    """What :func:`interactions_record` did: the stored rows, and the events whose id was stored before
    (by an earlier request, or earlier in the same batch), each with the row that holds it."""

    stored: list[Interaction]
    duplicates: list[Interaction]


def interaction_record(
    *,
    user_id: str,
    item_id: str,
    event: str,
    occurred_at: datetime | None = None,
    weight: float | None = None,
    rating: float | None = None,
    text: str | None = None,
) -> Interaction:
    """Store one live event; an unknown shopper is created, the product must exist.

    The shopper's next recommendations see it at once: the product is excluded, and a
    shopper the model does not know moves from "popular" to "content".

    Raises:
        ApplicationError: ``occurred_at`` is before RECO_EVENT_MIN_TIME or more than
            RECO_EVENT_MAX_FUTURE_SECONDS in the future (code ``invalid``, 400).
        NotFound: the product is not in the catalogue.
    """
    result = interactions_record([EventSpec(user_id, item_id, event, occurred_at, weight, rating, text)])
    return result.stored[0]


def interactions_record(events: list[EventSpec], *, attempts: int = 3) -> RecordResult:
    """Store a batch of live events, all or none; unknown shoppers are created, every product must exist.

    An event whose ``event_id`` is already stored (or repeats one earlier in the batch) is not stored
    again; it is returned among the duplicates with the row that holds it. One whose ``event_id`` is another
    event's (another shopper, product or event kind) is refused: the id was reused, and the event would be lost.
    Two requests racing with the same new id: the database's unique constraint refuses the second, which is
    retried and then finds the first's row (``attempts`` tries in all).

    Raises:
        ApplicationError: an event's time is outside the accepted range (code ``invalid``, 400); the
            message names each such event (its position in the batch when there is more than one; the first
            :data:`NAMED_PROBLEMS`, then how many more).
        NotFound: a product is not in the catalogue (code ``unknown_item``, 404), each such event named as above.
        Conflict: an ``event_id`` is another event's (code ``event_id_taken``, 409), named with its position.
    """
    def where(position: int) -> str:
        return event_place(position, len(events))

    bounds = event_time_bounds()
    early_or_late = [f"{where(position)}timestamp: {spec.occurred_at.isoformat()}"
                     for position, spec in enumerate(events) if spec.occurred_at is not None
                     and not bounds.earliest <= spec.occurred_at.timestamp() <= bounds.latest]
    if early_or_late:
        raise ApplicationError(
            f"{_listed(early_or_late)} {'is' if len(early_or_late) == 1 else 'are'} outside the accepted range "
            f"{bounds.describe()} (at most {settings.RECO_EVENT_MAX_FUTURE_SECONDS} seconds in the future).",
            code="invalid")
    wanted = sorted({spec.item_id for spec in events})
    known: set[str] = set()
    for sl in _batches(len(wanted), ID_BATCH_SIZE):
        known.update(Product.objects.filter(id__in=wanted[sl]).values_list("id", flat=True))
    unknown = [f"{where(position)}item: product {spec.item_id!r}" for position, spec in enumerate(events)
               if spec.item_id not in known]
    if unknown:
        raise NotFound(f"{_listed(unknown)} {'is' if len(unknown) == 1 else 'are'} not in the catalogue.",
                       code="unknown_item")
    for attempt in range(1, attempts + 1):
        try:
            return _store_events(events)
        except IntegrityError:  # another request stored one of these event ids since our check
            if attempt == attempts:
                raise
            logger.info("event id stored concurrently; retrying the batch (attempt %d)", attempt + 1)
    raise AssertionError("unreachable")


def event_place(position: int, count: int) -> str:
    """How a refusal names the event at ``position`` of ``count`` sent: ``"events[3]."`` in a list, nothing for one
    event alone (its field names need no place)."""
    return f"events[{position}]." if count > 1 else ""


NAMED_PROBLEMS = 10
"""How many of a list's events that fail one check a refusal names (a count stands for the rest)."""


def _listed(problems: list[str]) -> str:
    """The first :data:`NAMED_PROBLEMS` of ``problems`` joined by "; ", and how many more there are: a client sending
    a list learns of every bad event at once, not of one per attempt."""
    named = "; ".join(problems[:NAMED_PROBLEMS])
    rest = len(problems) - NAMED_PROBLEMS
    return f"{named} (and {rest} more event{'s' if rest > 1 else ''})" if rest > 0 else named


def _store_events(events: list[EventSpec]) -> RecordResult:
    now = timezone.now()
    with transaction.atomic():
        ids = sorted({spec.event_id for spec in events if spec.event_id})
        earlier: dict[str, Interaction] = {}
        for sl in _batches(len(ids), ID_BATCH_SIZE):
            earlier.update((row.event_id, row) for row in Interaction.objects.filter(event_id__in=ids[sl]))
        users = sorted({spec.user_id for spec in events})
        for sl in _batches(len(users), ID_BATCH_SIZE):
            Shopper.objects.bulk_create([Shopper(id=user) for user in users[sl]], ignore_conflicts=True)
        rows: list[Interaction] = []
        duplicates: list[Interaction] = []
        batch: dict[str, Interaction] = {}
        for position, spec in enumerate(events):
            if spec.event_id and (spec.event_id in earlier or spec.event_id in batch):
                held = earlier.get(spec.event_id) or batch[spec.event_id]
                if (held.shopper_id, held.product_id, held.event) != (spec.user_id, spec.item_id, spec.event):
                    raise Conflict(f"{event_place(position, len(events))}event_id: {spec.event_id!r} is the id of "
                                   f"another event (shopper {held.shopper_id!r}, product {held.product_id!r}, "
                                   f"{held.event}): an event_id "
                                   "names one event, resent as it was on a retry; give this one its own.",
                                   code="event_id_taken")
                duplicates.append(held)  # the stored row, or this batch's own (stored below)
                continue
            row = Interaction(
                shopper_id=spec.user_id, product_id=spec.item_id, event=spec.event,
                occurred_at=spec.occurred_at or now,
                weight=EVENT_WEIGHTS[spec.event] if spec.weight is None else spec.weight, rating=spec.rating,
                text=spec.text or None, source=Interaction.LIVE, event_id=spec.event_id or None,
                recommendation_id=spec.recommendation_id or None,
            )
            rows.append(row)
            if spec.event_id:
                batch[spec.event_id] = row
        Interaction.objects.bulk_create(rows, batch_size=BATCH_SIZE)
    return RecordResult(stored=rows, duplicates=duplicates)
