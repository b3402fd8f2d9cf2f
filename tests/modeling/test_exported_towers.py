"""The numpy export of the towers gives TensorFlow's vectors, and bundles refuse a damaged or mismatched export."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from modeling import artifacts
from modeling import datasets as ds
from modeling.candidates import CsrArrays
from modeling.embeddings import load_embeddings
from modeling.errors import ArtifactError
from modeling.exported_towers import EXPORT_DIR, TOLERANCE, export_towers, largest_difference, load_towers
from modeling.train import build_features, publish, sorted_history, train_model
from modeling.two_tower import TwoTowerParams
from tests.conftest import Pipeline


def _inputs(pipeline: Pipeline, params: TwoTowerParams):
    data = pipeline.data
    embeddings = load_embeddings(pipeline.embeddings)
    users = data.users[ds.USER_ID].astype(str).to_numpy()
    items = data.items[ds.ITEM_ID].astype(str).to_numpy()
    features = build_features(sorted_history(data.interactions, users, items, embeddings), users, items, embeddings,
                              data.items, params.history_length)
    return data, embeddings, features


@pytest.mark.parametrize("params", [
    TwoTowerParams(epochs=1, batch_size=128, seed=3),
    TwoTowerParams(epochs=1, batch_size=128, seed=4, attention_heads=2, use_user_id=True, share_item_embedding=True,
                   history_length=20, recent_length=2),
], ids=["default", "attention-user-id-shared"])
def test_exported_towers_equal_tensorflow(pipeline: Pipeline, tmp_path: Path, params: TwoTowerParams) -> None:
    import tensorflow as tf

    from modeling.train import candidate_inputs

    data, embeddings, features = _inputs(pipeline, params)
    model = train_model(data, embeddings, params, ranking_stage=False).model
    export_towers(model.query_tower, model.candidate_tower, tmp_path / EXPORT_DIR)
    query, candidate = load_towers(tmp_path / EXPORT_DIR)

    # Known and unknown shoppers, full, partial and empty windows, unknown products in the window.
    n = 12
    user_id = features.user_ids[:n].copy()
    user_id[-3:] = ["", "nobody", features.user_ids[0]]
    history = features.history[:n].copy()
    history[-3] = ""
    history[-2, :3] = ["unknown-a", "unknown-b", history[-2, 0]]
    weights = features.history_weight[:n] * (history != "")
    inputs = {"user_id": user_id, "user_text": features.user_text[:n], "user_behaviour": features.user_behaviour[:n],
              "history": history, "history_weight": weights}
    expected = model.query_tower({k: tf.constant(v) for k, v in inputs.items()}, training=False).numpy()
    got = query.serve(**inputs)
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.abs(got - expected).max() < 1e-5
    assert not np.allclose(got[0], got[1])  # the inputs matter
    for row in (0, n - 2):  # one shopper per call, as a request sends (its few ids are looked up one by one)
        single = query.serve(**{name: value[row:row + 1] for name, value in inputs.items()})
        assert np.abs(single[0] - expected[row]).max() < 1e-5

    # Products: known and unknown ids, unknown category and brand, unknown (negative) and boundary prices.
    attributes = features.attributes
    m = 10
    item_id = features.item_ids[:m].copy()
    item_id[-2:] = ["", "new-product"]
    category, brand = attributes.category[:m].copy(), attributes.brand[:m].copy()
    category[-1], brand[-1] = "never seen", ""
    price = attributes.price[:m].copy()
    price[:4] = [-1.0, 0.0, 5.0, 1e6]
    from modeling.features import ItemAttributes

    expected = model.candidate_tower(candidate_inputs(item_id, features.item_text[:m],
                                                      ItemAttributes(category, brand, price)), training=False).numpy()
    got = candidate.serve(item_id=item_id, item_text=features.item_text[:m], item_category=category, item_brand=brand,
                          item_price=price)
    assert np.abs(got - expected).max() < 1e-5


def test_publish_records_the_difference_and_serving_uses_the_export(pipeline: Pipeline, tmp_path: Path) -> None:
    bundle = artifacts.load_bundle(pipeline.models / pipeline.version)
    checked = bundle.manifest["exported_towers"]
    assert 0 <= checked["query"] <= TOLERANCE and 0 <= checked["candidate"] <= TOLERANCE
    assert type(bundle.query_tower()).__name__ == "NumpyQueryTower"
    # The published shopper vectors (TensorFlow's) are what the export computes from the same window.
    params = TwoTowerParams.from_dict(bundle.manifest["params"])
    _, _, features = _inputs(pipeline, params)
    got = bundle.query_tower().serve(user_id=features.user_ids, user_text=features.user_text,
                                     user_behaviour=features.user_behaviour, history=features.history,
                                     history_weight=features.history_weight)
    assert np.abs(got - np.asarray(bundle.arrays.user_vectors)).max() <= TOLERANCE


def test_the_check_refuses_a_difference_above_the_tolerance() -> None:
    vectors = np.eye(3, dtype=np.float32)
    assert largest_difference(vectors, vectors) == 0.0
    with pytest.raises(ArtifactError, match="differ from TensorFlow"):
        largest_difference(vectors + 10 * TOLERANCE, vectors)
    with pytest.raises(ArtifactError, match="shape"):
        largest_difference(vectors[:2], vectors)


def _drop_weights(path: Path) -> None:
    (path / EXPORT_DIR / "query" / "out_kernel.npy").unlink()


def _other_format(path: Path) -> None:
    settings = path / EXPORT_DIR / "towers.json"
    settings.write_text(json.dumps({**json.loads(settings.read_text()), "format": 99}))


def _fewer_rows(path: Path) -> None:
    table = path / EXPORT_DIR / "candidate" / "item_embedding.npy"
    np.save(table, np.load(table)[:-1])


@pytest.mark.parametrize(("damage", "message"), [
    (lambda p: shutil.rmtree(p / EXPORT_DIR), "missing or damaged exported towers"),
    (_drop_weights, "incomplete exported towers"),
    (_other_format, "exported towers of format 99"),
    (_fewer_rows, "its embedding"),
])
def test_a_damaged_export_is_refused(models_copy: Path, pipeline: Pipeline, damage, message: str) -> None:
    path = models_copy / pipeline.version
    damage(path)
    with pytest.raises(ArtifactError, match=message):
        artifacts.load_bundle(path)


def test_publish_refuses_an_export_that_disagrees(pipeline: Pipeline, tmp_path: Path, monkeypatch) -> None:
    from modeling import train

    data = pipeline.data
    embeddings = load_embeddings(pipeline.embeddings)
    result = train_model(data, embeddings, TwoTowerParams(epochs=1, batch_size=128, seed=5))
    real_export = train.export_towers

    def skewed(query_tower, candidate_tower, directory):  # an export whose output layer is off
        real_export(query_tower, candidate_tower, directory)
        bias = directory / "query" / "out_bias.npy"
        np.save(bias, np.load(bias) + 0.5)

    monkeypatch.setattr(train, "export_towers", skewed)
    with pytest.raises(ArtifactError, match="differ from TensorFlow"):
        publish(result, data, embeddings, tmp_path, export_text=False)
    assert [p.name for p in tmp_path.iterdir()] == []  # no bundle, no half-written folder


def test_towers_that_do_not_fit_the_text_vectors_are_refused(pipeline: Pipeline) -> None:
    export = pipeline.models / pipeline.version / EXPORT_DIR
    load_towers(export, text_dim=384)
    with pytest.raises(ArtifactError, match="takes inputs of width"):
        load_towers(export, text_dim=768)


def test_ranking_stage_matrices_are_shared_memory_maps_also_after_new_products(pipeline: Pipeline) -> None:
    bundle = artifacts.load_bundle(pipeline.models / pipeline.version)
    sources = bundle.stage.sources
    assert not sources.item_item.data.flags.writeable  # read-only pages of the file, shared by the workers
    grown = sources.resized(sources.n_items + 3)
    assert grown.item_item.shape == (sources.n_items + 3, sources.n_items + 3)
    assert np.shares_memory(grown.item_item.data, sources.item_item.data)
    assert isinstance(sources.item_item, CsrArrays)  # a worker holds the arrays, not scipy's matrices
    assert (grown.item_item.to_scipy()[: sources.n_items, : sources.n_items] != sources.item_item.to_scipy()).nnz == 0
    assert grown.item_item.to_scipy()[sources.n_items:].nnz == 0


def test_a_lookup_maps_pads_and_unknown_terms_to_the_oov_bucket_as_string_lookup_does() -> None:
    from modeling.exported_towers import _Lookup

    terms = np.array([["b", "", "zz", ""], ["", "", "", "a"]])
    assert _Lookup(np.array(["a", "b", "c"]))(terms).tolist() == [[2, 0, 0, 0], [0, 0, 0, 1]]
    # A vocabulary that holds "" itself: pads are then that term, as in the TensorFlow tower.
    assert _Lookup(np.array(["a", "", "b"]))(terms).tolist() == [[3, 2, 0, 2], [2, 2, 2, 1]]
    assert _Lookup(np.array(["a"]))(np.zeros((2, 0), dtype=str)).shape == (2, 0)


def test_the_recommender_runs_the_query_tower_on_stored_indices_as_on_the_windows_ids(pipeline: Pipeline) -> None:
    """The recommender hands the tower each window's vocabulary indices, looked up once per product: the same
    vectors, bit for bit, as the window's ids through :meth:`serve` (pads, a product added after publishing and
    so outside the vocabulary, and shoppers known and unknown to the model included)."""
    from modeling.features import sort_history, user_windows, window_ids
    from modeling.recommender import History, Recommender

    bundle = artifacts.load_bundle(pipeline.models / pipeline.version)
    recommender = Recommender(bundle)
    recommender.add_items(np.array(["NEW-PRODUCT"]), np.ones((1, recommender.item_content.shape[1]), np.float32))
    ids = [str(i) for i in recommender.item_ids[:6]] + ["NEW-PRODUCT"]
    histories = [History(np.array(ids[:5], dtype=object), np.arange(5), np.ones(5)),
                 History(np.array(ids[4:], dtype=object), np.arange(3) * 86_400, np.ones(3)),
                 History(np.array(ids[:1], dtype=object), np.zeros(1, dtype=np.int64), np.ones(1))]
    users = [str(recommender.user_ids[0]), "", "someone-new"]
    got = recommender.content_vectors(histories, users)

    rows = [recommender.item_lookup(h.item_ids) for h in histories]
    joined = sort_history(np.concatenate([np.full(len(r), n) for n, r in enumerate(rows)]), np.concatenate(rows),
                          np.concatenate([h.timestamps for h in histories]),
                          np.concatenate([h.weights for h in histories]), len(histories))
    positions, weights, _ = user_windows(joined, recommender.history_length,
                                         half_life_days=recommender.history_half_life_days)
    from modeling.features import pooled_vectors

    tower = bundle.query_tower()
    want = tower.serve(user_id=np.asarray(users), user_text=np.zeros((3, recommender.item_content.shape[1]),
                                                                       np.float32),
                       user_behaviour=pooled_vectors(positions, weights, recommender.item_content),
                       history=window_ids(positions, recommender.item_ids), history_weight=weights)
    assert tower.history_lookup(np.array(["NEW-PRODUCT"])).tolist() == [0]  # outside the vocabulary
    assert np.array_equal(got, want)


def test_the_windows_of_a_batch_are_each_historys_own_and_uneven_histories_are_refused(pipeline: Pipeline) -> None:
    """The batch's interactions are joined before the unknown products are dropped: each shopper's window is the
    one it gets alone (an empty history and one of unknown products included), and a history whose ids,
    timestamps and weights differ in length is refused instead of lending its times to its neighbour."""
    from modeling.recommender import History, Recommender

    recommender = Recommender(artifacts.load_bundle(pipeline.models / pipeline.version))
    ids = [str(i) for i in recommender.item_ids[:4]]
    histories = [History(np.array(ids[:3], dtype=object), np.array([30, 10, 20]), np.array([1.0, 2.0, 1.0])),
                 History(np.zeros(0, dtype=object), np.zeros(0, dtype=np.int64), np.zeros(0)),
                 History(np.array(["nope", ids[3]], dtype=object), np.array([5, 1]), np.ones(2))]
    positions, weights = recommender._windows(histories)
    p = recommender.item_lookup(np.array(ids, dtype=object)).tolist()
    width = positions.shape[1]
    # newest first, each product with its own weight (seconds apart: the recency decay leaves them about whole)
    assert positions[0].tolist() == [p[0], p[2], p[1]] + [-1] * (width - 3)
    assert np.allclose(weights[0][:3], [1.0, 1.0, 2.0], rtol=1e-3) and not weights[0][3:].any()
    assert positions[1].tolist() == [-1] * width and not weights[1].any()
    assert positions[2].tolist() == [p[3]] + [-1] * (width - 1) and np.isclose(weights[2][0], 1.0, rtol=1e-3)
    for row, history in enumerate(histories):
        alone_positions, alone_weights = recommender._windows([history])
        assert np.array_equal(positions[row], alone_positions[0]) and np.array_equal(weights[row], alone_weights[0])
    none_positions, none_weights = recommender._windows([])
    assert none_positions.shape == (0, width) and none_positions.dtype == positions.dtype == np.int64
    assert none_weights.shape == (0, width) and none_weights.dtype == weights.dtype
    uneven = History(np.array(ids[:2], dtype=object), np.array([1, 2, 3]), np.ones(2))
    with pytest.raises(ValueError, match="differ in length"):
        recommender._windows([histories[0], uneven])
