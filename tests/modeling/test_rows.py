"""Row arrays that grow without copying their memory-mapped part: the same answers as one joined array."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from modeling import artifacts
from modeling.features import ItemAttributes
from modeling.index import ExactIndex, IvfIndex, build_ivf
from modeling.recommender import Recommender
from modeling.reranker import ItemTables
from modeling.rows import (
    QuantizedRows,
    StackedRows,
    append_rows,
    dot_rows,
    is_mapped,
    mapped,
    quantize_rows,
    release_pages,
    take_rows,
)
from tests.conftest import Pipeline


@pytest.fixture
def parts(tmp_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(50, 4)).astype(np.float32)
    np.save(tmp_path / "base.npy", base)
    mapped = np.load(tmp_path / "base.npy", mmap_mode="r")
    tail = rng.normal(size=(3, 4)).astype(np.float32)
    return mapped, tail, np.concatenate([base, tail])


def test_stacked_rows_answer_as_the_joined_array(parts) -> None:
    mapped, tail, joined = parts
    rows = append_rows(mapped, tail)
    assert isinstance(rows, StackedRows) and rows.base is mapped  # the mapped rows are not copied
    assert rows.shape == joined.shape and len(rows) == len(joined)
    for key in (slice(0, 10), slice(48, 53), slice(50, 53), slice(40, None), slice(None, None, 7)):
        assert np.array_equal(rows[key], joined[key]), key
    for key in (np.array([52, 0, 49, 50, 51, 3]), np.array([[1, 51], [50, 2]]), np.zeros(0, dtype=np.int64),
                joined[:, 0] > 0):
        assert np.array_equal(rows[key], joined[key])
    assert np.array_equal(rows[51], joined[51]) and np.array_equal(rows[-1], joined[-1])
    queries = np.random.default_rng(1).normal(size=(2, 4)).astype(np.float32)
    assert np.allclose(dot_rows(queries, rows), queries @ joined.T, atol=1e-5)
    assert np.array_equal(np.asarray(rows), joined)
    more = append_rows(rows, joined[:2])
    assert more.base is mapped and len(more) == 55 and len(rows) == 53  # the earlier stack unchanged
    with pytest.raises(IndexError):
        rows[np.array([53])]


def test_indexes_search_stacked_rows_as_joined_ones(parts) -> None:
    mapped, tail, joined = parts
    rows = append_rows(mapped, tail)
    queries = np.asarray(tail[:2] * 1.01)  # the best matches are among the added rows
    none = [np.zeros(0, dtype=np.int64)] * 2
    exact = ExactIndex(joined).search(queries, 5, none)
    assert all(np.array_equal(a, b) for a, b in zip(ExactIndex(rows).search(queries, 5, none), exact, strict=True))
    ivf = IvfIndex(rows, build_ivf(np.asarray(mapped), lists=4), nprobe=4, extra=0)
    assert np.array_equal(ivf.search(queries, 5, none)[0], exact[0])  # all lists: exact, added rows merged


def test_appended_tables_equal_tables_built_from_everything() -> None:
    rng = np.random.default_rng(2)
    content = rng.normal(size=(30, 6)).astype(np.float32)
    content /= np.linalg.norm(content, axis=1, keepdims=True)
    category = np.array(["a", "b", "", "c"] * 7 + ["a", "b"])
    brand = np.array(["x", ""] * 15)
    price = np.where(np.arange(30) % 4 == 0, -1.0, np.arange(30.0)).astype(np.float32)
    popularity = rng.random(30).astype(np.float32)
    new_category, new_brand = np.array(["b", "new", "", "new"]), np.array(["y", "x", "", "y"])
    new_price, new_content = np.array([3.0, -1.0, 9.0, 1.0], dtype=np.float32), 2 * content[:4]  # not unit norm
    whole = ItemTables.build(np.concatenate([category, new_category]), np.concatenate([brand, new_brand]),
                             np.concatenate([price, new_price]), np.concatenate([content, new_content]),
                             np.concatenate([popularity, np.zeros(4, dtype=np.float32)]))
    grown = ItemTables.build(category, brand, price, content, popularity).appended(
        new_category, new_brand, new_price, new_content, np.zeros(4, dtype=np.float32))
    for name in ("category", "brand"):  # the same grouping of products (codes are only compared)
        a, b = getattr(whole, name), getattr(grown, name)
        assert np.array_equal(a < 0, b < 0) and np.array_equal(a[:, None] == a[None, :], b[:, None] == b[None, :])
        assert np.array_equal(getattr(grown, f"{name}_names")[b[b >= 0]], getattr(whole, f"{name}_names")[a[a >= 0]])
    assert np.array_equal(whole.price, grown.price, equal_nan=True)
    assert np.allclose(np.asarray(whole.content), np.asarray(grown.content), atol=1e-6)
    for name in ("popularity_rank", "popularity", "popular_order"):
        assert np.array_equal(getattr(whole, name), getattr(grown, name)), name


def test_products_added_to_a_recommender_leave_the_bundle_arrays_shared(pipeline: Pipeline) -> None:
    bundle = artifacts.load_bundle(pipeline.models / pipeline.version)
    recommender = Recommender(bundle)
    content = np.asarray(bundle.arrays.item_content[:2], dtype=np.float32)
    category = np.asarray(bundle.attributes.category[:2], dtype=str)
    recommender.add_items(np.array(["ADDED-1", "ADDED-2", str(bundle.arrays.item_ids[0])]),
                          np.concatenate([content, content[:1]]),
                          ItemAttributes(np.append(category, "x"), np.array(["", "b", ""]),
                                         np.array([1.0, 2.0, 3.0], dtype=np.float32)))
    n = len(bundle.arrays.item_ids)
    assert recommender.n_items == n + 2  # the known id is not added again
    assert recommender.item_content.base is bundle.arrays.item_content
    assert recommender.item_vectors.base is bundle.arrays.item_vectors
    assert recommender.tables.content.base is bundle.arrays.item_content  # stacked, not joined
    assert isinstance(recommender.tables.content, StackedRows) and len(recommender.tables.content) == n + 2
    # The added product is found by its own text, as a joined copy of the arrays would find it.
    found = recommender.text_index.search(content[1:2], 1, [np.zeros(0, dtype=np.int64)])[0]
    assert found[0, 0] in (1, n + 1)  # the product whose text it copies, or the copy
    recommender.add_items(np.array(["ADDED-3"]), content[:1], None)
    assert recommender.item_content.base is bundle.arrays.item_content and recommender.n_items == n + 3


@pytest.mark.parametrize("stacked", [False, True])
def test_float16_rows_are_scored_as_their_float32_values_block_by_block(monkeypatch, stacked: bool) -> None:
    import modeling.rows

    monkeypatch.setattr(modeling.rows, "BLOCK_ROWS", 7)  # several blocks and a ragged last one
    rng = np.random.default_rng(3)
    rows = rng.normal(size=(30, 8)).astype(np.float16)
    queries = rng.normal(size=(4, 8)).astype(np.float32)
    tail = rng.normal(size=(3, 8)).astype(np.float32)
    expected = queries @ rows.astype(np.float32).T
    if stacked:
        expected = np.concatenate([expected, queries @ tail.T], axis=1)
    got = dot_rows(queries, append_rows(rows, tail) if stacked else rows)
    assert got.dtype == np.float32 and np.allclose(got, expected, atol=1e-5)
    if stacked:  # every way of reading a stack gives float32, its base's rows included
        stack = append_rows(rows, tail)
        for read in (stack[np.array([2, 31])], stack[2:5], stack[28:32], stack[3], np.asarray(stack)):
            assert read.dtype == np.float32
        assert np.array_equal(stack[2:5], rows[2:5].astype(np.float32)) and np.array_equal(stack[3], rows[3])


def test_float16_rows_convert_to_float32_as_astype_does_for_every_value() -> None:
    from modeling.rows import as_float32

    every = np.arange(65536, dtype=np.uint16).view(np.float16).reshape(256, 256)  # every bit pattern, nan and inf too
    assert np.array_equal(as_float32(every), every.astype(np.float32), equal_nan=True)
    assert as_float32(every[::3, 5:9]).shape == (86, 4)  # a strided view
    assert as_float32(np.ones((2, 3), dtype=np.float64)).dtype == np.float32


def test_quantized_rows_read_as_their_codes_times_their_scales_every_way(monkeypatch) -> None:
    import modeling.rows

    monkeypatch.setattr(modeling.rows, "BLOCK_ROWS", 7)  # several blocks and a ragged last one
    rng = np.random.default_rng(5)
    rows = rng.normal(size=(30, 16)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    rows[4] = 0.0  # a zero row: scale 0, read as zeros
    quantized = quantize_rows(rows)
    assert quantized.codes.dtype == np.int8 and np.abs(quantized.codes).max() == 127
    assert quantized.scales[4] == 0 and not np.any(quantized[4])
    decoded = quantized.codes.astype(np.float32) * quantized.scales[:, None]
    assert np.all(np.abs(decoded - rows) <= quantized.scales[:, None] / 2 + 1e-7)  # within half a code
    positions = np.array([[3, 29], [0, 3]])
    for read, expected in ((quantized[positions], decoded[positions]), (quantized[2:9], decoded[2:9]),
                           (quantized[7], decoded[7]), (quantized[np.arange(30) % 3 == 0], decoded[::3]),
                           (np.asarray(quantized), decoded)):
        assert read.dtype == np.float32 and np.array_equal(read, expected)
    queries = rng.normal(size=(4, 16)).astype(np.float32)
    assert np.allclose(dot_rows(queries, quantized), queries @ decoded.T, atol=1e-5)
    stack = append_rows(quantized, rows[:2])  # products added after publishing: float32 rows after the codes
    assert isinstance(stack, StackedRows) and stack.base is quantized
    assert np.allclose(dot_rows(queries, stack), queries @ np.concatenate([decoded, rows[:2]]).T, atol=1e-5)
    assert np.array_equal(stack[np.array([1, 31])], np.stack([decoded[1], rows[1]]))
    index = ExactIndex(quantized)
    none = [np.zeros(0, dtype=np.int64)] * 4
    assert np.array_equal(index.search(queries, 5, none)[0], ExactIndex(decoded).search(queries, 5, none)[0])
    with pytest.raises(ValueError, match="int8"):
        QuantizedRows(quantized.codes.astype(np.int16), quantized.scales)
    with pytest.raises(ValueError, match="scales"):
        QuantizedRows(quantized.codes, quantized.scales[:-1])


@pytest.mark.parametrize("dtype", [np.int8, np.float16, np.float32])
def test_rows_taken_are_the_rows_indexing_gives(tmp_path: Path, dtype: type) -> None:
    """``take_rows`` (np.take, faster on the request path) gives what indexing by the same positions gives, on a
    mapped bundle array and in memory, for positions of any shape, none, repeated or negative ones; out of range it
    raises as indexing does; a stack and 8-bit codes answer as they index themselves."""
    rng = np.random.default_rng(5)
    values = (rng.normal(size=(50, 7)) * 40).astype(dtype)
    np.save(tmp_path / "rows.npy", values)
    for rows in (values, mapped(tmp_path / "rows.npy")):
        for positions in (np.array([3, 3, 0, 49, -1]), rng.integers(0, 50, (4, 6)), np.zeros(0, dtype=np.int64),
                          np.array([[7]])):
            taken = take_rows(rows, positions)
            assert type(taken) is np.ndarray and taken.dtype == values.dtype
            assert taken.shape == (*positions.shape, 7) and np.array_equal(taken, rows[positions])
        with pytest.raises(IndexError):
            take_rows(rows, np.array([1, 50]))
        mask = rng.random(50) > 0.5  # read as indexing reads it, not as np.take would (rows 0 and 1)
        assert np.array_equal(take_rows(rows, mask), rows[mask])
    float_rows = values.astype(np.float32)
    stacked, quantized = StackedRows(float_rows[:30], float_rows[30:]), quantize_rows(float_rows)
    positions = np.array([[0, 29, 30], [49, 5, 31]])
    assert np.array_equal(take_rows(stacked, positions), float_rows[positions])
    decoded = quantized.codes.astype(np.float32) * quantized.scales[:, None]
    assert np.array_equal(take_rows(quantized, positions), decoded[positions])
    assert np.array_equal(take_rows(quantized, positions[0]), quantized[positions[0]])


def test_a_stack_over_8_bit_codes_gathers_its_rows_without_decoding_the_table(monkeypatch) -> None:
    """Products added after publishing stack the bundle's coded text rows (``append_rows``): a gather reads only the
    rows asked for, as before; turning the coded table into one array (``np.asarray``, all of it decoded: 150 MB
    and 0.1 s at 100,000 products, on every gather) is never done on the way."""
    rng = np.random.default_rng(6)
    rows = rng.normal(size=(40, 8)).astype(np.float32)
    quantized = quantize_rows(rows[:36])
    stacked = append_rows(quantized, rows[36:])
    assert isinstance(stacked, StackedRows) and stacked.base is quantized

    def whole(*args, **kwargs):
        raise AssertionError("the whole coded table was decoded")

    monkeypatch.setattr(QuantizedRows, "__array__", whole)
    decoded = quantized.codes.astype(np.float32) * quantized.scales[:, None]
    positions = np.array([3, 37, 35, 39, 0])
    want = np.concatenate([decoded, rows[36:]])[positions]
    assert np.array_equal(take_rows(stacked, positions), want)
    assert np.array_equal(stacked[positions], want)


def test_mapped_arrays_are_plain_views_of_the_file_map(tmp_path: Path) -> None:
    values = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "rows.npy", values)
    rows = mapped(tmp_path / "rows.npy")
    assert type(rows) is np.ndarray and not rows.flags.writeable  # no np.memmap wrapping on every read
    assert is_mapped(rows) and is_mapped(rows[1:3]) and not is_mapped(rows[[0, 2]])  # a gather is a copy
    assert np.array_equal(rows, values) and not is_mapped(values)
    (tmp_path / "bad.npy").write_bytes(b"not an array")
    with pytest.raises(ValueError):
        mapped(tmp_path / "bad.npy")


def test_release_pages_drops_a_mapped_arrays_resident_pages_and_keeps_its_values(tmp_path) -> None:
    def resident_kib(name: str) -> int:  # this process's resident KiB of the mapped file
        total, inside = 0, False
        for line in open("/proc/self/smaps").read().splitlines():
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and ":" in head[3]:
                inside = line.endswith(name)
            elif inside and line.startswith("Rss:"):
                total += int(head[1])
        return total

    values = np.arange(2_000_000, dtype=np.int64)
    np.save(tmp_path / "ids.npy", values)
    array = mapped(tmp_path / "ids.npy")
    assert int(array.sum()) == int(values.sum())  # every page read
    if not os.path.exists("/proc/self/smaps"):
        pytest.skip("no /proc/self/smaps here")
    assert resident_kib("ids.npy") > 15_000
    assert release_pages(array)
    assert resident_kib("ids.npy") < 1_000
    assert np.array_equal(array[[5, 1_999_999]], [5, 1_999_999])  # read again from the file
    assert not release_pages(values) and not release_pages(None)
