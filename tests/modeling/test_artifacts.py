"""Bundle save/load round trip, refusal of broken bundles, the ACTIVE pointer."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modeling import artifacts
from modeling import datasets as ds
from modeling.embeddings import load_embeddings
from modeling.errors import ArtifactError
from modeling.recommender import CONTENT, POPULAR, TWO_TOWER, History, Recommender
from modeling.rows import QuantizedRows, is_mapped
from modeling.train import build_features, publish, sorted_history, tower_vectors, train_model
from modeling.two_tower import TwoTowerParams
from tests.conftest import Pipeline


def test_round_trip_gives_identical_top_k(pipeline: Pipeline, tmp_path: Path) -> None:
    data = pipeline.data
    embeddings = load_embeddings(pipeline.embeddings)
    result = train_model(data, embeddings, TwoTowerParams(epochs=1, batch_size=128, seed=3))
    bundle_dir = publish(result, data, embeddings, tmp_path, export_text=False)  # no text queries here
    loaded = Recommender(artifacts.load_bundle(bundle_dir))

    users = data.users[ds.USER_ID].astype(str).to_numpy()
    items = data.items[ds.ITEM_ID].astype(str).to_numpy()
    features = build_features(sorted_history(data.interactions, users, items, embeddings), users, items, embeddings,
                              data.items, result.params.history_length)
    user_vectors, item_vectors = tower_vectors(result.model, features)
    exclude = [np.array([], dtype=np.int64)] * len(users)
    expected = np.argsort(-(user_vectors @ item_vectors.T), axis=1, kind="stable")[:, :10]
    got, _ = loaded.rank(loaded.known_user_vectors(list(users)), exclude, 10)
    assert np.array_equal(got, expected)

    # The saved query tower and its numpy export compute the same vectors as the in-memory one.
    import tensorflow as tf

    inputs = {"user_id": users[:5], "user_text": features.user_text[:5],
              "user_behaviour": features.user_behaviour[:5], "history": features.history[:5],
              "history_weight": features.history_weight[:5]}
    saved = loaded.bundle.saved_model(artifacts.QUERY_TOWER_DIR).serve(**{k: tf.constant(v) for k, v in inputs.items()})
    assert np.allclose(saved.numpy(), user_vectors[:5], atol=1e-5)
    assert np.allclose(loaded.bundle.query_tower().serve(**inputs), user_vectors[:5], atol=1e-5)


def test_bundle_arrays_are_memory_mapped_and_read_only(pipeline: Pipeline) -> None:
    bundle = artifacts.load_bundle(pipeline.models / pipeline.version)
    assert is_mapped(bundle.arrays.item_vectors)
    assert not bundle.arrays.item_vectors.flags.writeable
    assert bundle.manifest["libraries"]["tensorflow-recommenders"] == "0.7.7"
    # MiniLM's vectors are unit rows, and the bundle says so: serving keeps the mapped text vectors as the
    # ranking stage's table without reading every row to check (a private copy would follow a wrong flag).
    assert bundle.manifest["item_content_unit"] is True
    assert Recommender(bundle).tables.content is bundle.arrays.item_content
    assert is_mapped(bundle.arrays.item_content.codes)


def test_text_vectors_are_stored_as_8_bit_codes_and_float16_or_float32_bundles_still_serve(pipeline: Pipeline,
                                                                                           tmp_path: Path) -> None:
    import shutil

    bundle = artifacts.load_bundle(pipeline.models / pipeline.version)
    content = bundle.arrays.item_content
    assert isinstance(content, QuantizedRows) and bundle.manifest["item_content_dtype"] == "int8"
    assert (pipeline.models / pipeline.version / "item_content.npy").stat().st_size < content.codes.size + 4096
    # The codes keep each text vector within half a code of its row's scale, cosines with each other within 1e-2.
    original = load_embeddings(pipeline.embeddings).item_matrix_for(np.asarray(bundle.arrays.item_ids))
    decoded = np.asarray(content)
    assert np.all(np.abs(decoded - original) <= content.scales[:, None] * 0.5 + 1e-7)
    assert np.abs(decoded @ decoded[:20].T - original @ original[:20].T).max() < 1e-2
    served = Recommender(bundle)
    users = [str(u) for u in pipeline.data.users[ds.USER_ID].head(30)]
    histories = {u: History(np.asarray(group[ds.ITEM_ID].astype(str), dtype=object),
                            group[ds.TIMESTAMP].to_numpy(dtype=np.int64), group[ds.WEIGHT].to_numpy(dtype=np.float64))
                 for u, group in pipeline.data.interactions.groupby(ds.USER_ID) if str(u) in set(users)}
    now = served.recommend(users, histories, 10)
    for dtype in (np.float32, np.float16):  # the same bundle with the decoded rows, as bundles held them before
        older_dir = tmp_path / dtype.__name__ / pipeline.version
        shutil.copytree(pipeline.models / pipeline.version, older_dir)
        shutil.copytree(pipeline.models / "text_encoder", older_dir.parent / "text_encoder")
        np.save(older_dir / "item_content.npy", decoded.astype(dtype))
        (older_dir / artifacts.CONTENT_SCALE_FILE).unlink()
        older = Recommender(artifacts.load_bundle(older_dir))
        assert older.item_content.dtype == dtype
        before = older.recommend(users, histories, 10)
        same = np.mean([np.array_equal(now[u].items, before[u].items) for u in users])
        assert same == 1.0 if dtype == np.float32 else same >= 0.8, same  # float32 holds the decoded rows exactly
    np.save(older_dir / "item_content.npy", decoded.astype(np.float64))
    with pytest.raises(ArtifactError, match="int8 codes, float16 or float32"):
        artifacts.load_bundle(older_dir)
    np.save(older_dir / "item_content.npy", content.codes)  # codes without their scales
    with pytest.raises(ArtifactError, match="item_content_scale.npy: missing or damaged"):
        artifacts.load_bundle(older_dir)
    np.save(older_dir / artifacts.CONTENT_SCALE_FILE, content.scales[:-1])
    with pytest.raises(ArtifactError, match="not one scale per text vector"):
        artifacts.load_bundle(older_dir)


def test_a_bundle_carries_its_attribute_codes_and_one_written_before_them_is_coded_at_load(
        pipeline: Pipeline, tmp_path: Path) -> None:
    import shutil

    from modeling.reranker import CODE_FILES

    bundle = artifacts.load_bundle(pipeline.models / pipeline.version)
    assert bundle.attribute_codes is not None
    served = Recommender(bundle)
    assert np.shares_memory(served.tables.category, bundle.attribute_codes.category)  # mapped, not coded again
    older_dir = tmp_path / pipeline.version
    shutil.copytree(pipeline.models / pipeline.version, older_dir)
    shutil.copytree(pipeline.models / "text_encoder", tmp_path / "text_encoder")
    for name in CODE_FILES:
        (older_dir / artifacts.STAGE_DIR / f"{name}.npy").unlink()
    older = artifacts.load_bundle(older_dir)
    assert older.attribute_codes is None
    tables = Recommender(older).tables
    for name in ("category", "brand", "category_names", "brand_names"):
        assert np.array_equal(getattr(tables, name), getattr(served.tables, name)), name
    np.save(older_dir / artifacts.STAGE_DIR / "item_category_codes.npy", np.zeros(3, dtype=np.int32))
    with pytest.raises(ArtifactError, match="damaged ranking_stage/.*attribute codes incomplete"):
        artifacts.load_bundle(older_dir)


def test_text_vectors_known_to_be_unit_rows_are_neither_read_nor_copied() -> None:
    from modeling.reranker import ItemTables, rows_are_unit

    rng = np.random.default_rng(0)
    content = rng.normal(size=(50, 6)).astype(np.float32)
    unit = content / np.linalg.norm(content, axis=1, keepdims=True)
    unit[3] = 0.0  # a product without text
    attributes = (np.array(["c"] * 50), np.array([""] * 50), np.ones(50, dtype=np.float32))
    assert rows_are_unit(unit) and not rows_are_unit(content)
    assert ItemTables.build(*attributes, unit, np.ones(50), content_unit=True).content is unit
    assert ItemTables.build(*attributes, unit, np.ones(50)).content is unit  # checked, and kept
    normalised = ItemTables.build(*attributes, content, np.ones(50)).content
    np.testing.assert_allclose(np.linalg.norm(normalised, axis=1), 1.0, rtol=1e-5)
    assert ItemTables.build(*attributes, content, np.ones(50), content_unit=False).content is not content


def test_recommender_strategies_and_exclusions(pipeline: Pipeline) -> None:
    rec = Recommender(artifacts.load_bundle(pipeline.models / pipeline.version))
    inter = pipeline.data.interactions
    known = str(inter[ds.USER_ID].iloc[0])
    rows = inter[inter[ds.USER_ID] == known]
    history = History(rows[ds.ITEM_ID].to_numpy(dtype=object), rows[ds.TIMESTAMP].to_numpy(),
                      rows[ds.WEIGHT].to_numpy())
    result = rec.recommend([known, "newcomer", "stranger"], {known: history, "newcomer": history}, k=10)
    assert result[known].strategy == TWO_TOWER
    assert result["newcomer"].strategy == CONTENT
    assert result["stranger"].strategy == POPULAR
    seen = set(rec.item_positions(history.item_ids).tolist())
    for user in (known, "newcomer"):
        assert len(result[user].items) == 10
        assert not seen & set(result[user].items.tolist())
        assert np.all(np.diff(result[user].scores) <= 0)
    assert result["stranger"].items[0] == int(np.argmax(rec.popularity))


def test_popular_lists_of_products_nobody_has_bought_yet_keep_their_order_whatever_k(pipeline: Pipeline) -> None:
    """Products added since training all have popularity 0: the popular strategy's partition left them in an
    order that depended on k (``k=5`` was not the head of ``k=10``) and on the other shoppers of the request."""
    rec = Recommender(artifacts.load_bundle(pipeline.models / pipeline.version))
    text = np.random.default_rng(0).normal(size=(40, rec.item_content.shape[1])).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    rec.add_items(np.asarray([f"new-{i}" for i in range(40)]), text)
    allowed = np.zeros(rec.n_items, dtype=bool)
    allowed[-40:] = True  # e.g. a filter on a category of new products only
    lists = {k: rec.recommend(["stranger"], {}, k, allowed)["stranger"].items.tolist() for k in (5, 10, 17, 40)}
    assert lists[40] == list(range(rec.n_items - 40, rec.n_items))  # equal popularity: in catalogue order
    assert all(lists[k] == lists[40][:k] for k in lists)
    batch = rec.recommend([f"stranger-{i}" for i in range(30)], {}, 10, allowed)
    assert all(ranking.items.tolist() == lists[10] for ranking in batch.values())


def test_write_is_atomic_when_saving_fails(pipeline: Pipeline, tmp_path: Path) -> None:
    bundle = artifacts.load_bundle(pipeline.models / pipeline.version)

    def failing(directory: Path) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        artifacts.write_bundle(tmp_path, bundle.arrays, {}, failing)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("damage, message", [
    (lambda p: (p / "item_vectors.npy").unlink(), "item_vectors.npy: missing"),
    (lambda p: np.save(p / "user_vectors.npy", np.zeros((3, 7), dtype=np.float32)), "user_vectors has shape"),
    (lambda p: (p / "manifest.json").write_text("{not json"), "unreadable manifest"),
    (lambda p: (p / "query_tower" / "saved_model.pb").unlink(), "missing query_tower"),
])
def test_broken_bundles_are_refused(models_copy: Path, pipeline: Pipeline, damage, message: str) -> None:
    path = models_copy / pipeline.version
    damage(path)
    with pytest.raises(ArtifactError, match=message):
        artifacts.load_bundle(path)


def test_other_embedding_size_is_refused(models_copy: Path, pipeline: Pipeline) -> None:
    path = models_copy / pipeline.version
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["dim"] = 999
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="manifest says 999"):
        artifacts.load_bundle(path)


def test_active_pointer(models_copy: Path, pipeline: Pipeline) -> None:
    assert artifacts.read_active(models_copy) == pipeline.version
    assert artifacts.list_versions(models_copy) == [pipeline.version]
    with pytest.raises(ArtifactError, match="no model version"):
        artifacts.set_active(models_copy, "20990101T000000Z")
    assert artifacts.read_active(models_copy) == pipeline.version


@pytest.mark.parametrize("extra", [{}, {"attention_heads": 2, "history_half_life_days": 0.0}])
def test_content_path_reproduces_published_shopper_vectors(pipeline: Pipeline, tmp_path: Path, extra: dict) -> None:
    """A shopper's history sent at request time gives the vector the bundle stores for them (ids aside)."""
    from modeling.recommender import History

    data = pipeline.data
    embeddings = load_embeddings(pipeline.embeddings)
    params = TwoTowerParams.from_dict(extra, TwoTowerParams(epochs=1, batch_size=128, seed=3, history_length=8))
    result = train_model(data, embeddings, params)
    assert result.params.use_user_id is False
    recommender = Recommender(artifacts.load_bundle(publish(result, data, embeddings, tmp_path, export_text=False)))
    users = data.users[ds.USER_ID].astype(str).to_numpy()[:6]
    histories = []
    for user in users:
        rows = data.interactions[data.interactions[ds.USER_ID].astype(str) == user]
        histories.append(History(rows[ds.ITEM_ID].astype(str).to_numpy(), rows[ds.TIMESTAMP].to_numpy(),
                                 rows[ds.WEIGHT].to_numpy(), text=embeddings.user_matrix_for(np.array([user]))[0]))
    assert np.allclose(recommender.content_vectors(histories), recommender.known_user_vectors(list(users)),
                       atol=1e-5)


