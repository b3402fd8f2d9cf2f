"""Property-based tests of every loader: random, truncated and spliced files.

Whatever the bytes, a loader either returns canonical tables or raises
``DataValidationError`` with a message; it never crashes with another exception.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modeling import datasets as ds
from modeling.errors import DataValidationError
from modeling.sources import load_source

_REVIEWS = "\n".join(json.dumps({"reviewerID": u, "asin": i, "unixReviewTime": t, "overall": r,
                                 "reviewText": "Nice mug", "summary": "Good"})
                     for u, i, t, r in [("u1", "i1", 1_500_000_100, 5.0), ("u1", "i2", 1_500_000_200, 4.0),
                                         ("u2", "i1", 1_500_000_150, 2.0)])
_META = "\n".join(json.dumps(m) for m in [
    {"asin": "i1", "title": "Red Car", "brand": "Acme", "category": ["Toys", "Cars"], "price": "$12.50"},
    {"asin": "i2", "title": "Blue Kite", "category": ["Toys"], "description": ["Flies."]},
])

SAMPLES: dict[str, dict[str, bytes]] = {
    "amazon2018": {"Toys_5.json": _REVIEWS.encode(), "meta_Toys.json": _META.encode()},
    "amazon2018-gzip": {"Toys_5.json.gz": gzip.compress(_REVIEWS.encode(), mtime=0)},
    "movielens": {
        "ratings.csv": b"userId,movieId,rating,timestamp\n1,10,4.0,964982703\n1,20,3.5,964982800\n2,10,5.0,1\n",
        "movies.csv": b'movieId,title,genres\n10,Toy Story (1995),Adventure|Animation\n20,"Heat, A",Action\n',
        "tags.csv": b"userId,movieId,tag,timestamp\n1,10,pixar,1\n",
    },
    "movielens-100k": {
        "u.data": b"1\t10\t4\t881250949\n2\t10\t3\t891717742\n1\t20\t1\t878887116\n",
        "u.item": ("10|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(["0"] * 19) + "\n"
                   "20|Caf\xe9 (1996)|01-Jan-1996||http://y|" + "|".join(["0", "1"] + ["0"] * 17) + "\n"
                   ).encode("latin-1"),
    },
    "retailrocket": {
        "events.csv": b"timestamp,visitorid,event,itemid,transactionid\n1433221332117,257597,view,355908,\n"
                      b"1433221999827,257597,addtocart,355908,\n1433222276276,257597,transaction,248676,4000\n",
        "item_properties_part1.csv": b"timestamp,itemid,property,value\n1435460400000,355908,categoryid,1016\n"
                                     b"1435460400000,355908,790,n5880.000\n",
        "category_tree.csv": b"categoryid,parentid\n1016,213\n213,\n",
    },
    "clickstream": {
        "clicks.csv": b"session_id,item_id,order,year,month,day,category,colour,price\n1,p1,1,2024,2,29,Shoes,red,10\n"
                      b"1,p2,2,2024,2,29,Shoes,,\n2,p1,1,2024,3,1,Shoes,red,10.5\n",
    },
    "clickstream-uci": {
        "e-shop clothing 2008.csv": b"year;month;day;order;country;session ID;page 1 (main category);"
                                    b"page 2 (clothing model);colour;location;model photography;price;price 2;page\n"
                                    b"2008;4;1;1;29;1;1;A13;1;5;1;28;2;1\n2008;4;1;2;29;1;2;B4;10;2;1;52;1;1\n"
                                    b"2008;4;2;1;21;2;3;C56;3;6;2;38;2;2\n",
    },
    "csv": {
        "interactions.csv": b"user_id,item_id,timestamp,event,weight,rating,text\nu1,p1,1700000000,purchase,1,,\n"
                            b'u1,p2,2023-11-15T10:00:00Z,review,1,4,"Nice, sturdy"\nu2,p1,1700000500,view,0.5,,\n',
        "items.csv": b"item_id,title,brand,category,price\np1,Red Mug,Acme,Kitchen > Mugs,9.5\np2,Blue Mug,,,\n",
    },
}


def source_of(sample: str) -> str:
    return sample.split("-")[0]


@st.composite
def damaged(draw: st.DrawFn, sample: str) -> dict[str, bytes]:
    """The sample's files with one of them truncated, replaced by noise, spliced or with a byte changed."""
    files = dict(SAMPLES[sample])
    name = draw(st.sampled_from(sorted(files)))
    original = files[name]
    kind = draw(st.sampled_from(["truncate", "noise", "splice", "flip"]))
    if kind == "truncate":
        files[name] = original[: draw(st.integers(0, len(original)))]
    elif kind == "noise":
        files[name] = draw(st.binary(max_size=400))
    elif kind == "splice":
        at = draw(st.integers(0, len(original)))
        files[name] = original[:at] + draw(st.binary(min_size=1, max_size=40)) + original[at:]
    else:
        at = draw(st.integers(0, len(original) - 1))
        files[name] = original[:at] + bytes([draw(st.integers(0, 255))]) + original[at + 1:]
    return files


def write_files(directory: Path, files: dict[str, bytes]) -> Path:
    for name, content in files.items():
        (directory / name).write_bytes(content)
    return directory


@pytest.mark.parametrize("sample", sorted(SAMPLES))
def test_undamaged_samples_load(sample: str, tmp_path: Path) -> None:
    data = load_source(source_of(sample), write_files(tmp_path, SAMPLES[sample]))
    assert data.counts()["interactions"] >= 3


@pytest.mark.parametrize("sample", sorted(SAMPLES))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_damaged_files_load_or_fail_with_a_validation_error(sample: str, data: st.DataObject) -> None:
    files = data.draw(damaged(sample))
    with tempfile.TemporaryDirectory() as directory:
        try:
            loaded = load_source(source_of(sample), write_files(Path(directory), files))
        except DataValidationError as exc:
            assert str(exc).strip()
        else:  # the damage left a valid file: the tables must still be consistent
            counts = loaded.counts()
            assert counts["interactions"] > 0 and counts["users"] > 0 and counts["items"] > 0
            assert set(loaded.interactions[ds.ITEM_ID]) <= set(loaded.items[ds.ITEM_ID])
