"""Text embeddings with the bundled MiniLM and behaviour embeddings."""

from __future__ import annotations

import numpy as np
import pytest

from modeling import datasets as ds
from modeling.embeddings import TEXT_DIM, behaviour_embeddings, build_embeddings, load_embeddings
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


def test_behaviour_embedding_weights_recent_and_heavy_interactions() -> None:
    content = np.eye(3, dtype=np.float32)
    day = 86_400
    out = behaviour_embeddings(
        user_idx=np.array([0, 0, 1]), item_idx=np.array([0, 1, 2]),
        timestamps=np.array([0, 180 * day, 5]), weights=np.array([1.0, 1.0, 2.0]),
        item_content=content, n_users=3, half_life_days=180,
    )
    # user 0: item 0 is one half-life older than item 1 -> weights 0.5 and 1
    expected = np.array([0.5, 1.0, 0.0]) / np.linalg.norm([0.5, 1.0])
    assert out[0] == pytest.approx(expected, abs=1e-6)
    assert out[1] == pytest.approx([0, 0, 1])
    assert out[2] == pytest.approx([0, 0, 0])  # no history: zero vector
