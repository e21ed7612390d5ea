"""The audit log of real nodes on 127.0.0.1 (FakeBackend, no model): a request through B
served by A leaves a line on both sides, a node with another network key is refused and
audited, a peer over its stream limit is counted and audited, model management through
the API is audited; no prompt, completion or key is ever written."""

from __future__ import annotations

import dataclasses
import stat
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

import peerllm
from peerllm.api import open_api
from peerllm.config import ModelsConfig, NodeConfig
from peerllm.errors import InferenceRejected
from peerllm.p2p.infer import InferClient
from peerllm.testing import FakeBackend, write_fake_gguf
from peerllm.wire import infer as wi
from tests.helpers import MakeConfig, api_url, audit_lines, healthy_names, wait_until

PROMPT = "the launch code is 0000, tell nobody"
TOKENS = ("zebra ", "quokka ", "axolotl")  # what FakeBackend answers, to look for


def serving(cfg: NodeConfig, tmp_path: Path, model: str = "tiny") -> NodeConfig:
    """``cfg`` serving one fake GGUF file as ``model``."""
    path = tmp_path / f"{model}.gguf"
    write_fake_gguf(path, 64)
    return dataclasses.replace(cfg, models=ModelsConfig(serve_default=False,
                                                        paths=(str(path),)))


def only(lines: list[dict[str, Any]]) -> dict[str, Any]:
    assert len(lines) == 1, lines
    return lines[0]


async def test_a_forwarded_request_is_audited_on_both_sides(make_config: MakeConfig,
                                                            tmp_path: Path) -> None:
    cfg_a = serving(make_config("server-a"), tmp_path)
    async with peerllm.open_node(cfg_a, backend=FakeBackend(tokens=TOKENS)) as a, \
            peerllm.open_node(make_config("front-b", bootstrap=[a.addrs()[0]])) as b, \
            open_api(b), httpx.AsyncClient(base_url=api_url(b), trust_env=False) as http:
        await wait_until(lambda: "tiny" in b.mesh_models(), what="b to learn a's model")
        r = await http.post("/v1/chat/completions", json={
            "model": "tiny", "messages": [{"role": "user", "content": PROMPT}]})
        assert r.status_code == 200, r.text
        assert r.headers["x-peerllm-served-by"] == a.peer_id
        assert r.json()["choices"][0]["message"]["content"] == "".join(TOKENS)
        usage = r.json()["usage"]
        dir_a, dir_b = cfg_a.data_dir, b.config.data_dir
        assert dir_a is not None and dir_b is not None
        await wait_until(lambda: bool(audit_lines(dir_a, "inference")), what="a's line")
        await wait_until(lambda: bool(audit_lines(dir_b, "inference")), what="b's line")
        served = only(audit_lines(dir_a, "inference"))
        front = only(audit_lines(dir_b, "inference"))
    assert served["node"] == a.peer_id and front["node"] == b.peer_id
    assert {k: served[k] for k in ("kind", "model", "served_by", "forwarded_by", "client",
                                   "subject", "tokens_in", "tokens_out", "outcome")} == {
        "kind": "generation", "model": "tiny", "served_by": a.peer_id,
        "forwarded_by": b.peer_id, "client": None, "subject": "anonymous",
        "tokens_in": usage["prompt_tokens"], "tokens_out": 3, "outcome": "ok"}
    assert {k: front[k] for k in ("kind", "model", "served_by", "forwarded_by", "subject",
                                  "tokens_in", "tokens_out", "outcome")} == {
        "kind": "generation", "model": "tiny", "served_by": a.peer_id, "forwarded_by": None,
        "subject": "anonymous", "tokens_in": usage["prompt_tokens"],
        "tokens_out": usage["completion_tokens"], "outcome": "ok"}
    assert front["client"].startswith("127.0.0.1:")
    assert front["duration_ms"] >= served["duration_ms"] > 0
    for data_dir in (dir_a, dir_b):
        text = (data_dir / "audit.log").read_text()
        assert "launch code" not in text and "0000" not in text
        assert not any(token.strip() in text for token in TOKENS)
        if sys.platform != "win32":
            assert stat.S_IMODE((data_dir / "audit.log").stat().st_mode) == 0o600


async def test_a_node_with_another_network_key_is_refused_and_audited(
        make_config: MakeConfig) -> None:
    cfg_a = make_config("private-a", network_key="11" * 32)
    cfg_c = make_config("outsider-c", network_key="22" * 32)
    async with peerllm.open_node(cfg_a) as a:
        cfg_c = dataclasses.replace(cfg_c, p2p=dataclasses.replace(
            cfg_c.p2p, bootstrap=(a.addrs()[0],)))
        async with peerllm.open_node(cfg_c) as c:
            dir_a, dir_c = cfg_a.data_dir, cfg_c.data_dir
            assert dir_a is not None and dir_c is not None
            await wait_until(lambda: bool(audit_lines(dir_a, "network_key_mismatch")),
                             what="a to refuse c")
            await wait_until(lambda: bool(audit_lines(dir_c, "network_key_mismatch")),
                             what="c to be refused")
            assert "private-a" not in healthy_names(c.peers())
    refused = audit_lines(dir_a, "network_key_mismatch")[0]
    assert refused["direction"] == "inbound"
    assert refused["peer"].startswith("127.0.0.1:")
    assert "network key differs" in refused["reason"]
    dialled = audit_lines(dir_c, "network_key_mismatch")[0]
    assert (dialled["direction"], dialled["peer"]) == ("outbound", a.peer_id)
    for data_dir in (dir_a, dir_c):  # the key itself is never written, only fingerprints
        text = (data_dir / "audit.log").read_text()
        assert "11" * 32 not in text and "22" * 32 not in text


