"""The HTTP API over TLS, with a self-signed certificate made by the test: in-process through
``open_api``, and a `peerllm node` daemon given --api-tls-cert/--api-tls-key."""

from __future__ import annotations

import dataclasses
import ssl
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

import peerllm
from peerllm.api import open_api
from peerllm.config import ApiConfig
from peerllm.errors import ConfigError
from tests.helpers import (
    Daemon,
    MakeConfig,
    clean_env,
    free_port,
    peerllm_cmd,
    self_signed_cert,
)


def trusting(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


def causes_of(exc: BaseException) -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    cause: BaseException | None = exc
    while cause is not None:
        found.append(type(cause))
        cause = cause.__cause__ or cause.__context__
    return found


async def test_the_api_serves_https_with_the_given_pair(make_config: MakeConfig,
                                                        tmp_path: Path) -> None:
    files = self_signed_cert(tmp_path / "tls")
    cfg = make_config("secure")
    cfg = dataclasses.replace(cfg, api=ApiConfig(host="127.0.0.1", port=0,
                                                 tls_cert=files.cert, tls_key=files.key))
    async with peerllm.open_node(cfg) as node, open_api(node) as url, \
            httpx.AsyncClient(verify=trusting(files.cert), trust_env=False) as http:
        assert url.startswith("https://127.0.0.1:")
        r = await http.get(f"{url}/v1/node/info")
        assert r.status_code == 200
        assert r.json()["network"]["api"] == url
        by_name = await http.get(url.replace("127.0.0.1", "localhost") + "/v1/node/status")
        assert by_name.json()["status"] == "ok"
        async with httpx.AsyncClient(trust_env=False) as default_trust:
            with pytest.raises(httpx.ConnectError) as refused:
                await default_trust.get(f"{url}/v1/node/info")
            assert ssl.SSLCertVerificationError in causes_of(refused.value)
        async with httpx.AsyncClient(trust_env=False) as plain:
            with pytest.raises(httpx.HTTPError):  # no plain-http answer on the TLS port
                await plain.get(url.replace("https://", "http://") + "/v1/node/info")
        # Still up and serving after both bad clients.
        assert (await http.get(f"{url}/v1/node/status")).status_code == 200


async def test_a_mismatched_pair_fails_before_binding(make_config: MakeConfig,
                                                      tmp_path: Path) -> None:
    one, other = self_signed_cert(tmp_path / "one"), self_signed_cert(tmp_path / "other")
    cfg = dataclasses.replace(make_config("mismatch"), api=ApiConfig(
        host="127.0.0.1", port=0, tls_cert=one.cert, tls_key=other.key))
    async with peerllm.open_node(cfg) as node:
        with pytest.raises(ConfigError) as info:
            async with open_api(node):
                pass
        assert info.value.key == "api.tls_cert"
        assert node.api_url is None


def test_the_daemon_takes_the_pair_from_flags(daemon: Callable[[str], Daemon],
                                              tmp_path: Path) -> None:
    files = self_signed_cert(tmp_path / "tls")
    d = daemon("tls-daemon")
    d.start("--no-mdns", "--no-dht", "--api-tls-cert", str(files.cert),
            "--api-tls-key", str(files.key))
    url = f"https://127.0.0.1:{d.api_port}"
    assert any(line.split(":", 1)[1].strip() == url
               for line in d.banner if line.strip().startswith("api "))
    with httpx.Client(base_url=url, verify=trusting(files.cert), trust_env=False) as http:
        assert http.get("/v1/node/info").json()["node"]["name"] == "tls-daemon"


def test_the_daemon_refuses_half_a_pair(tmp_path: Path) -> None:
    files = self_signed_cert(tmp_path / "tls")
    proc = subprocess.run(peerllm_cmd(
        "node", "--data-dir", str(tmp_path / "data"), "--no-mdns", "--no-default-model",
        "--listen", f"/ip4/127.0.0.1/tcp/{free_port()}", "--api", f"127.0.0.1:{free_port()}",
        "--api-tls-cert", str(files.cert)), capture_output=True, text=True, env=clean_env(),
        timeout=60)
    assert proc.returncode == 1
    assert "api.tls_key: api.tls_cert is set but api.tls_key is not" in proc.stderr
    assert not (tmp_path / "data").exists(), "nothing may start (no identity made)"
