"""Exact and approximate (FAISS IVF) top-k: same interface, filters always exact, recall measured, stored in bundles."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest

from modeling import artifacts
from modeling.errors import ArtifactError
from modeling.index import (
    EXTRA,
    INDEX_FILE,
    NPROBE_STEPS,
    PQ_EXTRA,
    PQ_MIN_ITEMS,
    TEXT_INDEX_FILE,
    TEXT_PQ_BYTES,
    ExactIndex,
    IvfIndex,
    build_ivf,
    is_product_quantized,
    is_quantized,
    make_index,
    read_item_index,
    recall_against_exact,
    tune_nprobe,
    write_item_index,
    write_text_index,
)
from modeling.recommender import History, Recommender
from tests.conftest import Pipeline


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    """20,000 unit-length items in 50 clusters, 32 dimensions, like trained (normalised) item vectors."""
    rng = np.random.default_rng(0)
    items = CENTRES[rng.integers(0, 50, 20_000)] + 0.3 * rng.normal(size=(20_000, 32))
    return (items / np.linalg.norm(items, axis=1, keepdims=True)).astype(np.float32)


CENTRES = np.random.default_rng(42).normal(size=(50, 32))


def queries(n: int, seed: int = 1) -> np.ndarray:
    """Unit-length queries near the clusters, like shoppers' query vectors."""
    rng = np.random.default_rng(seed)
    q = CENTRES[rng.integers(0, 50, n)] + 0.5 * rng.normal(size=(n, 32))
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def test_exact_index_matches_a_brute_force_sort(vectors: np.ndarray) -> None:
    q = queries(5)
    positions, scores = ExactIndex(vectors).search(q, 10, [np.zeros(0, dtype=np.int64)] * 5)
    expected = np.argsort(-(q @ vectors.T), axis=1)[:, :10]
    assert (positions == expected).all()
    assert np.all(np.diff(scores, axis=1) <= 0)


@pytest.fixture(scope="module")
def ivf(vectors: np.ndarray):  # noqa: ANN201
    return build_ivf(vectors)


