"""A node with a truncated GGUF next to a sound model: only the sound one is announced
(node-info, DHT provider records, ``/v1/models`` here and on a peer), and a peer never
routes to the other."""

from __future__ import annotations

import dataclasses
import json

import httpx

import peerllm
from peerllm.api import open_api
from peerllm.config import ModelsConfig
from peerllm.testing import FAKE_GGUF, FakeBackend
from tests.helpers import (
    FAKE_MODEL,
    MakeConfig,
    api_url,
    healthy_names,
    wait_for_value,
    wait_until,
    with_fake_model,
)


def with_bad_models(cfg: peerllm.NodeConfig) -> peerllm.NodeConfig:
    """``cfg`` (serving FAKE_MODEL) plus a truncated --model file and a models.yaml entry
    whose file has a sound magic but a cut header."""
    assert cfg.data_dir is not None
    cut = cfg.data_dir / "cut.gguf"
    cut.write_bytes(FAKE_GGUF[:12])
    half = cfg.data_dir / "half.gguf"
    half.write_bytes(FAKE_GGUF[:20])
    yaml = cfg.data_dir / "models.yaml"
    yaml.write_text(json.dumps({"available": [{"id": "yaml-bad", "path": str(half)}]}))
    return dataclasses.replace(
        cfg, models=ModelsConfig(serve_default=False, paths=(*cfg.models.paths, str(cut))),
        inference=dataclasses.replace(cfg.inference, models_config_path=yaml))


async def model_ids(http: httpx.AsyncClient) -> list[str]:
    return [m["id"] for m in (await http.get("/v1/models")).json()["data"]]


async def test_only_servable_models_are_announced(make_config: MakeConfig) -> None:
    backend = FakeBackend()
    cfg_a = with_bad_models(with_fake_model(make_config("a")))
    async with peerllm.open_node(cfg_a, backend=backend) as a, \
            peerllm.open_node(make_config("b", bootstrap=[a.addrs()[0]])) as b, \
            open_api(a), open_api(b), \
            httpx.AsyncClient(base_url=api_url(a), trust_env=False) as http_a, \
            httpx.AsyncClient(base_url=api_url(b), trust_env=False) as http_b:
        await wait_until(lambda: "a" in healthy_names(b.peers()), what="b sees a")
        assert [m.id for m in a.node_info().models] == [FAKE_MODEL]
        assert await model_ids(http_a) == [FAKE_MODEL]
        assert await model_ids(http_b) == [FAKE_MODEL]
        # The operator still sees the bad model and why, on the node that has it.
        status = (await http_a.get("/v1/models/yaml-bad")).json()
        assert status["state"] == "failed" and "truncated" in status["error"]
        # DHT: a's provider record for the sound model, none for the bad ones.
        async def providers() -> list[tuple[str, list[str]]] | None:
            return await b.find_providers(FAKE_MODEL) or None

        found = await wait_for_value(providers, what="a's provider record", timeout_s=30)
        assert [peer for peer, _ in found] == [a.peer_id]
        assert await b.find_providers("yaml-bad") == []
        assert await b.find_providers("cut") == []
        # b never routes to the bad model: a clean 404, and a never tried to load it.
        for model in ("yaml-bad", "cut"):
            r = await http_b.post("/v1/chat/completions", json={
                "model": model, "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 404, r.text
        assert {i.path.name for i in backend.opened} <= {f"{FAKE_MODEL}.gguf"}
