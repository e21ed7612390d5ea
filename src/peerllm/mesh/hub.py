"""URLs and the Hugging Face hub as the Pulls service's ``Hub`` port (transfer.http).

The hub token goes only to the configured hub (``models.hf_endpoint``), never to another
URL a user pulls from; it is never logged.
"""

from __future__ import annotations

import httpx

from ..errors import NoSource
from ..transfer.http import HttpSource, parse_source, resolve_hf
from ..transfer.ports import ChunkSource
from .pull_ports import HubTarget


class HttpHub:
    def __init__(self, *, client: httpx.AsyncClient, endpoint: str,
                 token: str | None) -> None:
        self._client = client
        self._endpoint = endpoint.rstrip("/")
        self._token = token

    async def resolve(self, ref: str) -> HubTarget:
        try:
            kind, text = parse_source(ref)
        except ValueError as exc:
            raise NoSource(str(exc)) from None
        if kind == "hf":
            found = await resolve_hf(text, endpoint=self._endpoint, token=self._token,
                                     client=self._client)
            return HubTarget(url=found.url, digest=found.digest, size=found.size,
                             filename=found.filename)
        if kind != "url":
            raise NoSource(f"{ref[:80]!r} is not a URL")
        name = httpx.URL(text).path.rsplit("/", 1)[-1]
        return HubTarget(url=text, filename=name)

    def source(self, url: str) -> ChunkSource:
        ours = url == self._endpoint or url.startswith(self._endpoint + "/")
        return HttpSource(url, client=self._client, token=self._token if ours else None)
