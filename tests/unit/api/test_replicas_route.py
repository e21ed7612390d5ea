"""POST /v1/models/{id}/replicas over ASGI in front of a fake node: the body is checked
(400 names the field), an unknown model is a 404, the node's answer is passed on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from peerllm.api import replication
from peerllm.audit import NULL_AUDIT, AuditSink
from peerllm.auth import Authority
from peerllm.config import AuthConfig
from peerllm.errors import ModelNotFound


class FakeNode:
    def __init__(self, tmp: Path) -> None:
        self.audit: AuditSink = NULL_AUDIT
        self.authority = Authority(data_dir=tmp, config=AuthConfig())
        self.set: list[tuple[str, int]] = []

    def set_replicas(self, model_id: str, replicas: int) -> dict[str, Any]:
        if model_id != "org/m":
            raise ModelNotFound(model_id)
        self.set.append((model_id, replicas))
        return {"model": model_id, "replicas": replicas, "digest": None, "holders": []}


@pytest.fixture
def node(tmp_path: Path) -> FakeNode:
    return FakeNode(tmp_path)


async def post(node: FakeNode, path: str, body: object) -> httpx.Response:
    app = Starlette(routes=replication.routes(node))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://node") as http:
        return await http.post(path, json=body)


async def test_the_target_is_set_and_the_answer_passed_on(node: FakeNode) -> None:
    r = await post(node, "/v1/models/org/m/replicas", {"replicas": 3})
    assert r.status_code == 200 and r.json()["replicas"] == 3
    assert node.set == [("org/m", 3)]


@pytest.mark.parametrize(("body", "message"), [
    ({}, "replicas: required"),
    ({"replicas": "3"}, "replicas: expected a whole number, got a string"),
    ({"replicas": -1}, "replicas: must be a whole number 0-64, got -1"),
    ({"replicas": 65}, "replicas: must be a whole number 0-64, got 65"),
    ({"replicas": True}, "replicas: expected a whole number"),
])
async def test_a_bad_count_is_a_400_naming_the_field(
        node: FakeNode, body: object, message: str) -> None:
    r = await post(node, "/v1/models/org/m/replicas", body)
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "replicas" and err["message"].startswith(message)
    assert node.set == []


async def test_a_model_not_served_here_is_a_404(node: FakeNode) -> None:
    r = await post(node, "/v1/models/elsewhere/replicas", {"replicas": 2})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "model_not_found"
