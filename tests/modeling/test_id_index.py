"""IdIndex: the positions pandas' Index gives, without pandas (web workers look ids up with it)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from modeling.id_index import IdIndex


def test_positions_match_pandas_on_random_ids() -> None:
    rng = np.random.default_rng(7)
    alphabet = list("abcXYZ019-_ é")
    ids = list(dict.fromkeys("".join(rng.choice(alphabet, size=rng.integers(1, 12))) for _ in range(3000)))
    index = IdIndex(np.asarray(ids))
    queries = [*rng.choice(ids, size=500).tolist(), "", "zzz", ids[0] + "x", ids[0][:-1], "é" * 40]
    expected = pd.Index(ids).get_indexer(queries)
    assert index.positions(queries).tolist() == expected.tolist()
    assert index.positions(np.asarray(queries, dtype=object)).tolist() == expected.tolist()
    assert index.get(ids[123]) == 123 and index.get("not an id") == -1 and len(index) == len(ids)


def test_longer_ids_never_match_a_prefix_and_duplicates_keep_the_first() -> None:
    index = IdIndex(["ab", "b", "a", "ab"])
    assert index.positions(["ab", "abc", "a", "b", "ab" + "c" * 30, ""]).tolist() == [0, -1, 2, 1, -1, -1]
    assert index.positions([]).shape == (0,)
    assert IdIndex([]).positions(["a"]).tolist() == [-1]
    assert IdIndex(np.asarray([], dtype=str)).get("") == -1
    assert "ab" in index and "abc" not in index and 3 not in index
    assert index.get("abc") == -1 and index.get("a") == 2


def test_ids_are_held_as_utf8_bytes_with_int32_positions() -> None:
    ids = [f"u{i:07d}" for i in range(1000)]
    index = IdIndex(np.asarray(ids))
    assert index._sorted.nbytes + index._order.nbytes == 1000 * (8 + 4)  # numpy's unicode: 1000 * (32 + 8)
    assert index.positions(np.asarray(ids[::-1], dtype=object)).tolist() == list(range(999, -1, -1))
    odd = IdIndex(["a\ud800", "é", "b"])  # a lone surrogate (never from HTTP, which decodes UTF-8) is still an id
    assert odd.positions(["é", "a\ud800", "a"]).tolist() == [1, 0, -1] and odd.get("a\ud800") == 0


def test_a_batchs_histories_are_looked_up_together_as_each_alone() -> None:
    """``Recommender`` looks up every history of a request in one search: the same positions as list by list,
    with text, object, bytes and empty id arrays (bytes beside text are looked up apart: each kind reads
    differently)."""
    from types import SimpleNamespace

    from modeling.recommender import Recommender

    index = IdIndex(["p1", "p2", "p3", "é"])
    engine = SimpleNamespace(item_lookup=index.positions)
    lists = [np.asarray(["p2", "nope", "p1"]), np.zeros(0, dtype=object), np.asarray(["é", "p3"], dtype=object),
             np.asarray(["p3"]), np.zeros(0, dtype=object)]
    alone = [index.positions(ids) for ids in lists]
    for given in (lists, [*lists, np.asarray([b"p1", b"x"])], lists[:1], [], [np.zeros(0, dtype=object)] * 3):
        got = Recommender._lookups(engine, given)  # type: ignore[arg-type]
        want = [index.positions(ids) if len(ids) else np.zeros(0, dtype=np.int64) for ids in given]
        assert [g.tolist() for g in got] == [w.tolist() for w in want]
        assert all(g.dtype == np.int64 for g in got)
    assert [g.tolist() for g in Recommender._lookups(engine, lists)] == [a.tolist() for a in alone]
