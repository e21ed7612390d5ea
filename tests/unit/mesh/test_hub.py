"""HttpHub: what a URL or hf:// ref resolves to, and the hub token goes to the hub only."""

from __future__ import annotations

import httpx
import pytest

from peerllm.errors import NoSource
from peerllm.mesh.hub import HttpHub

DIGEST = "ab" * 32


def hub_answers(request: httpx.Request) -> httpx.Response:
    assert request.headers.get("authorization") == "Bearer hf_secret"
    return httpx.Response(200, headers={"X-Linked-Etag": f'"{DIGEST}"',
                                        "X-Linked-Size": "1234"})


async def test_an_hf_ref_resolves_with_the_hubs_digest_and_size() -> None:
    async with httpx.AsyncClient(transport=httpx.MockTransport(hub_answers)) as client:
        hub = HttpHub(client=client, endpoint="https://hub.test", token="hf_secret")
        target = await hub.resolve("hf://owner/repo/dir/tiny.gguf")
    assert target.url == "https://hub.test/owner/repo/resolve/main/dir/tiny.gguf"
    assert (target.digest, target.size, target.filename) == (f"sha256:{DIGEST}", 1234,
                                                             "tiny.gguf")


async def test_the_token_goes_to_the_hub_only() -> None:
    seen: list[str | None] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("authorization"))
        return httpx.Response(200, headers={"Content-Length": "10"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as client:
        hub = HttpHub(client=client, endpoint="https://hub.test", token="hf_secret")
        target = await hub.resolve("https://elsewhere.test/m.gguf")
        assert target.url == "https://elsewhere.test/m.gguf" and target.filename == "m.gguf"
        for url in (target.url, "https://hub.test.evil/x.gguf", "https://hub.test/o/r/x"):
            source = hub.source(url)
            assert await source.content_length() == 10  # type: ignore[attr-defined]
    assert seen == [None, None, "Bearer hf_secret"]


async def test_a_ref_that_is_no_url_is_no_source() -> None:
    async with httpx.AsyncClient() as client:
        with pytest.raises(NoSource, match="not a URL"):
            await HttpHub(client=client, endpoint="https://hub.test", token=None).resolve("m")
