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