def test_ivf_recall_against_exact_search_grows_with_the_lists_scanned(vectors: np.ndarray, ivf) -> None:
    q = queries(200)
    one = recall_against_exact(IvfIndex(vectors, ivf, nprobe=1, extra=0), vectors, q, 10)
    tuned, measured = tune_nprobe(ivf, vectors, queries(300, seed=9))
    assert measured >= 0.97 and 8 <= tuned < ivf.nlist
    if tuned > 8:  # the smallest value that reaches the target, to within an eighth of the power of two below
        half, _ = tune_nprobe(ivf, vectors, queries(300, seed=9), target=0.0)
        assert half == 8
        step = max(1, (1 << ((tuned - 1).bit_length() - 1)) // NPROBE_STEPS)
        below = recall_against_exact(IvfIndex(vectors, ivf, nprobe=tuned - step, extra=0), vectors,
                                     queries(300, seed=9), 10)
        assert below < 0.97, (tuned, step, below)
    held_out = recall_against_exact(IvfIndex(vectors, ivf, nprobe=tuned, extra=0), vectors, q, 10)
    assert one < 0.8 and held_out >= 0.95, (one, held_out)  # on queries the tuning did not see


def test_ivf_never_returns_excluded_or_disallowed_items(vectors: np.ndarray, ivf) -> None:
    q = queries(20, seed=3)
    exact_top, _ = ExactIndex(vectors).search(q, 30, [np.zeros(0, dtype=np.int64)] * 20)
    exclude = [row[:10] for row in exact_top]  # the best ten of each query are "already bought"
    allowed = np.ones(len(vectors), dtype=bool)
    allowed[exact_top[:, 10:15].ravel()] = False  # and the next five are out of stock
    positions, scores = IvfIndex(vectors, ivf, nprobe=4).search(q, 10, exclude, allowed)
    for row in range(20):
        assert not set(positions[row]) & set(exclude[row])
        assert allowed[positions[row]].all()
        assert len(set(positions[row])) == 10 and np.isfinite(scores[row]).all()


def test_ivf_filters_the_whole_batch_as_a_loop_over_its_rows_would(vectors: np.ndarray, ivf) -> None:
    """Each row keeps, in the index's order, its first k candidates that are neither excluded nor disallowed;
    a row left short is answered by exact search (rows of different exclusions and one left short)."""
    q = queries(30, seed=4)
    exact_top, _ = ExactIndex(vectors).search(q, 40, [np.zeros(0, dtype=np.int64)] * 30)
    rng = np.random.default_rng(8)
    exclude = [row[rng.permutation(40)[:rng.integers(0, 30)]] for row in exact_top]  # 0 to 29 each
    exclude[7] = np.zeros(0, dtype=np.int64)
    exclude[0] = exact_top[0]  # its best 40: one list scanned leaves fewer than 10 for it
    allowed = np.ones(len(vectors), dtype=bool)
    allowed[exact_top[::3, :6].ravel()] = False
    index = IvfIndex(vectors, ivf, nprobe=1, extra=5)  # (sets the index's nprobe for the search below)
    fetch = 10 + max(len(e) for e in exclude) + 5
    scores, found = ivf.search(q, fetch)
    positions, got_scores = index.search(q, 10, exclude, allowed)
    short = 0
    for row in range(30):
        excluded = set(exclude[row])
        kept = [(p, s) for p, s in zip(found[row], scores[row], strict=True)
                if p >= 0 and allowed[p] and p not in excluded][:10]
        if len(kept) < 10:  # answered by exact search
            short += 1
            expected = ExactIndex(vectors).search(q[row:row + 1], 10, [exclude[row]], allowed)[0][0]
            assert (positions[row] == expected).all()
            continue
        assert positions[row].tolist() == [p for p, _ in kept]
        assert np.allclose(got_scores[row], [s for _, s in kept])
    assert 0 < short < 30, short


def test_ivf_falls_back_to_exact_search_under_a_narrow_filter(vectors: np.ndarray, ivf) -> None:
    q = queries(4, seed=5)
    allowed = np.zeros(len(vectors), dtype=bool)
    allowed[::50] = True  # 2% of the catalogue, e.g. one category
    none = [np.zeros(0, dtype=np.int64)] * 4
    approx = IvfIndex(vectors, ivf, nprobe=1).search(q, 10, none, allowed)
    exact = ExactIndex(vectors).search(q, 10, none, allowed)
    assert (approx[0] == exact[0]).all()


def test_make_index_switches_at_the_configured_size(vectors: np.ndarray) -> None:
    assert isinstance(make_index(vectors, None), ExactIndex)
    assert isinstance(make_index(vectors, len(vectors) + 1), ExactIndex)
    assert isinstance(make_index(vectors, len(vectors)), IvfIndex)


def test_products_added_after_the_index_was_built_are_scored_exactly(vectors: np.ndarray, ivf) -> None:
    q = queries(8, seed=11)
    added = q[:3] * 1.01  # three new products, each the best match of one query
    catalogue = np.concatenate([vectors, added]).astype(np.float32)
    none = [np.zeros(0, dtype=np.int64)] * 8
    positions, scores = IvfIndex(catalogue, ivf, nprobe=16, extra=0).search(q, 10, none)
    assert list(positions[:3, 0]) == [len(vectors), len(vectors) + 1, len(vectors) + 2]
    assert np.all(np.diff(scores, axis=1) <= 0)
    exclude = [np.array([len(vectors) + 1])] * 8
    positions, _ = IvfIndex(catalogue, ivf, nprobe=16, extra=0).search(q, 10, exclude)
    assert not (positions == len(vectors) + 1).any()


def test_the_stored_index_is_memory_mapped_and_answers_as_built(vectors: np.ndarray, tmp_path: Path) -> None:
    entry = write_item_index(tmp_path, vectors, queries(500, seed=4))
    assert entry["items"] == len(vectors) and entry["recall_at_10"] >= 0.97 and entry["file"] == INDEX_FILE
    assert entry["kind"] == "faiss_ivf_sq8"  # 8-bit codes, the candidates scored exactly
    stored = read_item_index(tmp_path / INDEX_FILE)
    assert is_quantized(stored) and IvfIndex(vectors, stored).quantized  # taken as it is stored
    lists = faiss.downcast_InvertedLists(stored.invlists)
    assert isinstance(lists, faiss.OnDiskInvertedLists) and lists.prefetch_nthread == 0  # mapped, not read
    again = build_ivf(vectors, quantized=True)
    q, none = queries(20, seed=6), [np.zeros(0, dtype=np.int64)] * 20
    a = IvfIndex(vectors, stored, nprobe=entry["nprobe"], extra=0).search(q, 10, none)
    b = IvfIndex(vectors, again, nprobe=entry["nprobe"], extra=0).search(q, 10, none)
    assert (a[0] == b[0]).all()  # the same seed builds the same index
    (tmp_path / "broken.faiss").write_bytes(b"not an index")
    with pytest.raises(ValueError, match="broken.faiss is damaged"):
        read_item_index(tmp_path / "broken.faiss")
    with pytest.raises(ValueError, match="gone.faiss is missing"):
        read_item_index(tmp_path / "gone.faiss")


def test_a_bundle_carries_its_index_and_refuses_one_that_does_not_fit(pipeline: Pipeline, tmp_path: Path) -> None:
    bundle_dir = tmp_path / pipeline.version
    shutil.copytree(pipeline.models / pipeline.version, bundle_dir)
    shutil.copytree(pipeline.models / "text_encoder", tmp_path / "text_encoder")
    original = artifacts.load_bundle(bundle_dir)
    assert original.item_index is None
    vectors = np.asarray(original.arrays.item_vectors)
    manifest = json.loads((bundle_dir / artifacts.MANIFEST_FILE).read_text())
    manifest["item_index"] = write_item_index(bundle_dir, vectors, np.asarray(original.arrays.user_vectors))
    (bundle_dir / artifacts.MANIFEST_FILE).write_text(json.dumps(manifest))
    bundle = artifacts.load_bundle(bundle_dir)
    assert bundle.item_index.ntotal == len(vectors)
    served = Recommender(bundle, ann_min_items=10)
    assert isinstance(served.index, IvfIndex) and served.index.built and served.index.quantized
    assert served.index.nprobe == manifest["item_index"]["nprobe"]
    assert isinstance(Recommender(bundle).index, ExactIndex)  # below the threshold (none): exact
    # A bundle published before codes holds the vectors (IVF-Flat): served as it is, without scoring again.
    manifest["item_index"] = write_item_index(bundle_dir, vectors, np.asarray(original.arrays.user_vectors),
                                              quantized=False)
    assert manifest["item_index"]["kind"] == "faiss_ivf_flat"
    (bundle_dir / artifacts.MANIFEST_FILE).write_text(json.dumps(manifest))
    older = Recommender(artifacts.load_bundle(bundle_dir), ann_min_items=10)
    assert isinstance(older.index, IvfIndex) and not older.index.quantized
    shoppers = [str(u) for u in original.arrays.user_ids[:20]]
    histories = {u: History(np.asarray(original.arrays.item_ids[n:n + 3], dtype=object), np.arange(3, dtype=np.int64),
                            np.ones(3)) for n, u in enumerate(shoppers)}
    a, b = served.recommend(shoppers, histories, 5), older.recommend(shoppers, histories, 5)
    assert np.mean([len(set(a[u].items) & set(b[u].items)) / 5 for u in shoppers]) >= 0.9
    write_item_index(bundle_dir, vectors[:-1], vectors[:5])  # an index of another catalogue
    with pytest.raises(ArtifactError, match=f"holds {len(vectors) - 1} .* the bundle {len(vectors)}"):
        artifacts.load_bundle(bundle_dir)
    (bundle_dir / INDEX_FILE).unlink()
    with pytest.raises(ArtifactError, match="item_index.faiss is missing"):
        artifacts.load_bundle(bundle_dir)


def test_the_quantized_index_finds_the_same_items_and_scores_them_exactly(vectors: np.ndarray, ivf,
                                                                          tmp_path: Path) -> None:
    """8-bit codes (what publishing writes): a quarter of the flat file, the candidates it finds scored exactly."""
    codes = build_ivf(vectors, quantized=True)
    with pytest.raises(ValueError, match="holds 8-bit codes, but was given as vectors"):
        IvfIndex(vectors, codes, quantized=False)  # approximate scores would be served as exact
    with pytest.raises(ValueError, match="holds the vectors, but was given as codes"):
        IvfIndex(vectors, ivf, quantized=True)
    tuned, measured = tune_nprobe(codes, vectors, queries(300, seed=9), quantized=True)
    assert measured >= 0.97 and tuned < codes.nlist
    q, none = queries(200), [np.zeros(0, dtype=np.int64)] * 200
    index = IvfIndex(vectors, codes, nprobe=tuned, quantized=True)
    assert recall_against_exact(index, vectors, q, 10) >= 0.95  # on queries the tuning did not see
    positions, scores = index.search(q, 10, none)
    assert np.allclose(scores, np.einsum("md,mkd->mk", q, vectors[positions]), atol=1e-6)
    assert np.all(np.diff(scores, axis=1) <= 0)
    faiss.write_index(codes, str(tmp_path / "codes.faiss"))
    faiss.write_index(ivf, str(tmp_path / "flat.faiss"))
    assert (tmp_path / "codes.faiss").stat().st_size < 0.4 * (tmp_path / "flat.faiss").stat().st_size
    exclude = [row[:5] for row in positions]  # filters and exclusions stay exact
    allowed = np.ones(len(vectors), dtype=bool)
    allowed[positions[:, 5:8].ravel()] = False
    again, _ = index.search(q, 10, exclude, allowed)
    for row in range(200):
        assert not set(again[row]) & set(exclude[row]) and allowed[again[row]].all()


def test_product_quantizer_codes_find_the_same_items_and_score_them_exactly(vectors: np.ndarray, ivf,
                                                                           tmp_path: Path) -> None:
    """Product-quantizer codes (the text index's from PQ_MIN_ITEMS products): an eighth of 8-bit codes' bytes per
    vector here, the candidates they find (PQ_EXTRA beyond k) scored exactly, filters and exclusions exact."""
    codes = build_ivf(vectors, quantized=True, pq_bytes=8)  # 8 sub-vectors of 4 of the 32 dimensions
    assert is_quantized(codes) and is_product_quantized(codes) and not is_product_quantized(ivf)
    with pytest.raises(ValueError, match="holds product-quantizer codes, but was given as vectors"):
        IvfIndex(vectors, codes, quantized=False)
    tuned, measured = tune_nprobe(codes, vectors, queries(300, seed=9), quantized=True)
    assert measured >= 0.97 and tuned < codes.nlist
    index = IvfIndex(vectors, codes, nprobe=tuned)  # taken as it is stored: codes, with their own extra
    assert index.quantized and index.extra == PQ_EXTRA
    assert IvfIndex(vectors, build_ivf(vectors, quantized=True)).extra == EXTRA
    q, none = queries(200), [np.zeros(0, dtype=np.int64)] * 200
    assert recall_against_exact(index, vectors, q, 10) >= 0.95  # on queries the tuning did not see
    positions, scores = index.search(q, 10, none)
    assert np.allclose(scores, np.einsum("md,mkd->mk", q, vectors[positions]), atol=1e-6)
    assert np.all(np.diff(scores, axis=1) <= 0)
    faiss.write_index(codes, str(tmp_path / "pq.faiss"))
    faiss.write_index(build_ivf(vectors, quantized=True), str(tmp_path / "sq8.faiss"))
    assert (tmp_path / "pq.faiss").stat().st_size < 0.6 * (tmp_path / "sq8.faiss").stat().st_size
    exclude = [row[:5] for row in positions]
    allowed = np.ones(len(vectors), dtype=bool)
    allowed[positions[:, 5:8].ravel()] = False
    again, _ = index.search(q, 10, exclude, allowed)
    for row in range(200):
        assert not set(again[row]) & set(exclude[row]) and allowed[again[row]].all()
        assert len(set(again[row])) == 10


def test_the_text_index_stores_product_quantizer_codes_from_its_threshold(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(40, 384))
    content = centres[rng.integers(0, 40, PQ_MIN_ITEMS)] + 0.8 * rng.normal(size=(PQ_MIN_ITEMS, 384))
    content = (content / np.linalg.norm(content, axis=1, keepdims=True)).astype(np.float32)
    entry = write_text_index(tmp_path, content)
    assert entry["kind"] == f"faiss_ivf_pq{TEXT_PQ_BYTES}" and entry["recall_at_10"] >= 0.97
    stored = read_item_index(tmp_path / TEXT_INDEX_FILE)
    assert is_product_quantized(stored) and stored.ntotal == PQ_MIN_ITEMS
    served = IvfIndex(content, stored, nprobe=entry["nprobe"])
    assert served.quantized and served.extra == PQ_EXTRA
    assert recall_against_exact(served, content, content[::97][:100], 10) >= 0.95
    below = tmp_path / "below"
    below.mkdir()
    assert write_text_index(below, content[:PQ_MIN_ITEMS - 1])["kind"] == "faiss_ivf_sq8"
    # Vectors without structure (uniform noise) defeat product codes: 8-bit codes are stored instead.
    noise = rng.normal(size=(PQ_MIN_ITEMS, 384))
    noise = (noise / np.linalg.norm(noise, axis=1, keepdims=True)).astype(np.float32)
    fallback = write_text_index(below, noise)
    assert fallback["kind"] == "faiss_ivf_sq8" and fallback["tried"]["kind"] == f"faiss_ivf_pq{TEXT_PQ_BYTES}"
    assert not is_product_quantized(read_item_index(below / TEXT_INDEX_FILE))


def test_a_bundle_carries_its_text_index_and_text_queries_search_it(pipeline: Pipeline, tmp_path: Path) -> None:
    bundle_dir = tmp_path / pipeline.version
    shutil.copytree(pipeline.models / pipeline.version, bundle_dir)
    shutil.copytree(pipeline.models / "text_encoder", tmp_path / "text_encoder")
    original = artifacts.load_bundle(bundle_dir)
    assert original.text_index is None and isinstance(Recommender(original, ann_min_items=10).text_index,
                                                      ExactIndex)  # none stored: text queries stay exact
    content = np.asarray(original.arrays.item_content)
    manifest = json.loads((bundle_dir / artifacts.MANIFEST_FILE).read_text())
    manifest["text_index"] = write_text_index(bundle_dir, content)
    assert manifest["text_index"]["kind"] == "faiss_ivf_sq8" and manifest["text_index"]["file"] == TEXT_INDEX_FILE
    (bundle_dir / artifacts.MANIFEST_FILE).write_text(json.dumps(manifest))
    bundle = artifacts.load_bundle(bundle_dir)
    served, exact = Recommender(bundle, ann_min_items=10), Recommender(bundle)
    assert isinstance(served.text_index, IvfIndex) and served.text_index.quantized
    assert isinstance(exact.text_index, ExactIndex)  # below the threshold (none): exact
    none = np.zeros(0, dtype=object)
    searches = {f"visitor{n}": History(none, np.zeros(0, dtype=np.int64), np.zeros(0), text=content[n * 7])
                for n in range(5)}
    a = served.recommend(list(searches), searches, 5)
    b = exact.recommend(list(searches), searches, 5)
    for user in searches:
        assert a[user].strategy == b[user].strategy
        assert len(set(a[user].items) & set(b[user].items)) >= 4, (a[user].items, b[user].items)
        assert np.allclose(np.sort(a[user].scores)[-1], np.sort(b[user].scores)[-1], atol=1e-6)
    write_text_index(bundle_dir, content[:-1])  # an index of another catalogue
    with pytest.raises(ArtifactError, match="text index holds"):
        artifacts.load_bundle(bundle_dir)
    (bundle_dir / TEXT_INDEX_FILE).unlink()
    with pytest.raises(ArtifactError, match="text_index.faiss is missing"):
        artifacts.load_bundle(bundle_dir)


def test_indexes_sharing_one_faiss_object_each_search_with_their_own_nprobe(vectors: np.ndarray, ivf) -> None:
    """Two engines over the same bundle (or tuning) share the FAISS object: each keeps its own nprobe."""
    q, none = queries(200, seed=5), [np.zeros(0, dtype=np.int64)] * 200
    narrow = IvfIndex(vectors, ivf, nprobe=1, extra=0)
    wide = IvfIndex(vectors, ivf, nprobe=ivf.nlist, extra=0)  # every list: exact within the index
    exact, _ = ExactIndex(vectors).search(q, 10, none)
    assert (wide.search(q, 10, none)[0] == exact).all()
    assert recall_against_exact(narrow, vectors, q, 10) < 0.8  # not the wide one's nprobe
