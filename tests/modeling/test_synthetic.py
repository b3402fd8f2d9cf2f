"""The demo generator: deterministic, sized as asked, readable by the Amazon loader."""

from __future__ import annotations

from pathlib import Path

import pytest

from modeling import datasets as ds
from modeling.sources import load_source
from modeling.synthetic import META_FILENAME, REVIEWS_FILENAME, DemoParams, generate_demo_data

SMALL = DemoParams(n_users=40, n_items=30, n_interactions=400, seed=3)


def test_same_seed_gives_identical_files(tmp_path: Path) -> None:
    generate_demo_data(tmp_path / "a", SMALL, progress=False)
    generate_demo_data(tmp_path / "b", SMALL, progress=False)
    for name in (REVIEWS_FILENAME, META_FILENAME):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_other_seed_gives_other_data(tmp_path: Path) -> None:
    generate_demo_data(tmp_path / "a", SMALL, progress=False)
    generate_demo_data(tmp_path / "b", DemoParams(**{**SMALL.__dict__, "seed": 4}), progress=False)
    assert (tmp_path / "a" / REVIEWS_FILENAME).read_bytes() != (tmp_path / "b" / REVIEWS_FILENAME).read_bytes()


def test_demo_goes_through_the_amazon_loader_with_requested_sizes(tmp_path: Path) -> None:
    written = generate_demo_data(tmp_path, SMALL, progress=False)
    data = load_source("amazon2018", tmp_path)
    counts = data.counts()
    assert counts["users"] == 40
    assert counts["interactions"] == written["interactions"]
    # Shoppers are capped at half the catalogue, so tiny shops land a little under the target.
    assert 0.9 * 400 <= counts["interactions"] <= 400
    assert counts["items"] <= 30
    assert data.report["bare_items"] == 0
    assert (data.items[ds.TITLE].str.len() > 0).all()
    assert data.items[ds.PRICE].notna().all()
    assert data.items[ds.CATEGORY].str.contains(" > ").all()
    assert data.interactions[ds.TEXT].notna().all()
    per_user = data.interactions.groupby(ds.USER_ID)[ds.ITEM_ID]
    assert (per_user.nunique() == per_user.size()).all()  # no product reviewed twice
    assert per_user.size().min() >= SMALL.min_per_user


def test_rerun_with_same_params_is_skipped(tmp_path: Path) -> None:
    assert generate_demo_data(tmp_path, SMALL, progress=False)["skipped"] is False
    assert generate_demo_data(tmp_path, SMALL, progress=False)["skipped"] is True
    assert generate_demo_data(tmp_path, SMALL, progress=False, force=True)["skipped"] is False


@pytest.mark.parametrize("params, message", [
    (DemoParams(n_users=0), "at least 1 user"),
    (DemoParams(n_users=100, n_items=50, n_interactions=10), "below n_users"),
    (DemoParams(n_users=10, n_items=10, n_interactions=60), "exceeds half"),
])
def test_impossible_sizes_are_rejected(tmp_path: Path, params: DemoParams, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        generate_demo_data(tmp_path, params, progress=False)
