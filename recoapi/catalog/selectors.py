"""Reads of the catalogue."""

from __future__ import annotations

import functools
import random
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import DatabaseError, connection, transaction
from django.db.models import Count, Max
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from modeling import datasets as ds
from recoapi.catalog.models import Interaction, Product, Shopper


def shopper_random_ids(*, n: int, seed: int | None = None) -> list[str]:
    """Up to ``n`` distinct shopper ids drawn at random (uniformly over the table)."""
    total = Shopper.objects.count()
    if total == 0:
        return []
    rng = random.Random(seed)
    if total <= 2000:
        ids = list(Shopper.objects.values_list("id", flat=True))
        return rng.sample(ids, min(n, total))
    offsets = rng.sample(range(total), min(n, total))
    return _ids_at(offsets)


def _ids_at(offsets: list[int]) -> list[str]:
    """The shopper ids at ``offsets`` of the table in id order (each the id ``OFFSET offset`` would read), in the
    order of ``offsets``; offsets past the end (rows deleted meanwhile) are left out.

    The offsets are read in increasing order, each query starting after the id found by the one before, so the
    index is walked once in all: a query per offset from the start walked it 100 times for ``n=100`` (131 ms at
    200,000 shoppers against 7 ms, SQLite, the serving benchmark's database). Hand-written SQL, as the ORM's
    queryset took longer to build than these take to run."""
    quote = connection.ops.quote_name
    column, table = quote(Shopper._meta.pk.column), quote(Shopper._meta.db_table)
    first = f"SELECT {column} FROM {table} ORDER BY {column} LIMIT 1 OFFSET %s"
    after = f"SELECT {column} FROM {table} WHERE {column} > %s ORDER BY {column} LIMIT 1 OFFSET %s"
    found: dict[int, str] = {}
    last, position = None, -1
    with connection.cursor() as cursor:
        for offset in sorted(offsets):
            skip = offset - position - 1
            if last is None:
                cursor.execute(first, [skip])
            else:
                cursor.execute(after, [last, skip])
            row = cursor.fetchone()
            if row is None:
                break
            last, position = row[0], offset
            found[offset] = last
    return [found[offset] for offset in offsets if offset in found]


def product_any_among(*, ids: Sequence[str], batch: int = 10_000) -> bool | None:
    """Whether any of ``ids`` is a product in the database (batches of ``batch`` ids, stopping at the first that
    holds one); None when the database has no product at all."""
    if not Product.objects.exists():
        return None
    return any(Product.objects.filter(id__in=list(ids[start:start + batch])).exists()
               for start in range(0, len(ids), batch))


def product_count() -> int:
    """How many products the database holds."""
    return Product.objects.count()


def shopper_existing_ids(*, ids: list[str]) -> set[str]:
    """The subset of ``ids`` that are shoppers in the database (one hand-written indexed query)."""
    if not ids:
        return set()
    quote = connection.ops.quote_name
    column = quote(Shopper._meta.pk.column)
    sql = (f"SELECT {column} FROM {quote(Shopper._meta.db_table)} "
           f"WHERE {column} IN ({', '.join(['%s'] * len(ids))})")
    with connection.cursor() as cursor:
        cursor.execute(sql, list(ids))
        return {row[0] for row in cursor.fetchall()}


def product_latest_update() -> datetime | None:
    """The newest ``updated_at`` of the catalogue (None when it is empty).

    Every recommendation request asks it (to serve catalogue changes at once), so it is one hand-written
    query on the index: the ORM's aggregate cost ten times as much to build as to run.
    """
    quote = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT MAX({quote(Product._meta.get_field('updated_at').column)}) "
                       f"FROM {quote(Product._meta.db_table)}")
        value = cursor.fetchone()[0]
    if isinstance(value, str):  # SQLite keeps datetimes as text, in UTC (what Django's own converter reads)
        value = parse_datetime(value)
    if value is not None and timezone.is_naive(value):
        value = timezone.make_aware(value, UTC)
    return value


