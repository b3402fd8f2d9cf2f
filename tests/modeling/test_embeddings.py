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


def test_a_file_where_the_embeddings_go_is_refused_and_kept(tmp_path) -> None:
    """A file given as the embeddings folder was moved to ``.<name>.old`` and a folder put in its place."""
    import pytest

    from modeling.embeddings import _replace_dir
    from modeling.errors import ArtifactError

    notes = tmp_path / "notes.txt"
    notes.write_text("data")
    new = tmp_path / "new"
    new.mkdir()
    with pytest.raises(ArtifactError, match="notes.txt exists and is not a folder"):
        _replace_dir(new, notes)
    assert notes.read_text() == "data" and new.is_dir() and not (tmp_path / ".notes.txt.old").exists()
    from modeling.embeddings import check_output_dir

    for target in (notes, notes / "below"):
        with pytest.raises(ArtifactError, match="is not a folder"):
            check_output_dir(target)
    check_output_dir(tmp_path / "fresh" / "below")  # a path that can become a folder


def test_a_file_in_the_way_of_the_old_folder_s_name_is_kept(tmp_path) -> None:
    """A file at ``.<name>.old`` (not one this code left) stopped every later build (rmtree of a file)."""
    from modeling.embeddings import _replace_dir

    target, new = tmp_path / "embeddings", tmp_path / "new"
    target.mkdir()
    (target / "manifest.json").write_text("{}")
    new.mkdir()
    (new / "manifest.json").write_text('{"new": true}')
    (tmp_path / ".embeddings.old").write_text("someone's notes")
    _replace_dir(new, target)
    assert (target / "manifest.json").read_text() == '{"new": true}'
    assert (tmp_path / ".embeddings.old").read_text() == "someone's notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".embeddings.old", "embeddings"]


def _model_folder(path, weights: bytes):  # noqa: ANN202
    path.mkdir(parents=True)
    (path / "modules.json").write_text("[]")
    (path / "config.json").write_text('{"model_type": "bert"}')
    (path / "model.safetensors").write_bytes(weights)
    return path


def test_the_fingerprint_names_the_model_s_content_not_its_folder_s_name(tmp_path) -> None:
    """Two models in folders of the same name (a fine-tuned copy; any folder called ``model``, as the bundled
    one is) gave the same fingerprint, so embeddings of the other model counted as current."""
    import pytest

    from modeling.embeddings import default_model_path, embeddings_fingerprint
    from modeling.errors import ArtifactError

    first = _model_folder(tmp_path / "a" / "model", b"\x00" * 64)
    second = _model_folder(tmp_path / "b" / "model", b"\x01" * 64)
    assert embeddings_fingerprint("data", str(first)) != embeddings_fingerprint("data", str(second))
    assert embeddings_fingerprint("data", str(first)) != embeddings_fingerprint("data", default_model_path())
    assert embeddings_fingerprint("data", str(first)) == embeddings_fingerprint("data", str(tmp_path / "a" / "model"))
    (tmp_path / "empty").mkdir()
    for path, said in ((tmp_path / "nowhere" / "model", "does not exist"),
                       (tmp_path / "empty", "not a sentence-transformers model folder")):
        with pytest.raises(ArtifactError, match=said):
            embeddings_fingerprint("data", str(path))


def test_an_empty_model_folder_is_a_message(tmp_path) -> None:
    """transformers raised ValueError ("Unrecognized model ...") from deep inside its loader."""
    import pytest

    from modeling.embeddings import TextEncoder
    from modeling.errors import ArtifactError

    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="empty is not a sentence-transformers model folder"):
        TextEncoder(str(tmp_path / "empty"))


def test_current_embeddings_do_not_hide_a_missing_model(pipeline: Pipeline, tmp_path) -> None:
    """RECO_TEXT_MODEL_PATH=/nonexistent/model: "Embeddings are current (all-MiniLM-L6-v2, ...)"."""
    import shutil

    import pytest

    from modeling.errors import ArtifactError

    output = tmp_path / "embeddings"
    shutil.copytree(pipeline.embeddings, output)
    with pytest.raises(ArtifactError, match="does not exist"):
        build_embeddings(pipeline.data, output, model_path=str(tmp_path / "nonexistent" / "model"), progress=False)


def test_embeddings_of_the_bundled_model_from_before_the_content_fingerprint_stay_current(pipeline: Pipeline,
                                                                                        tmp_path) -> None:
    """A build whose manifest predates ``model_fingerprint`` is current for the bundled model at the same place
    (whose content comes with the pinned package), and its vectors are reused; not for another model."""
    import json
    import shutil

    from modeling.embeddings import _legacy_fingerprint, default_model_path

    output = tmp_path / "embeddings"
    shutil.copytree(pipeline.embeddings, output)
    manifest = json.loads((output / "manifest.json").read_text())
    manifest.pop("model_fingerprint")
    manifest["fingerprint"] = _legacy_fingerprint(pipeline.data.fingerprint, default_model_path())
    (output / "manifest.json").write_text(json.dumps(manifest))
    assert build_embeddings(pipeline.data, output, progress=False)["fingerprint"] == manifest["fingerprint"]
    rebuilt = build_embeddings(pipeline.data, output, progress=False, force=True)
    assert rebuilt["encoded"] == {"items": 0, "distinct_review_texts": 0}
    assert rebuilt["model_fingerprint"] and rebuilt["fingerprint"] != manifest["fingerprint"]


def test_a_moved_model_keeps_its_embeddings_and_the_manifest_names_where_it_is_now(pipeline: Pipeline,
                                                                                   tmp_path) -> None:
    """The embeddings name the model by its content, so a model folder moved elsewhere keeps them current; the
    manifest's ``model_path`` (the folder a bundle exports for serving) follows it instead of naming where it was."""
    import json
    import shutil

    from modeling.embeddings import default_model_path

    moved = tmp_path / "models" / "minilm"
    shutil.copytree(default_model_path(), moved)
    output = tmp_path / "embeddings"
    shutil.copytree(pipeline.embeddings, output)
    before = json.loads((output / "manifest.json").read_text())
    assert before["model_path"] != str(moved.resolve())
    again = build_embeddings(pipeline.data, output, model_path=str(moved), progress=False)
    assert again["skipped"] and again["fingerprint"] == before["fingerprint"]
    assert json.loads((output / "manifest.json").read_text())["model_path"] == str(moved.resolve())



def test_a_symbolic_link_to_the_embeddings_folder_stays_a_link(pipeline: Pipeline, tmp_path) -> None:
    """With the embeddings folder a link to a folder on another disk, a build replaced the link by a folder of its
    own beside it: the vectors went to the link's disk and the folder it named kept the old build."""
    import shutil
    from dataclasses import replace

    elsewhere = tmp_path / "disk" / "embeddings"
    elsewhere.parent.mkdir()
    shutil.copytree(pipeline.embeddings, elsewhere)
    link = tmp_path / "project" / "embeddings"
    link.parent.mkdir()
    link.symlink_to(elsewhere, target_is_directory=True)
    items = pipeline.data.items.copy()
    items.loc[0, ds.TITLE] = items.loc[0, ds.TITLE] + " (new edition)"
    manifest = build_embeddings(replace(pipeline.data, items=items, fingerprint="changed-title"), link,
                                progress=False)
    assert manifest["encoded"]["items"] == 1
    assert link.is_symlink() and link.resolve() == elsewhere.resolve()
    assert sorted(p.name for p in link.parent.iterdir()) == ["embeddings"]  # nothing left beside the link
    assert load_embeddings(elsewhere).manifest["data_fingerprint"] == "changed-title"
