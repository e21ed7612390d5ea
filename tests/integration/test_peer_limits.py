"""Per-peer limits between real hosts: a peer over a limit is refused as busy, its router
waits and asks again, nobody's breaker opens; the limits show in /v1/node/info."""

from __future__ import annotations

import httpx
import trio

import peerllm
from peerllm.api import open_api
from peerllm.testing import FakeBackend
from tests.helpers import (
    FAKE_MODEL,
    MakeConfig,
    api_url,
    healthy_names,
    wait_until,
    with_fake_model,
)


async def test_streams_over_the_per_peer_limit_are_refused_and_retried_without_blame(
        make_config: MakeConfig) -> None:
    backend = FakeBackend(token_s=0.005)
    cfg_a = with_fake_model(make_config("server", max_streams_per_peer=2,
                                        peer_info_requests_per_s=50.0),
                            max_concurrent=1)
    async with peerllm.open_node(cfg_a, backend=backend) as a, open_api(a), \
            peerllm.open_node(make_config("client", bootstrap=[a.addrs()[0]])) as b:
        await wait_until(lambda: FAKE_MODEL in b.mesh_models(), what="b to see a's model")
        texts: dict[int, str] = {}

        async def ask(i: int) -> None:
            texts[i] = "".join([t async for t in b.generate(FAKE_MODEL, f"q{i}",
                                                            max_tokens=40)])

        with trio.fail_after(60):  # a bound for a hang, not a timing assertion
            async with trio.open_nursery() as nursery:
                for i in range(4):
                    nursery.start_soon(ask, i)
        assert sorted(texts) == [0, 1, 2, 3] and all(texts.values())
        async with httpx.AsyncClient(base_url=api_url(a), trust_env=False) as http:
            limits = (await http.get("/v1/node/info")).json()["limits"]
        assert limits["max_streams_per_peer"] == 2
        assert limits["peer_streams_per_s"] == 20.0
        assert limits["peer_info_requests_per_s"] == 50.0
        assert (limits["peer_share"], limits["peer_slots_per_model"]) == (1.0, 1)
        assert limits["refused"]["too_many_streams"] >= 1  # two were over the limit
        assert limits["refused"]["stream_rate"] == limits["refused"]["info_rate"] == 0
        assert limits["refused"]["embed_too_many_streams"] == 0
        assert b.router.breakers.describe(a.peer_id).startswith("closed")
        assert "server" in healthy_names(b.peers())
