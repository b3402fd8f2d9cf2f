"""The ranker compiled at publish time scores exactly as its LightGBM booster, or is not used."""

from __future__ import annotations

import gc
import json
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from modeling import compiled_ranker
from modeling.compiled_ranker import COMPILED_FILE, CompiledBooster, probe_rows
from modeling.features import ItemAttributes
from modeling.reranker import FEATURES, Ranker, RankingStage, StageConfig, _train_booster
from tests.modeling.test_reranker import N_ITEMS, _sources, _synthetic_lists

needs_compiler = pytest.mark.skipif(compiled_ranker.toolchain() is None, reason="no C compiler on PATH")
ZERO_THRESHOLD_TEXT = "1.0000000180025095e-35"  # LightGBM's kZeroThreshold as its model text writes a split on it


def _attributes() -> ItemAttributes:
    return ItemAttributes(np.array(["a"] * N_ITEMS), np.array([""] * N_ITEMS), np.full(N_ITEMS, -1.0, dtype=np.float32))


def _stage(rounds: int = 40, seed: int = 0) -> tuple[RankingStage, np.ndarray]:
    candidates, features, targets = _synthetic_lists(300, 30, "switch", seed=seed)
    features[:, ::4, FEATURES.index("nearest_age_days")] = np.nan  # missing values, as shoppers without a history
    features[:, ::3, FEATURES.index("transition_last")] = 0.0  # and the sparse scores' many zeros
    booster = _train_booster(candidates, features, targets, rounds, seed)
    return RankingStage(_sources(), Ranker("lightgbm", booster=booster, rounds=rounds), StageConfig(seed=3)), features


@needs_compiler
def test_the_published_stage_scores_with_the_compiled_booster_exactly_as_lightgbm(tmp_path: Path) -> None:
    stage, features = _stage()
    stage.save(tmp_path / "stage", _attributes())
    assert (tmp_path / "stage" / COMPILED_FILE).is_file()
    meta = json.loads((tmp_path / "stage" / "stage.json").read_text())
    assert meta["compiled"]["file"] == COMPILED_FILE and meta["compiled"]["compiler"] in compiled_ranker.TOOLCHAINS
    loaded = RankingStage.load(tmp_path / "stage").ranker
    assert isinstance(loaded.compiled, CompiledBooster)
    rows = features.reshape(-1, len(FEATURES))
    expected = stage.ranker.booster.predict(rows, num_threads=1)
    assert np.array_equal(loaded.compiled.predict(rows), expected)
    assert np.array_equal(loaded.score(rows), np.asarray(expected, dtype=np.float32))
    # The probe rows sit on and beside the booster's thresholds: each side of a split is taken.
    probe = probe_rows(stage.ranker.booster.model_to_string(), len(FEATURES))
    assert np.isnan(probe).any() and (probe == 0).any()
    assert np.array_equal(loaded.compiled.predict(probe), stage.ranker.booster.predict(probe, num_threads=1))
    assert loaded.compiled.predict(np.zeros((0, len(FEATURES)), dtype=np.float32)).shape == (0,)
    # LightGBM predicts values within its zero threshold (1e-35) as 0; so does the compiled booster (this booster
    # splits on that threshold, where the difference shows).
    assert ZERO_THRESHOLD_TEXT in stage.ranker.booster.model_to_string()
    tiny = rows.copy()
    tiny[::2] = np.float32(1e-36)
    tiny[1::2, :6] = -np.float32(1e-35)
    assert np.array_equal(loaded.compiled.predict(tiny), stage.ranker.booster.predict(tiny, num_threads=1))


@needs_compiler
def test_threads_score_at_once_with_their_own_predictors(tmp_path: Path) -> None:
    """tl2cgen's predictor serves one thread at a time; gunicorn's threads each get one."""
    stage, features = _stage()
    stage.save(tmp_path / "stage", _attributes())
    compiled = RankingStage.load(tmp_path / "stage").ranker.compiled
    rows = features.reshape(-1, len(FEATURES))
    expected = stage.ranker.booster.predict(rows, num_threads=1)
    results: list[bool] = []
    predictors: list[object] = []

    def work() -> None:
        for _ in range(30):
            results.append(bool(np.array_equal(compiled.predict(rows), expected)))
        predictors.append(compiled._predictor())

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 120 and all(results)
    assert len({id(p) for p in predictors}) == 4  # the four still referenced: four distinct predictors


