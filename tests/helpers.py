"""Helpers every test folder shares: node configs, waiting for a condition, `peerllm`
processes on 127.0.0.1, a multicast probe, Ed25519 doubles, audit sinks and files,
self-signed TLS certificates.
Fixtures that use them are declared in the conftest.py files; nothing here is a fixture.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import ipaddress
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import trio
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID
from zeroconf import IPVersion, ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

import peerllm
from peerllm.audit import Field
from peerllm.config import (
    AuthConfig,
    InferenceConfig,
    ModelsConfig,
    NodeConfig,
    config_from_mapping,
)
from peerllm.inference.catalog import DEFAULT_MODEL_ID
from peerllm.security_events import AuditEvent
from peerllm.testing import write_fake_gguf

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]
"""The checkout: configs/, src/ and the example files the tests read."""

MODEL = DEFAULT_MODEL_ID
"""The bundled model every e2e test generates with."""

# -- in-process nodes ---------------------------------------------------------------------

MakeConfig = Callable[..., NodeConfig]


def node_config(root: Path, name: str, *, bootstrap: list[str] | None = None,
                mdns: bool = False, network_key: str | None = None, dht: bool = True,
                serve_default: bool = False, **p2p: Any) -> NodeConfig:
    """Config for an in-process node: loopback only, ephemeral ports, data in root/name."""
    return config_from_mapping({
        "data_dir": str(root / name),
        "node": {"name": name},
        "p2p": {"listen": ["/ip4/127.0.0.1/tcp/0"], "bootstrap": bootstrap or [],
                "network_key": network_key, "heartbeat_interval_s": 1.0,
                "call_timeout_s": 2.0, "dial_timeout_s": 3.0, **p2p},
        "discovery": {"mdns": mdns, "mdns_interfaces": ["127.0.0.1"], "dht": dht},
        "api": {"host": "127.0.0.1", "port": 0},
        "models": {"serve_default": serve_default},
    })


FAKE_MODEL = "fake"
"""The model id of ``with_fake_model``'s file, served by a FakeBackend node."""


def with_fake_model(cfg: NodeConfig, *, api: dict[str, Any] | None = None,
                    auth: dict[str, Any] | None = None, **inference: Any) -> NodeConfig:
    """``cfg`` serving one fake GGUF file (FAKE_MODEL) in its data dir, for
    ``peerllm.open_node(cfg, backend=FakeBackend(...))``; ``inference``
    and ``api`` are settings of those sections."""
    assert cfg.data_dir is not None
    path = cfg.data_dir / f"{FAKE_MODEL}.gguf"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_fake_gguf(path)
    return dataclasses.replace(
        cfg, models=ModelsConfig(serve_default=False, paths=(str(path),)),
        inference=InferenceConfig(warmup_tokens=0, cache_size_gb=1.0, **inference),
        api=dataclasses.replace(cfg.api, **(api or {})), auth=AuthConfig(**(auth or {})))


def issuer_of(data_dir: Path) -> str:
    """The issuer id of the node that will run in ``data_dir`` (its key is made now)."""
    from peerllm.auth import issuer_id_of
    from peerllm.auth.authority import ISSUER_KEY_FILE, load_issuer_key

    return issuer_id_of(load_issuer_key(data_dir / ISSUER_KEY_FILE))


def peer_of(data_dir: Path) -> str:
    """The peer ID of the node that will run in ``data_dir`` (its key is made now)."""
    from peerllm.identity import KEY_FILE_NAME, load_or_create_key, peer_id_of, public_key_bytes

    return peer_id_of(public_key_bytes(load_or_create_key(data_dir / KEY_FILE_NAME)[0]))


def api_url(node: peerllm.Node) -> str:
    assert node.api_url is not None
    return node.api_url


def healthy_names(peers: list[dict[str, Any]]) -> set[str]:
    return {p["name"] for p in peers if p["state"] == "healthy" and p["name"]}


# -- waiting for something that happens asynchronously -----------------------------------

async def wait_until(pred: Callable[[], bool], *, timeout_s: float = 20.0,
                     what: str = "condition") -> None:
    """Poll ``pred`` until true; fail the test (not hang) after ``timeout_s``."""
    with trio.move_on_after(timeout_s):
        while not pred():
            await trio.sleep(0.05)
        return
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


async def wait_for_value(fetch: Callable[[], Awaitable[T | None]], *, timeout_s: float = 20.0,
                         what: str = "a value", period_s: float = 0.2) -> T:
    """Await ``fetch()`` until it returns something; fail after ``timeout_s``."""
    with trio.move_on_after(timeout_s):
        while (value := await fetch()) is None:
            await trio.sleep(period_s)
        return value
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def poll_until(fetch: Callable[[], T], done: Callable[[T], bool], *, timeout_s: float = 30.0,
               what: str = "condition", period_s: float = 0.3) -> T:
    """Blocking ``wait_until`` for tests that drive processes: call ``fetch`` until ``done``
    holds for its result, which is returned; fail with the last result after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        last = fetch()
        if done(last):
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}: "
                                 f"{str(last)[:2000]}")
        time.sleep(period_s)


# -- `peerllm` processes ------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now, for a process the test starts later.

    Chosen below the kernel's ephemeral range: a port the kernel hands out with bind(0)
    can be taken by any outgoing connection (ours, or another test run's) before the
    daemon binds it, which made daemons fail with "Address already in use" on busy
    machines.
    """
    low = _ephemeral_low()
    for _ in range(200):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # everything tried was taken: let the kernel choose
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ephemeral_low() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def peerllm_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "peerllm", *args]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PEERLLM_", "NODE_"))}
    env.update(extra)
    return env


