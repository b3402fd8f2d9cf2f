"""The text encoder in one process beside the web workers, shared by all of them (lean-serving issue).

A web worker that encodes text itself holds ONNX Runtime's library, the tokenizer's, the encoder's
weights and ONNX Runtime's re-packed copy of them: about 130 MB of every worker's resident memory,
the same in each (measured at 100,000 products with ``benchmarks/serving.py``, docs/performance.md).
Under gunicorn (``gunicorn.conf.py``) that encoder lives instead in one process of gunicorn's dirty
worker pool (``dirty_apps``: gunicorn starts, watches and restarts it, and passes the requests over a
Unix socket readable by the service's user only), and the web workers send it the texts to encode:
text queries (``/recommendations?text=``) and products added after training. The web workers then
never import ONNX Runtime or the tokenizer.

Why gunicorn's dirty workers and not a process of our own: gunicorn already runs the web workers, and
its pool does what such a process needs (start before the first request, restart after a crash,
stop with the server, a framed protocol with timeouts, one client connection per thread).

A web worker that cannot reach the process (it is starting or restarting, or was turned off with
``RECO_TEXT_PROCESS=0``) encodes in process, as before this module: the answer is the same, the
worker's memory is what it was. The vectors are the same either way: the same export, run by the same
ONNX Runtime with the same settings (``tests/recoapi/test_text_process.py``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from gunicorn.dirty import DirtyApp

logger = logging.getLogger(__name__)

APP = "recoapi.text_process:TextEncoderApp"
"""The dirty app's import path, as ``gunicorn.conf.py`` names it in ``dirty_apps``."""

SOCKET_VARIABLE = "GUNICORN_DIRTY_SOCKET"
"""Set by gunicorn's master for the web workers when it runs the dirty worker pool."""

BATCH = 64
"""Texts per message: a large batch (products added after training) goes as several, each within the timeout."""

TIMEOUT_SECONDS = 30.0
"""How long a web worker waits for one message's answer before it encodes in process instead."""

RETRY_SECONDS = 30.0
"""After a failure, how long a web worker encodes in process before it asks the text process again."""


class Encoder(Protocol):
    """What serving needs of a sentence encoder."""

    @property
    def dim(self) -> int: ...

    def encode(self, texts: list[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray: ...


class TextEncoderApp(DirtyApp):
    """The encoders of the exports named by the web workers' bundles, loaded on first use (usually one).

    Runs in gunicorn's dirty worker; its actions are called through :class:`RemoteTextEncoder`.
    """

    def __init__(self) -> None:
        self._encoders: dict[str, Any] = {}
        self._lock = threading.Lock()

    def init(self) -> None:
        """Import ONNX Runtime and the tokenizer now, so the first export loads in a fraction of a second."""
        import onnxruntime  # noqa: F401
        import tokenizers  # noqa: F401

        from modeling import exported_text  # noqa: F401

    def _encoder(self, export: str) -> Any:
        from modeling.exported_text import OnnxTextEncoder

        with self._lock:
            if export not in self._encoders:
                self._encoders[export] = OnnxTextEncoder(export)
                logger.info("text process: loaded the text encoder export %s", export)
            return self._encoders[export]

    def load(self, export: str) -> int:
        """Load the export at ``export`` (a folder path); returns its vectors' dimension."""
        return int(self._encoder(export).dim)

    def encode(self, export: str, texts: list[str]) -> bytes:
        """The unit vectors of ``texts`` by the export at ``export``: (len(texts), dim) float32, row-major bytes."""
        return np.ascontiguousarray(self._encoder(export).encode(list(texts)), dtype=np.float32).tobytes()

    def close(self) -> None:
        with self._lock:
            self._encoders.clear()


def available() -> bool:
    """Whether this process runs under a gunicorn master that runs the text process."""
    return bool(os.environ.get(SOCKET_VARIABLE))


class RemoteTextEncoder:
    """A sentence encoder that asks the text process, or encodes in process when it cannot.

    Args:
        export: the folder of the export (:func:`modeling.artifacts.text_export_path`); its settings file
            gives the dimension without loading anything.
        local: makes the in-process encoder, on the first failure only.

    Raises:
        ArtifactError: the export's settings file is missing or damaged.
    """

    def __init__(self, export: Path, local: Callable[[], Encoder]) -> None:
        from modeling.errors import ArtifactError
        from modeling.exported_text import SETTINGS_FILE

        self.export = Path(export)
        try:
            self.settings = json.loads((self.export / SETTINGS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:  # as the in-process encoder reports a missing or damaged export
            raise ArtifactError(f"{self.export}: missing or damaged text encoder export ({exc})") from exc
        self.model_name = str(self.settings.get("model_name", ""))
        self._make_local = local
        self._local: Encoder | None = None
        self._lock = threading.Lock()
        self._remote_after = 0.0  # monotonic time from which the text process is asked again

    @property
    def dim(self) -> int:
        return int(self.settings["dim"])

    def warm(self, wait_seconds: float = 30.0) -> bool:
        """Have the text process load the export before the first text arrives (a worker's start, in the
        background); waits up to ``wait_seconds`` for the process to come up. Returns whether it did."""
        from gunicorn.dirty import DirtyError, get_dirty_client

        deadline = time.monotonic() + wait_seconds
        while True:
            try:
                get_dirty_client(timeout=TIMEOUT_SECONDS).execute(APP, "load", str(self.export))
                return True
            except DirtyError as exc:
                if time.monotonic() >= deadline:
                    logger.warning("the text process did not load %s (%s); texts are encoded in process",
                                   self.export, exc)
                    return False
                time.sleep(0.2)

    def encode(self, texts: list[str], *, batch_size: int = BATCH, progress: bool = False) -> np.ndarray:
        """Unit vectors of ``texts``. Returns (n, dim) float32, as ``OnnxTextEncoder.encode`` does."""
        if time.monotonic() >= self._remote_after:
            try:
                return self._remote(texts)
            except Exception as exc:  # gunicorn's errors, the app's (a damaged export: encoding here says why)
                self._remote_after = time.monotonic() + RETRY_SECONDS
                logger.warning("the text process could not encode (%s); encoding in this worker for %.0f s",
                               exc, RETRY_SECONDS)
        return self._in_process().encode(list(texts), batch_size=batch_size)

    def _remote(self, texts: list[str]) -> np.ndarray:
        from gunicorn.dirty import get_dirty_client

        client = get_dirty_client(timeout=TIMEOUT_SECONDS)
        parts = [np.zeros((0, self.dim), dtype=np.float32)]
        for start in range(0, len(texts), BATCH):
            chunk = [str(t) for t in texts[start:start + BATCH]]
            data = client.execute(APP, "encode", str(self.export), chunk)
            vectors = np.frombuffer(data, dtype=np.float32)
            if vectors.size != len(chunk) * self.dim:
                raise ValueError(f"the text process answered {vectors.size} values for {len(chunk)} texts")
            parts.append(vectors.reshape(len(chunk), self.dim))
        return np.concatenate(parts)

    def _in_process(self) -> Encoder:
        with self._lock:
            if self._local is None:
                self._local = self._make_local()
            return self._local
