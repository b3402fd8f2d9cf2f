"""Two API hosts (two gunicorn servers, two workers each) on one database, one model store and one Redis:
one throttle limit for both; a host whose Redis is unreachable keeps answering; a shopper keeps one
experiment arm on every worker of both.

The throttle test needs the Redis server on 127.0.0.1:6379 (skipped with a message without one).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid

import pytest

from tests.api.test_shared_throttle import REDIS_URL, redis_available
from tests.serving.live import Service

pytestmark = pytest.mark.slow


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:  # noqa: S310  (loopback)
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _another_host(service: Service, **env: str) -> Service:
    return Service(root=service.root, env={**service.env, **env}, token=service.token, models=service.models)


@pytest.mark.skipif(not redis_available(), reason="no Redis server on 127.0.0.1:6379")
def test_two_hosts_share_one_throttle_limit(service_sqlite: Service) -> None:
    import redis

    prefix = f"test-{uuid.uuid4().hex}"
    service_sqlite.env.update(RECO_REDIS_URL=REDIS_URL, RECO_REDIS_PREFIX=prefix, RECO_THROTTLE_ANON="20/day")
    second = _another_host(service_sqlite)
    down = _another_host(service_sqlite, RECO_REDIS_URL="redis://127.0.0.1:1/15")  # nothing listens on port 1
    try:
        hosts = [service_sqlite.start(), second.start()]
        day = int(time.time() // 86400)
        codes = [_status(f"{hosts[i % 2]}/random_users") for i in range(24)]  # alternating, 12 each
        if int(time.time() // 86400) != day:
            pytest.skip("the requests straddled midnight (UTC): the daily window changed")
        # Each host has two workers with their own memory: only a shared count refuses the 21st request.
        assert codes.count(200) == 20 and codes.count(429) == 4, codes
        assert codes[:20] == [200] * 20

        alone = down.start()
        assert [_status(f"{alone}/random_users") for _ in range(25)] == [200] * 25  # fails open
        assert "throttle cache cannot be reached" in (service_sqlite.root / "gunicorn.log").read_text()
    finally:
        for host in (down, second):
            host.stop()
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{prefix}:*"):
            client.delete(key)


def test_a_shopper_keeps_one_arm_on_every_worker_and_host(service_sqlite: Service, pipeline) -> None:
    """An experiment started in the database splits the shoppers the same way in all four workers."""
    import json

    from modeling import datasets as ds
    from tests.serving.live import get

    service_sqlite.manage("shell", "-c", (
        "from recoapi.recommendations.models import Experiment, ExperimentArm\n"
        "e = Experiment.objects.create(name='split', status='running')\n"
        "ExperimentArm.objects.create(experiment=e, name='ranked', share=50, setting='served')\n"
        "ExperimentArm.objects.create(experiment=e, name='popular', share=50, setting='popular')\n"))
    second = _another_host(service_sqlite)
    try:
        hosts = [service_sqlite.start(), second.start()]
        users = sorted(pipeline.data.interactions[ds.USER_ID].astype(str).unique())[:30]
        seen: dict[str, set[str]] = {user: set() for user in users}
        for i in range(16):  # each host's kernel spreads them over its two workers
            answer = get(f"{hosts[i % 2]}/recommendations?users={','.join(users)}&k=3")["recommendations"]
            for user in users:
                seen[user].add(answer[user]["experiment"]["arm"])
                if answer[user]["experiment"]["arm"] == "popular":
                    assert answer[user]["strategy"] == "popular", json.dumps(answer[user])
        assert all(len(arms) == 1 for arms in seen.values()), seen
        assert {arm for arms in seen.values() for arm in arms} == {"ranked", "popular"}
    finally:
        second.stop()