ID_BATCH_SIZE = 500  # ids per "... WHERE id IN (...)", well below every database's parameter limit
PRODUCT_COLUMNS: tuple[str, ...] = ("id", "title", "description", "brand", "category", "price", "available")
"""The columns of a whole product row, in the order :func:`product_rows` and :func:`product_rows_changed`
give them."""


def product_rows(*, ids: list[str]) -> list[tuple]:
    """The whole rows (:data:`PRODUCT_COLUMNS`) of the products ``ids`` names, in no particular order;
    ids not in the catalogue are left out. Read ``ID_BATCH_SIZE`` ids per query."""
    return [row for start in range(0, len(ids), ID_BATCH_SIZE)
            for row in Product.objects.filter(id__in=ids[start:start + ID_BATCH_SIZE]).order_by()
            .values_list(*PRODUCT_COLUMNS)]


def product_rows_changed(*, since: datetime | None) -> list[tuple]:
    """The whole rows (:data:`PRODUCT_COLUMNS`) of the products updated after ``since`` (every product
    when it is None), sorted by id.

    Unordered in SQL, so the database searches the ``updated_at`` index: the model's default ordering (by
    id) made SQLite walk the whole table in id order (116 ms at 400,000 products, in every worker).
    """
    query = Product.objects.order_by()
    if since is not None:
        query = query.filter(updated_at__gt=since)
    return sorted(query.values_list(*PRODUCT_COLUMNS), key=lambda row: row[0])


def product_pages(*, page: int = 10_000) -> Iterator[list[tuple]]:
    """Every product as ``(id, title, None, brand, category, price, None)`` (the columns of a full product
    row, without description and availability), ``page`` rows at a time, in no particular order.

    A serving worker reads the whole catalogue at start: one hand-written query, streamed by a server-side
    cursor on PostgreSQL. Through the ORM the descriptions (the longest column, not shown in answers) were
    read too and every row went through the field converters: the product table took 0.65 to 0.75 s of a
    worker's start at 100,000 products that way, 0.47 s this way.
    """
    meta, quote = Product._meta, connection.ops.quote_name
    columns = [quote(meta.get_field(name).column) for name in ("id", "title", "brand", "category", "price")]
    sql = (f"SELECT {columns[0]}, {columns[1]}, NULL, {columns[2]}, {columns[3]}, {columns[4]}, NULL "
           f"FROM {quote(meta.db_table)}")
    with connection.chunked_cursor() as cursor:  # as QuerySet.iterator reads (held open in autocommit)
        cursor.execute(sql)
        while rows := cursor.fetchmany(page):
            yield [tuple(row) for row in rows]


# Unix seconds computed by the database: the serving hot path then builds no datetime objects.
_EPOCH_SQL = {
    "sqlite": "CAST(strftime('%%s', {column}) AS INTEGER)",
    "postgresql": "CAST(EXTRACT(EPOCH FROM {column}) AS BIGINT)",
}


def product_unavailable_ids() -> list[str]:
    """Ids of the products marked out of stock (usually few).

    Serving asks every few seconds, so the query must use the partial index on unavailable products:
    without ``order_by()`` the model's default ordering (by id) made SQLite walk the whole table in id
    order instead (97 ms at 400,000 products against 0.6 ms), a stall in every worker every few seconds.
    """
    return list(Product.objects.filter(available=False).order_by().values_list("id", flat=True))


HISTORY_QUERY_SHOPPERS = 100
"""Shoppers per query of :func:`shopper_histories` (one subquery each)."""


