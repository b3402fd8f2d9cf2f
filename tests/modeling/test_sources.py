"""MovieLens, RetailRocket and generic CSV loaders, the shared validation step and the filters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modeling import datasets as ds
from modeling.errors import DataValidationError
from modeling.sources import load_source
from modeling.sources.retailrocket import category_paths
from tests.conftest import shared_dataset


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_text(text.lstrip("\n"), encoding=encoding)
    return path


# --------------------------------------------------------------------------- MovieLens


@pytest.fixture
def movielens_latest(tmp_path: Path) -> Path:
    write(tmp_path / "ratings.csv", """
userId,movieId,rating,timestamp
1,10,4.0,964982703
1,20,3.5,964982800
2,10,5.0,964983000
""")
    write(tmp_path / "movies.csv", """
movieId,title,genres
10,Toy Story (1995),Adventure|Animation
20,"Heat, Again (1995)",Action|Crime
30,Unrated Film (2001),(no genres listed)
""")
    write(tmp_path / "tags.csv", """
userId,movieId,tag,timestamp
1,10,pixar,1
2,10,fun,2
2,10,pixar,3
""")
    return tmp_path


def test_movielens_latest_uses_title_and_genres_and_tags_are_their_authors_rating_text(
        movielens_latest: Path) -> None:
    data = load_source("movielens", movielens_latest)
    assert data.counts() == {"items": 3, "users": 2, "interactions": 3}
    items = data.items.set_index(ds.ITEM_ID)
    assert items.loc["10", ds.TITLE] == "Toy Story (1995)"
    assert items.loc["10", ds.CATEGORY] == "Adventure"
    # Tags are written by shoppers: never product text, only the text of the tagger's own rating (issue 13).
    assert items.loc["10", ds.DESCRIPTION] == "Genres: Adventure, Animation"
    texts = data.interactions.set_index([ds.USER_ID, ds.ITEM_ID])[ds.TEXT]
    assert texts.loc[("1", "10")] == "pixar"
    assert texts.loc[("2", "10")] == "fun, pixar"
    assert pd.isna(texts.loc[("1", "20")])
    assert data.report["tags"] == 3 and data.report["tags_without_rating"] == 0
    assert items.loc["20", ds.TITLE] == "Heat, Again (1995)"
    assert items.loc["30", ds.CATEGORY] == ""  # listed, never rated, still in the catalogue
    assert set(data.interactions[ds.EVENT]) == {"rating"}
    assert data.interactions[ds.RATING].tolist() == [4.0, 3.5, 5.0]


def test_movielens_held_out_ratings_tags_reach_no_training_input(tmp_path: Path) -> None:
    """A tag written with a held-out rating must not reach the products' text or the training rows."""
    from modeling.splits import leave_last_out_split

    write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n" + "".join(
        f"{user},{movie},4.0,{100 * user + movie}\n" for user in (1, 2) for movie in (10, 20, 30, 40)))
    write(tmp_path / "movies.csv", "movieId,title,genres\n10,A,Drama\n20,B,Drama\n30,C,Drama\n40,D,Drama\n")
    # User 2 tagged movie 40, their last rating (the test item); user 1 tagged 10 (training) and 50 (not rated).
    write(tmp_path / "tags.csv", "userId,movieId,tag,timestamp\n2,40,spaceopera,1\n1,10,slowburn,2\n"
                                 "1,50,unrated,3\n")
    data = load_source("movielens", tmp_path)
    assert data.report["tags_without_rating"] == 1
    split = leave_last_out_split(data.interactions)
    assert split.test.set_index(ds.USER_ID).loc["2", ds.ITEM_ID] == "40"
    product_text = " ".join(data.items[[ds.TITLE, ds.DESCRIPTION]].astype(str).agg(" ".join, axis=1))
    training_text = " ".join(split.train[ds.TEXT].dropna())
    assert "spaceopera" not in product_text + training_text
    assert "slowburn" in training_text and "slowburn" not in product_text


def test_movielens_100k_layout(tmp_path: Path) -> None:
    write(tmp_path / "u.data", "1\t10\t4\t881250949\n2\t10\t3\t891717742\n1\t20\t1\t878887116\n")
    flags = "|".join(["0"] * 19)
    action = "|".join(["0", "1"] + ["0"] * 17)
    write(tmp_path / "u.item", f"10|Toy Story (1995)|01-Jan-1995||http://x|{flags}\n"
                               f"20|Caf\xe9 Movie (1996)|01-Jan-1996||http://y|{action}\n", encoding="latin-1")
    data = load_source("movielens", tmp_path)
    items = data.items.set_index(ds.ITEM_ID)
    assert items.loc["20", ds.TITLE] == "Café Movie (1996)"
    assert items.loc["20", ds.CATEGORY] == "Action"
    assert data.counts() == {"items": 2, "users": 2, "interactions": 3}


def test_movielens_bad_rating_names_the_line(movielens_latest: Path) -> None:
    with open(movielens_latest / "ratings.csv", "a", encoding="utf-8") as handle:
        handle.write("3,10,lots,964983000\n")
    with pytest.raises(DataValidationError, match=r"ratings\.csv, line 5: column 'rating': 'lots' is not a number"):
        load_source("movielens", movielens_latest)


def test_movielens_missing_column_is_named(movielens_latest: Path) -> None:
    write(movielens_latest / "ratings.csv", "userId,movieId,timestamp\n1,10,5\n")
    with pytest.raises(DataValidationError, match="missing required column.*rating"):
        load_source("movielens", movielens_latest)


def test_not_a_movielens_directory(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="not a MovieLens directory"):
        load_source("movielens", tmp_path)


def test_real_movielens_latest_small() -> None:
    data = load_source("movielens", shared_dataset("movielens_ml_latest_small"))
    # Figures from the dataset's README: 100,836 ratings, 610 users, 9,742 movies listed.
    assert data.counts() == {"items": 9742, "users": 610, "interactions": 100836}


# --------------------------------------------------------------------------- RetailRocket


@pytest.fixture
def retailrocket(tmp_path: Path) -> Path:
    write(tmp_path / "events.csv", """
timestamp,visitorid,event,itemid,transactionid
1433221332117,257597,view,355908,
1433224214164,992329,view,248676,
1433221999827,257597,addtocart,355908,
1433222276276,257597,transaction,248676,4000
""")
    write(tmp_path / "item_properties_part1.csv", """
timestamp,itemid,property,value
1435460400000,355908,categoryid,1016
1431226800000,355908,categoryid,9
1435460400000,355908,790,n5880.000
1435460400000,248676,888,1116713 960601
""")
    write(tmp_path / "category_tree.csv", "categoryid,parentid\n1016,213\n213,\n9,\n")
    return tmp_path


def test_retailrocket_events_become_weighted_interactions(retailrocket: Path) -> None:
    data = load_source("retailrocket", retailrocket)
    inter = data.interactions
    assert sorted(zip(inter[ds.EVENT], inter[ds.WEIGHT], strict=True)) == [
        ("cart", 2.0), ("purchase", 3.0), ("view", 1.0), ("view", 1.0)]
    assert inter[ds.TIMESTAMP].max() == 1433224214  # milliseconds -> seconds
    items = data.items.set_index(ds.ITEM_ID)
    assert items.loc["355908", ds.CATEGORY] == "213 > 1016"  # latest categoryid, as a breadcrumb
    assert items.loc["355908", ds.PRICE] == 5880.0
    assert items.loc["248676", ds.CATEGORY] == ""
    assert data.report["events_transaction"] == 1
    assert data.report["items_with_category"] == 1 and data.report["items_with_price"] == 1


def test_retailrocket_reads_whole_number_category_ids_and_the_latest_readable_price(retailrocket: Path) -> None:
    """A category tree saved again by pandas (parents written 213.0) made every path "213.0 > 1016"; an unreadable
    latest price (n5,880.000) took away the product's price; a property row timed "soon" counted as the latest."""
    write(retailrocket / "category_tree.csv", "categoryid,parentid\n1016,213.0\n213,\n9,\n")
    with open(retailrocket / "item_properties_part1.csv", "a", encoding="utf-8") as handle:
        handle.write("1435460400001,355908,790,\"n5,990.000\"\n1435460400002,355908,categoryid,1016.0\n")
    data = load_source("retailrocket", retailrocket)
    items = data.items.set_index(ds.ITEM_ID)
    assert items.loc["355908", ds.CATEGORY] == "213 > 1016" and items.loc["355908", ds.PRICE] == 5880.0
    assert data.notes == []
    with open(retailrocket / "item_properties_part1.csv", "a", encoding="utf-8") as handle:
        handle.write("soon,355908,790,n1.000\n")
    with pytest.raises(DataValidationError, match=r"item_properties_part1\.csv, line 8: column 'timestamp': 'soon' "
                                                  r"is not a time in unix milliseconds"):
        load_source("retailrocket", retailrocket)


