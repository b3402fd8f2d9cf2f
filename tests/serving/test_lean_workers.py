"""Web workers answer every kind of request without TensorFlow, torch, scikit-learn or pandas (issue 17, item 1).

The towers run as numpy arrays and text is encoded by the ONNX export of the sentence encoder.
The check reads each gunicorn worker's memory map (``/proc/<pid>/maps``), which lists every shared
library the process has loaded: importing tensorflow maps ``libtensorflow_framework.so``, importing
torch ``libtorch_cpu.so``.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from modeling import datasets as ds
from tests.conftest import Pipeline
from tests.serving.live import Service, get, request

pytestmark = pytest.mark.slow


def _mapped(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def test_known_new_anonymous_and_text_requests_are_served_without_tensorflow_or_torch(live: Service,
                                                                                      pipeline: Pipeline) -> None:
    inter = pipeline.data.interactions
    known = str(inter[ds.USER_ID].iloc[0])
    items = inter[ds.ITEM_ID].astype(str).unique()[:6].tolist()
    strategies = set()
    for n in range(8):  # several rounds, so that both workers answer each kind
        shopper = f"lean-{n}"
        status, _, _ = request(f"{live.base}/events", method="POST", token=live.token,
                               body=[{"user": shopper, "item": item, "event": "view"} for item in items[:3]])
        assert status == 201
        answer = get(f"{live.base}/recommendations?users={known},{shopper}&k=5")["recommendations"]
        strategies |= {answer[known]["strategy"], answer[shopper]["strategy"]}
        anonymous = get(f"{live.base}/recommendations?items={items[n % 6]},{items[(n + 1) % 6]}&k=5")
        strategies |= {entry["strategy"] for entry in anonymous["recommendations"].values()}
        assert get(f"{live.base}/similar_items?item={items[n % 6]}&k=5")["items"]
        text = get(f"{live.base}/recommendations?text=enamel+coffee+mug+{n}&k=5")["recommendations"]["anonymous"]
        assert text["strategy"] == "content" and len(text["items"]) == 5
        # A product added through the API is encoded from its text, and similar_items finds it at once.
        status, _, _ = request(f"{live.base}/products", method="POST", token=live.token,
                               body={"id": f"LEAN-{n}", "title": f"Enamel coffee mug {n}", "category": "Kitchen"})
        assert status == 201
        assert get(f"{live.base}/similar_items?item=LEAN-{n}&k=3")["items"]
    assert {"two_tower", "content"} <= strategies
    workers = live.worker_pids()
    assert len(workers) == 2
    # The texts were encoded by the ONNX export, in the text process shared by the workers (recoapi.text_process):
    # no worker holds ONNX Runtime or the tokenizer.
    encoders = live.text_process_pids()
    assert len(encoders) == 1 and "onnxruntime" in _mapped(encoders[0])
    assert not any("onnxruntime" in _mapped(pid) or "tokenizers" in _mapped(pid) for pid in workers)
    for pid in [*workers, *encoders]:
        maps = _mapped(pid)
        assert "libtensorflow" not in maps and "_pywrap_tensorflow" not in maps, (
            f"worker {pid} loaded TensorFlow ({_rss_mb(pid):.0f} MB resident)")
        assert "libtorch" not in maps, f"worker {pid} loaded torch ({_rss_mb(pid):.0f} MB resident)"
        # lightgbm imports scikit-learn unless it is hidden (modeling.reranker.lightgbm_module): seconds of start.
        assert "/sklearn/" not in maps, f"worker {pid} loaded scikit-learn"
        # pandas and pyarrow: about 100 MB of a worker's resident memory, and no request needs them.
        assert "/pandas/" not in maps and "/pyarrow/" not in maps, f"worker {pid} loaded pandas or pyarrow"
    for pid in workers:  # on SQLite, PostgreSQL's driver is kept out (recoapi.unused_libraries)
        assert "psycopg" not in _mapped(pid), f"worker {pid} loaded psycopg"
        # The ranking stage's sources are read from their CSR arrays (modeling.candidates.CsrArrays), never through
        # scipy (14 MB of anonymous memory on import); tl2cgen, which imports it, only scores where a compiled
        # ranker lacks its rows function.
        assert "/scipy/" not in _mapped(pid) and "tl2cgen" not in _mapped(pid), f"worker {pid} loaded scipy"
        # The ranker lleaves compiled is linked into the stage's library at publishing: no worker loads LLVM.
        assert "llvmlite" not in _mapped(pid), f"worker {pid} loaded llvmlite"


def test_texts_are_answered_alike_by_the_text_process_by_its_successor_and_in_process(live: Service) -> None:
    """A killed text process costs no request and changes no answer (a worker encodes in process meanwhile, with
    the same vectors: tests/recoapi/test_text_process.py), and gunicorn starts another."""
    paths = [f"/recommendations?text=enamel+coffee+mug+{n}&k=5" for n in range(3)]

    def answers() -> list[list[str]]:  # a request may wait for gunicorn to start the text process again: the
        # promise is that it is answered, alike, not how soon (10 s was too short once on a slow, loaded machine)
        return [[item["item_id"] for item in
                 get(f"{live.base}{path}", timeout=90)["recommendations"]["anonymous"]["items"]] for path in paths]

    before = answers()
    (encoder,) = live.text_process_pids()
    os.kill(encoder, signal.SIGKILL)
    # Whatever answers now (a worker encoding in process while gunicorn starts another text process, or the new
    # text process), the answers are the same.
    assert answers() == before
    deadline = time.monotonic() + 60
    while [pid for pid in live.text_process_pids() if pid != encoder] == [] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [pid for pid in live.text_process_pids() if pid != encoder], "gunicorn did not start the text process again"
    assert answers() == before
    assert len(live.worker_pids()) == 2
