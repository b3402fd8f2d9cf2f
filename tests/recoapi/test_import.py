"""The import service: one transaction, idempotent, every source, filters from the command line."""

from __future__ import annotations

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from modeling import datasets as ds
from recoapi.catalog.models import Interaction, Product, Shopper
from recoapi.catalog.services import data_import, interaction_record
from recoapi.exceptions import ApplicationError, Conflict
from tests.conftest import Pipeline


def rows() -> list[tuple]:
    return list(Interaction.objects.order_by("shopper_id", "occurred_at", "product_id")
                .values_list("shopper_id", "product_id", "occurred_at", "event", "weight", "rating", "text"))


@pytest.mark.django_db
def test_import_matches_the_canonical_tables(pipeline: Pipeline, tmp_path: Path) -> None:
    result = data_import(source="amazon2018", path=pipeline.raw, processed_dir=tmp_path)
    assert result.counts == pipeline.data.counts()
    assert Interaction.objects.count() == len(pipeline.data.interactions)
    first = pipeline.data.interactions.iloc[0]
    stored = Interaction.objects.filter(shopper_id=first[ds.USER_ID], product_id=first[ds.ITEM_ID]).get()
    assert int(stored.occurred_at.timestamp()) == int(first[ds.TIMESTAMP])
    assert stored.rating == first[ds.RATING] and stored.text == first[ds.TEXT] and stored.event == "review"
    product = Product.objects.get(id=pipeline.data.items[ds.ITEM_ID].iloc[0])
    assert product.title == pipeline.data.items[ds.TITLE].iloc[0]
    assert ds.read_snapshot(tmp_path).counts() == result.counts


@pytest.mark.django_db
def test_reimport_is_idempotent(pipeline: Pipeline, tmp_path: Path) -> None:
    data_import(source="amazon2018", path=pipeline.raw, processed_dir=tmp_path)
    before = rows()
    assert data_import(source="amazon2018", path=pipeline.raw, processed_dir=tmp_path).skipped is True
    forced = data_import(source="amazon2018", path=pipeline.raw, processed_dir=tmp_path, force=True)
    assert forced.skipped is False
    assert rows() == before
    assert Shopper.objects.count() == pipeline.data.counts()["users"]


