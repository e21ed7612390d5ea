"""Several real nodes in one trio loop on 127.0.0.1: discovery, node-info, DHT, API."""

from __future__ import annotations

import httpx
import pytest

import peerllm
from peerllm.api import open_api
from peerllm.node import Node
from tests.helpers import MakeConfig, healthy_names, node_config, wait_for_value, wait_until


async def test_chain_of_three_finds_everyone_through_the_dht(make_config: MakeConfig) -> None:
    async with peerllm.open_node(make_config("alpha")) as a:  # noqa: SIM117 - b needs a.addrs()
        async with peerllm.open_node(make_config("beta", bootstrap=[a.addrs()[0]])) as b:
            async with peerllm.open_node(make_config("gamma", bootstrap=[b.addrs()[0]])) as c:
                nodes: list[Node] = [a, b, c]
                for n in nodes:
                    others = {m.name for m in nodes} - {n.name}
                    await wait_until(lambda n=n, o=others: healthy_names(n.peers()) >= o,
                                     what=f"{n.name} to see {others}")
                # C only knew B; A must have come in through the DHT (or inbound).
                row = next(p for p in c.peers() if p["name"] == "alpha")
                assert set(row["sources"]) & {"dht", "inbound"}
                assert row["peer_id"] == a.peer_id
                assert row["id"] == a.identity.node_id
                assert row["rtt_ms"] is not None and row["rtt_ms"] >= 0
                assert any(addr.endswith(f"/p2p/{a.peer_id}") for addr in row["addrs"])
                # Find-by-name through signed DHT records.
                found = await c.find_by_name("alpha")
                assert found is not None and found.peer_id == a.peer_id
                # And straight from the DHT's signed records, bypassing the registry.
                assert c.dht is not None
                await wait_until(lambda: bool(c.dht and c.dht.routing_peers()), what="DHT table")
                dht = c.dht
                # alpha publishes its name once its own table has peers.
                claim = await wait_for_value(lambda: dht.find_name("alpha"),
                                             what="alpha's name claim in the DHT")
                assert claim.peer_id == a.peer_id
                record = await c.dht.find_node(a.peer_id)
                assert record is not None
                assert record.name == "alpha"
                assert await c.dht.find_name("nobody-has-this-name") is None


async def test_api_documents_and_headers(make_config: MakeConfig) -> None:
    async with peerllm.open_node(make_config("apinode")) as a, open_api(a) as url, \
            httpx.AsyncClient(base_url=url, trust_env=False) as http:
        r = await http.get("/v1/node/info")
        assert r.status_code == 200
        assert r.headers["x-peerllm-node-id"] == a.identity.node_id
        assert r.headers["x-peerllm-node-name"] == "apinode"
        doc = r.json()
        assert doc["node"]["peer_id"] == a.peer_id
        assert doc["node"]["name"] == "apinode"
        assert doc["node"]["uptime_seconds"] >= 0
        assert doc["resources"]["cpu_cores"] >= 1
        assert doc["resources"]["ram_total_bytes"] > 0
        assert isinstance(doc["resources"]["gpus"], list)
        assert all(addr.endswith(f"/p2p/{a.peer_id}") for addr in doc["network"]["addrs"])
        assert doc["models"] == []
        status = await http.get("/v1/node/status")
        assert status.json()["status"] == "ok"
        peers = (await http.get("/v1/peers")).json()
        assert peers["self"]["node"]["peer_id"] == a.peer_id
        assert peers["peers"] == []
        missing = await http.get("/v1/nope")
        assert missing.status_code == 404
        assert "x-peerllm-node-id" in missing.headers
        assert "error" in missing.json()
        bad = await http.get("/v1/peers/lookup")
        assert bad.status_code == 400


async def test_node_info_is_signed_and_refreshed(make_config: MakeConfig) -> None:
    async with peerllm.open_node(make_config("one")) as a, \
            peerllm.open_node(make_config("two", bootstrap=[a.addrs()[0]])) as b:
        await wait_until(lambda: "one" in healthy_names(b.peers()), what="b to see a")
        first = b.registry.get(a.peer_id)
        assert first is not None and first.info is not None
        seq1 = first.info.seq
        await wait_until(lambda: b.registry.get(a.peer_id).info.seq > seq1,  # type: ignore[union-attr]
                         what="a periodic node-info refresh")
        assert first.info.boot_nonce == a.local.boot_nonce


async def test_duplicate_names_are_shown_as_conflicts(make_config: MakeConfig,
                                                      tmp_path_factory: pytest.TempPathFactory
                                                      ) -> None:
    async with peerllm.open_node(make_config("twin")) as a:
        # Same name, own data dir (so its own identity).
        cfg = node_config(tmp_path_factory.mktemp("elsewhere"), "twin",
                          bootstrap=[a.addrs()[0]])
        async with peerllm.open_node(cfg) as b:
            assert b.peer_id != a.peer_id
            await wait_until(lambda: any(p["conflicts"] for p in b.peers()),
                             what="b to flag the name conflict")
            row = next(p for p in b.peers() if p["peer_id"] == a.peer_id)
            assert any("our name" in c for c in row["conflicts"])
