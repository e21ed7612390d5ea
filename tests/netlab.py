"""Real network topologies for the NAT tests: Linux network namespaces joined by veth
pairs, a bridge as the "public internet", and routers that masquerade (nftables).

Everything lives in namespaces this module creates, named ``pllm<pid>-<lab>-<role>``,
and goes when the lab closes (deleting a namespace deletes its veths); the host's own
interfaces, routes and firewall are never touched: even the bridge is in a namespace of
its own, and veth pairs are made inside namespaces, never in the host's. Addresses:
198.51.100.0/24 (TEST-NET-2) is "the internet", 10.0.<n>.0/24 the LAN behind NAT n.

    with open_lab("relay") as lab:
        relay = lab.public_host("r")                 # 198.51.100.2 on the internet
        nat = lab.nat("n1")                          # router 198.51.100.11 <-> 10.0.1.1
        alice = lab.private_host("a", nat)           # 10.0.1.2, default route via the NAT
        subprocess.run(alice.cmd("python", "-c", "..."))

``netlab_problem()`` says why this machine cannot (not root, no ``ip``/``nft``, no
namespaces); tests skip with that reason, except under PEERLLM_CI=1, where it fails.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

PUBLIC_NET = "198.51.100"  # /24; .1 is unused, public hosts from .2, NAT routers from .11
PREFIX = "pllm"
BRIDGE = "br0"
# A masquerading home router: outbound LAN traffic leaves with the router's address;
# the forward chain admits only replies (conntrack), so nothing outside can open a
# connection to the LAN, as behind a real NAT. Like most home routers it drops an
# unsolicited connection silently instead of refusing it: a refusal (RST) would also
# kill the other side's half of a TCP simultaneous open, so hole punching would only
# work when both SYNs crossed within one veth round trip. Linux keeps the source port
# when it can, so the mapping is endpoint-independent in practice.
_NAT_RULES = """\
table ip peerllm_nat {
    chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" masquerade
    }
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "lan" oifname "wan" accept
    }
    chain input {
        type filter hook input priority filter; policy accept;
        iifname "wan" ct state new drop
    }
}
"""


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=30)


@functools.cache
def netlab_problem() -> str | None:
    """Why namespaces with a NAT cannot be made here, or None when they can."""
    if os.geteuid() != 0:
        return "network namespaces need root (run the tests as root, as .ci/run does)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"`{tool}` not found (apt-get install {package}; .ci/run does it)"
    probe = f"{PREFIX}{os.getpid()}-probe"
    try:
        made = _run("ip", "netns", "add", probe, check=False)
        if made.returncode != 0:
            return f"`ip netns add` failed: {made.stderr.strip()}"
        nft = subprocess.run(["ip", "netns", "exec", probe, "nft", "-f", "-"],
                             input=_NAT_RULES, capture_output=True, text=True, timeout=30,
                             check=False)
        if nft.returncode != 0:
            return f"nftables does not work in a namespace: {nft.stderr.strip()}"
    finally:
        _run("ip", "netns", "del", probe, check=False)
    return None


def require_netlab() -> None:
    """Skip the calling test, naming why, when this machine cannot run a lab; under
    PEERLLM_CI=1 (.ci/run) fail instead: CI must run the NAT lane."""
    import pytest

    problem = netlab_problem()
    if problem is None:
        return
    if os.environ.get("PEERLLM_CI") == "1":
        pytest.fail(f"the NAT lane (network namespaces) must run in CI: {problem}")
    pytest.skip(f"NAT lane: {problem}")


@dataclass(frozen=True)
class Host:
    """One machine of the lab: a namespace and its address on its segment."""

    ns: str
    ip: str

    def cmd(self, *argv: str) -> list[str]:
        """``argv`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.ns, *argv]

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _run(*self.cmd(*argv), check=check)


@dataclass(frozen=True)
class Nat:
    """A masquerading router: ``public`` on the internet, ``lan`` (x.x.x.1) inside."""

    router: Host
    index: int

    @property
    def public_ip(self) -> str:
        return self.router.ip

    @property
    def subnet(self) -> str:
        return f"10.0.{self.index}"


@dataclass
class Lab:
    """The namespaces of one test; build with :func:`open_lab`."""

    name: str
    namespaces: list[str] = field(default_factory=list)
    _next_public: int = 2
    _nats: int = 0

    def _ns(self, role: str) -> str:
        ns = f"{PREFIX}{os.getpid()}-{self.name}-{role}"
        _run("ip", "netns", "add", ns)
        self.namespaces.append(ns)
        _run("ip", "-n", ns, "link", "set", "lo", "up")
        return ns

    @property
    def internet(self) -> str:
        return self.namespaces[0]

    def _plug(self, ns: str, ifname: str, ip: str) -> None:
        """A veth from the internet bridge into ``ns`` (as ``ifname``) with ``ip``."""
        port = f"p{len(self.namespaces)}"
        _run("ip", "-n", self.internet, "link", "add", port, "type", "veth",
             "peer", "name", ifname, "netns", ns)
        _run("ip", "-n", self.internet, "link", "set", port, "master", BRIDGE)
        _run("ip", "-n", self.internet, "link", "set", port, "up")
        _run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", ifname)
        _run("ip", "-n", ns, "link", "set", ifname, "up")

    def public_host(self, role: str) -> Host:
        """A host with a public address on the internet segment."""
        ip = f"{PUBLIC_NET}.{self._next_public}"
        self._next_public += 1
        ns = self._ns(role)
        self._plug(ns, "eth0", ip)
        return Host(ns, ip)

    def nat(self, role: str) -> Nat:
        """A NAT router on the internet with its own LAN 10.0.<n>.0/24 (empty yet)."""
        self._nats += 1
        ns = self._ns(role)
        ip = f"{PUBLIC_NET}.{10 + self._nats}"
        self._plug(ns, "wan", ip)
        _run("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=_NAT_RULES,
                       capture_output=True, text=True, check=True, timeout=30)
        return Nat(Host(ns, ip), self._nats)

    def private_host(self, role: str, nat: Nat) -> Host:
        """The (only) host on ``nat``'s LAN, routed to the internet through it."""
        ns = self._ns(role)
        _run("ip", "-n", nat.router.ns, "link", "add", "lan", "type", "veth",
             "peer", "name", "eth0", "netns", ns)
        _run("ip", "-n", nat.router.ns, "addr", "add", f"{nat.subnet}.1/24", "dev", "lan")
        _run("ip", "-n", nat.router.ns, "link", "set", "lan", "up")
        ip = f"{nat.subnet}.2"
        _run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        _run("ip", "-n", ns, "link", "set", "eth0", "up")
        _run("ip", "-n", ns, "route", "add", "default", "via", f"{nat.subnet}.1")
        return Host(ns, ip)

    def delay(self, host: Host, *, ms: float, dev: str = "eth0") -> None:
        """Add ``ms`` of one-way delay on ``host``'s ``dev`` (tc netem).

        Raises:
            RuntimeError: the kernel has no netem qdisc (some VM kernels lack sch_netem).
        """
        done = _run("ip", "netns", "exec", host.ns, "tc", "qdisc", "add", "dev", dev, "root",
                    "netem", "delay", f"{ms}ms", check=False)
        if done.returncode != 0:
            raise RuntimeError(f"cannot delay {dev} in {host.ns} (tc netem): "
                               f"{done.stderr.strip()}")

    def close(self) -> None:
        """Stop what still runs in the lab's namespaces, then delete them (newest first)."""
        for ns in reversed(self.namespaces):
            _kill_inside(ns)
            _run("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()


def _kill_inside(ns: str) -> None:
    """SIGKILL the processes left in ``ns`` (ours: the lab made the namespace)."""
    pids = _run("ip", "netns", "pids", ns, check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    if pids:
        time.sleep(0.1)


def remove_stale() -> None:
    """Delete labs left by test runs that died (their pid is gone) before closing them."""
    listed = _run("ip", "netns", "list", check=False).stdout
    for line in listed.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.fullmatch(rf"{PREFIX}(\d+)-.+", name)
        if m is None or _alive(int(m.group(1))):
            continue
        _kill_inside(name)
        _run("ip", "netns", "del", name, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def open_lab(name: str) -> Iterator[Lab]:
    """A lab with its internet bridge; every namespace it made is gone afterwards."""
    remove_stale()
    lab = Lab(name)
    try:
        ns = lab._ns("net")
        _run("ip", "-n", ns, "link", "add", BRIDGE, "type", "bridge")
        _run("ip", "-n", ns, "link", "set", BRIDGE, "up")
        yield lab
    finally:
        lab.close()
