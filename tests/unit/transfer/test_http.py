"""What `peerllm pull X` names, hf:// refs, and how HttpSource reads server answers
(httpx.MockTransport stands in for the edge cases a real server rarely gives)."""

from __future__ import annotations

import httpx
import pytest
import trio

from peerllm.errors import SourceFailed
from peerllm.transfer.http import (
    HttpSource,
    hub_url,
    origin,
    parse_hf,
    parse_source,
    shown_url,
)

CB = 64 * 1024


@pytest.mark.parametrize(("ref", "kind", "value"), [
    ("https://example.org/m.gguf", "url", "https://example.org/m.gguf"),
    ("http://127.0.0.1:8080/x/m.gguf?sig=1", "url", "http://127.0.0.1:8080/x/m.gguf?sig=1"),
    ("hf://owner/repo/model.gguf", "hf", "hf://owner/repo/model.gguf"),
    ("sha256-" + "A" * 64, "digest", "sha256:" + "a" * 64),
    ("a" * 64, "digest", "sha256:" + "a" * 64),
    ("gemma3-270m-q4_k_m", "model", "gemma3-270m-q4_k_m"),
    ("owner/model:7b", "model", "owner/model:7b"),
])
def test_refs_are_told_apart(ref: str, kind: str, value: str) -> None:
    assert parse_source(ref) == (kind, value)


@pytest.mark.parametrize("ref", ["", "ftp://example.org/m.gguf", "https://", "../etc/passwd",
                                 "hf://owner/repo", "hf://owner/../x.gguf",
                                 "hf://owner/repo/m.gguf@../main", "-model", "a b"])
def test_bad_refs_name_the_forms(ref: str) -> None:
    with pytest.raises(ValueError, match=r"hf://OWNER/REPO/FILE|URL"):
        parse_source(ref)


def test_hf_refs_map_to_the_resolve_url() -> None:
    ref = parse_hf("hf://TheOwner/Some-Model-GGUF/sub/dir/model-Q4_K_M.gguf@v1.2")
    assert (ref.owner, ref.repo, ref.file, ref.revision) == (
        "TheOwner", "Some-Model-GGUF", "sub/dir/model-Q4_K_M.gguf", "v1.2")
    assert hub_url(ref, "https://hub.example/") == \
        "https://hub.example/TheOwner/Some-Model-GGUF/resolve/v1.2/sub/dir/model-Q4_K_M.gguf"
    assert parse_hf("hf://o/r/f.gguf").revision == "main"


def test_sources_are_named_by_origin_only() -> None:
    assert origin("https://user:pw@example.org:8443/a/b?token=x") == "https://example.org:8443"


def _source(handler: httpx.MockTransport) -> HttpSource:
    return HttpSource("https://files.example/m.gguf",
                      client=httpx.AsyncClient(transport=handler), token="tok-secret")


async def _fetch(source: HttpSource, first: int, count: int, size: int) -> list[int]:
    got: list[int] = []

    async def deliver(index: int, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        got.append(index)

    await source.fetch(first, count, chunk_bytes=CB, size=size, deliver=deliver)
    return got


async def test_a_busy_server_says_when_to_come_back() -> None:
    source = _source(httpx.MockTransport(
        lambda r: httpx.Response(503, headers={"Retry-After": "7"})))
    with pytest.raises(SourceFailed) as info:
        await _fetch(source, 0, 1, CB)
    assert info.value.fault == "busy" and info.value.retry_after_s == 7.0


async def test_a_range_answer_must_start_where_asked() -> None:
    def handler(r: httpx.Request) -> httpx.Response:
        return httpx.Response(206, content=b"x" * CB,
                              headers={"Content-Range": f"bytes 0-{CB - 1}/{4 * CB}"})
    with pytest.raises(SourceFailed) as info:
        await _fetch(_source(httpx.MockTransport(handler)), 1, 1, 4 * CB)
    assert info.value.fault == "bad_answer" and "Content-Range" in str(info.value)


async def test_a_short_answer_is_gone_after_the_whole_chunks() -> None:
    def handler(r: httpx.Request) -> httpx.Response:
        assert r.headers["Authorization"] == "Bearer tok-secret"
        assert r.headers["Range"] == f"bytes=0-{3 * CB - 1}"
        return httpx.Response(206, content=b"x" * (CB + 10),
                              headers={"Content-Range": f"bytes 0-{3 * CB - 1}/{3 * CB}"})
    source = _source(httpx.MockTransport(handler))
    got: list[int] = []

    async def deliver(index: int, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        got.append(index)

    with pytest.raises(SourceFailed) as info:
        await source.fetch(0, 3, chunk_bytes=CB, size=3 * CB, deliver=deliver)
    assert info.value.fault == "gone" and got == [0]
    assert "tok-secret" not in str(info.value)


async def test_an_unreachable_server_is_gone() -> None:
    def handler(r: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=r)
    with pytest.raises(SourceFailed) as info:
        await _fetch(_source(httpx.MockTransport(handler)), 0, 1, CB)
    assert info.value.fault == "gone" and info.value.source == "https://files.example"


@pytest.mark.parametrize(("ref", "shown"), [
    ("https://user:pw@cdn.example:8443/m/x.gguf?X-Sig=s3cret#frag",
     "https://cdn.example:8443/m/x.gguf"),
    ("http://h.example/x.gguf", "http://h.example/x.gguf"),
    ("https://u:pw@[::1", "https://[::1"),  # unparsable: still no user info
    ("hf://o/r/f.gguf@main", "hf://o/r/f.gguf@main"), ("gemma", "gemma")])
def test_shown_urls_leave_credentials_out(ref: str, shown: str) -> None:
    assert shown_url(ref) == shown