async def test_model_management_is_audited(make_config: MakeConfig, tmp_path: Path) -> None:
    cfg = serving(make_config("manager"), tmp_path)
    async with peerllm.open_node(cfg, backend=FakeBackend()) as a, open_api(a), \
            httpx.AsyncClient(base_url=api_url(a), trust_env=False) as http:
        assert (await http.post("/v1/models/load", json={"model": "tiny"})).status_code == 200
        assert (await http.post("/v1/models/tiny/unload")).status_code == 200
        assert (await http.post("/v1/models/load", json={"model": "ghost"})).status_code == 404
        assert (await http.post("/v1/models/load", content=b"{")).status_code == 400
        r = await http.post("/api/generate", json={"model": "tiny"})  # Ollama's load call
        assert r.json()["done_reason"] == "load"
    assert cfg.data_dir is not None
    lines = audit_lines(cfg.data_dir, "model_management")
    assert [(x["action"], x["model"], x["outcome"]) for x in lines] == [
        ("load", "tiny", "ok"), ("unload", "tiny", "ok"), ("load", "ghost", "model_not_found"),
        ("load", None, "invalid_json"), ("load", "tiny", "ok")]
    assert all(x["client"].startswith("127.0.0.1:") and x["subject"] == "anonymous" for x in lines)


async def test_embeddings_are_inference_lines(make_config: MakeConfig, tmp_path: Path) -> None:
    cfg = serving(make_config("embedder"), tmp_path)
    async with peerllm.open_node(cfg, backend=FakeBackend()) as a, open_api(a), \
            httpx.AsyncClient(base_url=api_url(a), trust_env=False) as http:
        ok = await http.post("/v1/embeddings", json={"model": "tiny", "input": PROMPT})
        assert ok.status_code == 200, ok.text
        assert (await http.post("/api/embed", json={"model": "ghost", "input": "x"})
                ).status_code == 404
    assert cfg.data_dir is not None
    lines = audit_lines(cfg.data_dir, "inference")
    assert [(x["kind"], x["model"], x["served_by"], x["outcome"], x["tokens_in"])
            for x in lines] == [("embedding", "tiny", a.peer_id, "ok", len(PROMPT.split()) + 1),
                                ("embedding", "ghost", None, "model_not_found", None)]
    assert "launch code" not in (cfg.data_dir / "audit.log").read_text()


async def test_a_peer_over_its_stream_limit_is_counted_and_audited(
        make_config: MakeConfig, tmp_path: Path) -> None:
    backend = FakeBackend()
    backend.gate.clear()  # generation holds: every stream B opens stays open
    cfg_a = serving(make_config("limited-a"), tmp_path)
    async with peerllm.open_node(cfg_a, backend=backend) as a, \
            peerllm.open_node(make_config("greedy-b", bootstrap=[a.addrs()[0]])) as b:
        await wait_until(lambda: "tiny" in b.mesh_models(), what="b to learn a's model")
        client = InferClient(b.host, accept_timeout_s=30.0)
        req = wi.InferRequest(request_id=1, model="tiny", messages=None, prompt=PROMPT,
                              sampling=wi.Sampling(max_tokens=4, temperature=0.0, top_p=1.0,
                                                   top_k=0, repeat_penalty=1.0),
                              deadline_ms=60_000)

        async def hold() -> None:
            async with client.request(a.peer_id, req) as remote:
                async for _ in remote.events():
                    pass

        def held() -> int:
            return sum(st.active + st.queued for st in a.model_statuses())

        async with trio.open_nursery() as nursery:
            for _ in range(8):  # InferServer's default max_streams_per_peer
                nursery.start_soon(hold)
            await wait_until(lambda: held() == 8, what="8 streams held on a")
            with pytest.raises(InferenceRejected) as err:
                async with client.request(a.peer_id, req):
                    pass
            nursery.cancel_scope.cancel()
        backend.gate.set()
        assert err.value.code == "too_many_streams"
        metrics = a.metrics.render()[0].decode()
    assert 'peerllm_peer_limited_total{limit="streams"} 1.0' in metrics
    assert cfg_a.data_dir is not None
    line = only(audit_lines(cfg_a.data_dir, "peer_limit"))
    assert (line["peer"], line["limit"]) == (b.peer_id, "streams")


async def test_audit_can_be_turned_off(make_config: MakeConfig) -> None:
    cfg = make_config("quiet")
    cfg = dataclasses.replace(cfg, audit=dataclasses.replace(cfg.audit, enabled=False))
    async with peerllm.open_node(cfg):
        pass
    assert cfg.data_dir is not None and not (cfg.data_dir / "audit.log").exists()
