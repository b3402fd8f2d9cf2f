"""Recommender.explain: the shopper's product each recommended item comes from."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from modeling import artifacts
from modeling.recommender import History, Recommender
from tests.conftest import Pipeline


def test_the_history_product_with_the_strongest_link_explains_an_item_else_the_nearest_text(
        pipeline: Pipeline) -> None:
    recommender = Recommender(artifacts.load_bundle(pipeline.models / pipeline.version))
    links = recommender.stage.sources.item_item.toarray()
    links[:, -3:] = 0.0  # three products no other product links to (the tiny shop links nearly everything)
    recommender.stage.sources.item_item = sp.csr_matrix(links)
    # Two history products with different neighbours, bought at the same time (equal recency weights).
    first = int(np.argmax((links > 0).sum(axis=1)))
    second = next(p for p in np.argsort(-(links > 0).sum(axis=1)) if p != first and links[p].any()
                  and np.any((links[first] > 0) & (links[p] <= 0)))
    history = History(item_ids=np.asarray([recommender.item_ids[first], recommender.item_ids[second]], dtype=object),
                      timestamps=np.array([1_700_000_000, 1_700_000_000]), weights=np.ones(2))
    only_first = int(np.flatnonzero((links[first] > 0) & (links[second] <= 0))[0])
    stronger = np.flatnonzero((links[first] > 0) & (links[second] > 0))
    unlinked = np.flatnonzero((links[first] <= 0) & (links[second] <= 0))
    assert len(stronger) and len(unlinked)  # every case below is exercised
    items = np.array([only_first, *stronger[:3], *unlinked[:3]])

    got = recommender.explain(history, items)

    assert got[0] == first
    for item, source in zip(stronger[:3], got[1:1 + len(stronger[:3])], strict=True):
        assert source == (first if links[first, item] >= links[second, item] else second)
    content = np.asarray(recommender.tables.content)
    for item, source in zip(unlinked[:3], got[1 + len(stronger[:3]):], strict=True):
        nearer = first if content[first] @ content[item] >= content[second] @ content[item] else second
        assert source == nearer
    unknown = History(item_ids=np.asarray(["not-a-product"], dtype=object), timestamps=np.zeros(1, dtype=np.int64),
                      weights=np.ones(1))
    assert recommender.explain(unknown, items).tolist() == [-1] * len(items)
