"""The ONNX export of the sentence encoder gives sentence-transformers' vectors; bundles name it, refuse a bad one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from modeling import artifacts
from modeling import datasets as ds
from modeling.embeddings import TextEncoder, default_model_path
from modeling.errors import ArtifactError
from modeling.exported_text import (
    SETTINGS_FILE,
    TOLERANCE,
    OnnxTextEncoder,
    ensure_text_export,
    export_text_encoder,
)
from tests.conftest import Pipeline


def test_the_bundle_names_an_export_that_encodes_like_sentence_transformers(pipeline: Pipeline) -> None:
    bundle = artifacts.load_bundle(pipeline.models / pipeline.version)
    named = bundle.manifest["text_encoder"]
    assert named["dim"] == bundle.arrays.item_content.shape[1]
    assert 0 <= named["max_abs_difference"] <= TOLERANCE
    encoder = OnnxTextEncoder(artifacts.text_export_path(bundle))
    texts = [*ds.item_text(pipeline.data.items.head(40)), "", "espresso", "Ünïcödé 🙂 テキスト", "long " * 600]
    got = encoder.encode(texts, batch_size=16)
    expected = TextEncoder().encode(texts)
    assert got.shape == expected.shape and got.dtype == np.float32
    assert np.abs(got - expected).max() <= TOLERANCE
    for n in (0, 3, 40, 43):  # one text at a time, unpadded: what a text query sends
        assert np.abs(encoder.encode([texts[n]])[0] - expected[n]).max() <= TOLERANCE
    # The stored product vectors are what the export computes from the products' text (stored as 8-bit codes:
    # within half of each row's code step).
    items = pipeline.data.items.head(20)
    positions = pd_positions(bundle, items[ds.ITEM_ID].astype(str).tolist())
    stored = np.asarray(bundle.arrays.item_content, dtype=np.float32)[positions]
    step = bundle.arrays.item_content.scales[positions][:, None]
    assert np.all(np.abs(encoder.encode(ds.item_text(items)) - stored) < 1e-4 + step / 2)
    assert encoder.encode([]).shape == (0, encoder.dim)
    # The weights are a file of their own (mapped by ONNX Runtime, shared by the workers), not inside the graph.
    folder = artifacts.text_export_path(bundle)
    assert (folder / "model.onnx.data").stat().st_size > 50 * (folder / "model.onnx").stat().st_size
    # Every file can be read by the serving processes, which may run as another user than training.
    assert {f.name: f.stat().st_mode & 0o044 for f in folder.iterdir()} == {f.name: 0o044 for f in folder.iterdir()}


def pd_positions(bundle: artifacts.Bundle, ids: list[str]) -> np.ndarray:
    index = {str(item): n for n, item in enumerate(bundle.arrays.item_ids)}
    return np.asarray([index[i] for i in ids])


def test_texts_are_encoded_in_batches_of_about_one_length(pipeline: Pipeline) -> None:
    """Each batch is padded to its longest text: texts go longest first, and the vectors come back in order."""
    encoder = OnnxTextEncoder(artifacts.text_export_path(artifacts.load_bundle(pipeline.models / pipeline.version)))
    texts = ["a long product description " * 30 if n % 8 == 0 else f"espresso cup {n}" for n in range(32)]
    widths: list[tuple[int, int]] = []  # (texts, tokens) of each batch run
    session = encoder.session

    def run(outputs: object, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        widths.append(inputs["input_ids"].shape)
        return session.run(outputs, inputs)

    encoder.session = SimpleNamespace(run=run)
    got = encoder.encode(texts, batch_size=4)
    assert sorted(widths)[-2][1] < 20 < sorted(widths)[-1][1]  # the 4 long texts in one batch (in turn: one in each)
    assert sum(rows * tokens for rows, tokens in widths) < 4 * widths[0][1] + 28 * 20
    encoder.session = session
    for n in (0, 1, 8, 31):  # each text's own vector, at its place
        assert np.abs(got[n] - encoder.encode([texts[n]])[0]).max() <= 1e-5


def test_the_export_is_made_once_per_text_model(pipeline: Pipeline) -> None:
    bundle = artifacts.load_bundle(pipeline.models / pipeline.version)
    folder = artifacts.text_export_path(bundle)
    before = (folder / SETTINGS_FILE).stat().st_mtime_ns
    again = ensure_text_export(pipeline.models, default_model_path())
    assert again["path"] == bundle.manifest["text_encoder"]["path"]
    assert (folder / SETTINGS_FILE).stat().st_mtime_ns == before


def test_another_pipeline_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    model = tmp_path / "cls-pooling-model"
    source = Path(default_model_path())
    model.mkdir()
    for name in ("modules.json", "sentence_bert_config.json", "tokenizer.json", "config.json"):
        shutil.copyfile(source / name, model / name)
    (model / "1_Pooling").mkdir()
    pooling = json.loads((source / "1_Pooling" / "config.json").read_text())
    (model / "1_Pooling" / "config.json").write_text(json.dumps({**pooling, "pooling_mode_cls_token": True,
                                                                  "pooling_mode_mean_tokens": False}))
    with pytest.raises(ArtifactError, match="only transformer \\+ mean pooling"):
        export_text_encoder(model, tmp_path / "models" / "text_encoder" / "x")
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").rglob("*.onnx"))


@pytest.mark.parametrize(("damage", "message"), [
    (lambda folder: shutil.rmtree(folder), "is missing or damaged"),
    (lambda folder: (folder / "model.onnx.data").unlink(), "is missing or damaged \\(model.onnx.data\\)"),
    (lambda folder: (folder / SETTINGS_FILE).write_text(
        json.dumps({**json.loads((folder / SETTINGS_FILE).read_text()), "fingerprint": "other"})),
     "is not the model the bundle was built with"),
])
def test_a_bundle_whose_text_export_is_gone_or_different_is_refused(models_copy: Path, pipeline: Pipeline,
                                                                    damage, message: str) -> None:
    manifest = json.loads((models_copy / pipeline.version / artifacts.MANIFEST_FILE).read_text())
    damage(models_copy / manifest["text_encoder"]["path"])
    with pytest.raises(ArtifactError, match=message):
        artifacts.load_bundle(models_copy / pipeline.version)


def test_a_damaged_graph_is_a_clear_error(tmp_path: Path, pipeline: Pipeline) -> None:
    bundle = artifacts.load_bundle(pipeline.models / pipeline.version)
    folder = tmp_path / "export"
    shutil.copytree(artifacts.text_export_path(bundle), folder)
    (folder / "model.onnx").write_bytes(b"not a graph")
    with pytest.raises(ArtifactError, match="missing or damaged text encoder export"):
        OnnxTextEncoder(folder)


def test_an_export_into_a_file_is_refused_before_the_work_and_keeps_the_file(tmp_path: Path) -> None:
    """A file where the export goes: the export ran (seconds of torch and ONNX), then rmtree failed on the file
    with NotADirectoryError."""
    target = tmp_path / "export"
    target.write_text("not an export")
    with pytest.raises(ArtifactError, match="export exists and is not a folder"):
        export_text_encoder(default_model_path(), target)
    assert target.read_text() == "not an export"
    assert [p.name for p in tmp_path.iterdir()] == ["export"]
