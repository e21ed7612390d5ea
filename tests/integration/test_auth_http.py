"""Tokens on the HTTP API, route by route and role by role, with real HTTP on a real node."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import trio

import peerllm
from peerllm.api import open_api
from peerllm.api.access import ROUTE_ROLES
from peerllm.auth import Role
from peerllm.config import AuthConfig, NodeConfig
from tests.helpers import (
    MakeConfig,
    audit_lines,
    clean_env,
    free_port,
    peerllm_cmd,
    wait_for_value,
)

# A body that passes each route's reader, so a granted call reaches its handler.
BODIES = {"/v1/chat/completions": {"model": "nosuch", "messages": [
    {"role": "user", "content": "hi"}]},
    "/v1/completions": {"model": "nosuch", "prompt": "hi"},
    "/v1/embeddings": {"model": "nosuch", "input": "hi"},
    "/v1/responses": {"model": "nosuch", "input": "hi"},
    "/v1/messages": {"model": "nosuch", "max_tokens": 4, "messages": [
        {"role": "user", "content": "hi"}]},
    "/v1/models/load": {"model": "nosuch"},
    "/api/chat": {"model": "nosuch", "messages": [{"role": "user", "content": "hi"}]},
    "/api/generate": {"model": "nosuch", "prompt": "hi"},
    "/api/embed": {"model": "nosuch", "input": "hi"},
    "/api/show": {"model": "nosuch"},
    "/api/pull": {"model": "nosuch"},
    "/api/delete": {"model": "nosuch"},
    "/v1/models/pull": {"model": "nosuch"},
    "/v1/auth/tokens": {"role": "readonly", "name": "made-by-admin", "ttl_s": 60}}


def concrete(path: str) -> str:
    return path.replace("{model_id:path}", "nosuch").replace("{token_id}", "0123abcd")


def auth_required(cfg: NodeConfig) -> NodeConfig:
    return dataclasses.replace(cfg, auth=AuthConfig(required=True))


async def call(http: httpx.AsyncClient, method: str, path: str, token: str | None
               ) -> httpx.Response:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    body = BODIES.get(path)
    return await http.request(method, concrete(path), json=body, headers=headers)


async def test_every_route_needs_exactly_its_role(make_config: MakeConfig) -> None:
    async with peerllm.open_node(auth_required(make_config("guarded"))) as node, \
            open_api(node) as url, httpx.AsyncClient(base_url=url, trust_env=False) as http:
        now = int(time.time())
        tokens = {role: node.authority.create_token(subject=role.label, roles=[role],
                                                    ttl_s=600, now=now)[0] for role in Role}
        for (method, path), needed in ROUTE_ROLES.items():
            resp = await call(http, method, path, None)
            assert resp.status_code == 401, (method, path, resp.text)
            for role, token in tokens.items():
                resp = await call(http, method, path, token)
                if role < needed:
                    assert resp.status_code == 403, (method, path, role, resp.text)
                    err = resp.json()["error"]
                    message = err if path.startswith("/api/") else err["message"]
                    assert f"needs the {needed.label!r} role" in message
                else:
                    assert resp.status_code not in (401, 403, 405), (method, path, role,
                                                                    resp.text)


async def test_the_route_table_is_every_route_of_the_app(make_config: MakeConfig) -> None:
    from peerllm.api.app import build_app

    async with peerllm.open_node(make_config("table")) as node:
        app = build_app(node)
        while not hasattr(app, "routes"):  # through the middlewares to the Starlette app
            app = app.app  # type: ignore[attr-defined]
        served = {(m, r.path) for r in app.routes for m in r.methods - {"HEAD"}}
    assert served == set(ROUTE_ROLES)


async def test_refusals_are_in_each_apis_shape_and_name_the_reason(
        make_config: MakeConfig, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with peerllm.open_node(auth_required(make_config("shapes"))) as node, \
            open_api(node) as url, httpx.AsyncClient(base_url=url, trust_env=False) as http:
        now = int(time.time())
        expired = node.authority.create_token(subject="old", roles=[Role.USER], ttl_s=1,
                                              now=now - 10)[0]
        other = peerllm.auth.Authority(data_dir=node.data_dir / "elsewhere",
                                       config=AuthConfig())
        foreign = other.create_token(subject="eve", roles=[Role.ADMIN], ttl_s=60, now=now)[0]
        only_m1, _ = node.authority.create_token(subject="m1", roles=[Role.USER], ttl_s=60,
                                                 now=now, models=["m1"])
        limited, _ = node.authority.create_token(subject="slow", roles=[Role.USER],
                                                 ttl_s=60, now=now, requests_per_min=2)
        revoked, revoked_claims = node.authority.create_token(subject="gone",
                                                              roles=[Role.USER], ttl_s=60,
                                                              now=now)
        node.authority.revoke(revoked_claims.id, now=now)
        cases = [(None, 401, "missing"), ("garbage", 401, "malformed"),
                 (expired, 401, "expired"), (foreign, 401, "untrusted_issuer"),
                 (revoked, 401, "revoked"), (only_m1, 403, "forbidden_model")]
        for token, status, reason in cases:
            resp = await call(http, "POST", "/v1/chat/completions", token)
            assert resp.status_code == status, (reason, resp.text)
            err = resp.json()["error"]
            assert err["code"] == reason and err["type"] == "invalid_request_error"
            resp = await call(http, "POST", "/api/chat", token)
            assert resp.status_code == status
            assert isinstance(resp.json()["error"], str) and resp.json()["error"]
            if token:
                assert token not in resp.text
        statuses = [(await call(http, "GET", "/v1/models", limited)).status_code
                    for _ in range(3)]
        assert statuses == [200, 200, 429]
        resp = await call(http, "GET", "/api/tags", limited)
        assert resp.status_code == 429 and int(resp.headers["retry-after"]) >= 1
        assert "over 2 requests per minute" in resp.json()["error"]
    # No token, valid or not, ever reaches the node's log (at any level).
    for token in (expired, foreign, only_m1, limited, revoked):
        assert token not in caplog.text and token.split(".")[2] not in caplog.text


async def test_admin_routes_issue_list_and_revoke(make_config: MakeConfig) -> None:
    async with peerllm.open_node(auth_required(make_config("admin"))) as node, \
            open_api(node) as url, httpx.AsyncClient(base_url=url, trust_env=False) as http:
        admin = node.authority.create_token(subject="root", roles=[Role.ADMIN], ttl_s=600,
                                            now=int(time.time()))[0]
        h = {"authorization": f"Bearer {admin}"}
        made = await http.post("/v1/auth/tokens", headers=h, json={
            "role": "user", "name": "app", "models": ["m1"], "requests_per_min": 5})
        assert made.status_code == 201, made.text
        doc = made.json()
        assert doc["subject"] == "app" and doc["roles"] == ["user"] and doc["models"] == ["m1"]
        user = {"authorization": f"Bearer {doc['token']}"}
        assert (await http.get("/v1/models", headers=user)).status_code == 200
        listed = (await http.get("/v1/auth/tokens", headers=h)).json()
        assert doc["id"] in [t["id"] for t in listed["tokens"]]
        assert all("token" not in t for t in listed["tokens"])
        assert (await http.delete(f"/v1/auth/tokens/{doc['id']}", headers=h)).status_code == 200
        assert (await http.get("/v1/models", headers=user)).status_code == 401
        bad = await http.post("/v1/auth/tokens", headers=h, json={"role": "king"})
        assert bad.status_code == 400 and "unknown role" in bad.json()["error"]["message"]


def test_cli_issues_tokens_that_a_daemon_accepts_and_revokes(tmp_path: Path,
                                                              daemon: object) -> None:
    data = tmp_path / "cli"
    env = clean_env(PEERLLM_DATA_DIR=str(data))
    issuer = subprocess.run(peerllm_cmd("auth", "issuer"), env=env, capture_output=True,
                            text=True, check=True).stdout.strip()
    assert re.fullmatch(r"ed25519:[A-Za-z0-9_-]{43}", issuer)
    out = subprocess.run(peerllm_cmd("token", "create", "--role", "operator", "--name", "ci",
                                     "--model", "m1", "--rate", "60/min", "--ttl", "2h"),
                         env=env, capture_output=True, text=True, check=True).stdout
    token = out.strip().splitlines()[-1]
    assert token.count(".") == 2 and "ci" in out.splitlines()[0]
    listed = json.loads(subprocess.run(peerllm_cmd("token", "list", "--json"), env=env,
                                       capture_output=True, text=True, check=True).stdout)
    assert [(t["sub"], t["roles"], t["models"], t["rpm"], t["revoked"]) for t in listed] == [
        ("ci", ["operator"], ["m1"], 60, False)]
    assert token not in json.dumps(listed)
    subprocess.run(peerllm_cmd("token", "revoke", listed[0]["jti"]), env=env, check=True,
                   capture_output=True)
    listed = json.loads(subprocess.run(peerllm_cmd("token", "list", "--json"), env=env,
                                       capture_output=True, text=True, check=True).stdout)
    assert listed[0]["revoked"] is True
    bad = subprocess.run(peerllm_cmd("token", "create", "--role", "user", "--ttl", "soon"),
                         env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "not a duration" in bad.stderr


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_a_daemon_on_a_wildcard_address_without_auth_refuses_to_start(tmp_path: Path,
                                                                      host: str) -> None:
    api = f"[{host}]:{free_port()}" if ":" in host else f"{host}:{free_port()}"
    proc = subprocess.run(peerllm_cmd("node", "--data-dir", str(tmp_path), "--api", api,
                                      "--no-default-model", "--no-mdns", "--no-dht",
                                      "--listen", "/ip4/127.0.0.1/tcp/0"),
                          env=clean_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "without authentication" in proc.stderr and "--require-auth" in proc.stderr
    assert not (tmp_path / "node.key").exists()  # refused before anything started


async def test_refusals_and_subjects_reach_the_audit_log_and_metrics(
        make_config: MakeConfig) -> None:
    async with peerllm.open_node(auth_required(make_config("audited"))) as node, \
            open_api(node) as url, httpx.AsyncClient(base_url=url, trust_env=False) as http:
        now = int(time.time())
        other = peerllm.auth.Authority(data_dir=node.data_dir / "elsewhere",
                                       config=AuthConfig())
        foreign = other.create_token(subject="eve", roles=[Role.ADMIN], ttl_s=60, now=now)[0]
        slow, claims = node.authority.create_token(subject="slow", roles=[Role.USER],
                                                   ttl_s=60, now=now, requests_per_min=1)
        admin = node.authority.create_token(subject="root", roles=[Role.ADMIN], ttl_s=60,
                                            now=now)[0]
        assert (await call(http, "GET", "/v1/models", foreign)).status_code == 401
        assert (await call(http, "GET", "/v1/models", slow)).status_code == 200
        assert (await call(http, "GET", "/v1/models", slow)).status_code == 429
        made = await http.post("/v1/auth/tokens", json={"role": "user", "name": "app"},
                               headers={"authorization": f"Bearer {admin}"})
        assert made.status_code == 201
        metrics = (await call(http, "GET", "/metrics", admin)).text
    lines = [json.loads(x) for x in (node.data_dir / "audit.log").read_text().splitlines()]
    failure = next(x for x in lines if x["event"] == "auth_failure")
    assert (failure["reason"], failure["route"], failure["token_id"]) == (
        "untrusted_issuer", "/v1/models", None)
    assert failure["client"].startswith("127.0.0.1")
    limited = next(x for x in lines if x["event"] == "rate_limited")
    assert (limited["scope"], limited["subject"], limited["token_id"]) == (
        "token_requests", "slow", claims.id)
    created = next(x for x in lines if x["event"] == "token_created")
    assert (created["subject"], created["roles"], created["by"]) == ("app", ["user"], "root")
    text = (node.data_dir / "audit.log").read_text()
    assert foreign not in text and slow not in text and made.json()["token"] not in text
    assert 'peerllm_auth_failures_total{reason="untrusted_issuer"} 1.0' in metrics
    assert 'peerllm_rate_limited_total{scope="token_requests"} 1.0' in metrics


async def test_cli_revocation_reaches_the_running_node_and_its_audit_log(
        make_config: MakeConfig, tmp_path: Path) -> None:
    async with peerllm.open_node(auth_required(make_config("running"))) as node, \
            open_api(node) as url, httpx.AsyncClient(base_url=url, trust_env=False) as http:
        env = clean_env(PEERLLM_DATA_DIR=str(node.data_dir))
        made = await trio.to_thread.run_sync(lambda: subprocess.run(
            peerllm_cmd("token", "create", "--role", "readonly", "--name", "ops"), env=env,
            capture_output=True, text=True, check=True).stdout)
        token = made.strip().splitlines()[-1]
        token_file = tmp_path / "token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        peers = await trio.to_thread.run_sync(lambda: subprocess.run(
            peerllm_cmd("peers", "--json", "--api", url, "--token-file", str(token_file)),
            env=clean_env(), capture_output=True, text=True))
        assert peers.returncode == 0, peers.stderr
        assert json.loads(peers.stdout)["self"]["node"]["peer_id"] == node.peer_id
        refused = await trio.to_thread.run_sync(lambda: subprocess.run(
            peerllm_cmd("peers", "--json", "--api", url), env=clean_env(),
            capture_output=True, text=True))
        assert refused.returncode != 0 and "401" in refused.stderr
        token_id = json.loads(await trio.to_thread.run_sync(lambda: subprocess.run(
            peerllm_cmd("token", "list", "--json"), env=env, capture_output=True, text=True,
            check=True).stdout))[0]["jti"]
        await trio.to_thread.run_sync(lambda: subprocess.run(
            peerllm_cmd("token", "revoke", token_id), env=env, check=True,
            capture_output=True))

        async def refused_now() -> bool | None:
            resp = await call(http, "GET", "/v1/node/info", token)
            return True if resp.status_code == 401 else None

        await wait_for_value(refused_now, timeout_s=10, what="the revocation to be honoured")
    lines = audit_lines(node.data_dir)
    revoked = [x for x in lines if x["event"] == "token_revoked"]
    assert {x["by"] for x in revoked} == {"cli", "revocations folder"}
    assert all(x["token_id"] == token_id for x in revoked)
    assert [x["by"] for x in lines if x["event"] == "token_created"] == ["cli"]
    assert token not in (node.data_dir / "audit.log").read_text()


async def test_an_insecure_open_api_says_so_in_its_status(make_config: MakeConfig) -> None:
    cfg = make_config("open")
    cfg = dataclasses.replace(cfg, api=dataclasses.replace(cfg.api, host="0.0.0.0"),
                              auth=AuthConfig(insecure_no_auth=True))
    async with peerllm.open_node(cfg) as node, open_api(node) as url:
        port = url.rsplit(":", 1)[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}",
                                     trust_env=False) as http:
            status = (await http.get("/v1/node/status")).json()
    assert status["auth"]["required"] is False
    assert any("without auth" in w and "--require-auth" in w for w in status["warnings"])