@dataclass
class Daemon:
    name: str
    data_dir: Path
    p2p_port: int
    api_port: int
    proc: subprocess.Popen[str] | None = None
    banner: list[str] = field(default_factory=list)
    _drainer: threading.Thread | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def peer_id(self) -> str:
        return next(line.split(":", 1)[1].strip() for line in self.banner
                    if line.strip().startswith("peer id"))

    @property
    def addr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.p2p_port}/p2p/{self.peer_id}"

    def start(self, *extra: str, timeout_s: float = 60.0, default_model: bool = False,
              env: dict[str, str] | None = None) -> None:
        """Start and wait for "ready"; ``env`` adds variables to a clean environment."""
        args = ["node", "--data-dir", str(self.data_dir), "--name", self.name,
                "--listen", f"/ip4/127.0.0.1/tcp/{self.p2p_port}",
                "--api", f"127.0.0.1:{self.api_port}", *extra]
        if not default_model:
            args.append("--no-default-model")
        self.proc = subprocess.Popen(peerllm_cmd(*args), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True,
                                     env=clean_env(**(env or {})))
        self.banner = []
        deadline = time.monotonic() + timeout_s
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait(10)
                self.proc.stdout.close()
                raise AssertionError(f"{self.name} exited early:\n" + "".join(self.banner))
            self.banner.append(line)
            if line.strip() == "ready":
                # Keep draining output so the child never blocks on a full pipe.
                self._drainer = threading.Thread(target=self._drain, daemon=True)
                self._drainer.start()
                return
        raise AssertionError(f"{self.name} not ready in {timeout_s} s:\n" + "".join(self.banner))

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.banner.append(line)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> float:
        """Signal the daemon; return how long it took to exit."""
        if self.proc is None:
            return 0.0
        t0 = time.monotonic()
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
                try:
                    self.proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
                    raise
            return time.monotonic() - t0
        finally:
            if self._drainer is not None:
                self._drainer.join(5)
                self._drainer = None
            if self.proc.stdout is not None and not self.proc.stdout.closed:
                self.proc.stdout.close()

    def peers_json(self) -> dict[str, Any]:
        out = subprocess.run(peerllm_cmd("peers", "--json", "--api", self.api),
                             capture_output=True, text=True, env=clean_env(), timeout=30,
                             check=True)
        return json.loads(out.stdout)  # type: ignore[no-any-return]


# -- mDNS ---------------------------------------------------------------------------------

_PROBE_TYPE = "_peerllm-probe._tcp.local."


@functools.cache
def multicast_problem() -> str | None:
    """Why two zeroconf instances on 127.0.0.1 cannot see each other, or None if they can."""
    probe = ServiceInfo(
        _PROBE_TYPE,
        f"probe-{random.randrange(1 << 32):08x}.{_PROBE_TYPE}",
        port=9,
        parsed_addresses=["127.0.0.1"],
    )
    found = threading.Event()

    def on_change(
        zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
    ) -> None:
        if name == probe.name and state_change is ServiceStateChange.Added:
            found.set()

    try:
        publisher = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    except OSError as exc:
        return f"zeroconf on 127.0.0.1: {exc}"
    try:
        browser_zc = Zeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    except OSError as exc:
        publisher.close()
        return f"second zeroconf on 127.0.0.1: {exc}"
    browser = ServiceBrowser(browser_zc, _PROBE_TYPE, handlers=[on_change])
    try:
        publisher.register_service(probe)
        if not found.wait(5):
            return "a service registered on 127.0.0.1 was not seen by a second instance in 5 s"
    except OSError as exc:
        return f"registering a probe service: {exc}"
    finally:
        browser.cancel()
        publisher.close()
        browser_zc.close()
    return None


# -- Ed25519 doubles for the wire tests (the real peer-ID mapping lives in identity/) -----

def peer_id_of(pk: bytes) -> str:
    return "peer-" + pk.hex()[:16]


def verify(pk: bytes, msg: bytes, sig: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(pk).verify(sig, msg)
    except InvalidSignature:
        return False
    return True


class Signer:
    def __init__(self, seed: int) -> None:
        self.key = Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)
        self.public_key = self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.peer_id = peer_id_of(self.public_key)

    def sign(self, data: bytes) -> bytes:
        return self.key.sign(data)


ALICE, MALLORY = Signer(1), Signer(2)


# -- audit ----------------------------------------------------------------------------------

@dataclass
class RecordingAudit:
    """An ``AuditSink`` that keeps every line in memory: ``of(event)`` lists its fields."""

    lines: list[tuple[AuditEvent, dict[str, Field]]] = field(default_factory=list)

    def record(self, event: AuditEvent, /, **fields: Field) -> None:
        self.lines.append((event, fields))

    def of(self, event: AuditEvent) -> list[dict[str, Field]]:
        return [f for e, f in self.lines if e is event]


def audit_lines(data_dir: Path, event: str | None = None) -> list[dict[str, Any]]:
    """The JSON lines of a node's audit.log (only ``event``'s, if given)."""
    path = data_dir / "audit.log"
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text(encoding="ascii").splitlines()]
    return [line for line in lines if event is None or line["event"] == event]


# -- TLS ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TlsFiles:
    cert: Path  # PEM; also the CA bundle a client verifies the server with
    key: Path  # PEM, unencrypted unless made with a passphrase


def self_signed_cert(directory: Path, *, passphrase: bytes | None = None) -> TlsFiles:
    """A fresh P-256 certificate for 127.0.0.1, ::1 and localhost, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "peerllm test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase
        else serialization.NoEncryption())
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "cert.pem", directory / "key.pem")
    files.cert.write_bytes(cert.public_bytes(Encoding.PEM))
    files.key.write_bytes(key.private_bytes(Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            encryption))
    files.key.chmod(0o600)
    return files