def test_retailrocket_notes_products_the_property_files_do_not_describe(retailrocket: Path) -> None:
    """Item ids written 355908.0 in events.csv and 355908 in the property files: every product without category or
    price, and nothing said why."""
    events = (retailrocket / "events.csv").read_text().replace(",355908,", ",355908.0,").replace(",248676,",
                                                                                                 ",248676.0,")
    (retailrocket / "events.csv").write_text(events)
    data = load_source("retailrocket", retailrocket)
    assert data.report["items_with_category"] == 0
    assert len(data.notes) == 1 and "2 of the 2 products events.csv names have neither a category nor a price" \
        in data.notes[0] and "'355908.0'" in data.notes[0]


def test_a_folder_of_another_source_or_a_compressed_log_is_named_in_the_message(retailrocket: Path) -> None:
    """The default source on a RetailRocket folder said "expected exactly one reviews file", and a folder with
    events.csv.gz "expected a directory with events.csv", neither saying what to do."""
    with pytest.raises(DataValidationError, match=r"found none \(the folder looks like the retailrocket source's: "
                                                  r"--source retailrocket, or RECO_DATA_SOURCE=retailrocket\)"):
        load_source("amazon2018", retailrocket)
    import gzip

    (retailrocket / "events.csv.gz").write_bytes(gzip.compress((retailrocket / "events.csv").read_bytes()))
    (retailrocket / "events.csv").unlink()
    with pytest.raises(DataValidationError, match=r"expected a directory with events\.csv \(events\.csv\.gz is "
                                                  r"compressed: this source reads it unpacked"):
        load_source("retailrocket", retailrocket)


def test_retailrocket_names_the_columns_of_events_csv_it_does_not_read(retailrocket: Path) -> None:
    """A price column in events.csv was ignored without a word (transactionid, in every export, is not named)."""
    assert load_source("retailrocket", retailrocket).notes == []
    rows = (retailrocket / "events.csv").read_text().splitlines()
    rows = [rows[0] + ",price"] + [row + ",9" for row in rows[1:]] + [rows[1] + ",9"]  # and a repeated row
    (retailrocket / "events.csv").write_text("\n".join(rows) + "\n")
    data = load_source("retailrocket", retailrocket)
    assert data.report["repeated_rows"] == 1
    assert data.notes == ["events.csv: column(s) 'price' not read; the columns this source reads are timestamp, "
                          "visitorid, event, itemid"]


def test_retailrocket_reads_a_repeated_row_once(retailrocket: Path) -> None:
    """An export's exact repeats (same millisecond, visitor, event and item) were two interactions."""
    with open(retailrocket / "events.csv", "a", encoding="utf-8") as handle:
        handle.write("1433221332117,257597,view,355908,\n1433221332117, 257597 ,view,355908,\n"
                     "1433221332117,257597,view,248676,\n1433221332117,257597,addtocart,355908,\n")
    data = load_source("retailrocket", retailrocket)
    assert data.report["repeated_rows"] == 2 and data.report["event_rows"] == 6
    assert data.report["events_view"] == 3 and data.report["events_addtocart"] == 2
    assert len(data.interactions) == 6


def test_retailrocket_unknown_event_names_the_line(retailrocket: Path) -> None:
    with open(retailrocket / "events.csv", "a", encoding="utf-8") as handle:
        handle.write("1433222276276,1,refund,248676,\n")
    with pytest.raises(DataValidationError, match=r"events\.csv, line 6: column 'event': 'refund'"):
        load_source("retailrocket", retailrocket)


def test_retailrocket_needs_events_csv(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="events.csv"):
        load_source("retailrocket", tmp_path)


def test_category_tree_cycle_is_refused(tmp_path: Path) -> None:
    write(tmp_path / "category_tree.csv", "categoryid,parentid\n1,2\n2,1\n")
    with pytest.raises(DataValidationError, match=r"category_tree\.csv, line 2: category 1 is part of a cycle "
                                                  r"\(1 > 2 > 1\)"):  # it named no line
        category_paths(tmp_path / "category_tree.csv")


def test_real_retailrocket_category_tree() -> None:
    paths = category_paths(shared_dataset("retailrocket_category_tree") / "category_tree.csv")
    # README: 1,669 categories, 25 roots.
    assert len(paths) == 1669
    assert sum(ds.CATEGORY_SEPARATOR not in p for p in paths.values()) == 25
    assert paths["1016"].endswith("213 > 1016")


# --------------------------------------------------------------------------- generic CSV


@pytest.fixture
def shop_csv(tmp_path: Path) -> Path:
    write(tmp_path / "interactions.csv", """
user_id,item_id,timestamp,event,weight,rating,text
u1,p1,1700000000,purchase,1,,
u1,p2,2023-11-15T10:00:00Z,review,1,4,"Nice, <b>sturdy</b>"
u2,p1,1700000500,view,0.5,,
""")
    write(tmp_path / "items.csv", """
item_id,title,brand,category,price
p1,Red Mug,Acme,Kitchen > Mugs,9.5
p2,Blue Mug,Acme,Kitchen > Mugs,
p3,Green Mug,Acme,Kitchen > Mugs,12
""")
    return tmp_path


def test_generic_csv_reads_documented_columns(shop_csv: Path) -> None:
    data = load_source("csv", shop_csv)
    assert data.counts() == {"items": 3, "users": 2, "interactions": 3}
    inter = data.interactions.set_index([ds.USER_ID, ds.ITEM_ID])
    assert inter.loc[("u1", "p2"), ds.TIMESTAMP] == 1700042400  # ISO 8601 accepted
    assert inter.loc[("u1", "p2"), ds.TEXT] == "Nice, sturdy"
    assert inter.loc[("u2", "p1"), ds.WEIGHT] == 0.5
    assert np.isnan(data.items.set_index(ds.ITEM_ID).loc["p2", ds.PRICE])


def test_an_empty_weight_is_the_default_weight(tmp_path: Path) -> None:
    """The README says the weight defaults to 1: an empty cell was refused ("'' is not a number")."""
    write(tmp_path / "interactions.csv", "user_id,item_id,timestamp,weight\na,x,1700000000,\nb,y,1700000001,2.5\n")
    data = load_source("csv", tmp_path)
    assert data.interactions.set_index(ds.USER_ID)[ds.WEIGHT].to_dict() == {"a": 1.0, "b": 2.5}


def test_generic_csv_minimal_columns(tmp_path: Path) -> None:
    write(tmp_path / "interactions.csv", "user_id,item_id,timestamp\na,x,1\nb,y,2\n")
    data = load_source("csv", tmp_path)
    assert set(data.interactions[ds.EVENT]) == {"purchase"}
    assert data.report["bare_items"] == 2


@pytest.mark.parametrize("row, message", [
    ("u3,p1,yesterday,view,1,,", r"line 5: column 'timestamp': 'yesterday' is not a unix time"),
    ("u3,p1,1700000000,refund,1,,", r"line 5: column 'event': 'refund'"),
    ("u3,p1,1700000000,view,-2,,", r"line 5: column 'weight': -2.0 is not a weight from 0.001 to 1000"),
    ("u3,p1,1700000000,view,1e300,,", r"line 5: column 'weight': 1e\+300 is not a weight from 0.001 to 1000"),
    ("u3,p1,1700000000,view,heavy,,", r"line 5: column 'weight': 'heavy' is not a number"),
    ("u3,p1,1700000000,view,1,,,extra,fields", r"cannot parse"),
    ("u3,p1,1700000000,rating,1,9,", r"line 5: column 'rating': 9.0 is outside 0 to 5"),  # POST /events: 0 to 5
    ("u3,p1,1700000000,rating,1,-1,", r"line 5: column 'rating': -1.0 is outside 0 to 5"),
    ("u3,p1,1700000000,rating,1,,", r"line 5: a rating event needs its rating \(0 to 5\) in column 'rating'"),
    (",p1,1700000000,view,1,,", r"line 5: column 'user_id' is empty"),  # was "1 interactions have an empty user_id"
    ("u3,  ,1700000000,view,1,,", r"line 5: column 'item_id' is empty"),
])
def test_generic_csv_bad_rows_are_named(shop_csv: Path, row: str, message: str) -> None:
    with open(shop_csv / "interactions.csv", "a", encoding="utf-8") as handle:
        handle.write(row + "\n")
    with pytest.raises(DataValidationError, match=message):
        load_source("csv", shop_csv)