@needs_compiler
def test_a_library_of_another_booster_is_refused_and_lightgbm_scores(tmp_path: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    stage, features = _stage(seed=0)
    other, _ = _stage(seed=1)
    stage.save(tmp_path / "stage", _attributes())
    other.save(tmp_path / "other", _attributes())
    (tmp_path / "other" / COMPILED_FILE).replace(tmp_path / "stage" / COMPILED_FILE)
    loaded = RankingStage.load(tmp_path / "stage").ranker
    assert loaded.compiled is None
    assert "scores probe rows" in caplog.text and "LightGBM scores instead" in caplog.text
    rows = features.reshape(-1, len(FEATURES))
    assert np.array_equal(loaded.score(rows), stage.ranker.score(rows))
    (tmp_path / "stage" / COMPILED_FILE).write_bytes(b"not a shared library")
    assert RankingStage.load(tmp_path / "stage").ranker.compiled is None
    assert "does not load" in caplog.text


def test_without_a_compiler_the_stage_is_published_and_lightgbm_scores(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiled_ranker, "TOOLCHAINS", ("no-such-compiler",))
    stage, features = _stage()
    stage.save(tmp_path / "stage", _attributes())
    assert not (tmp_path / "stage" / COMPILED_FILE).exists()
    assert not list((tmp_path / "stage").glob(".*tmp"))
    assert "no C compiler found" in json.loads((tmp_path / "stage" / "stage.json").read_text())["compiled"]["error"]
    loaded = RankingStage.load(tmp_path / "stage").ranker
    assert loaded.compiled is None
    rows = features.reshape(-1, len(FEATURES))
    assert np.array_equal(loaded.score(rows), stage.ranker.score(rows))


def test_stages_without_a_booster_compile_nothing(tmp_path: Path) -> None:
    RankingStage(_sources(), Ranker("feature", "item_item"), StageConfig()).save(tmp_path / "stage", _attributes())
    assert not (tmp_path / "stage" / COMPILED_FILE).exists()
    assert "compiled" not in json.loads((tmp_path / "stage" / "stage.json").read_text())


def _without_rows_function(stage: RankingStage, folder: Path) -> None:
    """Replace the folder's library by one as published before :data:`compiled_ranker.ROWS_FUNCTION` existed."""
    import tl2cgen
    import treelite

    model = treelite.frontend.from_lightgbm(stage.ranker.booster)
    tl2cgen.export_lib(model, toolchain=compiled_ranker.toolchain(), libpath=str(folder / COMPILED_FILE),
                       params={"parallel_comp": 1}, nthread=1)


@needs_compiler
def test_rows_are_scored_in_one_call_and_libraries_without_that_entry_still_serve(tmp_path: Path) -> None:
    stage, features = _stage()
    stage.save(tmp_path / "stage", _attributes())
    assert json.loads((tmp_path / "stage" / "stage.json").read_text())["compiled"]["rows_function"] is True
    compiled = RankingStage.load(tmp_path / "stage").ranker.compiled
    assert compiled is not None and compiled._rows is not None
    booster = stage.ranker.booster
    probe = probe_rows(booster.model_to_string(), len(FEATURES), rows=4096, seed=1)
    rows = np.concatenate([features.reshape(-1, len(FEATURES)), probe])
    expected = booster.predict(rows, num_threads=1)
    assert np.array_equal(compiled.predict(rows), expected)
    rows_function, compiled._rows = compiled._rows, None  # the same rows through tl2cgen's predictor
    assert np.array_equal(compiled.predict(rows), expected)
    compiled._rows = rows_function
    assert np.array_equal(compiled.predict(rows.astype(np.float64)), expected)  # float64: tl2cgen's predictor
    del compiled  # closes the library: the system would keep reading this one at that path while it is open
    gc.collect()
    _without_rows_function(stage, tmp_path / "stage")
    older = RankingStage.load(tmp_path / "stage").ranker.compiled
    assert older is not None and older._rows is None
    assert np.array_equal(older.predict(rows), expected)


@needs_compiler
def test_a_request_whose_compiled_scoring_fails_is_scored_by_lightgbm(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    """A worker thread's first request opens a library published without the rows function: if its file is gone
    since load (the bundle's folder removed), that request and the later ones are scored by the booster, not
    failed. A library with the rows function was opened at load and keeps scoring."""
    stage, features = _stage()
    stage.save(tmp_path / "stage", _attributes())
    stage.save(tmp_path / "with_rows", _attributes())
    with_rows = RankingStage.load(tmp_path / "with_rows").ranker
    (tmp_path / "with_rows" / COMPILED_FILE).unlink()
    assert np.array_equal(with_rows.score(features.reshape(-1, len(FEATURES))),
                          stage.ranker.score(features.reshape(-1, len(FEATURES))))
    assert with_rows.compiled is not None
    gc.collect()  # the library save() checked, closed
    _without_rows_function(stage, tmp_path / "stage")
    ranker = RankingStage.load(tmp_path / "stage").ranker
    assert ranker.compiled is not None and ranker.compiled._rows is None
    (tmp_path / "stage" / COMPILED_FILE).unlink()
    rows = features.reshape(-1, len(FEATURES))
    scores: list[np.ndarray] = []
    thread = threading.Thread(target=lambda: scores.append(ranker.score(rows)))
    thread.start()
    thread.join(timeout=120)
    assert np.array_equal(scores[0], stage.ranker.score(rows))
    assert ranker.compiled is None and "the compiled ranker failed" in caplog.text


@needs_compiler
def test_the_compiled_ranker_can_be_switched_off(tmp_path: Path) -> None:
    stage, _ = _stage()
    stage.save(tmp_path / "stage", _attributes())
    assert RankingStage.load(tmp_path / "stage").ranker.compiled is not None
    assert RankingStage.load(tmp_path / "stage", compiled=False).ranker.compiled is None


def test_a_failed_compilation_leaves_no_file_and_the_stage_says_why(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A compiler that writes half a library and fails, a library that scores differently and a tl2cgen that does
    not import: each leaves no ranker.so (nor a temporary file), the reason in stage.json, LightGBM serving."""
    import tl2cgen

    stage, features = _stage()
    rows = features.reshape(-1, len(FEATURES))

    def half_written(toolchain: str, dirpath: str, **_: object) -> None:
        (Path(dirpath) / "predictor.so").write_bytes(b"half a library")
        raise RuntimeError("the compiler was killed")

    def not_as_lightgbm(*_: object, **__: object) -> None:
        return None

    cases = [(tl2cgen, "create_shared", half_written, "the compiler was killed")]
    if compiled_ranker.toolchain() is not None:  # a library that compiles, then fails the check
        cases.append((compiled_ranker, "load_compiled", not_as_lightgbm, "does not score as LightGBM does"))
    monkeypatch.setattr(compiled_ranker, "toolchain", lambda: "gcc")
    for n, (owner, name, replacement, reason) in enumerate(cases):
        with monkeypatch.context() as patch:
            patch.setattr(owner, name, replacement)
            stage.save(tmp_path / f"stage{n}", _attributes())
        folder = tmp_path / f"stage{n}"
        assert sorted(p.name for p in folder.iterdir() if "ranker" in p.name) == ["ranker.txt"]
        assert not list(folder.glob(".*"))
        assert reason in json.loads((folder / "stage.json").read_text())["compiled"]["error"]
        loaded = RankingStage.load(folder).ranker
        assert loaded.compiled is None and np.array_equal(loaded.score(rows), stage.ranker.score(rows))
    monkeypatch.setitem(sys.modules, "tl2cgen", None)  # not importable
    stage.save(tmp_path / "unimportable", _attributes())
    assert not (tmp_path / "unimportable" / COMPILED_FILE).exists()
    error = json.loads((tmp_path / "unimportable" / "stage.json").read_text())["compiled"]["error"]
    assert "compiling the ranker with gcc failed" in error


_LOAD_AND_SCORE = """
import json, sys
import numpy as np
from modeling.reranker import RankingStage
ranker = RankingStage.load(__import__("pathlib").Path(sys.argv[1])).ranker
rows = np.load(sys.argv[2])
np.save(sys.argv[3], ranker.score(rows))
print(json.dumps({"compiled": ranker.compiled is not None, "booster_read": ranker.booster.loaded,
                  "imported": sorted(name for name in ("lightgbm", "tl2cgen", "treelite") if name in sys.modules)}))
"""


def _load_and_score(folder: Path, rows: np.ndarray, tmp_path: Path) -> tuple[dict, np.ndarray]:
    """Load the stage in a fresh process (as a web worker does) and score ``rows`` there."""
    import subprocess

    np.save(tmp_path / "rows.npy", rows)
    out = subprocess.run([sys.executable, "-c", _LOAD_AND_SCORE, str(folder), str(tmp_path / "rows.npy"),
                          str(tmp_path / "scores.npy")], capture_output=True, text=True, timeout=300, check=False,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), np.load(tmp_path / "scores.npy")


@needs_compiler
def test_a_worker_checks_and_scores_with_the_compiled_ranker_without_importing_lightgbm(tmp_path: Path) -> None:
    stage, features = _stage()
    stage.save(tmp_path / "stage", _attributes())
    meta = json.loads((tmp_path / "stage" / "stage.json").read_text())["compiled"]
    assert meta["probe"] == compiled_ranker.PROBE_FILE and len(meta["text_sha256"]) == len(meta["probe_sha256"]) == 64
    stored = np.load(tmp_path / "stage" / compiled_ranker.PROBE_FILE)
    text = stage.ranker.booster.model_to_string()
    assert np.array_equal(stored, stage.ranker.booster.predict(probe_rows(text, len(FEATURES)), num_threads=1))
    rows = features.reshape(-1, len(FEATURES))
    expected = stage.ranker.score(rows)
    seen, scores = _load_and_score(tmp_path / "stage", rows, tmp_path)
    assert seen == {"compiled": True, "booster_read": False, "imported": []}
    assert np.array_equal(scores, expected)
    # Without stored scores of its own text (a stage published before them, or a damaged file), the booster checks
    # the library, as before: it is read, and the library still serves.
    stored[3] += 1.0
    np.save(tmp_path / "stage" / compiled_ranker.PROBE_FILE, stored)
    seen, scores = _load_and_score(tmp_path / "stage", rows, tmp_path)
    assert seen["compiled"] and seen["booster_read"] and "lightgbm" in seen["imported"]
    assert np.array_equal(scores, expected)
    (tmp_path / "stage" / compiled_ranker.PROBE_FILE).unlink()
    seen, scores = _load_and_score(tmp_path / "stage", rows, tmp_path)
    assert seen["compiled"] and seen["booster_read"] and np.array_equal(scores, expected)


@needs_compiler
def test_stored_probe_scores_of_another_text_check_nothing(tmp_path: Path) -> None:
    """A library and probe scores both of another booster, beside this booster's text: the digests tell."""
    stage, features = _stage(seed=0)
    other, _ = _stage(seed=1)
    stage.save(tmp_path / "stage", _attributes())
    other.save(tmp_path / "other", _attributes())
    for name in (COMPILED_FILE, compiled_ranker.PROBE_FILE):
        (tmp_path / "other" / name).replace(tmp_path / "stage" / name)
    loaded = RankingStage.load(tmp_path / "stage").ranker
    assert loaded.compiled is None and loaded.booster.loaded
    rows = features.reshape(-1, len(FEATURES))
    assert np.array_equal(loaded.score(rows), stage.ranker.score(rows))


def test_a_damaged_booster_text_fails_the_load_when_lightgbm_must_score(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compiled_ranker, "TOOLCHAINS", ("no-such-compiler",))
    stage, _ = _stage()
    stage.save(tmp_path / "stage", _attributes())
    (tmp_path / "stage" / "ranker.txt").write_text("tree\nnot a model\n", encoding="utf-8")
    with pytest.raises(Exception, match="(?i)model|tree|format"):
        RankingStage.load(tmp_path / "stage")
