"""`benchmarks/compiled_rows.py --copy-models`: the same models folder, the ranker compiled by another generator, the
original untouched."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.compiled_rows import copy_models
from modeling import compiled_ranker
from modeling.reranker import FEATURES, RankingStage
from tests.modeling.test_compiled_ranker import _attributes, _stage, needs_compiler


@needs_compiler
def test_a_copy_serves_the_same_bundle_with_the_other_generator_s_library(tmp_path: Path) -> None:
    stage, features = _stage()
    source = tmp_path / "models"
    stage.save(source / "v1" / "ranking_stage", _attributes())
    (source / "v1" / "item_ids.npy").write_bytes(b"any other file of the bundle")
    (source / "ACTIVE").write_text("v1\n")
    folder = source / "v1" / "ranking_stage"
    before = {name: (folder / name).read_bytes() for name in ("ranker.so", "stage.json", compiled_ranker.PROBE_FILE)}
    published = json.loads(before["stage.json"])["compiled"]["generator"]
    other = "tl2cgen" if published == "lleaves" else "lleaves"
    if not compiled_ranker.installed(other):
        pytest.skip(f"{other} is not installed")
    copy_models(source, tmp_path / "copy", other)
    copied = tmp_path / "copy" / "v1" / "ranking_stage"
    assert json.loads((copied / "stage.json").read_text())["compiled"]["generator"] == other
    assert {name: (folder / name).read_bytes() for name in before} == before  # the original as it was
    assert (tmp_path / "copy" / "v1" / "item_ids.npy").stat().st_ino == (source / "v1" / "item_ids.npy").stat().st_ino
    assert (copied / "ranker.so").stat().st_ino != (folder / "ranker.so").stat().st_ino
    rows = features.reshape(-1, len(FEATURES))
    loaded = RankingStage.load(copied).ranker
    assert loaded.compiled is not None
    assert np.array_equal(loaded.compiled.predict(rows), stage.ranker.booster.predict(rows, num_threads=1))
    with pytest.raises(SystemExit, match="exists"):
        copy_models(source, tmp_path / "copy", other)