def test_bad_rows_are_named_by_their_own_line_after_blank_lines_and_multiline_fields(tmp_path: Path) -> None:
    """Blank lines and quoted fields spanning lines shifted the line named: 'line 5' for a row on line 8."""
    write(tmp_path / "interactions.csv",
          'user_id,item_id,timestamp,text\r\nu1,p1,1700000000,\r\n\r\n   \r\n'
          'u1,p2,1700000001,"good,\r\nreally\r\ngood"\r\nu2,p1,soon,\r\n')
    with pytest.raises(DataValidationError, match=r"interactions\.csv, line 8: column 'timestamp': 'soon'"):
        load_source("csv", tmp_path)
    write(tmp_path / "interactions.csv", "user_id,item_id,timestamp\nu1,p1,1700000000\n")
    write(tmp_path / "items.csv", "item_id,title\np1,Mug\n\n  \n,Nameless\n")
    with pytest.raises(DataValidationError, match=r"items\.csv, line 5: column 'item_id' is empty"):
        load_source("csv", tmp_path)


@pytest.mark.parametrize("interactions, items, message", [
    ("u1,p1,1", "p1,Mug," + "b" * 256 + ",Kitchen", r"items\.csv, line 2: column 'brand': 'b+'\.\.\. is 256 "
     r"characters long; the database stores at most 255"),
    ("u1,p1,1", "p1,Mug,Acme," + " > ".join(["Level"] * 100), r"items\.csv, line 2: column 'category': .* at most 512"),
    ("u1,p1,1", "p1,Nul\x00mug,Acme,Kitchen", r"items\.csv, line 2: column 'title': 'Nul\\x00mug' holds a NUL"),
    ("u" * 129 + ",p1,1", "p1,Mug,Acme,Kitchen", r"interactions\.csv, line 2: column 'user_id': .* at most 128"),
])
def test_values_the_database_cannot_store_are_named_by_file_and_line(tmp_path: Path, interactions: str, items: str,
                                                                      message: str) -> None:
    """They reached the database, which refused the whole import with 'the database cannot be used: value too long
    for type character varying(255)' (PostgreSQL; a 503 'try again shortly' from POST /reload_data), or kept them
    (SQLite)."""
    write(tmp_path / "interactions.csv", f"user_id,item_id,timestamp\n{interactions}\n")
    write(tmp_path / "items.csv", f"item_id,title,brand,category\n{items}\n")
    with pytest.raises(DataValidationError, match=message):
        load_source("csv", tmp_path)


def test_every_source_refuses_values_the_database_cannot_store() -> None:
    items = pd.DataFrame({ds.ITEM_ID: ["p1"], ds.BRAND: ["x" * 300]})
    interactions = pd.DataFrame({ds.USER_ID: ["u1"], ds.ITEM_ID: ["p1"], ds.TIMESTAMP: [1_700_000_000]})
    with pytest.raises(DataValidationError, match=r"meta\.json: items: column 'brand': .* at most 255"):
        ds.finish_tables(items, interactions, report={}, fingerprint="", source_name="meta.json")


def test_a_row_pandas_cannot_parse_is_named_by_its_line(tmp_path: Path) -> None:
    """pandas' message counted rows: 'EOF inside string starting at row 3' for a quote opened on line 5."""
    write(tmp_path / "interactions.csv", "user_id,item_id,timestamp\nu1,p1,1\n\nu1,p2,2\nu2,\"p1,3\nu3,p1,4\n")
    with pytest.raises(DataValidationError, match=r"interactions\.csv, line 5: cannot parse the row: a quoted field "
                                                  r"is not closed"):
        load_source("csv", tmp_path)
    write(tmp_path / "interactions.csv", 'user_id,item_id,timestamp,text\nu1,p1,1,"a\nb"\n\nu2,p1,2,x,y\n')
    with pytest.raises(DataValidationError, match=r"interactions\.csv, line 5: cannot parse the row: 5 fields, but "
                                                  r"the header names 4"):
        load_source("csv", tmp_path)


@pytest.mark.parametrize("items, line", [
    ("item_id,title,price\np1,Pan, large,3\np2,Rake,3\n", 2),  # a comma in a value, unquoted, on the first row
    ("item_id,title,price\np1,Pan,12,50\np2,Rake,3\n", 2),  # a decimal comma
    ("item_id,title,price\np1,Pan,3\np2,Rake, big,3\n", 3),
])
def test_a_first_row_longer_than_the_header_is_refused_not_read_shifted(tmp_path: Path, items: str,
                                                                         line: int) -> None:
    """pandas took the first column of such a file as its index when the first data row was the longer one: the
    import succeeded with product 'Pan' titled ' large' priced 3, and p1 bare."""
    write(tmp_path / "interactions.csv", "user_id,item_id,timestamp\nu1,p1,1700000000\nu1,p2,1700000001\n")
    write(tmp_path / "items.csv", items)
    with pytest.raises(DataValidationError, match=rf"items\.csv, line {line}: cannot parse the row: 4 fields, but "
                                                  r"the header names 3 \(a value that holds ',' needs quotes\)"):
        load_source("csv", tmp_path)
    write(tmp_path / "items.csv", "item_id,title,price\np1,Pan,3\np2,Rake,4\n")
    write(tmp_path / "interactions.csv", "user_id,item_id,timestamp,event,text\nu1,p1,1700000000,review,Great, love "
                                         "it\nu1,p2,1700000001,review,ok\n")
    with pytest.raises(DataValidationError, match=r"interactions\.csv, line 2: cannot parse the row: 6 fields"):
        load_source("csv", tmp_path)  # it said: column 'timestamp': 'review' is not a unix time


def test_a_longer_row_is_judged_by_what_it_adds_whatever_comes_before_it(tmp_path: Path) -> None:
    """A row of trailing empty fields before the bad row had the bad row's neighbour named; a field longer than the
    csv module's limit (a long description) before a longer row let that row's extra value be dropped silently."""
    write(tmp_path / "interactions.csv", "user_id,item_id,timestamp\nu1,p1,1700000000\nu1,p2,1700000001,,\n"
                                         "u2,p1,1700000002,,x\n")
    with pytest.raises(DataValidationError, match=r"interactions\.csv, line 4: cannot parse the row: 5 fields"):
        load_source("csv", tmp_path)
    write(tmp_path / "interactions.csv", "user_id,item_id,timestamp\nu1,p1,1700000000\n")
    write(tmp_path / "items.csv", f"item_id,title,description\np1,Mug,{'long ' * 40_000}\np2,Pan,,lost\n")
    with pytest.raises(DataValidationError, match=r"items\.csv, line 3: cannot parse the row: 4 fields"):
        load_source("csv", tmp_path)
    write(tmp_path / "items.csv", "item_id\ttitle\np1\tMug\tlost\n")  # tab-separated: no quotes hint
    from modeling.sources._files import read_table

    with pytest.raises(DataValidationError, match=r"line 2: cannot parse the row: 3 fields, but the header names 2$"):
        read_table(tmp_path / "items.csv", columns=["item_id", "title"], required=["item_id"], sep="\t")


