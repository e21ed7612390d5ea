"""HTTP(S) sources: a URL read with Range requests, ``hf://`` refs resolved on the hub.

An ``HttpSource`` cannot say chunk digests (it returns no manifest): the swarm then
checks the whole file against the expected digest (the user's, a peer's manifest or the
hub's LFS sha256). Ranges need a 206 answer; a server that ignores Range (200) can still
serve a fetch from chunk 0, cut to the chunks asked. The token, when given, goes in an
Authorization header only (httpx drops it on a redirect to another host, the hub's CDN)
and never into a log line or an error message: those name the source by scheme and host.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Final, Literal, cast
from urllib.parse import quote, urljoin

import httpx

from ..errors import SourceFailed
from ..wire.blob import Manifest, is_digest, parse_digest
from .ports import Deliver
from .store import is_model_id

HF_SCHEME: Final = "hf://"
DEFAULT_HF_ENDPOINT: Final = "https://huggingface.co"
DEFAULT_REVISION: Final = "main"
MAX_HUB_REDIRECTS: Final = 3
_HUB_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
_REVISION: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")
_CONTENT_RANGE: Final = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")

SourceKind = Literal["url", "hf", "digest", "model"]


def origin(url: str) -> str:
    """``scheme://host[:port]``: how a URL is named in progress, logs and errors."""
    u = httpx.URL(url)
    port = f":{u.port}" if u.port else ""
    return f"{u.scheme}://{u.host}{port}"


def shown_url(ref: str) -> str:
    """``ref`` fit for logs, audit lines, documents and ``GET /v1/transfers``: an http(s)
    URL without its user info, query and fragment (where credentials and signatures
    travel); anything else as it is."""
    if not ref.startswith(("https://", "http://")):
        return ref
    try:
        u = httpx.URL(ref)
    except httpx.InvalidURL:
        return _origin_of_text(ref)
    return origin(ref) + u.path


def _origin_of_text(ref: str) -> str:
    """The scheme and what looks like the host of a URL httpx cannot parse."""
    scheme, _, rest = ref.partition("://")
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}://{host}"


class HttpSource:
    """The file at ``url``, read in ranges of chunks."""

    def __init__(self, url: str, *, client: httpx.AsyncClient,
                 token: str | None = None) -> None:
        self.url = url
        self._client = client
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._label = origin(url)

    @property
    def label(self) -> str:
        return self._label

    @property
    def kind(self) -> Literal["http"]:
        return "http"

    async def manifest(self) -> Manifest | None:
        return None  # a plain server cannot say chunk digests

    async def content_length(self) -> int | None:
        """The file's size from a HEAD answer (following redirects), None if unsaid."""
        try:
            r = await self._client.head(self.url, headers=self._headers, follow_redirects=True)
        except httpx.HTTPError as exc:
            raise SourceFailed(self.label, "gone", f"HEAD failed: {type(exc).__name__}") from exc
        _check_status(self.label, r.status_code, r.headers, ranged=False)
        length = r.headers.get("Content-Length")
        return int(length) if length is not None and length.isdigit() else None

    async def fetch(self, first: int, count: int, *, chunk_bytes: int, size: int,
                    deliver: Deliver) -> None:
        start = first * chunk_bytes
        end = min(size, (first + count) * chunk_bytes)  # exclusive
        headers = {**self._headers, "Range": f"bytes={start}-{end - 1}"}
        try:
            async with self._client.stream("GET", self.url, headers=headers,
                                           follow_redirects=True) as r:
                _check_status(self.label, r.status_code, r.headers, ranged=True)
                if r.status_code == 200 and start != 0:
                    raise SourceFailed(self.label, "refused", "the server ignores Range "
                                       f"requests; it can only serve from byte 0, not {start}")
                if r.status_code == 206:
                    _check_content_range(self.label, r.headers.get("Content-Range"), start)
                await _cut(r, first, chunk_bytes, end - start, deliver, self.label)
        except httpx.HTTPError as exc:
            raise SourceFailed(self.label, "gone",
                               f"the transfer broke off: {type(exc).__name__}") from exc


async def _cut(r: httpx.Response, first: int, chunk_bytes: int, want: int,
               deliver: Deliver, label: str) -> None:
    """Deliver the body as chunks ``first``.. until ``want`` bytes; a 200 answer (Range
    ignored) is cut there, a 206 must end there."""
    buf = bytearray()
    index, got = first, 0
    # aclosing: a body left unread (a cut stream, a cancel) is closed now, not at GC.
    async with aclosing(cast(AsyncGenerator[bytes, None], r.aiter_bytes())) as pieces:
        async for piece in pieces:
            if got >= want and piece:
                if r.status_code == 200:
                    return  # the server ignored Range: the stream is cut here
                raise SourceFailed(label, "bad_answer", f"sent more than the {want} bytes "
                                   "of the range asked")
            take = piece[:want - got]
            got += len(take)
            buf += take
            while len(buf) >= chunk_bytes or (got == want and buf):
                await deliver(index, bytes(buf[:chunk_bytes]))
                del buf[:chunk_bytes]
                index += 1
    if got < want:
        raise SourceFailed(label, "gone", f"the answer ended after {got} of {want} bytes")


