"""Long requests through gunicorn (issue 12, item 1): the documented bounds are reachable, and every
answer, also gunicorn's own refusals above its limits, is JSON in the service's error shape. And kept-alive
connections, whose next request the thread that answered waits for a moment (recoapi/gunicorn_worker.py)."""

from __future__ import annotations

import json
import os
import runpy
import socket
import time
import urllib.parse
from pathlib import Path
from unittest import mock

import pytest

from tests.api.test_endpoints import without_ids
from tests.conftest import Pipeline
from tests.serving.live import Service, request

pytestmark = pytest.mark.slow
MAX_QUERY = 16 * 1024  # RECO_MAX_QUERY_STRING's default, which gunicorn.conf.py fits


def raw(base: str, head: bytes, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request written byte for byte on a fresh connection."""
    host, port = urllib.parse.urlsplit(base).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(head + body)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    response = b"".join(chunks)
    head_bytes, _, payload = response.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    return int(lines[0].split()[1]), headers, payload


def get_line(base: str, target: str, extra: str = "") -> tuple[int, dict[str, str], bytes]:
    """A GET written by hand (HTTP/1.0: the answer is neither chunked nor kept alive)."""
    return raw(base, f"GET {target} HTTP/1.0\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode())


def assert_json_error(status: int, headers: dict[str, str], body: bytes, expected: int, code: str) -> dict:
    assert status == expected, body[:300]
    assert headers["content-type"].startswith("application/json"), headers
    error = json.loads(body)["error"]
    assert error["code"] == code and error["message"]
    assert error["request_id"] == headers["x-request-id"]
    return error


def known_user(pipeline: Pipeline) -> str:
    return str(pipeline.data.interactions["user_id"].iloc[0])


def test_a_hundred_ids_of_40_characters_reach_the_service(live: Service, pipeline: Pipeline) -> None:
    ids = [known_user(pipeline)] + [f"shopper-{i:03d}".ljust(40, "x") for i in range(99)]
    target = "/recommendations?" + urllib.parse.urlencode({"users": ",".join(ids), "k": 2})
    assert len(target) > 4094  # gunicorn's default request-line limit
    status, body, _ = request(f"{live.base}{target}")
    assert status == 200, body
    assert list(body["recommendations"]) == ids
    assert body["recommendations"][ids[0]]["strategy"] == "two_tower"


def test_a_700_character_non_ascii_text_reaches_the_service(live: Service) -> None:
    target = "/recommendations?" + urllib.parse.urlencode({"text": "é" * 350 + "咖啡" * 175, "k": 3})
    assert len(target) > 4094
    status, body, _ = request(f"{live.base}{target}", timeout=300)  # the first text= request loads MiniLM
    assert status == 200, body
    assert body["recommendations"]["anonymous"]["strategy"] == "content"
    assert len(body["recommendations"]["anonymous"]["items"]) == 3


def test_the_documented_query_bound_is_reachable_and_one_more_byte_is_the_services_414(
        live: Service, pipeline: Pipeline) -> None:
    start = f"users={known_user(pipeline)}&k=1&_="  # padding in the cache-buster every read endpoint accepts
    at_bound = start + "x" * (MAX_QUERY - len(start))
    status, headers, body = get_line(live.base, f"/recommendations?{at_bound}")
    assert status == 200, body[:300]
    assert json.loads(body)["recommendations"][known_user(pipeline)]["items"]

    status, headers, body = get_line(live.base, f"/recommendations?{at_bound}x")
    error = assert_json_error(status, headers, body, 414, "uri_too_long")
    assert str(MAX_QUERY) in error["message"]  # the service's own message, with its bound


def test_a_request_line_beyond_gunicorns_limit_gets_a_json_414(live: Service) -> None:
    status, headers, body = get_line(live.base, "/recommendations?users=" + "a" * (4 * MAX_QUERY))
    error = assert_json_error(status, headers, body, 414, "uri_too_long")
    assert "POST /recommendations" in error["message"]


def test_oversized_headers_and_unparseable_requests_get_json_errors(live: Service) -> None:
    assert_json_error(*get_line(live.base, "/health", f"X-Padding: {'p' * 9000}\r\n"), 431, "headers_too_large")
    assert_json_error(*raw(live.base, b"NOT A REQUEST\r\n\r\n"), 400, "bad_request")


def test_post_recommendations_takes_a_hundred_long_ids_through_gunicorn(live: Service, pipeline: Pipeline) -> None:
    ids = [known_user(pipeline)] + [f"{i:03d}-é".ljust(128, "x") for i in range(99)]
    status, body, _ = request(f"{live.base}/recommendations", method="POST", body={"users": ids, "k": 2})
    assert status == 200, body
    assert list(body["recommendations"]) == ids
    get_status, get_body, _ = request(f"{live.base}/recommendations?users={ids[0]}&k=2")
    assert get_status == 200
    assert without_ids(get_body)["recommendations"][ids[0]] == without_ids(body)["recommendations"][ids[0]]


def _answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of the next answer on a kept-alive connection (its body's length is given)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the connection was closed"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    while len(body) < int(headers["content-length"]):
        chunk = sock.recv(65536)
        assert chunk, "the connection was closed"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def test_kept_alive_connections_are_answered_at_once_later_and_side_by_side(live: Service, pipeline: Pipeline) -> None:
    # A thread that answered waits a moment for its connection's next request (2 ms by default): requests that come
    # at once, one that comes after that moment (the connection back with gunicorn's main thread), and another
    # connection's meanwhile are each answered on their own connection, in order.
    user = known_user(pipeline)
    host, port = urllib.parse.urlsplit(live.base).netloc.split(":")
    lists: list[list[str]] = []
    with socket.create_connection((host, int(port)), timeout=60) as first, \
            socket.create_connection((host, int(port)), timeout=60) as second:
        for pause, k in ((0, 3), (0, 4), (0.3, 5), (0, 3)):
            time.sleep(pause)
            first.sendall(f"GET /recommendations?users={user}&k={k} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            second.sendall(f"GET /similar_items?item=nothing-{k} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
            status, headers, body = _answer(first)
            assert status == 200 and headers.get("connection", "").lower() != "close", body[:300]
            items = [item["item_id"] for item in json.loads(body)["recommendations"][user]["items"]]
            assert len(items) == k
            lists.append(items)
            status, headers, body = _answer(second)
            assert status == 404 and json.loads(body)["error"]["code"] == "unknown_item", body[:300]
    assert lists[0] == lists[3]  # the same question on the same connection, the same answer


def test_a_body_over_the_bound_is_the_services_413(live: Service) -> None:
    body = json.dumps({"users": ["a"], "text": "x" * (1024 * 1024 + 1)}).encode()
    head = (f"POST /recommendations HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    assert_json_error(*raw(live.base, head, body), 413, "request_too_large")


def test_gunicorn_conf_fits_the_query_bound() -> None:
    from recoapi import gunicorn_worker

    with mock.patch.dict(os.environ):  # the file sets BLAS variables
        conf = runpy.run_path(str(Path(__file__).resolve().parents[2] / "gunicorn.conf.py"))
    assert conf["limit_request_line"] >= MAX_QUERY + len("GET /recommendations? HTTP/1.1")
    assert conf["limit_request_line"] <= gunicorn_worker.REQUEST_LINE_CEILING
    assert conf["worker_class"] == "recoapi.gunicorn_worker.JsonErrorWorker"