def test_bundle_of_an_older_format_is_refused_with_what_to_do(pipeline: Pipeline, tmp_path: Path) -> None:
    import shutil

    old = tmp_path / pipeline.version
    shutil.copytree(pipeline.models / pipeline.version, old)
    manifest = json.loads((old / artifacts.MANIFEST_FILE).read_text())
    (old / artifacts.MANIFEST_FILE).write_text(json.dumps({**manifest, "format": 1}))
    with pytest.raises(ArtifactError, match="bundle format 1.*manage.py train --activate"):
        artifacts.load_bundle(old)


def test_a_bundle_of_another_version_is_not_reused_by_training(pipeline: Pipeline, tmp_path: Path) -> None:
    """After an upgrade that changed the ranking stage's features, `train` on the same data found the old bundle
    by its training fingerprint, skipped training and could not load it; now it trains again."""
    import shutil

    from modeling.errors import IncompatibleBundleError
    from modeling.reranker import FEATURES
    from modeling.train import find_trained_version

    models = tmp_path / "models"
    shutil.copytree(pipeline.models / pipeline.version, models / pipeline.version)
    fingerprint = json.loads((models / pipeline.version / artifacts.MANIFEST_FILE).read_text())["training_fingerprint"]
    assert artifacts.incompatibility(models / pipeline.version) == ""
    assert find_trained_version(models, fingerprint) == pipeline.version
    stage = models / pipeline.version / "ranking_stage" / "stage.json"
    stage.write_text(json.dumps({**json.loads(stage.read_text()), "features": list(FEATURES[:-2])}))
    problem = artifacts.incompatibility(models / pipeline.version)
    assert "trained by another version of the service" in problem and "adds sequence, sequence_share" in problem
    assert find_trained_version(models, fingerprint) is None
    with pytest.raises(IncompatibleBundleError, match="another version.*manage.py train --activate"):
        artifacts.load_bundle(models / pipeline.version)


def test_removing_a_version_that_names_a_file_leaves_the_file(tmp_path: Path) -> None:
    """A file named like a version was renamed to a hidden name, then failed to be deleted as a folder."""
    (tmp_path / "20260101T000000Z").write_text("not a bundle")
    with pytest.raises(ArtifactError, match="20260101T000000Z in .* is not a model folder"):
        artifacts.remove_bundle(tmp_path, "20260101T000000Z")
    assert [p.name for p in tmp_path.iterdir()] == ["20260101T000000Z"]
    assert (tmp_path / "20260101T000000Z").read_text() == "not a bundle"