def _check_status(label: str, status: int, headers: httpx.Headers, *, ranged: bool) -> None:
    if 200 <= status < 300:
        return
    if status == 404:
        raise SourceFailed(label, "not_found", "404: no such file")
    if status in (401, 403):
        raise SourceFailed(label, "refused", f"{status}: not allowed (a token may be needed, "
                           "or the one given is refused)")
    if status == 416:
        raise SourceFailed(label, "bad_answer", "416: the range asked is outside the file "
                           "(it is smaller than expected)")
    if status in (429, 503):
        raise SourceFailed(label, "busy", f"{status}: busy",
                           retry_after_s=_retry_after(headers.get("Retry-After")))
    fault = "gone" if status >= 500 else "bad_answer"
    raise SourceFailed(label, fault, f"{status}: unexpected answer"
                       + (" to a Range request" if ranged else ""))


def _check_content_range(label: str, value: str | None, start: int) -> None:
    match = _CONTENT_RANGE.fullmatch(value.strip()) if value else None
    if match is None or int(match.group(1)) != start:
        raise SourceFailed(label, "bad_answer", f"206 with Content-Range {value!r}, "
                           f"expected the range to start at byte {start}")


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # an HTTP date: the caller's default wait will do


@dataclass(frozen=True, slots=True, kw_only=True)
class HubFile:
    """A file on the hub: where to GET it and what its LFS metadata says."""

    url: str
    digest: str | None  # the LFS sha256; None for a file not in LFS
    size: int | None
    filename: str


@dataclass(frozen=True, slots=True)
class HubRef:
    owner: str
    repo: str
    file: str
    revision: str


def parse_hf(ref: str) -> HubRef:
    """``hf://OWNER/REPO/FILE[@REVISION]``.

    Raises:
        ValueError: not that form (the message shows it).
    """
    form = "expected hf://OWNER/REPO/FILE[@REVISION]"
    if not ref.startswith(HF_SCHEME):
        raise ValueError(f"{ref[:80]!r}: {form}")
    rest, _, revision = ref[len(HF_SCHEME):].partition("@")
    parts = rest.split("/")
    if len(parts) < 3 or not all(_HUB_NAME.fullmatch(p) for p in parts) \
            or any(p in (".", "..") for p in parts):
        raise ValueError(f"{ref[:80]!r}: {form} (names of letters, digits, ._-)")
    revision = revision or DEFAULT_REVISION
    if not _REVISION.fullmatch(revision) or ".." in revision:
        raise ValueError(f"{ref[:80]!r}: revision {revision[:40]!r} is not a branch, tag "
                         f"or commit; {form}")
    return HubRef(parts[0], parts[1], "/".join(parts[2:]), revision)


def hub_url(ref: HubRef, endpoint: str) -> str:
    return (f"{endpoint.rstrip('/')}/{ref.owner}/{ref.repo}/resolve/"
            f"{quote(ref.revision, safe='')}/{quote(ref.file)}")


async def resolve_hf(ref: str, *, endpoint: str, token: str | None,
                     client: httpx.AsyncClient) -> HubFile:
    """The hub's resolve URL for ``ref`` and the file's LFS sha256 and size.

    Read from the hub's first answer to a HEAD (``X-Linked-Etag``, ``X-Linked-Size``):
    the data itself may be redirected to a CDN, whose headers say nothing of LFS.

    Raises:
        ValueError: ``ref`` is not an hf:// ref.
        SourceFailed: the hub refused (401/403: token), has no such file (404), or failed.
    """
    parsed = parse_hf(ref)
    url = hub_url(parsed, endpoint)
    label = origin(url)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    where = url
    for _ in range(MAX_HUB_REDIRECTS + 1):
        try:
            r = await client.head(where, headers=headers, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise SourceFailed(label, "gone", f"HEAD failed: {type(exc).__name__}") from exc
        location = r.headers.get("Location")
        if r.is_redirect and location and "X-Linked-Etag" not in r.headers \
                and not httpx.URL(location).is_absolute_url:
            where = urljoin(where, location)  # a renamed repo: same site, same token
            continue
        if not r.is_redirect:
            _check_status(label, r.status_code, r.headers, ranged=False)
        return HubFile(url=url, digest=_lfs_digest(r.headers.get("X-Linked-Etag")),
                       size=_size(r), filename=parsed.file.rsplit("/", 1)[-1])
    raise SourceFailed(label, "bad_answer", f"more than {MAX_HUB_REDIRECTS} redirects")


def _lfs_digest(etag: str | None) -> str | None:
    if etag is None:
        return None
    value = etag.strip().removeprefix("W/").strip('"')
    return parse_digest(value) if is_digest(value) else None


def _size(r: httpx.Response) -> int | None:
    for name in ("X-Linked-Size",) if r.is_redirect else ("X-Linked-Size", "Content-Length"):
        value = r.headers.get(name)
        if value is not None and value.isdigit():
            return int(value)
    return None


def parse_source(ref: str) -> tuple[SourceKind, str]:
    """What ``peerllm pull REF`` names: ("url", url), ("hf", ref), ("digest",
    "sha256:…") or ("model", id).

    Raises:
        ValueError: none of these forms (the message lists them).
    """
    text = ref.strip()
    if text.startswith(("https://", "http://")):
        try:
            url = httpx.URL(text)
        except httpx.InvalidURL as exc:
            raise ValueError(f"{text[:80]!r} is not a valid URL: {exc}") from None
        if not url.host:
            raise ValueError(f"{text[:80]!r}: the URL has no host")
        return "url", text
    if text.startswith(HF_SCHEME):
        parse_hf(text)
        return "hf", text
    if is_digest(text):
        return "digest", parse_digest(text)
    if "://" not in text and is_model_id(text):
        return "model", text
    raise ValueError(f"{text[:80]!r} is not a model id, a sha256:<hex> digest, an "
                     "https:// or http:// URL, or hf://OWNER/REPO/FILE[@REVISION]")
