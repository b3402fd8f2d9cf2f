"""Histories of products added after training only: the products nearest to theirs in the model's product space."""

from __future__ import annotations

import numpy as np
import pytest

from modeling import artifacts
from modeling.features import ItemAttributes
from modeling.recommender import CONTENT, RETRIEVAL, History, Recommender
from modeling.rows import as_float32
from tests.conftest import Pipeline


def _history(*ids: str, text: np.ndarray | None = None) -> History:
    return History(np.asarray(ids, dtype=object), np.arange(len(ids), dtype=np.int64) * 86_400, np.ones(len(ids)),
                   text)


@pytest.fixture
def copies(pipeline: Pipeline) -> tuple[Recommender, np.ndarray]:
    """A recommender with three trained products posted again under new ids (the same text, category, brand and
    price: what a shop adds after training looks like what it sold before), and the originals' positions."""
    recommender = Recommender(artifacts.load_bundle(pipeline.models / pipeline.version))
    categories = np.asarray(recommender.attributes.category, dtype=str)
    originals = np.asarray([int(np.flatnonzero(categories == c)[0]) for c in pd_unique(categories)[:3]])
    attributes = recommender.attributes
    recommender.add_items(np.asarray([f"COPY-{p}" for p in originals]),
                          as_float32(recommender.item_content[originals]),
                          ItemAttributes(np.asarray(attributes.category, dtype=str)[originals],
                                         np.asarray(attributes.brand, dtype=str)[originals],
                                         np.asarray(attributes.price, dtype=np.float32)[originals]))
    return recommender, originals


def pd_unique(values: np.ndarray) -> list[str]:
    """Distinct values in order of appearance."""
    return list(dict.fromkeys(values.tolist()))


def test_a_history_of_one_added_product_gets_its_similar_items_order(copies) -> None:
    recommender, originals = copies
    first = recommender.n_trained_items
    ranking = recommender.recommend(["visitor"], {"visitor": _history(f"COPY-{originals[0]}")}, 10)["visitor"]
    assert ranking.strategy == CONTENT
    # what similar_items answers: the nearest products to the copy's vector, the copy itself left out
    want, scores = recommender.rank(as_float32(recommender.item_vectors[[first]]), [np.array([first])], 10)
    assert ranking.items.tolist() == want[0].tolist()
    np.testing.assert_allclose(ranking.scores, scores[0], atol=1e-5)
    assert ranking.items[0] == originals[0]  # its trained twin first, not the popular list
    assert recommender.explain(_history(f"COPY-{originals[0]}"), ranking.items).tolist() == [first] * 10
    # the retrieval arm of an experiment (no learned ranking) orders it the same way
    retrieval = recommender.recommend(["visitor"], {"visitor": _history(f"COPY-{originals[0]}")}, 10,
                                      variant=RETRIEVAL)["visitor"]
    assert retrieval.items.tolist() == ranking.items.tolist()


def test_several_added_products_share_the_list_and_each_item_names_the_nearest(copies) -> None:
    recommender, originals = copies
    ids = [f"COPY-{p}" for p in originals[:2]]
    history = History(np.asarray(ids, dtype=object), np.zeros(2, dtype=np.int64), np.ones(2))  # equal weights
    ranking = recommender.recommend(["visitor"], {"visitor": history}, 6)["visitor"]
    assert ranking.strategy == CONTENT
    added = recommender.item_lookup(ids)
    mean = as_float32(recommender.item_vectors[added]).sum(axis=0, keepdims=True)
    want, scores = recommender.rank(mean / np.linalg.norm(mean), [added], 6)  # cosines to the products' mean
    assert ranking.items.tolist() == want[0].tolist()
    np.testing.assert_allclose(ranking.scores, scores[0], atol=1e-5)
    assert set(originals[:2]) & set(ranking.items.tolist())
    sources = recommender.explain(history, ranking.items)
    vectors = as_float32(recommender.item_vectors[np.concatenate([added, ranking.items])])
    assert sources.tolist() == added[np.argmax(vectors[:2] @ vectors[2:].T, axis=0)].tolist()


def test_a_visitor_s_text_beside_added_products_moves_the_list_and_is_named(copies) -> None:
    recommender, originals = copies
    text = as_float32(recommender.item_content[[originals[2]]])[0]  # the third product's own text
    alone = recommender.recommend(["v"], {"v": _history(f"COPY-{originals[0]}")}, 10)["v"]
    history = _history(f"COPY-{originals[0]}", text=text)
    both = recommender.recommend(["v"], {"v": history}, 10)["v"]
    assert both.strategy == CONTENT and both.items.tolist() != alone.items.tolist()
    sources = recommender.explain(history, both.items)
    assert set(sources.tolist()) <= {-1, recommender.n_trained_items}  # the copy, or the text (-1)
    from_text = np.asarray(recommender.text_vectors(text)) @ as_float32(recommender.item_vectors[both.items]).T
    from_copy = as_float32(recommender.item_vectors[[recommender.n_trained_items]]) @ \
        as_float32(recommender.item_vectors[both.items]).T
    assert ((sources == -1) == (from_text[0] > from_copy[0])).all()


def test_a_history_holding_a_trained_product_is_ranked_by_both_stages_as_before(copies) -> None:
    recommender, originals = copies
    history = _history(str(recommender.item_ids[originals[1]]), f"COPY-{originals[0]}")
    ranking = recommender.recommend(["visitor"], {"visitor": history}, 10)["visitor"]
    looked_up = [recommender.item_lookup(history.item_ids)]
    query = recommender.content_vectors([history], [""], looked_up)
    want, _ = recommender.stage.rank(query, recommender.item_vectors, recommender.index, recommender.tables,
                                     recommender.history_batch([history], looked_up), [looked_up[0]], 10)
    assert ranking.strategy == CONTENT and ranking.items.tolist() == want[0][want[0] >= 0].tolist()
    assert not recommender.added_only(looked_up[0])
    assert recommender.added_only(recommender.item_lookup([f"COPY-{originals[0]}", "unknown-id"]))
    assert not recommender.added_only(recommender.item_lookup(["unknown-id"]))


def test_a_trained_shoppers_list_is_explained_as_both_stages_made_it(copies) -> None:
    """A trained shopper whose products are all added ones is ranked by both stages (the query tower knows the
    shopper): the reasons were those of the product-space search all the same."""
    recommender, originals = copies
    shopper = str(recommender.bundle.arrays.user_ids[0])
    ids = [f"COPY-{p}" for p in originals[:2]]
    history = History(np.asarray(ids, dtype=object), np.arange(2, dtype=np.int64), np.ones(2))
    ranking = recommender.recommend([shopper], {shopper: history}, 10)[shopper]
    assert ranking.strategy == "two_tower"
    added = recommender.item_lookup(ids)
    content = as_float32(recommender.item_content[np.concatenate([added, ranking.items])])
    nearest_text = added[np.argmax(content[:2] @ content[2:].T, axis=0)]  # no item-item links: the text rule
    assert recommender.explain(history, ranking.items, trained=True).tolist() == nearest_text.tolist()
