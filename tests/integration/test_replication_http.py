"""Replica targets on a real node: POST /v1/models/{id}/replicas sets one at once (node-info,
/v1/models/{id}), keeps it over a restart, refuses bad counts and unknown models; the
client and `peerllm replicate` use it. Real in-process nodes then replicate a model:
a peer pulls it once the target asks for a second copy."""

from __future__ import annotations

import dataclasses

import httpx
import pytest
import trio

import peerllm
from peerllm.api import open_api
from peerllm.client import NodeClient
from peerllm.config import NodeConfig
from peerllm.errors import NodeApiError
from peerllm.testing import FakeBackend
from tests.helpers import FAKE_MODEL, MakeConfig, wait_until, with_fake_model


def replicas_in_node_info(node: peerllm.Node) -> int:
    (model,) = [m for m in node.node_info().models if m.id == FAKE_MODEL]
    return model.replicas


async def test_a_target_is_set_at_once_and_kept_over_a_restart(make_config: MakeConfig
                                                               ) -> None:
    cfg = with_fake_model(make_config("a", dht=False))
    async with peerllm.open_node(cfg, backend=FakeBackend()) as node, open_api(node) as url, \
            httpx.AsyncClient(base_url=url, trust_env=False, timeout=30) as http:
        assert replicas_in_node_info(node) == 0
        r = await http.post(f"/v1/models/{FAKE_MODEL}/replicas", json={"replicas": 3})
        assert r.status_code == 200, r.text
        assert r.json()["model"] == FAKE_MODEL and r.json()["replicas"] == 3
        assert replicas_in_node_info(node) == 3
        assert (await http.get(f"/v1/models/{FAKE_MODEL}")).json()["replicas"] == 3

        bad = await http.post(f"/v1/models/{FAKE_MODEL}/replicas", json={"replicas": 99})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "replicas"
        missing = await http.post("/v1/models/nosuch/replicas", json={"replicas": 2})
        assert missing.status_code == 404
        async with NodeClient(url) as client:
            assert (await client.set_replicas(FAKE_MODEL, 2))["replicas"] == 2
            with pytest.raises(NodeApiError) as info:
                await client.set_replicas("nosuch", 2)
            assert info.value.status == 404 and info.value.param == "model"
    async with peerllm.open_node(cfg, backend=FakeBackend()) as again:
        assert replicas_in_node_info(again) == 2  # replication.json outlived the process


def fast(cfg: NodeConfig) -> NodeConfig:
    return dataclasses.replace(cfg, models=dataclasses.replace(
        cfg.models, replication_interval_s=0.5, replication_grace_s=3.0))


async def test_a_peer_pulls_the_copy_a_target_asks_for(make_config: MakeConfig) -> None:
    holder = fast(with_fake_model(make_config("holder")))
    async with peerllm.open_node(holder, backend=FakeBackend()) as a, \
            peerllm.open_node(fast(make_config("spare", bootstrap=[a.addrs()[0]])),
                              backend=FakeBackend()) as b:
        await wait_until(lambda: all(m.digest for m in a.model_statuses()),
                         what="the holder's digest")
        await wait_until(lambda: FAKE_MODEL in b.mesh_models(), what="b to see a's model")
        await trio.sleep(2.0)
        assert FAKE_MODEL not in b.model_ids()  # no target: nothing is copied
        a.set_replicas(FAKE_MODEL, 2)
        await wait_until(lambda: FAKE_MODEL in b.model_ids(), timeout_s=60.0,
                         what="b to pull the second copy")
        (digest,) = {m.digest for m in a.model_statuses()}
        assert b.store is not None and b.store.blob_path(digest).exists()
        assert b.replicator is not None and b.replicator.statistics().started == 1
        # b's copy asks for the target it was made for (it outlives a's ask)
        await wait_until(lambda: replicas_in_node_info(b) == 2, what="b to inherit 2")
