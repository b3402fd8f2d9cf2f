"""The text process (recoapi.text_process) encodes as a worker would, and a worker that cannot reach it encodes itself.

Under gunicorn the text process is one of gunicorn's dirty workers; tests/serving/test_lean_workers.py runs it
there (no web worker maps ONNX Runtime, a killed text process costs no request). Here: its app, called as the
dirty worker calls it, and the client without a reachable process.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modeling import artifacts
from modeling import datasets as ds
from modeling.exported_text import OnnxTextEncoder
from recoapi import text_process
from recoapi.text_process import RemoteTextEncoder, TextEncoderApp
from tests.conftest import Pipeline

ROOT = Path(__file__).resolve().parents[2]

TEXTS_EXTRA = ["", "espresso", "Ünïcödé 🙂 テキスト", "long " * 600]


def _texts(pipeline: Pipeline) -> list[str]:
    return [*ds.item_text(pipeline.data.items.head(70)), *TEXTS_EXTRA]


def test_the_app_encodes_what_the_export_encodes_in_process(pipeline: Pipeline) -> None:
    export = artifacts.text_export_path(artifacts.load_bundle(pipeline.models / pipeline.version))
    app = TextEncoderApp()
    app.init()
    texts = _texts(pipeline)
    assert app("load", str(export)) == 384
    local = OnnxTextEncoder(export)
    for chunk in (texts[:1], texts[-1:], texts[:40], texts[-10:]):  # one text (a query), a message's batch
        sent = app("encode", str(export), chunk)
        assert isinstance(sent, bytes)  # what gunicorn's protocol carries
        got = np.frombuffer(sent, dtype=np.float32).reshape(len(chunk), -1)
        assert np.array_equal(got, local.encode(chunk))  # the same runtime, graph and settings: the same bits
    with pytest.raises(ValueError, match="Unknown action"):
        app("_encoder", str(export))  # gunicorn's base class serves no private method


def test_a_worker_that_cannot_reach_the_text_process_encodes_in_process(pipeline: Pipeline,
                                                                        monkeypatch: pytest.MonkeyPatch,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    export = artifacts.text_export_path(artifacts.load_bundle(pipeline.models / pipeline.version))
    monkeypatch.setenv(text_process.SOCKET_VARIABLE, str(pipeline.models / "no-such-socket"))
    monkeypatch.setattr("gunicorn.dirty.client._dirty_socket_path", None, raising=False)
    made = []

    def local() -> OnnxTextEncoder:
        made.append(1)
        return OnnxTextEncoder(export)

    remote = RemoteTextEncoder(export, local=local)
    assert text_process.available() and remote.dim == 384
    # Short texts: this is about where they are encoded (the encoding itself: the test above, with long texts too).
    texts = [*ds.item_text(pipeline.data.items.head(5)), *TEXTS_EXTRA[:3]]
    with caplog.at_level(logging.WARNING, logger="recoapi.text_process"):
        got = remote.encode(texts)
    assert np.array_equal(got, OnnxTextEncoder(export).encode(texts))
    assert "could not encode" in caplog.text
    remote.encode(texts[:2])
    assert made == [1]  # one in-process encoder, loaded once
    assert remote.encode([]).shape == (0, 384)


def test_a_web_worker_s_encoder_leaves_out_onnx_runtime_when_the_text_process_runs(pipeline: Pipeline) -> None:
    """Under a gunicorn that runs the text process, the engine's encoder is the remote one, and neither it nor the
    engine's modules load ONNX Runtime or the tokenizer (in a fresh process: this one has loaded both)."""
    script = ("import sys; from modeling import runtime; import os; "
              "os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'recoapi.settings'); import django; django.setup(); "
              "from modeling import artifacts; from recoapi.recommendations import engine; "
              "encoder = engine.text_encoder(artifacts.load_bundle(sys.argv[1])); "
              "print(type(encoder).__name__, encoder.dim, "
              "sorted(m for m in ('onnxruntime', 'tokenizers') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script, str(pipeline.models / pipeline.version)], cwd=ROOT,
                          capture_output=True, text=True, check=True, timeout=120,
                          env={**os.environ, text_process.SOCKET_VARIABLE: str(pipeline.models / "no-such-socket")})
    assert done.stdout.strip().splitlines()[-1] == "RemoteTextEncoder 384 []"


def test_a_missing_export_is_an_artifact_error_as_in_process(tmp_path: Path) -> None:
    from modeling.errors import ArtifactError

    with pytest.raises(ArtifactError, match="missing or damaged text encoder export"):
        RemoteTextEncoder(tmp_path / "gone", local=lambda: OnnxTextEncoder(tmp_path / "gone"))
    with pytest.raises(ArtifactError, match="missing or damaged text encoder export"):
        OnnxTextEncoder(tmp_path / "gone")
