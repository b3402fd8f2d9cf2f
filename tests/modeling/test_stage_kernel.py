"""The ranking stage's native code (modeling/stage_kernel.c) gives numpy's candidates and features, bit for bit.

``numpy_candidates`` is the specification (tests/modeling/test_candidate_features.py holds the whole computation
equal to a per-shopper loop); the C function must give the same arrays on every synthetic shop, with filters,
exclusions, ties, negative scores, empty histories, either width of position arrays and sources cut short, from
several threads at once, and the engine the same lists with it as without it. Where it cannot be used (no
compiler, ``RECO_NATIVE=0``, a library that differs) numpy computes them.
"""

from __future__ import annotations

import logging
import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from modeling import native, reranker
from modeling.candidates import CsrArrays
from modeling.compiled_ranker import toolchain

pytestmark = pytest.mark.skipif(toolchain() is None, reason="no C compiler (gcc or clang) on this machine")

WANTED = {
    "every feature": lambda *names: True,
    "the sequence's alone": lambda *names: "sequence" in names,
    "none of them": lambda *names: False,
}


@pytest.fixture
def function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The C function, compiled into a fresh folder (a compiler that fails makes this fail, not skip)."""
    monkeypatch.setenv(native.DIR_VARIABLE, str(tmp_path / "native"))
    monkeypatch.delenv(native.SWITCH_VARIABLE, raising=False)
    native.forget()
    found = native.stage_function()
    assert found is not None, "the stage's C code did not compile or load (see the log)"
    assert list((tmp_path / "native").glob("stage_kernel-*.so")), "nothing was compiled into RECO_NATIVE_DIR"
    yield found
    native.forget()


def _same(got: tuple[np.ndarray, ...] | None, expected: tuple[np.ndarray, ...]) -> bool:
    return got is not None and all(a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True)
                                   for a, b in zip(got, expected, strict=True))  # NaN: an unknown price's ratio


@pytest.mark.parametrize("wanted", list(WANTED), ids=list(WANTED))
def test_native_candidates_are_numpys_bit_for_bit(function, wanted: str) -> None:
    read = WANTED[wanted]
    checked = 0
    for seed in range(120):
        rng = np.random.default_rng(seed)
        proposals = reranker.synthetic_proposals(seed, n=int(rng.integers(3, 90)), m=int(rng.integers(1, 8)))
        expected = reranker.numpy_candidates(proposals, read)
        assert _same(reranker.native_candidates(function, proposals, read), expected), f"seed {seed}"
        checked += len(expected[0])
    assert checked > 5_000  # the shops hold candidates: the comparison is not of empty arrays


def test_a_bundle_matrix_s_c_view_is_made_once_and_reads_its_arrays(function) -> None:
    """A loaded stage's matrices are read by the C code on every request: their view is kept, not made again, and
    points at the arrays themselves (the candidates are still numpy's)."""
    proposals = reranker.synthetic_proposals(3, n=40, m=4)
    matrix = proposals.sources.item_item
    assert isinstance(matrix, CsrArrays)
    view = matrix.native_view
    assert view is matrix.native_view
    assert (view.indptr, view.indices, view.data) == (matrix.indptr.ctypes.data, matrix.indices.ctypes.data,
                                                      matrix.data.ctypes.data)
    wanted = WANTED["every feature"]
    assert _same(reranker.native_candidates(function, proposals, wanted), reranker.numpy_candidates(proposals, wanted))
    copied = pickle.loads(pickle.dumps(matrix))  # another process's addresses are its own
    assert "native_view" not in vars(copied) and np.array_equal(copied.data, matrix.data)
    assert copied.native_view.data == copied.data.ctypes.data != view.data


def test_the_synthetic_shops_exercise_what_they_claim() -> None:
    """Negative and tied scores, empty histories, filters and both widths of positions occur (else the comparison
    above would pass on easy cases only)."""
    seen = {"negative": False, "tie": False, "empty history": False, "filter": False, "int32": False, "int64": False}
    for seed in range(20):
        proposals = reranker.synthetic_proposals(seed)
        data = proposals.sources.item_item.data
        seen["negative"] |= bool((data < 0).any())
        seen["tie"] |= len(np.unique(data)) < len(data)
        seen["empty history"] |= any(len(items) == 0 for items in proposals.histories.items)
        seen["filter"] |= proposals.allowed is not None and not proposals.allowed.all()
        for matrix in (proposals.sources.item_item, proposals.sources.sequence, proposals.sources.transitions):
            seen[str(matrix.indices.dtype)] = True
    assert all(seen.values()), seen


def test_threads_calling_at_once_get_what_one_gets(function) -> None:
    """Each thread has its own scratch: answers computed concurrently equal those computed in turn."""
    shops = [reranker.synthetic_proposals(seed, n=200, m=6) for seed in range(40)]
    expected = [reranker.numpy_candidates(shop, WANTED["every feature"]) for shop in shops]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda shop: reranker.native_candidates(function, shop, WANTED["every feature"]),
                            shops * 3))
    assert all(_same(answer, expected[at % len(shops)]) for at, answer in enumerate(got))


