"""A PeerLLM node (FakeBackend, HTTP API on its namespace's 127.0.0.1) inside a netlab
namespace, driven over its stdin/stdout with one JSON object per line.

The namespaces share no interface with the test process (netlab.py keeps the host out
of them), so the test cannot reach a node's API; pipes cross namespaces, so the node is
asked through them, and it makes its HTTP calls to its own API itself.

    node = NetNode.start(host, tmp_path, "a", bootstrap=[relay.addr], fake_model=False)
    node.ask("state")                 # reachability, addrs, peers (node.peers() rows)
    node.ask("chat", model="fake")    # POST /v1/chat/completions on its own API
    node.stop()

Run as ``python -m tests.netlab_node SPEC_JSON``; it prints {"ready": ...} first.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import REPO, clean_env
from tests.netlab import Host

P2P_PORT = 4001  # every node listens on its namespace's own port 4001
READY_TIMEOUT_S = 60.0
ASK_TIMEOUT_S = 60.0


# -- the test's side -----------------------------------------------------------------------

@dataclass
class NetNode:
    """A node process in ``host``'s namespace; ``log`` keeps its stderr."""

    name: str
    host: Host
    proc: subprocess.Popen[str]
    log: Path
    ready: dict[str, Any] = field(default_factory=dict)
    _lines: queue.Queue[str | None] = field(default_factory=queue.Queue)

    @classmethod
    def start(cls, host: Host, root: Path, name: str, *, bootstrap: list[str] | None = None,
              fake_model: bool = False, **p2p: Any) -> NetNode:
        spec = {"root": str(root), "name": name, "ip": host.ip, "bootstrap": bootstrap or [],
                "fake_model": fake_model, "p2p": p2p}
        log = root / f"{name}.log"
        root.mkdir(parents=True, exist_ok=True)
        env = clean_env(PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(REPO)]))
        with log.open("w") as err:
            proc = subprocess.Popen(
                host.cmd(sys.executable, "-m", "tests.netlab_node", json.dumps(spec)),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                cwd=REPO, env=env)
        node = cls(name, host, proc, log)
        threading.Thread(target=node._pump, daemon=True).start()
        node.ready = node._next(READY_TIMEOUT_S, "ready")
        return node

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _next(self, timeout_s: float, what: str) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"{self.name}: no {what} in {timeout_s} s\n"
                                 f"{self.tail()}") from None
        if line is None:
            raise AssertionError(f"{self.name} exited before {what}:\n{self.tail()}")
        doc: dict[str, Any] = json.loads(line)
        if "error" in doc:
            raise AssertionError(f"{self.name}: {what} failed: {doc['error']}\n{self.tail()}")
        return doc

    @property
    def peer_id(self) -> str:
        return str(self.ready["peer_id"])

    @property
    def addr(self) -> str:
        """The address others dial: its namespace's IP, port P2P_PORT."""
        return f"/ip4/{self.host.ip}/tcp/{P2P_PORT}/p2p/{self.peer_id}"

    def ask(self, op: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        return self._next(ASK_TIMEOUT_S, op)

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Close its stdin (it shuts down cleanly), kill it if it does not."""
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


# -- the node's side -----------------------------------------------------------------------

def _main(spec: dict[str, Any]) -> None:
    import logging

    import trio

    # Into the node's log file (stderr): what the test prints when it fails.
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    trio.run(_serve, spec)


async def _serve(spec: dict[str, Any]) -> None:
    import httpx
    import trio

    import peerllm
    from peerllm.api import open_api
    from peerllm.testing import FakeBackend
    from tests.helpers import node_config, with_fake_model

    # Its namespace's address only: a wildcard would also advertise 127.0.0.1:4001, where
    # every other namespace finds itself.
    p2p = {"listen": [f"/ip4/{spec['ip']}/tcp/{P2P_PORT}"], **spec["p2p"]}
    cfg = node_config(Path(spec["root"]), spec["name"], bootstrap=spec["bootstrap"], **p2p)
    if spec["fake_model"]:
        cfg = with_fake_model(cfg)
    async with peerllm.open_node(cfg, backend=FakeBackend()) as node, open_api(node) as url, \
            httpx.AsyncClient(base_url=url, trust_env=False, timeout=30) as http:
        _say({"ready": True, "peer_id": node.peer_id, "addrs": node.addrs()})
        while line := await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True):
            request = json.loads(line)
            try:
                with trio.fail_after(ASK_TIMEOUT_S - 5):
                    _say(await _answer(node, http, request))
            except Exception as exc:  # the test shows it; the node keeps serving
                _say({"error": f"{type(exc).__name__}: {exc}"})


async def _answer(node: Any, http: Any, request: dict[str, Any]) -> dict[str, Any]:
    import trio

    op = request["op"]
    if op == "state":
        return {"status": node.status(), "addrs": node.addrs(), "peers": node.peers(),
                "connected": node.host.connected_peers()}
    if op == "peerstore":  # what libp2p knows of a peer's addresses (diagnostics)
        from libp2p.peer.id import ID

        try:
            addrs = node.host.libp2p.get_peerstore().addrs(ID.from_base58(request["peer"]))
        except Exception as exc:  # unknown peer, or its addresses expired
            return {"addrs": [], "why": str(exc)}
        return {"addrs": [str(a) for a in addrs]}
    if op == "link":  # the relay the connection to a peer runs through (None: direct)
        from libp2p.peer.id import ID

        from peerllm.p2p.host import relay_of

        conns = node.host.libp2p.get_network().connections.get(ID.from_base58(request["peer"]))
        addrs = [str(a) for c in conns or [] for a in c.get_transport_addresses()]
        relays = [relay_of(a) for a in addrs]
        return {"connected": bool(conns), "addrs": addrs,
                "relay": relays[0] if relays and all(relays) else None}
    if op == "connect":  # with how long it took (scripts/bench/nat.py reads it)
        started = trio.current_time()
        peer = await node.host.connect_addr(request["addr"])
        return {"peer_id": peer, "seconds": trio.current_time() - started}
    if op == "disconnect":
        await node.host.disconnect(request["peer"])
        return {"connected": node.host.is_connected(request["peer"])}
    if op == "chat":
        r = await http.post("/v1/chat/completions", json={
            "model": request["model"], "max_tokens": 4,
            "messages": [{"role": "user", "content": "hello across the NAT"}]})
        return {"status_code": r.status_code, "body": r.json()}
    raise ValueError(f"unknown op {op!r}")


def _say(doc: dict[str, Any]) -> None:
    print(json.dumps(doc), flush=True)


if __name__ == "__main__":
    _main(json.loads(sys.argv[1]))