def shopper_histories(*, ids: list[str], limit: int | None = None) -> dict[str, list[tuple[str, int, float, str]]]:
    """Each shopper's most recent ``limit`` interactions (``RECO_HISTORY_LIMIT`` when None) as ``(product_id,
    unix_seconds, weight, event)``, oldest first (equal times in the order they were stored).

    Shoppers without interactions are absent from the result. This runs on every
    recommendation request, so it is one hand-written indexed query (the ORM's query
    building costs more than the query itself at this size): one ``LIMIT`` subquery per shopper, each reading the
    ``(shopper, occurred_at)`` index backwards, so a shopper with 100,000 events (a crawler's) costs what one with
    ``limit`` does.
    """
    limit = settings.RECO_HISTORY_LIMIT if limit is None else limit
    histories: dict[str, list[tuple[str, int, float, str]]] = defaultdict(list)
    if not ids:
        return {}
    epoch = _EPOCH_SQL.get(connection.vendor)
    if epoch is None:  # another database: the portable ORM query, a shopper at a time
        for shopper_id in dict.fromkeys(ids):
            rows = (Interaction.objects.filter(shopper_id=shopper_id).order_by("-occurred_at", "-id")
                    .values_list("product_id", "occurred_at", "weight", "event")[:limit])
            for product_id, occurred_at, weight, event in reversed(list(rows)):
                histories[shopper_id].append((product_id, int(occurred_at.timestamp()), float(weight), event))
        return dict(histories)
    meta, quote = Interaction._meta, connection.ops.quote_name
    shopper, product, occurred, weight, event, key = (
        quote(meta.get_field(name).column) for name in ("shopper", "product", "occurred_at", "weight", "event", "id"))
    one = (f"SELECT * FROM (SELECT {shopper} AS s, {product} AS p, {epoch.format(column=occurred)} AS t, {weight} "
           f"AS w, {event} AS e, {key} AS k FROM {quote(meta.db_table)} WHERE {shopper} = %s "
           f"ORDER BY {occurred} DESC, {key} DESC LIMIT {int(limit)}) AS h{{n}}")
    unique = list(dict.fromkeys(ids))
    with connection.cursor() as cursor:
        for start in range(0, len(unique), HISTORY_QUERY_SHOPPERS):  # SQLite: at most 500 SELECTs in one compound
            part = unique[start:start + HISTORY_QUERY_SHOPPERS]
            cursor.execute(" UNION ALL ".join(one.format(n=n) for n in range(len(part))) + " ORDER BY s, t, k", part)
            for shopper_id, product_id, seconds, w, e, _ in cursor.fetchall():
                histories[shopper_id].append((product_id, int(seconds), float(w), e))
    return dict(histories)


def shopper_activity(*, ids: list[str]) -> dict[str, tuple[int, datetime]]:
    """Interaction count and latest interaction time of each of a few shoppers (e.g. one admin page).

    One grouped query over those shoppers' rows only (the ``(shopper, occurred_at)`` index
    answers it), never a count over the whole interaction table. Shoppers without
    interactions are absent from the result.
    """
    if not ids:
        return {}
    rows = (Interaction.objects.filter(shopper_id__in=ids).order_by().values("shopper_id")
            .annotate(n=Count("id"), last=Max("occurred_at")).values_list("shopper_id", "n", "last"))
    return {shopper_id: (int(n), last) for shopper_id, n, last in rows}


@contextmanager
def _consistent_read() -> Iterator[None]:
    """Every query inside sees the database at one moment, without blocking writers.

    PostgreSQL: a REPEATABLE READ, READ ONLY transaction. SQLite: a deferred transaction (in WAL mode a
    reader keeps its snapshot while writers go on); Django's own transactions begin IMMEDIATE there
    (see settings), which would hold the write lock for the whole read.
    """
    outermost = connection.get_autocommit()
    if connection.vendor == "postgresql" or not outermost:
        with transaction.atomic():
            if connection.vendor == "postgresql" and outermost:  # the first statement of the transaction
                with connection.cursor() as cursor:
                    cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield
        return
    connection.ensure_connection()
    with connection.cursor() as cursor:
        cursor.execute("BEGIN DEFERRED")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("COMMIT")