def test_the_engine_serves_the_same_lists_with_and_without_it(pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    from modeling import artifacts
    from modeling.recommender import History, Recommender

    bundle = artifacts.load_bundle(pipeline.models / pipeline.version)
    engine = Recommender(bundle)
    items, users = np.asarray(bundle.arrays.item_ids), [str(u) for u in bundle.arrays.user_ids][:40]
    rng = np.random.default_rng(3)
    histories = {}
    for user in users:
        length = int(rng.integers(1, 25))
        histories[user] = History(np.asarray(items[rng.integers(0, len(items), length)], dtype=object),
                                  np.sort(rng.integers(1_600_000_000, 1_700_000_000, length)), np.ones(length))
    allowed = rng.random(len(items)) > 0.1

    def answers() -> list[dict]:
        return [engine.recommend(users, histories, 10, allowed)] + [engine.recommend([u], histories, 10)
                                                                    for u in users[:10]]

    assert reranker.stage_kernel() is not None
    calls = []
    real = reranker.native_candidates
    monkeypatch.setattr(reranker, "native_candidates", lambda *args: calls.append(1) or real(*args))
    with_native = answers()
    assert calls, "the engine did not use the native code"
    monkeypatch.setattr(reranker, "stage_kernel", lambda: None)
    monkeypatch.setattr(reranker, "text_kernel", lambda: None)
    with_numpy = answers()
    for one, other in zip(with_native, with_numpy, strict=True):
        for user, ranking in one.items():
            assert np.array_equal(ranking.items, other[user].items) and np.array_equal(ranking.scores,
                                                                                       other[user].scores)


@pytest.fixture
def text_function(function):
    """The C function ``text_features`` of the same freshly compiled library."""
    found = native.text_function()
    assert found is not None
    return found


def _text_batch(seed: int, dims: int = 24) -> tuple[dict, np.ndarray, np.ndarray]:
    """A synthetic batch without its content and features, numpy's features, and the C code's."""
    batch = reranker.synthetic_text_batch(seed, dims=dims)
    content, expected = batch.pop("content"), batch.pop("features")
    got = expected.copy()
    reranker.numpy_text_features(content, **batch, feats=expected, targets=TEXT_COLUMNS)
    return {"content": content, **batch}, expected, got


TEXT_COLUMNS = (1, 3, 0)  # text_history, text_last, nearest_age_days in the synthetic batches' 5 columns


@pytest.mark.parametrize("dims", [24, 384, 1100], ids=["24-d", "384-d", "1100-d (float64 products in numpy)"])
def test_native_text_features_are_numpys_bit_for_bit(text_function, dims: int) -> None:
    written = 0
    for seed in range(150 if dims < 1000 else 20):
        batch, expected, got = _text_batch(seed, dims)
        content = batch.pop("content")
        native.text_features(text_function, codes=content.codes, scales=content.scales, features=got,
                             columns=TEXT_COLUMNS, **batch)
        assert np.array_equal(got, expected, equal_nan=True), f"seed {seed}"
        assert not got[:, [2, 4]].any()  # columns not asked for are left alone
        written += int(np.count_nonzero(got))
    assert written > 1_000


def test_the_synthetic_text_batches_exercise_what_they_claim() -> None:
    """Shoppers without a history and without candidates, histories with repeats and a mean of 0, tied nearest
    products and candidates from the history occur (else the comparison above would pass on easy cases only)."""
    seen = dict.fromkeys(("no history", "no candidates", "repeat", "mean of 0", "tie", "candidate in history"), False)
    for seed in range(30):
        batch, expected, _ = _text_batch(seed)
        counts, sizes, items = batch["counts"], batch["sizes"], batch["items"]
        seen["no history"] |= bool(((counts == 0) & (sizes > 0)).any())
        seen["no candidates"] |= bool((sizes == 0).any())
        for row in range(len(counts)):
            history = items[row, items.shape[1] - counts[row]:]
            part = batch["cand"][batch["starts"][row]:batch["starts"][row] + batch["sizes"][row]]
            seen["repeat"] |= len(np.unique(history)) < len(history)
            seen["mean of 0"] |= bool(len(part) and list(history) == [0, 1])
            seen["tie"] |= bool(len(part) and {2, 3} <= set(history.tolist()))
            seen["candidate in history"] |= bool(np.isin(part, history).any())
    assert all(seen.values()), seen


def test_the_text_features_are_the_cosines_they_name() -> None:
    """Summed from the per-product cosines, the features equal the direct computation from the rows as float64
    vectors: cosine to the history's unit mean, to its last product, and the age of the most similar product."""
    for seed in range(40):
        batch, got, _ = _text_batch(seed)
        content = batch["content"]
        vectors = content.codes.astype(np.float64) * content.scales.astype(np.float64)[:, None]
        width = batch["items"].shape[1]
        for row, count in enumerate(batch["counts"].tolist()):
            part = slice(int(batch["starts"][row]), int(batch["starts"][row] + batch["sizes"][row]))
            candidates = vectors[batch["cand"][part]]
            if count == 0 or not len(candidates):
                assert np.isnan(got[part, 0]).all()
                continue
            history = batch["items"][row, width - count:]
            mean = vectors[history].mean(axis=0)
            norm = np.linalg.norm(mean)
            expected_history = candidates @ mean / norm if norm > 1e-9 else np.zeros(len(candidates))
            assert np.allclose(got[part, 1], expected_history, atol=1e-5)
            assert np.allclose(got[part, 3], candidates @ vectors[history[-1]], atol=1e-6)
            similarity = candidates @ vectors[history].T
            best = similarity.max(axis=1)
            nearest_age = (batch["stamps"][row, -1] - batch["stamps"][row, width - count:]) / 86_400.0
            for at in range(len(candidates)):  # the age of one of the products of (nearly) the highest cosine
                close = np.flatnonzero(similarity[at] >= best[at] - 1e-6)
                assert np.isclose(got[part, 0][at], nearest_age[close], rtol=1e-6).any()


def test_threads_computing_text_features_at_once_get_what_one_gets(text_function) -> None:
    batches = [_text_batch(seed, 384) for seed in range(30)]

    def compute(at: int) -> np.ndarray:
        batch, expected, _ = batches[at % len(batches)]
        batch = dict(batch)
        content = batch.pop("content")
        got = np.zeros_like(expected)
        native.text_features(text_function, codes=content.codes, scales=content.scales, features=got,
                             columns=TEXT_COLUMNS, **batch)
        return got

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(compute, range(len(batches) * 3)))
    assert all(np.array_equal(answer, batches[at % len(batches)][1], equal_nan=True) for at, answer in enumerate(got))


