"""The shared model store: publish and fetch through temporary folders, checksums that refuse a damaged copy."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from modeling import artifacts
from modeling.errors import ArtifactError
from modeling.store import CHECKSUM_FILE, DirectoryStore, verify
from tests.conftest import Pipeline


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_publish_and_fetch_round_trip(models_copy: Path, pipeline: Pipeline, tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "store")
    (tmp_path / "store").mkdir()
    store.publish(models_copy / pipeline.version)
    assert store.versions() == [pipeline.version] and store.has(pipeline.version)
    assert verify(tmp_path / "store" / pipeline.version) == []
    assert (models_copy / pipeline.version / CHECKSUM_FILE).is_file()  # the origin is checked like a copy
    text = json.loads((models_copy / pipeline.version / "manifest.json").read_text())["text_encoder"]["path"]
    assert verify(tmp_path / "store" / text) == []

    cache = tmp_path / "host-b"
    path = store.fetch(pipeline.version, cache)
    bundle = artifacts.load_bundle(path)  # the text export came along: the bundle loads whole
    original = artifacts.load_bundle(models_copy / pipeline.version)
    np.testing.assert_array_equal(bundle.arrays.item_vectors, original.arrays.item_vectors)
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temporary folder left

    store.publish(models_copy / pipeline.version)  # again: nothing changes
    assert store.versions() == [pipeline.version]


def test_a_damaged_copy_is_refused(models_copy: Path, pipeline: Pipeline, tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    store = DirectoryStore(tmp_path / "store")
    store.publish(models_copy / pipeline.version)
    _flip_a_byte(tmp_path / "store" / pipeline.version / "item_vectors.npy")
    cache = tmp_path / "host-b"
    with pytest.raises(ArtifactError, match="item_vectors.npy: checksum differs"):
        store.fetch(pipeline.version, cache)
    assert not (cache / pipeline.version).exists() and not [p for p in cache.iterdir() if p.name.startswith(".")]

    local = models_copy / pipeline.version
    shutil.copyfile(tmp_path / "store" / pipeline.version / "item_vectors.npy", local / "item_vectors.npy")
    assert verify(local) == ["item_vectors.npy: checksum differs"]
    (local / "extra.txt").write_text("x")
    assert "extra.txt: not in the checksums" in verify(local)


def test_an_unreachable_store_says_so(tmp_path: Path, pipeline: Pipeline) -> None:
    store = DirectoryStore(tmp_path / "not-mounted")
    assert not store.reachable()
    with pytest.raises(ArtifactError, match="cannot be reached"):
        store.versions()
    with pytest.raises(ArtifactError, match="cannot be reached"):
        store.fetch(pipeline.version, tmp_path / "cache")
    with pytest.raises(ArtifactError, match="cannot be reached"):
        store.publish(pipeline.models / pipeline.version)


def test_an_unreachable_store_says_why(tmp_path: Path, pipeline: Pipeline) -> None:
    with pytest.raises(ArtifactError, match="cannot be reached: the folder does not exist"):
        DirectoryStore(tmp_path / "not-created").versions()
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(ArtifactError, match="cannot be reached: it is not a folder"):
        DirectoryStore(tmp_path / "a-file").publish(pipeline.models / pipeline.version)