def training_data(*, since_days: float | None = None) -> ds.CanonicalData:
    """The catalogue and its interactions (imported and live) as canonical tables, read at one moment.

    Args:
        since_days: keep only interactions in the last ``since_days`` days before the newest one
            (None: all).

    Returns:
        Canonical data with every product (interacted or not); its fingerprint is a sha256 of the
        tables' contents, so the same database gives the same fingerprint. ``report["last_interaction_id"]``:
        the largest interaction id in the database at that moment (ids grow with every insert and are never
        reused), what a model trained on this data records as the end of what it read.

    Raises:
        DataValidationError: no interactions (in the window).
    """
    import pandas as pd  # only here: web workers do not load pandas
    with _consistent_read():
        items = pd.DataFrame.from_records(
            list(Product.objects.order_by("id").values_list("id", "title", "description", "brand", "category",
                                                               "price").iterator(chunk_size=20_000)),
            columns=list(ds.ITEM_COLUMNS))
        query = Interaction.objects.all()
        bounds = query.aggregate(latest=Max("occurred_at"), last_id=Max("id"))
        latest = bounds["latest"]
        if since_days is not None and latest is not None:
            query = query.filter(occurred_at__gte=latest - timedelta(days=since_days))
        rows = list(query.values_list("shopper_id", "product_id", "occurred_at", "event", "weight", "rating", "text",
                                      "source").iterator(chunk_size=50_000))
    frame = pd.DataFrame.from_records(rows, columns=[ds.USER_ID, ds.ITEM_ID, "occurred_at", ds.EVENT, ds.WEIGHT,
                                                      ds.RATING, ds.TEXT, "source"])
    moments = pd.to_datetime(frame["occurred_at"], utc=True)
    frame[ds.TIMESTAMP] = (moments - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)
    report = {"database_interactions": len(frame), "live_interactions": int((frame["source"] == "live").sum()),
              "products": len(items), "last_interaction_id": bounds["last_id"]}
    frame = frame.drop(columns=["occurred_at", "source"])
    frame[ds.RATING] = pd.to_numeric(frame[ds.RATING], errors="coerce")
    data = ds.finish_tables(items, frame, report=report, fingerprint="", source_name="database", keep_items="all",
                            from_files=False)
    data.fingerprint = ds.content_fingerprint(data.items, data.interactions,
                                              salt="" if since_days is None else f"since_days={since_days}")
    return data


def database_state() -> str:
    """``"ok"``, or why the service's tables cannot be read: ``"unavailable"`` (unreachable), ``"not_migrated"``
    (no tables: ``migrate`` was not run) or ``"missing"`` (PostgreSQL: no such database), the code of
    :func:`recoapi.exceptions.database_error_parts` without its ``database_`` prefix.

    Reads one of the service's own tables: ``SELECT 1`` answered on a database without them."""
    from recoapi.exceptions import database_error_parts

    try:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT 1 FROM {connection.ops.quote_name(Product._meta.db_table)} LIMIT 1")
        return "ok"
    except DatabaseError as exc:
        return database_error_parts(exc)[0].removeprefix("database_")


def pending_migrations() -> list[str]:
    """This version's latest migrations that the database has not applied (``"app.name"``, sorted): after an
    upgrade without ``migrate`` the earlier tables still answer while a new one is missing. Empty when the
    database cannot be read (:func:`database_state` says why)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT app, name FROM django_migrations")
            applied = set(cursor.fetchall())
    except DatabaseError:
        return []
    return sorted(f"{app}.{name}" for app, name in _latest_migrations() - applied)


@functools.cache
def _latest_migrations() -> frozenset[tuple[str, str]]:
    """``(app, name)`` of the latest migration of every app of this version (read from the code once a process)."""
    from django.db.migrations.loader import MigrationLoader

    return frozenset(MigrationLoader(None, ignore_no_migrations=True).graph.leaf_nodes())
