"""`benchmarks/text_projection.py`: rows projected onto their first directions keep what lies in them, and every
variant answers the same calls, the published rows unchanged afterwards."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import numpy as np

from benchmarks.text_projection import FULL, compare, projected, reads_text, timed_text_features
from modeling import artifacts, reranker
from modeling import datasets as ds
from modeling.recommender import History, Recommender
from tests.conftest import Pipeline


def test_rows_in_a_few_directions_keep_their_cosines_and_the_kept_share_says_how_much() -> None:
    rng = np.random.default_rng(0)
    inside = rng.normal(size=(400, 3)) @ rng.normal(size=(3, 16))  # rows of a 3-dimensional subspace of 16
    inside /= np.linalg.norm(inside, axis=1, keepdims=True)
    rows, share = projected(inside.astype(np.float32), 3, sample=200)
    assert rows.shape == (400, 3) and rows.codes.dtype == np.int8 and abs(share - 1.0) < 1e-5
    decoded = np.asarray(rows)
    assert np.allclose(np.linalg.norm(decoded, axis=1), 1.0, atol=2e-2)
    assert np.abs(decoded @ decoded[:50].T - inside @ inside[:50].T).max() < 2e-2  # 8-bit codes' rounding only
    spread = rng.normal(size=(400, 16)).astype(np.float32)  # no such subspace: two directions keep a part
    _, share = projected(spread, 2, sample=400)
    assert 0.05 < share < 0.5


def test_each_variant_answers_every_call_and_the_stage_s_functions_are_put_back(pipeline: Pipeline) -> None:
    recommender = Recommender(artifacts.load_bundle(pipeline.models / pipeline.version))
    published = recommender.tables
    users = [str(u) for u in pipeline.data.users[ds.USER_ID].head(12)]
    histories = {u: History(np.asarray(group[ds.ITEM_ID].astype(str), dtype=object),
                            group[ds.TIMESTAMP].to_numpy(dtype=np.int64), group[ds.WEIGHT].to_numpy(dtype=np.float64))
                 for u, group in pipeline.data.interactions.groupby(ds.USER_ID) if str(u) in set(users)}
    rows, _ = projected(published.content, 8)
    variants = {FULL: published, "8 dims": dataclasses.replace(published, content=rows)}
    original = reranker._text_features
    result = compare(recommender, variants, users, histories, np.ones(len(recommender.item_ids), dtype=bool), 2)
    assert reranker._text_features is original and recommender.tables is published
    assert result["calls_of_100"] == 2 and result["calls_of_one"] == 12
    full, fewer = result["summary"][FULL], result["summary"]["8 dims"]
    assert full["same_top10"] == 1.0 and full["hundred_ratio_to_published"] == 1.0
    reading = reads_text(recommender)  # the tiny shop's stage may order by a blend that reads no text feature
    assert (full["text_features_ms"] > 0) == reading and (fewer["text_features_ms"] > 0) == reading
    assert 0.0 <= fewer["top10_overlap"] <= 1.0


def test_the_text_features_timer_adds_up_and_puts_the_function_back_after_an_error() -> None:
    original = reranker._text_features
    spent = [0.0]
    try:
        with timed_text_features(spent):
            columns = {"text_history": 0, "text_last": 0, "nearest_age_days": 0}
            tables = SimpleNamespace(content=np.zeros((1, 1), dtype=np.float32))  # float rows: numpy's loop, empty
            reranker._text_features(np.zeros((0, 1)), columns, tables, np.zeros((0, 1)), np.zeros((0, 1)),
                                    np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64),
                                    np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64),
                                    np.zeros(0, dtype=np.int64))
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert reranker._text_features is original and spent[0] > 0