def test_a_spreadsheet_s_trailing_separators_and_empty_rows_are_read_as_no_data(tmp_path: Path) -> None:
    """A trailing comma on every row made 40 phantom products of the titles; rows of commas only were refused as
    'column 'timestamp': '' is not a unix time'."""
    write(tmp_path / "interactions.csv", "user_id,item_id,timestamp\nu1,p1,1700000000,\n,,\nu1,p2,1700000001,\n"
                                         ",,,\n,,\n")
    write(tmp_path / "items.csv", "item_id,title,price\np1,Pan,3,\np2,Rake,4\n,,\n")
    data = load_source("csv", tmp_path)
    assert data.items.set_index(ds.ITEM_ID)[[ds.TITLE, ds.PRICE]].to_dict("index") == {
        "p1": {ds.TITLE: "Pan", ds.PRICE: 3.0}, "p2": {ds.TITLE: "Rake", ds.PRICE: 4.0}}
    assert data.interactions[ds.ITEM_ID].tolist() == ["p1", "p2"] and data.report["bare_items"] == 0
    write(tmp_path / "interactions.csv", "user_id,item_id,timestamp\nu1,p1,1700000000\n,,\n\n,,\nu1,p2,soon\n")
    with pytest.raises(DataValidationError, match=r"interactions\.csv, line 6: column 'timestamp': 'soon'"):
        load_source("csv", tmp_path)  # the row keeps its own line after the empty ones


def test_generic_csv_negative_price_is_named(shop_csv: Path) -> None:
    """A price of -5 was imported (POST /products refuses it); a price filter then saw it as the cheapest."""
    with open(shop_csv / "items.csv", "a", encoding="utf-8") as handle:
        handle.write("p4,Refund Mug,Acme,Kitchen > Mugs,-5\n")
    with pytest.raises(DataValidationError, match=r"items\.csv, line 5: column 'price': -5.0 is negative"):
        load_source("csv", shop_csv)


