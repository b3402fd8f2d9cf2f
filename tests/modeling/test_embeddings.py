"""Text embeddings with the bundled MiniLM and behaviour embeddings."""

from __future__ import annotations

import numpy as np

from modeling import datasets as ds
from modeling.embeddings import TEXT_DIM, build_embeddings, load_embeddings
from tests.conftest import Pipeline


def test_embeddings_have_one_unit_vector_per_item_and_user(pipeline: Pipeline) -> None:
    emb = load_embeddings(pipeline.embeddings)
    assert emb.item_text.shape == (len(pipeline.data.items), TEXT_DIM)
    assert emb.user_text.shape == (len(pipeline.data.users), TEXT_DIM)
    assert np.allclose(np.linalg.norm(emb.item_text, axis=1), 1.0, atol=1e-4)
    assert np.allclose(np.linalg.norm(emb.user_text, axis=1), 1.0, atol=1e-4)
    assert emb.manifest["model_name"] == "all-MiniLM-L6-v2"
    assert emb.manifest["data_fingerprint"] == pipeline.data.fingerprint


def test_real_model_puts_related_products_closer(pipeline: Pipeline) -> None:
    emb = load_embeddings(pipeline.embeddings)
    items = pipeline.data.items.set_index(ds.ITEM_ID)
    dept = items.loc[emb.item_ids, ds.CATEGORY].str.split(" > ").str[0].to_numpy()
    sims = emb.item_text @ emb.item_text.T
    same = sims[dept[:, None] == dept[None, :]].mean()
    other = sims[dept[:, None] != dept[None, :]].mean()
    assert same > other + 0.05


def test_unchanged_inputs_are_skipped(pipeline: Pipeline) -> None:
    result = build_embeddings(pipeline.data, pipeline.embeddings, progress=False)
    assert result["skipped"] is True


def test_user_text_of_a_history_subset_matches_the_full_mean(pipeline: Pipeline) -> None:
    emb = load_embeddings(pipeline.embeddings)
    inter = pipeline.data.interactions
    users = pipeline.data.users[ds.USER_ID].astype(str).to_numpy()
    positions = np.searchsorted(users, inter[ds.USER_ID].astype(str).to_numpy())
    recomputed = emb.user_text_from_history(positions, inter[ds.TEXT].to_numpy(dtype=object), len(users))
    assert np.allclose(recomputed, emb.user_matrix_for(users), atol=1e-5)


def test_a_rebuild_encodes_only_new_or_changed_texts(pipeline: Pipeline, tmp_path) -> None:
    import shutil
    from dataclasses import replace

    from modeling import datasets as ds

    output = tmp_path / "embeddings"
    shutil.copytree(pipeline.embeddings, output)
    before = load_embeddings(output)
    items = pipeline.data.items.copy()
    items.loc[0, ds.TITLE] = items.loc[0, ds.TITLE] + " (new edition)"
    interactions = pipeline.data.interactions.copy()
    interactions.loc[interactions.index[0], ds.TEXT] = "A review nobody wrote before."
    changed = replace(pipeline.data, items=items, interactions=interactions, fingerprint="changed")
    manifest = build_embeddings(changed, output, progress=False)
    assert manifest["encoded"] == {"items": 1, "distinct_review_texts": 1}
    after = load_embeddings(output)
    same = before.item_ids[1:]
    assert np.array_equal(after.item_text[1:], before.item_text[1:]) and list(after.item_ids[1:]) == list(same)
    assert not np.allclose(after.item_text[0], before.item_text[0])
    fresh = build_embeddings(changed, tmp_path / "fresh", progress=False)  # no earlier build: everything encoded
    assert fresh["encoded"]["items"] == len(items)
    assert np.allclose(load_embeddings(tmp_path / "fresh").item_text[0], after.item_text[0], atol=1e-5)
    from modeling.atomic import default_dir_mode

    assert (tmp_path / "fresh").stat().st_mode & 0o777 == default_dir_mode()  # not mkdtemp's private 0700