def test_the_text_features_refuse_inputs_the_c_code_would_read_past(text_function) -> None:
    batch, expected, got = _text_batch(4)
    content = batch.pop("content")
    arguments = {"codes": content.codes, "scales": content.scales, "features": got, "columns": TEXT_COLUMNS, **batch}
    bad = {"codes": content.codes.astype(np.int16), "features": got.astype(np.float64),
           "cand": np.full_like(batch["cand"], len(content.codes)), "counts": batch["counts"] + 20,
           "sizes": batch["sizes"] + 5, "stamps": batch["stamps"][:, 1:]}
    for name, value in bad.items():
        with pytest.raises(ValueError):
            native.text_features(text_function, **{**arguments, name: value})
    assert np.array_equal(got, np.zeros_like(got))  # nothing was written by a refused call


def test_a_bundle_s_text_features_are_the_same_with_and_without_it(pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every feature of a published bundle's candidates (its 8-bit text codes, memory-mapped), for a batch and for
    shoppers alone, with the native text features and with numpy's."""
    from modeling import artifacts
    from modeling.candidates import HistoryBatch
    from modeling.recommender import Recommender
    from modeling.rows import QuantizedRows

    engine = Recommender(artifacts.load_bundle(pipeline.models / pipeline.version))
    assert isinstance(engine.tables.content, QuantizedRows)
    n = len(engine.item_vectors)
    rng = np.random.default_rng(5)
    lengths = rng.integers(0, 60, 30)
    batch = HistoryBatch([rng.integers(0, n, length).astype(np.int64) for length in lengths],
                         [np.sort(rng.integers(1_600_000_000, 1_700_000_000, length)) for length in lengths])
    query = rng.normal(size=(len(lengths), engine.item_vectors.shape[1])).astype(np.float32)

    def features(rows: slice) -> tuple[np.ndarray, np.ndarray]:
        part = HistoryBatch(batch.items[rows], batch.timestamps[rows])
        return reranker.candidate_features(query[rows], engine.item_vectors, engine.index, engine.stage.sources,
                                           engine.tables, part, list(part.items), None, engine.stage.config)

    calls = []
    real = native.text_features
    monkeypatch.setattr(native, "text_features", lambda *args, **kw: calls.append(1) or real(*args, **kw))
    with_native = [features(slice(None)), *(features(slice(at, at + 1)) for at in range(5))]
    assert calls, "the native text features were not used"
    monkeypatch.setattr(reranker, "text_kernel", lambda: None)
    with_numpy = [features(slice(None)), *(features(slice(at, at + 1)) for at in range(5))]
    for (candidates, got), (same_candidates, expected) in zip(with_native, with_numpy, strict=True):
        assert np.array_equal(candidates, same_candidates) and np.array_equal(got, expected, equal_nan=True)
    text = [reranker.FEATURES.index(name) for name in reranker.TEXT_FEATURES]
    assert np.count_nonzero(with_native[0][1][..., text]) > 1_000  # the text features were computed


def test_switched_off_numpy_serves(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(native.DIR_VARIABLE, str(tmp_path))
    monkeypatch.setenv(native.SWITCH_VARIABLE, "off")
    native.forget()
    try:
        assert native.stage_function() is None and reranker.stage_kernel() is None
        assert native.text_function() is None and reranker.text_kernel() is None
        assert not list(tmp_path.iterdir())  # nothing compiled
    finally:
        native.forget()


def test_without_a_compiler_numpy_serves_with_a_log_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setenv(native.DIR_VARIABLE, str(tmp_path))
    monkeypatch.delenv(native.SWITCH_VARIABLE, raising=False)
    monkeypatch.setattr(native, "toolchain", lambda: None)
    native.forget()
    try:
        with caplog.at_level(logging.WARNING, logger="modeling.native"):
            assert native.stage_function() is None
        assert "no C compiler" in caplog.text and "numpy computes the candidates" in caplog.text
    finally:
        native.forget()


@pytest.mark.parametrize(("loader", "kernel", "message"), [
    ("stage_function", "stage_kernel", "numpy computes the candidates"),
    ("text_function", "text_kernel", "numpy computes the text features"),
], ids=["candidates", "text features"])
def test_a_library_that_differs_from_numpy_is_not_used(monkeypatch: pytest.MonkeyPatch,
                                                       caplog: pytest.LogCaptureFixture, loader: str, kernel: str,
                                                       message: str) -> None:
    """The once-per-process check refuses a function whose answers differ (here: it writes nothing)."""
    def writes_nothing(*args: object) -> int:
        return 0

    monkeypatch.setattr(native, loader, lambda: writes_nothing)
    monkeypatch.setattr(reranker, "_kernel", {})
    with caplog.at_level(logging.WARNING, logger="modeling.reranker"):
        assert getattr(reranker, kernel)() is None
    assert "native code differs from numpy" in caplog.text and message in caplog.text