def test_the_first_bad_value_of_a_column_is_named_whatever_is_wrong_with_it(shop_csv: Path) -> None:
    """A price of -3 on line 5 and "abc" on line 6: the message named line 6 (numbers were checked before signs)."""
    with open(shop_csv / "items.csv", "a", encoding="utf-8") as handle:
        handle.write("p4,Refund Mug,Acme,Kitchen > Mugs,-3\np5,Odd Mug,Acme,Kitchen > Mugs,abc\n")
    with pytest.raises(DataValidationError, match=r"items\.csv, line 5: column 'price': -3.0 is negative"):
        load_source("csv", shop_csv)
    with open(shop_csv / "interactions.csv", "a", encoding="utf-8") as handle:
        handle.write("u3,p1,1700000000,view,heavy,,\nu3,p1,1700000000,view,0,,\n")
    lines = (shop_csv / "interactions.csv").read_text().splitlines()
    lines[-2], lines[-1] = lines[-1], lines[-2]  # 0 first, then "heavy"
    (shop_csv / "interactions.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataValidationError, match=rf"line {len(lines) - 1}: column 'weight': 0.0 is not a weight from"):
        load_source("csv", shop_csv)


def test_a_product_listed_twice_with_different_values_is_refused_by_both_lines(shop_csv: Path) -> None:
    """The last row was kept without a word: a corrected price on the first row, or a stale one on the last,
    was served as the shop's."""
    with open(shop_csv / "items.csv", "a", encoding="utf-8") as handle:
        handle.write("\n p1 ,Red Mug,Acme,Kitchen > Mugs,7.5\n")
    with pytest.raises(DataValidationError, match=r"items\.csv, line 6: product 'p1' is listed on line 2 and again "
                                                  r"with a different 'price': keep one row per product"):
        load_source("csv", shop_csv)


def test_a_product_repeated_exactly_is_read_once_and_counted(shop_csv: Path) -> None:
    with open(shop_csv / "items.csv", "a", encoding="utf-8") as handle:
        handle.write("p2,Blue Mug,Acme,Kitchen > Mugs,\np1,Red Mug,Acme,Kitchen > Mugs,9.5\n")
    data = load_source("csv", shop_csv)
    assert data.report["repeated_product_rows"] == 2 and data.report["catalogue_rows"] == 5  # the file's rows
    assert data.counts()["items"] == 3
    assert data.items.set_index(ds.ITEM_ID).loc["p1", ds.PRICE] == 9.5


def test_generic_csv_empty_or_headless_files(tmp_path: Path) -> None:
    write(tmp_path / "interactions.csv", "")
    with pytest.raises(DataValidationError, match="file is empty"):
        load_source("csv", tmp_path)
    write(tmp_path / "interactions.csv", "user_id,item_id,timestamp\n")
    with pytest.raises(DataValidationError, match="no data rows"):
        load_source("csv", tmp_path)
    write(tmp_path / "interactions.csv", "user,item,time\na,b,1\n")
    with pytest.raises(DataValidationError, match="missing required column"):
        load_source("csv", tmp_path)


def test_columns_the_source_does_not_read_are_named_in_a_note(tmp_path: Path) -> None:
    """A misspelt ``categroy`` column left every product without a category, and nothing said so."""
    write(tmp_path / "interactions.csv", "user_id,item_id,timestamp,store\nu1,p1,1700000000,north\n")
    write(tmp_path / "items.csv", "item_id,title,categroy,colour\np1,Mug,Kitchen,red\n")
    data = load_source("csv", tmp_path)
    assert data.notes == [
        "interactions.csv: column(s) 'store' not read; the columns this source reads are user_id, item_id, "
        "timestamp, event, weight, rating, text",
        "items.csv: column(s) 'categroy', 'colour' not read; the columns this source reads are item_id, title, "
        "description, brand, category, price"]
    assert data.items.set_index(ds.ITEM_ID).loc["p1", ds.CATEGORY] == ""
    write(tmp_path / "items.csv", "item_id,title,category,\np1,Mug,Kitchen,\n")  # a trailing comma names nothing
    write(tmp_path / "interactions.csv", "user_id,item_id,timestamp\nu1,p1,1700000000\n")
    assert load_source("csv", tmp_path).notes == []


def _shop_rows(shoppers: int, guest_rows: int) -> str:
    """interactions.csv of ``shoppers`` shoppers with 3 products each, and ``guest_rows`` rows of shopper 'guest'."""
    rows = [f"u{u},p{(u + k) % 40},{1_700_000_000 + 10 * u + k}" for u in range(shoppers) for k in range(3)]
    rows += [f"guest,p{k % 40},{1_700_100_000 + k}" for k in range(guest_rows)]
    return "user_id,item_id,timestamp\n" + "\n".join(rows) + "\n"


def test_a_shopper_holding_a_share_no_person_could_is_named_in_a_note(tmp_path: Path) -> None:
    """A 'guest' id holding 30% of a shop's rows (every logged-out visit) was trained on as one shopper, and
    nothing said so."""
    write(tmp_path / "interactions.csv", _shop_rows(60, 78))  # 78 of 258 rows: 30%
    data = load_source("csv", tmp_path)
    assert data.notes == [
        "shopper 'guest' holds 30% of the interactions (78 of 258; the next largest 3): an id that stands for many "
        "people (logged-out visitors, say) is read as one shopper whose history joins theirs; if it is one, leave "
        "its rows out of the files, or import with load_data --outlier-std 2 (RECO_FILTER_OUTLIER_STD=2 for POST "
        "/reload_data), which drops shoppers far above the "
        "others"]
    # The filter it names drops it, and then nothing is said.
    filtered = load_source("csv", tmp_path, filters=ds.InteractionFilters(outlier_std=2.0))
    assert "guest" not in set(filtered.interactions[ds.USER_ID]) and filtered.notes == []
    # A large customer among many is no sign of anything: under 10 times the next, or under 10% of the rows.
    write(tmp_path / "interactions.csv", _shop_rows(60, 25))  # 12% of the rows, 8 times the next
    assert load_source("csv", tmp_path).notes == []
    write(tmp_path / "interactions.csv", _shop_rows(400, 40))  # 13 times the next, 3% of the rows
    assert load_source("csv", tmp_path).notes == []
    # Nor is a large share among few shoppers.
    write(tmp_path / "interactions.csv", _shop_rows(10, 78))
    assert load_source("csv", tmp_path).notes == []


def test_products_the_interactions_name_but_items_csv_lacks_are_named_in_a_note(tmp_path: Path) -> None:
    """Ids written as 294.0 in one file and 294 in the other imported every product bare and every listed one
    without an interaction; only the report's bare_items count showed it."""
    write(tmp_path / "interactions.csv", "user_id,item_id,timestamp\nu1,294.0,1700000000\nu2,295.0,1700000001\n"
                                         "u2,294.0,1700000002\n")
    write(tmp_path / "items.csv", "item_id,title\n294,Mug\n295,Pan\n")
    data = load_source("csv", tmp_path)
    assert data.notes == ["items.csv: 2 of the 2 products the interactions name are not in it (e.g. '294.0', "
                          "'295.0'); they are imported without title, category or price; check that both files "
                          "write the product ids the same way"]
    with open(tmp_path / "interactions.csv", "a", encoding="utf-8") as handle:
        handle.write("u3,296.0,1700000003\n")
    write(tmp_path / "items.csv", "item_id,title\n294.0,Mug\n296.0,Cup\n")  # one not listed: a catalogue in part
    assert load_source("csv", tmp_path).notes == [
        "items.csv: 1 of the 3 products the interactions name are not in it (e.g. '295.0'); they are imported "
        "without title, category or price"]
    write(tmp_path / "items.csv", "item_id,title\n294.0,Mug\n295.0,Pan\n296.0,Cup\n")
    assert load_source("csv", tmp_path).notes == []


def test_a_column_named_twice_is_refused(tmp_path: Path) -> None:
    """pandas read the second "price" as "price.1": a note named a column the file does not have, and the second
    price was dropped."""
    write(tmp_path / "interactions.csv", "user_id,item_id,timestamp\nu1,p1,1700000000\n")
    write(tmp_path / "items.csv", "item_id,price, price\np1,3,4\n")
    with pytest.raises(DataValidationError, match=r"items\.csv, line 1: the header names column\(s\) 'price' more "
                                                  r"than once"):
        load_source("csv", tmp_path)


def test_blank_ids_are_refused(tmp_path: Path) -> None:
    write(tmp_path / "interactions.csv", "user_id,item_id,timestamp\n ,x,1\n")
    with pytest.raises(DataValidationError, match="line 2: column 'user_id' is empty"):
        load_source("csv", tmp_path)


# --------------------------------------------------------------------------- filters


def _log(tmp_path: Path, rows: list[tuple[str, str, int]]) -> Path:
    write(tmp_path / "interactions.csv",
          "user_id,item_id,timestamp\n" + "".join(f"{u},{i},{t}\n" for u, i, t in rows))
    return tmp_path


def test_filters_are_off_by_default_and_each_one_works(tmp_path: Path) -> None:
    rows = [("heavy", f"i{n}", n) for n in range(30)]
    rows += [(f"u{u}", f"i{n}", 100 + n) for u in range(10) for n in range(3)]
    rows += [("once", "i1", 5), ("repeat", "i1", 1), ("repeat", "i1", 2), ("repeat", "i1", 3)]
    path = _log(tmp_path, rows)
    assert load_source("csv", path).counts()["users"] == 13

    data = load_source("csv", path, filters=ds.InteractionFilters(outlier_std=2.0))
    assert "heavy" not in set(data.users[ds.USER_ID])
    assert data.report["filtered_outlier_users"] == 1

    data = load_source("csv", path, filters=ds.InteractionFilters(min_user_interactions=2))
    assert "once" not in set(data.users[ds.USER_ID]) and "repeat" in set(data.users[ds.USER_ID])

    data = load_source("csv", path, filters=ds.InteractionFilters(min_distinct_items=2))
    assert {"once", "repeat"}.isdisjoint(set(data.users[ds.USER_ID]))

    data = load_source("csv", path, filters=ds.InteractionFilters(start=100, end=102))
    assert set(data.interactions[ds.TIMESTAMP]) == {100, 101}


def test_filters_change_the_fingerprint_and_can_empty_the_data(tmp_path: Path) -> None:
    path = _log(tmp_path, [("a", "x", 1), ("b", "y", 2)])
    plain = load_source("csv", path).fingerprint
    assert load_source("csv", path, filters=ds.InteractionFilters(start=0)).fingerprint != plain
    with pytest.raises(DataValidationError, match="removed every interaction"):
        load_source("csv", path, filters=ds.InteractionFilters(min_user_interactions=5))


@pytest.mark.parametrize("values, field, problem", [
    ({"min_user_interactions": -3}, "min_user_interactions", "must be 0 (off) or more, got -3"),
    ({"min_distinct_items": -1}, "min_distinct_items", "must be 0 (off) or more, got -1"),
    ({"outlier_std": float("nan")}, "outlier_std", "must be 0 (off) or a positive number of standard deviations"),
    ({"outlier_std": -2.0}, "outlier_std", "must be 0 (off) or a positive number of standard deviations"),
    ({"start": 100, "end": 100}, "end", "must be after the start (100), got 100: the window keeps no interaction"),
])
def test_filters_that_cannot_work_are_refused_naming_their_field(values: dict, field: str, problem: str) -> None:
    # The command and the settings name the field as their user wrote it (--outlier-std, RECO_FILTER_OUTLIER_STD).
    with pytest.raises(ds.FilterError) as raised:
        ds.InteractionFilters(**values)
    assert raised.value.field == field and raised.value.problem.startswith(problem)


def test_an_outlier_cut_of_0_is_off() -> None:
    filters = ds.InteractionFilters(outlier_std=0.0)
    assert filters.outlier_std is None and not filters.is_active()
    assert filters == ds.InteractionFilters()  # the same fingerprint as no filter


# --------------------------------------------------------------------------- session clickstreams

UCI_HEADER = ("year;month;day;order(sells);country;session ID;page 1 (main category);page 2 (clothing model);"
              "colour;location;model photography;price;price 2;page")


@pytest.fixture
def uci_clicks(tmp_path: Path) -> Path:
    write(tmp_path / "e-shop clothing 2008.csv", f"""
{UCI_HEADER}
2008;4;1;1;29;1;1;A13;1;5;1;28;2;1
2008;4;1;2;29;1;2;B4;10;2;1;52;1;1
2008;4;1;3;29;1;3;C56;3;6;2;38;2;2
2008;4;2;1;21;2;2;B4;10;2;1;52;1;1
2008;4;2;2;21;2;4;P67;8;1;1;43;2;5
2008;4;2;3;21;2;2;A13;1;5;1;28;2;1
""")
    return tmp_path


# --------------------------------------------------------------------------- implausible times (issue 12)

YEAR_1800, YEAR_3000 = -5_364_662_400, 32_503_680_000
BOUNDS = ds.TimeBounds(earliest=788_918_400, latest=1_800_000_000)  # 1995-01-01 .. 2027-01-15


def _with_bad_times(source: str, path: Path) -> Path:
    """Append one event from 1800 and one from 3000 to the fixture of ``source``."""
    rows = {
        "movielens": ("ratings.csv", [f"3,10,4.0,{YEAR_1800}", f"3,20,4.0,{YEAR_3000}"]),
        "retailrocket": ("events.csv", [f"{YEAR_1800 * 1000},1,view,355908,", f"{YEAR_3000 * 1000},1,view,355908,"]),
        "csv": ("interactions.csv", ["u3,p1,1800-01-01T00:00:00Z,view,1,,", f"u3,p3,{YEAR_3000},view,1,,"]),
        "clickstream": ("clicks.csv", [f"old,p1,{YEAR_1800}", f"old,p2,{YEAR_3000}"]),
        "amazon2018": ("Shop_5.json", [
            f'{{"reviewerID": "old", "asin": "A1", "unixReviewTime": {YEAR_1800}, "overall": 4}}',
            f'{{"reviewerID": "old", "asin": "A2", "unixReviewTime": {YEAR_3000}, "overall": 4}}']),
    }
    name, lines = rows[source]
    with open(path / name, "a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


@pytest.fixture
def amazon_shop(tmp_path: Path) -> Path:
    write(tmp_path / "Shop_5.json", """
{"reviewerID": "r1", "asin": "A1", "unixReviewTime": 1500000000, "overall": 5}
{"reviewerID": "r2", "asin": "A1", "unixReviewTime": 1500000100, "overall": 4}
""")
    return tmp_path


def test_uci_clickstream_sessions_become_shoppers_and_codes_become_attributes(uci_clicks: Path) -> None:
    data = load_source("clickstream", uci_clicks)
    assert data.counts() == {"items": 4, "users": 2, "interactions": 6}
    assert set(data.users[ds.USER_ID]) == {"s1", "s2"}
    inter = data.interactions
    assert set(inter[ds.EVENT]) == {"view"} and set(inter[ds.WEIGHT]) == {1.0}
    first = inter[inter[ds.USER_ID] == "s1"]
    assert first[ds.ITEM_ID].tolist() == ["A13", "B4", "C56"]
    assert first[ds.TIMESTAMP].tolist() == [1207008001, 1207008002, 1207008003]  # 2008-04-01 + order seconds
    items = data.items.set_index(ds.ITEM_ID)
    assert items.loc["C56", ds.TITLE] == "Blouses C56, blue"
    assert items.loc["C56", ds.CATEGORY] == "Blouses"
    assert items.loc["C56", ds.PRICE] == 38.0
    assert items.loc["P67", ds.TITLE] == "Sale P67, navy blue"
    # A13 is clicked once from the trousers page and once from the skirts page: the majority is a tie,
    # broken by name; the report counts it.
    assert items.loc["A13", ds.CATEGORY] == "Skirts"
    assert data.report["products_with_mixed_attributes"] == 1


def test_clickstream_accepts_the_file_itself(uci_clicks: Path) -> None:
    by_file = load_source("clickstream", uci_clicks / "e-shop clothing 2008.csv")
    assert by_file.counts() == load_source("clickstream", uci_clicks).counts()


def test_generic_clickstream_with_order_and_date(tmp_path: Path) -> None:
    write(tmp_path / "clicks.csv", """
session_id,item_id,order,year,month,day,category,colour,price
a,p1,1,2024,2,29,Shoes,red,10
a,p2,2,2024,2,29,Shoes,,
b,p1,1,2024,3,1,Shoes,red,10
b,p3,2,2024,3,1,,,
""")
    data = load_source("clickstream", tmp_path)
    assert data.counts() == {"items": 3, "users": 2, "interactions": 4}
    times = data.interactions.set_index([ds.USER_ID, ds.ITEM_ID])[ds.TIMESTAMP]
    assert times[("sa", "p2")] == 1709164800 + 2  # 2024-02-29 (a leap day) + 2 s
    items = data.items.set_index(ds.ITEM_ID)
    assert items.loc["p1", ds.TITLE] == "Shoes p1, red"
    assert items.loc["p2", ds.TITLE] == "Shoes p2" and np.isnan(items.loc["p2", ds.PRICE])
    assert items.loc["p3", ds.TITLE] == ""  # no attributes: the item text falls back to its id
    assert data.report["products_with_mixed_attributes"] == 0


def test_clickstream_dates_far_from_now(tmp_path: Path) -> None:
    write(tmp_path / "clicks.csv", "session_id,item_id,order,year,month,day\n1,p1,5,3024,3,1\n")
    assert load_source("clickstream", tmp_path).interactions[ds.TIMESTAMP].tolist() == [33266160000 + 5]
    write(tmp_path / "clicks.csv", "session_id,item_id,order,year,month,day\n1,p1,5,1969,12,31\n")
    with pytest.raises(DataValidationError, match="line 2: year-month-day 1969-12-31 is not a date from 1970 on"):
        load_source("clickstream", tmp_path)


def test_clickstream_ids_too_long_to_store_are_named_by_their_line(tmp_path: Path) -> None:
    """A session id of 128 characters was refused without a line, as "'s999…' is 129 characters long"."""
    write(tmp_path / "clicks.csv", f"session_id,item_id,order\n1,p1,1\n{'9' * 128},p2,2\n")
    with pytest.raises(DataValidationError, match=r"clicks\.csv, line 3: column 'session_id': '9+'\.\.\. is 128 "
                                                  r"characters long; a session id may have at most 127"):
        load_source("clickstream", tmp_path)
    write(tmp_path / "clicks.csv", f"session_id,item_id,order\n1,p1,1\n{'9' * 127},{'p' * 129},2\n")
    with pytest.raises(DataValidationError, match=r"clicks\.csv, line 3: column 'item_id': .* at most 128"):
        load_source("clickstream", tmp_path)


def test_clickstream_columns_it_does_not_read_are_named_in_a_note(tmp_path: Path) -> None:
    """A misspelt ``categroy`` (or ``Price``) left every product without it, and nothing said so (the csv source
    says so)."""
    write(tmp_path / "clicks.csv", "session_id,item_id,order,categroy,Price\n1,p1,1,Shoes,9\n1,p2,2,Shoes,8\n")
    data = load_source("clickstream", tmp_path)
    assert len(data.notes) == 1 and data.notes[0].startswith("clicks.csv: column(s) 'categroy', 'Price' not read")
    write(tmp_path / "clicks.csv", "session_id,item_id,order,category,price\n1,p1,1,Shoes,9\n1,p2,2,Shoes,8\n")
    assert load_source("clickstream", tmp_path).notes == []


def test_generic_clickstream_with_timestamps_semicolons_and_titles(tmp_path: Path) -> None:
    write(tmp_path / "clicks.csv", """
session_id;item_id;timestamp;title;color
7;p1;2024-01-01T10:00:00Z;Red shoe;red
7;p2;1704103300;Blue shoe;blue
""")
    data = load_source("clickstream", tmp_path)
    assert data.interactions[ds.TIMESTAMP].tolist() == [1704103200, 1704103300]
    assert data.items.set_index(ds.ITEM_ID).loc["p1", ds.TITLE] == "Red shoe"
    assert data.users[ds.USER_ID].tolist() == ["s7"]


@pytest.mark.parametrize("row, message", [
    ("2008;4;2;x;21;2;2;B4;10;2;1;52;1;1", r"line 8: column 'order\(sells\)': 'x' is not an integer"),
    ("2008;4;2;-1;21;2;2;B4;10;2;1;52;1;1", r"line 8: column 'order\(sells\)': -1 is not a click position"),
    ("2008;2;30;1;21;2;2;B4;10;2;1;52;1;1", r"line 8: year-month-day 2008-2-30 is not a date"),
    ("2008;4;2;4;21;2;7;B4;10;2;1;52;1;1", r"line 8: column 'page 1 \(main category\)': 7 is not a code from 1 to 4"),
    ("2008;4;2;4;21;2;2;B4;15;2;1;52;1;1", r"line 8: column 'colour': 15 is not a code from 1 to 14"),
    ("2008;4;2;4;21;2;2;B4;10;2;1;cheap;1;1", r"line 8: column 'price': 'cheap' is not a number"),
    ("2008;4;2;4;21;;2;B4;10;2;1;52;1;1", r"line 8: column 'session ID' is empty"),
    ("2008;4;2;4;21;2;2;B4;10;2;1;52;1;1;9;9", r"line 8: cannot parse the row: 16 fields, but the header names 14"),
])
def test_clickstream_bad_rows_are_named(uci_clicks: Path, row: str, message: str) -> None:
    with open(uci_clicks / "e-shop clothing 2008.csv", "a", encoding="utf-8") as handle:
        handle.write(row + "\n")
    with pytest.raises(DataValidationError, match=r"e-shop clothing 2008\.csv[,:] " + message):
        load_source("clickstream", uci_clicks)


def test_a_clickstreams_first_bad_value_is_named_whatever_is_wrong_with_it(uci_clicks: Path) -> None:
    """An order of -1 on line 8 and "x" on line 9: the message named line 9 (integers were checked first)."""
    with open(uci_clicks / "e-shop clothing 2008.csv", "a", encoding="utf-8") as handle:
        handle.write("2008;4;2;-1;21;2;2;B4;10;2;1;52;1;1\n2008;4;2;x;21;2;2;B4;10;2;1;52;1;1\n")
    with pytest.raises(DataValidationError, match=r"line 8: column 'order\(sells\)': -1 is not a click position"):
        load_source("clickstream", uci_clicks)


def test_clickstream_malformed_files(tmp_path: Path) -> None:
    clicks = tmp_path / "clicks.csv"
    with pytest.raises(DataValidationError, match="expected a directory with clicks.csv or a UCI"):
        load_source("clickstream", tmp_path)
    write(clicks, "")
    with pytest.raises(DataValidationError, match=r"clicks\.csv: file is empty"):
        load_source("clickstream", tmp_path)
    write(clicks, "session_id,item_id,order\n")
    with pytest.raises(DataValidationError, match="no data rows"):
        load_source("clickstream", tmp_path)
    write(clicks, "session_id,product,order\n1,p1,1\n")
    with pytest.raises(DataValidationError, match="missing required column.*item_id; found session_id, product"):
        load_source("clickstream", tmp_path)
    write(clicks, "session_id,item_id\n1,p1\n")
    with pytest.raises(DataValidationError, match="missing required column.*timestamp or order"):
        load_source("clickstream", tmp_path)
    write(clicks, "session_id,item_id,order,year,month\n1,p1,1,2024,1\n")
    with pytest.raises(DataValidationError, match="year, month and day go together; missing day"):
        load_source("clickstream", tmp_path)
    clicks.write_bytes(b"session_id,item_id,order,title\n1,p1,1,ok\n1,p2,2,caf\xe9\n")
    with pytest.raises(DataValidationError, match=r"clicks\.csv, line 3: not valid UTF-8 \(byte 0xe9\)"):
        load_source("clickstream", tmp_path)


def test_uci_clickstream_without_a_code_column_is_refused(tmp_path: Path) -> None:
    header = UCI_HEADER.replace(";colour", "")
    write(tmp_path / "shop.csv", f"{header}\n2008;4;1;1;29;1;1;A13;5;1;28;2;1\n")
    with pytest.raises(DataValidationError, match=r"shop\.csv: missing required column\(s\) colour; found year"):
        load_source("clickstream", tmp_path)


def test_clickstream_refuses_to_guess_between_two_uci_files(uci_clicks: Path) -> None:
    (uci_clicks / "copy.csv").write_text((uci_clicks / "e-shop clothing 2008.csv").read_text())
    with pytest.raises(DataValidationError, match="several clickstream files"):
        load_source("clickstream", uci_clicks)


def test_real_uci_eshop_clickstream() -> None:
    data = load_source("clickstream", shared_dataset("uci_eshop_clothing_2008"))
    # Figures from the dataset's README: 165,474 clicks, 24,026 sessions, 217 products,
    # sessions of 1 to 195 clicks within one day, 2008-04-01 to 2008-08-13.
    assert data.counts() == {"items": 217, "users": 24026, "interactions": 165474}
    assert data.report["bare_items"] == 0
    sizes = data.interactions.groupby(ds.USER_ID).size()
    assert (sizes.min(), sizes.max()) == (1, 195)
    times = data.interactions[ds.TIMESTAMP]
    assert times.min() // 86400 * 86400 == 1207008000  # 2008-04-01
    assert times.max() // 86400 * 86400 == 1218585600  # 2008-08-13
    # The README counts clicks by the page they came from (trousers 49,742, skirts 38,408); one click on
    # a trousers model came from the skirts page, so per product's category one click moves over.
    by_category = data.interactions[ds.ITEM_ID].map(data.items.set_index(ds.ITEM_ID)[ds.CATEGORY]).value_counts()
    assert by_category.to_dict() == {"Trousers": 49743, "Sale": 38747, "Blouses": 38577, "Skirts": 38407}
    assert data.report["products_with_mixed_attributes"] == 1
    assert data.items[ds.TITLE].str.len().min() > 0 and data.items[ds.PRICE].notna().all()


@pytest.fixture
def clicks_csv(tmp_path: Path) -> Path:
    write(tmp_path / "clicks.csv", "session_id,item_id,timestamp\na,p1,1700000000\na,p2,1700000060\n")
    return tmp_path


@pytest.mark.parametrize("source, fixture", [("movielens", "movielens_latest"), ("retailrocket", "retailrocket"),
                                             ("csv", "shop_csv"), ("amazon2018", "amazon_shop"),
                                             ("clickstream", "clicks_csv")])
def test_every_importer_drops_and_counts_events_outside_the_time_bounds(source: str, fixture: str,
                                                                       request: pytest.FixtureRequest) -> None:
    path = request.getfixturevalue(fixture)
    clean = load_source(source, path, time_bounds=BOUNDS)
    assert clean.report["out_of_range_time"] == 0
    data = load_source(source, _with_bad_times(source, path), time_bounds=BOUNDS)
    assert data.report["out_of_range_time"] == 2
    times = data.interactions[ds.TIMESTAMP]
    assert times.between(BOUNDS.earliest, BOUNDS.latest).all()
    assert len(data.interactions) == len(clean.interactions)
    assert load_source(source, path).report.get("out_of_range_time") is None  # no bounds: no check


def test_time_bounds_refuse_data_with_no_plausible_time(tmp_path: Path) -> None:
    # Milliseconds given as seconds put every event thousands of years ahead.
    write(tmp_path / "interactions.csv", "user_id,item_id,timestamp\na,x,1700000000000\nb,y,1700000000500\n")
    with pytest.raises(DataValidationError, match=r"interactions\.csv: every interaction's timestamp is outside "
                                                  r"1995-01-01T00:00:00\+00:00 \.\. .*not milliseconds"):
        load_source("csv", tmp_path, time_bounds=BOUNDS)
    # A date without dashes (ISO 8601's basic form) is a number of seconds in 1970: the message named no value.
    write(tmp_path / "interactions.csv", "user_id,item_id,timestamp\na,x,20231114\nb,y,20231115\n")
    with pytest.raises(DataValidationError, match=r"the first, read as unix second 20231114, is "
                                                  r"1970-08-23T03:45:14\+00:00 .*\(a date as 2023-11-14\)"):
        load_source("csv", tmp_path, time_bounds=BOUNDS)


@pytest.mark.parametrize("name", ["amazon2018_all_beauty", "amazon2018_gift_cards", "movielens_ml_latest_small"])
def test_real_datasets_are_inside_the_default_time_bounds(name: str) -> None:
    source = "movielens" if name.startswith("movielens") else "amazon2018"
    assert load_source(source, shared_dataset(name), time_bounds=BOUNDS).report["out_of_range_time"] == 0


def test_a_csv_that_is_not_utf8_names_its_line_and_says_what_to_do(tmp_path: Path) -> None:
    """A latin-1 title said only "'utf-8' codec can't decode byte 0xe9 in position 31" (no line, no advice)."""
    (tmp_path / "interactions.csv").write_text("user_id,item_id,timestamp\na,p1,1700000000\n")
    (tmp_path / "items.csv").write_bytes("item_id,title\np1,Mug\np2,Caf\xe9 cr\xe8me\n".encode("latin-1"))
    with pytest.raises(DataValidationError, match=r"items\.csv, line 3: not UTF-8 text .*; save the file as UTF-8"):
        load_source("csv", tmp_path)


def test_a_csv_separated_by_semicolons_says_so(tmp_path: Path) -> None:
    (tmp_path / "interactions.csv").write_text("user_id;item_id;timestamp\na;p1;1700000000\n")
    with pytest.raises(DataValidationError, match=r"separated by semicolons, and this source reads ','-separated"):
        load_source("csv", tmp_path)
    (tmp_path / "interactions.csv").write_text("user_id,item_id,timestamp\na,p1,1700000000\n")
    (tmp_path / "items.csv").write_text("item_id;title;price\np1;Mug;3\np2;Mug, large;4\n")
    with pytest.raises(DataValidationError, match=r"items\.csv, line 3: .*separated by semicolons"):
        load_source("csv", tmp_path)


# --------------------------------------------------------------------------- values no reader may let through


def test_a_retailrocket_price_that_is_no_price_is_refused_with_its_file_and_line(retailrocket: Path) -> None:
    # Before, "ninf" became an infinite price in the database, and every list holding the product answered 500.
    for value, shown in (("ninf", "'ninf'"), ("n1e400", "'n1e400'"), ("n-20.000", "'n-20.000'")):
        write(retailrocket / "item_properties_part2.csv",
              f"timestamp,itemid,property,value\n1435460400000,248676,888,5\n1435460500000,248676,790,{value}\n")
        with pytest.raises(DataValidationError, match=rf"item_properties_part2\.csv, line 3: property 790 \(the "
                                                      rf"price\) of item '248676': {shown} is not a price"):
            load_source("retailrocket", retailrocket)
    # A later, valid price replaces a broken one; a later value that is no number leaves the price before it (it
    # took it away), and a product whose every value is no number has no price.
    write(retailrocket / "item_properties_part2.csv", "timestamp,itemid,property,value\n"
          "1435460400000,248676,790,ninf\n1435460500000, 248676 ,790,n12.500\n1435460500000,355908,790,n/a\n")
    items = load_source("retailrocket", retailrocket).items.set_index(ds.ITEM_ID)
    assert items.loc["248676", ds.PRICE] == 12.5 and items.loc["355908", ds.PRICE] == 5880.0
    write(retailrocket / "item_properties_part2.csv", "timestamp,itemid,property,value\n"
          "1435460500000,248676,790,n/a\n")
    assert np.isnan(load_source("retailrocket", retailrocket).items.set_index(ds.ITEM_ID).loc["248676", ds.PRICE])


def test_retailrocket_item_properties_errors_are_named(retailrocket: Path) -> None:
    part = retailrocket / "item_properties_part2.csv"
    part.write_text("")
    with pytest.raises(DataValidationError, match=r"item_properties_part2\.csv: file is empty"):
        load_source("retailrocket", retailrocket)
    part.write_bytes(b"timestamp,itemid,property,value\n1,355908,888,5\n2,355908,888,caf\xe9\n")
    with pytest.raises(DataValidationError, match=r"item_properties_part2\.csv, line 3: not UTF-8 text"):
        load_source("retailrocket", retailrocket)
    part.write_text("time,itemid,property,value\n1,355908,888,5\n")  # it gave pandas' "Usecols do not match ..."
    with pytest.raises(DataValidationError, match=r"item_properties_part2\.csv, line 1: missing required column\(s\) "
                                                  r"timestamp; found time, itemid, property, value"):
        load_source("retailrocket", retailrocket)
    part.write_text("timestamp,itemid,property,value\n")  # a header alone: no property, as before
    assert load_source("retailrocket", retailrocket).report["items_with_price"] == 1
    # A broken price is named by its own line after blank lines and a quoted value over two lines, and only for a
    # product an event names (the others are not imported).
    part.write_text('timestamp,itemid,property,value\n\n1,999,790,ninf\n2,355908,888,"a\nb"\n\n'
                    '3,248676,790,n-1\n')
    with pytest.raises(DataValidationError, match=r"item_properties_part2\.csv, line 7: property 790 \(the price\) "
                                                  r"of item '248676'"):
        load_source("retailrocket", retailrocket)


@pytest.mark.parametrize("column", ["visitorid", "itemid"])
def test_retailrocket_empty_ids_are_named_by_their_column_and_line(retailrocket: Path, column: str) -> None:
    row = "1433224214170,,view,355908," if column == "visitorid" else "1433224214170,5,view, ,"
    with open(retailrocket / "events.csv", "a", encoding="utf-8") as handle:
        handle.write(row + "\n")
    with pytest.raises(DataValidationError, match=rf"events\.csv, line 6: column '{column}' is empty"):
        load_source("retailrocket", retailrocket)


@pytest.mark.parametrize("value", ["NaN", "Infinity", "1e30"])
def test_an_amazon_review_time_that_is_no_time_is_refused_with_its_line(amazon_shop: Path, value: str) -> None:
    # Python's json reads NaN and Infinity; int() of them raised a bare ValueError or OverflowError before.
    with open(amazon_shop / "Shop_5.json", "a", encoding="utf-8") as handle:
        handle.write(f'{{"reviewerID": "r3", "asin": "A2", "unixReviewTime": {value}, "overall": 4}}\n')
    with pytest.raises(DataValidationError, match=r"Shop_5\.json, line 3: field 'unixReviewTime' must be a unix "
                                                  r"time in seconds"):
        load_source("amazon2018", amazon_shop)


def test_an_amazon_file_that_is_not_utf8_names_its_line(amazon_shop: Path) -> None:
    with open(amazon_shop / "Shop_5.json", "ab") as handle:
        handle.write(b'{"reviewerID": "r3", "asin": "A2", "unixReviewTime": 1500000200, "overall": 4, '
                     b'"summary": "caf\xe9"}\n')
    with pytest.raises(DataValidationError, match=r"Shop_5\.json, line 3: not UTF-8 text"):
        load_source("amazon2018", amazon_shop)


@pytest.mark.parametrize("value", ["inf", "1e30", "99999999999999999999999"])
def test_numbers_too_large_for_a_time_or_an_id_are_refused_not_wrapped(tmp_path: Path, value: str) -> None:
    # Before, 1e30 became -9223372036854775808 (with numpy's warning on the console) and the row was dropped.
    write(tmp_path / "interactions.csv", f"user_id,item_id,timestamp\na,x,1700000000\nb,y,{value}\n")
    with pytest.raises(DataValidationError, match=rf"interactions\.csv, line 3: column 'timestamp': '{value}' is "
                                                  r"not a unix time"):
        load_source("csv", tmp_path)
    write(tmp_path / "events.csv", f"timestamp,visitorid,event,itemid\n1433221332117,1,view,5\n{value},2,view,5\n")
    with pytest.raises(DataValidationError, match=r"events\.csv, line 3: column 'timestamp'.* is not an integer of "
                                                  r"at most 18 digits"):
        load_source("retailrocket", tmp_path)


def test_each_source_says_how_it_reads_times_when_none_is_plausible(tmp_path: Path) -> None:
    # RetailRocket's times are milliseconds: seconds there must not be told "not milliseconds".
    write(tmp_path / "events.csv", "timestamp,visitorid,event,itemid\n1433221332,1,view,5\n1433221400,2,view,5\n")
    with pytest.raises(DataValidationError, match=r"read as unix milliseconds, as RetailRocket writes them") as caught:
        load_source("retailrocket", tmp_path, time_bounds=BOUNDS)
    assert "not milliseconds" not in str(caught.value)


def test_a_clickstream_without_dates_is_inside_the_default_time_bounds(tmp_path: Path) -> None:
    # The README says the clicks of an undated file are dated by their order; before, they fell in 1970 and the
    # default bounds (from 1995) dropped every one of them.
    write(tmp_path / "clicks.csv", "session_id,item_id,order\na,p1,1\na,p2,2\nb,p2,1\nb,p1,5\n")
    data = load_source("clickstream", tmp_path, time_bounds=BOUNDS)  # from 1995, as RECO_EVENT_MIN_TIME
    assert data.report["out_of_range_time"] == 0 and len(data.interactions) == 4
    first = data.interactions[data.interactions[ds.USER_ID] == "sa"]
    assert first[ds.TIMESTAMP].tolist() == [946_684_801, 946_684_802]


def test_movielens_movies_with_an_empty_or_a_twice_listed_id_are_refused(movielens_latest: Path) -> None:
    with open(movielens_latest / "movies.csv", "a", encoding="utf-8") as handle:
        handle.write(",No id,Drama\n")
    with pytest.raises(DataValidationError, match=r"movies\.csv, line 5: column 'movieId' is empty"):
        load_source("movielens", movielens_latest)
    write(movielens_latest / "movies.csv", "movieId,title,genres\n10,Toy Story (1995),Animation\n"
          "20,Heat (1995),Action\n10,Toy Story 2 (1999),Animation\n")
    with pytest.raises(DataValidationError, match=r"movies\.csv, line 4: product '10' is listed on line 2 and again "
                                                  r"with a different 'title'"):
        load_source("movielens", movielens_latest)
    write(movielens_latest / "ratings.csv", "userId,movieId,rating,timestamp\n1,10,4.0,964982703\n,10,3.0,964982800\n")
    write(movielens_latest / "movies.csv", "movieId,title,genres\n10,Toy Story (1995),Animation\n")
    with pytest.raises(DataValidationError, match=r"ratings\.csv, line 3: column 'userId' is empty"):
        load_source("movielens", movielens_latest)


def test_ids_with_a_comma_are_refused_at_import(tmp_path: Path) -> None:
    write(tmp_path / "interactions.csv", 'user_id,item_id,timestamp\na,x,1700000000\n"smith,john",y,1700000001\n')
    with pytest.raises(DataValidationError, match=r"interactions\.csv, line 3: column 'user_id': 'smith,john': An "
                                                  r"id may not hold a comma"):
        load_source("csv", tmp_path)
    write(tmp_path / "interactions.csv", 'user_id,item_id,timestamp\na,x,1700000000\n')
    write(tmp_path / "items.csv", 'item_id,title\nx,Mug\n"y,z",Cup\n')
    with pytest.raises(DataValidationError, match=r"items\.csv, line 3: column 'item_id': 'y,z': An id may not hold"):
        load_source("csv", tmp_path)
    # The last guard, for a loader without lines (Amazon's JSON): the id and the file.
    write(tmp_path / "Shop_5.json", '{"reviewerID": "r,1", "asin": "A1", "unixReviewTime": 1500000000, "overall": 5}\n')
    with pytest.raises(DataValidationError, match=r"Shop_5\.json: user_id 'r,1': An id may not hold a comma"):
        load_source("amazon2018", tmp_path)