@pytest.mark.django_db
def test_failed_import_leaves_database_and_snapshot_as_they_were(pipeline: Pipeline, tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    data_import(source="amazon2018", path=pipeline.raw, processed_dir=tmp_path)
    before, manifest = rows(), ds.read_snapshot_manifest(tmp_path)

    def broken_snapshot(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ds, "write_snapshot", broken_snapshot)
    with pytest.raises(OSError, match="disk full"):
        data_import(source="amazon2018", path=pipeline.raw, processed_dir=tmp_path, force=True)
    assert rows() == before
    assert ds.read_snapshot_manifest(tmp_path) == manifest


@pytest.mark.django_db
def test_invalid_file_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    (tmp_path / "interactions.csv").write_text("user_id,item_id,timestamp\na,x,1\nb,y,soon\n")
    with pytest.raises(ApplicationError, match=r"interactions\.csv, line 3"):
        data_import(source="csv", path=tmp_path, processed_dir=tmp_path / "processed")
    assert Interaction.objects.count() == 0 and Shopper.objects.count() == 0
    assert not (tmp_path / "processed").exists()


@pytest.mark.django_db
def test_a_value_too_long_for_its_column_is_named_and_nothing_is_written(tmp_path: Path, settings) -> None:
    """PostgreSQL refused it deep in the transaction ('the database cannot be used: value too long...', no file or
    line; POST /reload_data answered 503 'try again shortly'); SQLite stored it."""
    settings.RECO_PROCESSED_DIR = tmp_path / "processed"
    (tmp_path / "interactions.csv").write_text("user_id,item_id,timestamp\na,x,1700000000\n")
    (tmp_path / "items.csv").write_text("item_id,title,brand\nx,Mug,Acme\n\ny,Jug," + "b" * 300 + "\n")
    with pytest.raises(CommandError, match=r"items\.csv, line 4: column 'brand': .* the database stores at most 255"):
        call_command("load_data", "--source", "csv", "--path", str(tmp_path), stdout=StringIO(), stderr=StringIO())
    assert Product.objects.count() == 0 and Interaction.objects.count() == 0
    assert not (tmp_path / "processed").exists()


@pytest.mark.django_db
def test_load_data_command_with_csv_source_and_filters(tmp_path: Path, settings) -> None:
    settings.RECO_PROCESSED_DIR = tmp_path / "processed"
    lines = ["user_id,item_id,timestamp,event"]
    lines += [f"u{u},p{i},{1_700_000_000 + i},view" for u in range(5) for i in range(u + 1)]
    (tmp_path / "interactions.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "items.csv").write_text("item_id,title,price\np0,Mug,3\np9,Never bought,4\n")
    out = StringIO()
    call_command("load_data", "--source", "csv", "--path", str(tmp_path), "--min-user-interactions", "3",
                 stdout=out, stderr=StringIO())
    assert "Imported 3 shoppers" in out.getvalue()
    assert set(Shopper.objects.values_list("id", flat=True)) == {"u2", "u3", "u4"}
    assert Product.objects.filter(id="p9").exists()  # catalogue rows stay without interactions
    assert "filtered_interactions=3" in out.getvalue()


@pytest.mark.django_db
def test_a_later_export_without_a_flag_says_it_replaced_the_interactions_imported_before(tmp_path: Path,
                                                                                         settings) -> None:
    """A second export of the same shop holding only the new week's events dropped the 27,616 events imported
    before (the README says so), and the output said nothing of it."""
    settings.RECO_PROCESSED_DIR = tmp_path / "processed"
    week1, week2 = tmp_path / "week1", tmp_path / "week2"
    for folder, rows in ((week1, ["u1,p1,1700000000", "u1,p2,1700000001", "u2,p1,1700000002"]),
                         (week2, ["u3,p2,1700600000"])):
        folder.mkdir()
        (folder / "interactions.csv").write_text("user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    call_command("load_data", "--source", "csv", "--path", str(week1), stdout=StringIO())
    out = StringIO()
    call_command("load_data", "--source", "csv", "--path", str(week2), stdout=out)
    assert "earlier_imported_interactions_replaced=3" in out.getvalue()
    assert "The 3 interactions imported before were replaced by these files' (--merge keeps them" in out.getvalue()
    assert Interaction.objects.count() == 1
    out = StringIO()
    call_command("load_data", "--source", "csv", "--path", str(week1), "--merge", stdout=out)
    assert "replaced" not in out.getvalue() and Interaction.objects.count() == 4


@pytest.mark.django_db
def test_load_data_names_the_columns_it_did_not_read(tmp_path: Path, settings) -> None:
    settings.RECO_PROCESSED_DIR = tmp_path / "processed"
    (tmp_path / "interactions.csv").write_text("user_id,item_id,timestamp\na,x,1700000000\n")
    (tmp_path / "items.csv").write_text("item_id,title,Category\nx,Mug,Kitchen\n")  # the column names are exact
    out = StringIO()
    call_command("load_data", "--source", "csv", "--path", str(tmp_path), stdout=out, stderr=StringIO())
    assert "Note: items.csv: column(s) 'Category' not read; the columns this source reads are item_id" in out.getvalue()


@pytest.mark.django_db
def test_load_data_drops_and_counts_events_at_implausible_times(tmp_path: Path, settings) -> None:
    # Issue 12: the importers apply the bounds of POST /events (RECO_EVENT_MIN_TIME, RECO_EVENT_MAX_FUTURE_SECONDS).
    settings.RECO_PROCESSED_DIR = tmp_path / "processed"
    (tmp_path / "interactions.csv").write_text("user_id,item_id,timestamp\n"
                                               "a,x,1700000000\nb,x,1800-01-01\nb,y,3000-01-01\nc,y,1700000100\n")
    out = StringIO()
    call_command("load_data", "--source", "csv", "--path", str(tmp_path), stdout=out, stderr=StringIO())
    assert "Imported 2 shoppers" in out.getvalue() and "out_of_range_time=2" in out.getvalue()
    assert set(Interaction.objects.values_list("shopper_id", flat=True)) == {"a", "c"}
    assert ds.read_snapshot(tmp_path / "processed").report["out_of_range_time"] == 2


@pytest.mark.django_db
def test_load_data_command_reports_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "events.csv").write_text("timestamp,visitorid,event,itemid\n1,2,view,3\n1,2,buy,3\n")
    with pytest.raises(CommandError, match=r"events\.csv, line 3: column 'event': 'buy'"):
        call_command("load_data", "--source", "retailrocket", "--path", str(tmp_path), stdout=StringIO(),
                     stderr=StringIO())


@pytest.mark.django_db
def test_load_data_command_with_a_clickstream(tmp_path: Path, settings) -> None:
    settings.RECO_PROCESSED_DIR = tmp_path / "processed"
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "e-shop clothing 2008.csv").write_text(
        "year;month;day;order;country;session ID;page 1 (main category);page 2 (clothing model);colour;location;"
        "model photography;price;price 2;page\n"
        "2008;4;1;1;29;1;1;A13;1;5;1;28;2;1\n2008;4;1;2;29;1;3;C56;3;6;2;38;2;2\n2008;4;2;1;21;2;3;C56;3;6;2;38;2;2\n")
    out = StringIO()
    call_command("load_data", "--source", "clickstream", "--path", str(raw), stdout=out, stderr=StringIO())
    assert "Imported 2 shoppers, 2 products, 3 interactions" in out.getvalue()
    assert set(Shopper.objects.values_list("id", flat=True)) == {"s1", "s2"}
    blouse = Product.objects.get(id="C56")
    assert (blouse.title, blouse.category, blouse.price) == ("Blouses C56, blue", "Blouses", 38.0)
    assert list(Interaction.objects.filter(shopper_id="s1").order_by("occurred_at")
                .values_list("product_id", "event")) == [("A13", "view"), ("C56", "view")]
    assert ds.read_snapshot_manifest(tmp_path / "processed")["source"] == "clickstream"

    (raw / "e-shop clothing 2008.csv").write_text("year;month;day;order;country;session ID;page 1 (main category);"
                                                  "page 2 (clothing model);colour;location;model photography;"
                                                  "price;price 2;page\n2008;4;1;first;29;1;1;A13;1;5;1;28;2;1\n")
    with pytest.raises(CommandError, match=r"e-shop clothing 2008\.csv, line 2: column 'order': 'first' is not an"):
        call_command("load_data", "--source", "clickstream", "--path", str(raw), stdout=StringIO(),
                     stderr=StringIO())
    assert Interaction.objects.count() == 3  # the refused file changed nothing


@pytest.mark.django_db
def test_migrations_match_the_models() -> None:
    call_command("makemigrations", "--check", "--dry-run", stdout=StringIO(), stderr=StringIO())


def _other_shop(path: Path) -> Path:
    path.mkdir()
    (path / "interactions.csv").write_text("user_id,item_id,timestamp\ntea-1,TEA-1,1700000000\n"
                                           "tea-2,TEA-2,1700000100\n")
    return path


@pytest.mark.django_db
def test_another_shops_data_is_refused_unless_replace_or_merge_is_chosen(pipeline: Pipeline, tmp_path: Path) -> None:
    # Issue 12: a plain import of another shop never silently mixes the two catalogues.
    data_import(source="amazon2018", path=pipeline.raw, processed_dir=tmp_path / "processed")
    demo = (Product.objects.count(), Shopper.objects.count(), Interaction.objects.count())
    shop = _other_shop(tmp_path / "tea")
    with pytest.raises(Conflict, match="shares 0 of its 2 products") as refused:
        data_import(source="csv", path=shop, processed_dir=tmp_path / "processed")
    assert refused.value.status_code == 409 and refused.value.code == "other_shop"
    # It names the files it read: POST /reload_data reads RECO_DATA_PATH, which may still be the demo's folder.
    assert f"the csv files at {shop}" in refused.value.message and "RECO_DATA_PATH" in refused.value.message
    assert (Product.objects.count(), Shopper.objects.count(), Interaction.objects.count()) == demo
    with pytest.raises(ApplicationError, match="not both"):
        data_import(source="csv", path=shop, processed_dir=tmp_path / "processed", replace=True, merge=True)

    merged = data_import(source="csv", path=shop, processed_dir=tmp_path / "processed", merge=True)
    assert merged.removed == {"products": 0, "shoppers": 0}
    assert Product.objects.count() == demo[0] + 2 and Shopper.objects.count() == demo[1] + 2
    # The demo's interactions stay beside the new shop's (they were deleted: 30,000 reviews gone, products kept).
    assert Interaction.objects.count() == demo[2] + 2
    assert data_import(source="csv", path=shop, processed_dir=tmp_path / "processed", merge=True).skipped
    again = data_import(source="csv", path=shop, processed_dir=tmp_path / "processed", merge=True, force=True)
    assert Interaction.objects.count() == demo[2] + 2  # what both hold is kept once
    assert again.report["interactions_already_imported"] == 2

    replaced = data_import(source="csv", path=shop, processed_dir=tmp_path / "processed", replace=True, force=True)
    assert replaced.removed == {"products": demo[0], "shoppers": demo[1]}
    assert set(Product.objects.values_list("id", flat=True)) == {"TEA-1", "TEA-2"}
    assert set(Shopper.objects.values_list("id", flat=True)) == {"tea-1", "tea-2"}


@pytest.mark.django_db
def test_the_same_shop_with_more_or_fewer_products_is_not_another_shop(tmp_path: Path) -> None:
    small, grown = tmp_path / "small", tmp_path / "grown"
    small.mkdir()
    grown.mkdir()
    rows = [f"u{n % 7},P{n},{1_700_000_000 + n}" for n in range(40)]
    (small / "interactions.csv").write_text("user_id,item_id,timestamp\n" + "\n".join(rows[:4]) + "\n")
    (grown / "interactions.csv").write_text("user_id,item_id,timestamp\n" + "\n".join(rows) + "\n")
    data_import(source="csv", path=small, processed_dir=tmp_path / "processed")
    # 4 products, then 40 of which those 4: the shop grew, it is not another shop.
    data_import(source="csv", path=grown, processed_dir=tmp_path / "processed")
    assert Product.objects.count() == 40
    # And back to 4 of them (the catalogue shrank): still the same shop.
    data_import(source="csv", path=small, processed_dir=tmp_path / "processed", force=True)
    assert Product.objects.count() == 40  # without --replace nothing is removed


@pytest.mark.django_db
def test_replace_keeps_live_events_of_products_and_shoppers_that_stay(tmp_path: Path) -> None:
    shop = _other_shop(tmp_path / "tea")
    data_import(source="csv", path=shop, processed_dir=tmp_path / "processed")
    interaction_record(user_id="tea-1", item_id="TEA-2", event="view")  # stays: both are in the new data
    interaction_record(user_id="walk-in", item_id="TEA-1", event="view")  # goes with its shopper
    data_import(source="csv", path=shop, processed_dir=tmp_path / "processed", replace=True, force=True)
    live = Interaction.objects.filter(source=Interaction.LIVE)
    assert list(live.values_list("shopper_id", "product_id")) == [("tea-1", "TEA-2")]


@pytest.mark.django_db
def test_reload_data_endpoint_takes_replace(pipeline: Pipeline, tmp_path: Path, settings) -> None:
    from django.contrib.auth import get_user_model
    from rest_framework.test import APIClient

    settings.RECO_PROCESSED_DIR = tmp_path / "processed"
    data_import(source="amazon2018", path=pipeline.raw, processed_dir=tmp_path / "processed")
    settings.RECO_DATA_SOURCE, settings.RECO_DATA_PATH = "csv", _other_shop(tmp_path / "tea")
    client = APIClient()
    client.force_authenticate(get_user_model().objects.create_user(username="s", password="p-123456", is_staff=True))
    refused = client.post("/reload_data", {}, format="json")
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "other_shop"
    done = client.post("/reload_data", {"replace": True}, format="json")
    assert done.status_code == 200, done.content
    assert done.json()["removed"]["products"] == pipeline.data.counts()["items"]
    assert Product.objects.count() == 2


@pytest.mark.django_db
def test_failed_replace_deletes_nothing(pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data_import(source="amazon2018", path=pipeline.raw, processed_dir=tmp_path / "processed")
    before, manifest = rows(), ds.read_snapshot_manifest(tmp_path / "processed")
    products = Product.objects.count()

    def broken_snapshot(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(ds, "write_snapshot", broken_snapshot)
    with pytest.raises(OSError, match="disk full"):
        data_import(source="csv", path=_other_shop(tmp_path / "tea"), processed_dir=tmp_path / "processed",
                    replace=True)
    assert rows() == before and Product.objects.count() == products
    assert ds.read_snapshot_manifest(tmp_path / "processed") == manifest


@pytest.mark.django_db
def test_an_import_without_a_product_file_keeps_the_catalogues_fields(tmp_path: Path) -> None:
    """The product file of a csv shop is optional: importing without it blanked every product's title and
    category (database and snapshot); a product the data does describe still takes the data's fields."""
    shop = tmp_path / "shop"
    shop.mkdir()
    (shop / "interactions.csv").write_text("user_id,item_id,timestamp\na,p1,1700000000\nb,p2,1700000100\n"
                                           "b,p3,1700000200\n")
    (shop / "items.csv").write_text("item_id,title,category,price\np1,Mug,Kitchen,3.5\np2,Tea,Food,\n")
    data_import(source="csv", path=shop, processed_dir=tmp_path / "processed")
    (shop / "items.csv").write_text("item_id,title\np2,Green tea\n")
    result = data_import(source="csv", path=shop, processed_dir=tmp_path / "processed")
    assert result.report["bare_items_kept"] == 1  # p1; p3 was bare before too (nothing to keep)
    stored = {p.id: (p.title, p.category, p.price) for p in Product.objects.all()}
    assert stored == {"p1": ("Mug", "Kitchen", 3.5), "p2": ("Green tea", "", None), "p3": ("", "", None)}
    snapshot = ds.read_snapshot(tmp_path / "processed").items.set_index(ds.ITEM_ID)
    assert (snapshot.loc["p1", ds.TITLE], snapshot.loc["p1", ds.PRICE]) == ("Mug", 3.5)
    (shop / "items.csv").unlink()
    data_import(source="csv", path=shop, processed_dir=tmp_path / "processed")
    assert Product.objects.get(id="p2").title == "Green tea"


@pytest.mark.django_db(transaction=True)
def test_one_import_runs_at_a_time_the_api_is_refused_and_a_command_waits(pipeline: Pipeline, tmp_path: Path,
                                                                          settings) -> None:
    """Two `load_data` at once on PostgreSQL each deleted the imported interactions before the other inserted its
    own: the same files imported twice left every interaction twice (and two shops' --replace left both)."""
    import threading

    from django.db import connection

    from recoapi import locks
    from recoapi.recommendations.services import data_reload

    held, release = threading.Event(), threading.Event()

    def another_import() -> None:  # another process's import, on a connection of its own
        try:
            with locks.import_lock(wait=False) as got:
                assert got
                held.set()
                release.wait(120)
        finally:
            connection.close()

    holder = threading.Thread(target=another_import)
    holder.start()
    try:
        assert held.wait(60)
        with pytest.raises(Conflict, match="Another import is running") as refused:
            data_import(source="amazon2018", path=pipeline.raw, processed_dir=tmp_path, wait=False)
        assert refused.value.code == "import_running" and Interaction.objects.count() == 0
        settings.RECO_DATA_SOURCE, settings.RECO_DATA_PATH = "amazon2018", str(pipeline.raw)
        settings.RECO_PROCESSED_DIR = tmp_path
        with pytest.raises(Conflict, match="Another import is running"):  # POST /reload_data: a 409, not a wait
            data_reload()
        waited: list[bool] = []
        result = data_import(source="amazon2018", path=pipeline.raw, processed_dir=tmp_path,
                             on_wait=lambda: (waited.append(True), release.set()))
    finally:
        release.set()
        holder.join(60)
    assert waited == [True] and not result.skipped
    assert Interaction.objects.count() == len(pipeline.data.interactions)  # once, not twice
    # The lock is free again, for another connection (PostgreSQL's advisory locks are re-entrant on this one).
    free: list[bool] = []

    def another_connection() -> None:
        try:
            with locks.import_lock(wait=False) as got:
                free.append(got)
        finally:
            connection.close()

    checker = threading.Thread(target=another_connection)
    checker.start()
    checker.join(60)
    assert free == [True]
