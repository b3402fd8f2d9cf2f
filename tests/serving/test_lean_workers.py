"""Web workers answer every kind of request without TensorFlow, torch, scikit-learn or pandas (issue 17, item 1).

The towers run as numpy arrays and text is encoded by the ONNX export of the sentence encoder.
The check reads each gunicorn worker's memory map (``/proc/<pid>/maps``), which lists every shared
library the process has loaded: importing tensorflow maps ``libtensorflow_framework.so``, importing
torch ``libtorch_cpu.so``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from modeling import datasets as ds
from tests.conftest import Pipeline
from tests.serving.live import Service, get, request

pytestmark = pytest.mark.slow


def _workers(service: Service) -> list[int]:
    assert service.process is not None
    children = Path(f"/proc/{service.process.pid}/task/{service.process.pid}/children").read_text().split()
    return [int(pid) for pid in children]


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
    workers = _workers(live)
    assert len(workers) == 2
    assert any("onnxruntime" in _mapped(pid) for pid in workers)  # the text was encoded, by the ONNX export
    for pid in workers:
        maps = _mapped(pid)
        assert "libtensorflow" not in maps and "_pywrap_tensorflow" not in maps, (
            f"worker {pid} loaded TensorFlow ({_rss_mb(pid):.0f} MB resident)")
        assert "libtorch" not in maps, f"worker {pid} loaded torch ({_rss_mb(pid):.0f} MB resident)"
        # lightgbm imports scikit-learn unless it is hidden (modeling.reranker.lightgbm_module): seconds of start.
        assert "/sklearn/" not in maps, f"worker {pid} loaded scikit-learn"
        # pandas and pyarrow: about 100 MB of a worker's resident memory, and no request needs them.
        assert "/pandas/" not in maps and "/pyarrow/" not in maps, f"worker {pid} loaded pandas or pyarrow"
