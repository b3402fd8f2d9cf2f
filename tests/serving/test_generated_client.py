"""A typed client generated with openapi-python-client from the live /api/schema runs the README's calls
(issue 12, item 10): public calls take a plain client, check_users answers a map of booleans, and staff
calls work with the generator's default ``Bearer`` prefix."""

from __future__ import annotations

import importlib
import inspect
import os
import shutil
import subprocess
import sys
import typing
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.api.test_endpoints import without_ids
from tests.conftest import Pipeline
from tests.serving.live import Service

pytestmark = pytest.mark.slow
PACKAGE = "reco_generated_client"
GENERATOR = Path(sys.executable).parent / "openapi-python-client"


@pytest.fixture(scope="module")
def generated(live: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The client package generated from the running service's schema, imported."""
    if not GENERATOR.exists():
        pytest.skip("openapi-python-client is not installed (dev dependency)")
    root = tmp_path_factory.mktemp("generated_client")
    with urllib.request.urlopen(f"{live.base}/api/schema?format=json", timeout=30) as response:  # noqa: S310
        (root / "schema.json").write_bytes(response.read())
    # --meta none: the bare package, no project files; the generator formats it with ruff (from the venv).
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([str(GENERATOR), "generate", "--path", str(root / "schema.json"), "--meta", "none",
                           "--output-path", str(root / PACKAGE)], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Warning" not in done.stdout + done.stderr, done.stdout + done.stderr  # every operation generated
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(f"{PACKAGE}.")]:
            del sys.modules[name]
        shutil.rmtree(root, ignore_errors=True)


def operation(tag: str, op: str) -> ModuleType:
    return importlib.import_module(f"{PACKAGE}.api.{tag}.{op}")


def client_types(package: ModuleType, module: ModuleType) -> set[str]:
    """Names of the client classes an operation's ``sync`` accepts."""
    annotation = inspect.signature(module.sync, eval_str=True).parameters["client"].annotation
    return {t.__name__ for t in (typing.get_args(annotation) or (annotation,))}


def test_public_operations_take_a_plain_client_and_staff_ones_an_authenticated_one(generated) -> None:
    public = [("random_users", "random_users_retrieve"), ("check_users", "check_users_retrieve"),
              ("recommendations", "recommendations_retrieve"), ("recommendations", "recommendations_post"),
              ("similar_items", "similar_items_retrieve"), ("health", "health_retrieve")]
    for tag, op in public:
        assert client_types(generated, operation(tag, op)) == {"AuthenticatedClient", "Client"}, op
    for tag, op in [("events", "events_create"), ("reload_data", "reload_data_create"),
                    ("reload_model", "reload_model_create")]:
        assert client_types(generated, operation(tag, op)) == {"AuthenticatedClient"}, op


def test_the_readme_calls_through_the_generated_client(generated, live: Service, pipeline: Pipeline) -> None:
    models = importlib.import_module(f"{PACKAGE}.models")
    client = generated.Client(base_url=live.base, raise_on_unexpected_status=True)
    user = str(pipeline.data.interactions["user_id"].iloc[0])
    item = str(pipeline.data.items["item_id"].iloc[0])

    users = operation("random_users", "random_users_retrieve").sync(client=client, n=2)
    assert isinstance(users, models.RandomUsersOutput) and len(users.users) == 2

    known = operation("check_users", "check_users_retrieve").sync(client=client, users=f"{user},nobody")
    assert isinstance(known, models.CheckUsersRetrieveResponse200)
    assert known.to_dict() == {user: True, "nobody": False}
    assert all(type(value) is bool for value in known.additional_properties.values())

    by_get = operation("recommendations", "recommendations_retrieve").sync(client=client, users=f"{user},nobody", k=2)
    assert isinstance(by_get, models.RecommendationsOutput) and by_get.model_version == pipeline.version
    entries = by_get.recommendations.additional_properties
    assert list(entries) == [user, "nobody"]
    assert entries[user].strategy == models.StrategyEnum.TWO_TOWER
    assert entries["nobody"].strategy == models.StrategyEnum.POPULAR
    assert all(isinstance(i, models.ItemOutput) and isinstance(i.score, float) for i in entries[user].items)

    by_post = operation("recommendations", "recommendations_post").sync(
        client=client, body=models.RecommendationsBodyInputRequest(users=[user, "nobody"], k=2))
    assert isinstance(by_post, models.RecommendationsOutput)
    assert without_ids(by_post.to_dict()) == without_ids(by_get.to_dict())  # each answer's lists get new ids

    similar = operation("similar_items", "similar_items_retrieve").sync(client=client, item=item, k=2)
    assert isinstance(similar, models.SimilarItemsOutput) and similar.item_id == item and len(similar.items) == 2

    health = operation("health", "health_retrieve").sync(client=client)
    assert isinstance(health, models.HealthOutput) and health.status == "ok"

    refused = operation("recommendations", "recommendations_retrieve").sync_detailed(client=client, users=user, k=0)
    assert refused.status_code == 400 and isinstance(refused.parsed, models.ErrorOutput)
    assert refused.parsed.error.message.startswith("k:")


def test_staff_calls_with_the_generators_default_bearer_prefix(generated, live: Service,
                                                               pipeline: Pipeline) -> None:
    models = importlib.import_module(f"{PACKAGE}.models")
    staff = generated.AuthenticatedClient(base_url=live.base, token=live.token)
    assert staff.prefix == "Bearer"

    reloaded = operation("reload_model", "reload_model_create").sync(
        client=staff, body=models.ReloadModelInputRequest(version=pipeline.version))
    assert isinstance(reloaded, models.ReloadModelOutput) and reloaded.model_version == pipeline.version

    user = str(pipeline.data.interactions["user_id"].iloc[0])
    item = str(pipeline.data.items["item_id"].iloc[0])
    event = operation("events", "events_create").sync(
        client=staff, body=models.EventInputRequest(user=user, item=item, event=models.EventEnum.VIEW))
    assert isinstance(event, models.EventOutput) and (event.user, event.item) == (user, item)

    data = operation("reload_data", "reload_data_create").sync(client=staff, body=models.ReloadDataInputRequest())
    assert isinstance(data, models.ReloadDataOutput) and data.counts.additional_properties["items"] > 0

    stranger = generated.AuthenticatedClient(base_url=live.base, token="0" * 40)
    denied = operation("reload_model", "reload_model_create").sync_detailed(client=stranger)
    assert denied.status_code == 401 and isinstance(denied.parsed, models.ErrorOutput)
