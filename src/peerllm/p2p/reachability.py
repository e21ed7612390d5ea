"""Is this node reachable from outside? AutoNAT v1 both ways: peers that ask are
dialled back (rate-limited), and up to SERVERS_PER_ROUND connected peers are asked to
dial us back; their verdict goes into the node's ReachabilityState.

The wire and the dial-back itself are in p2p/dialback.py (why not py-libp2p's
AutoNATService: it answers OK to everyone). A dial-back that works proves we are
reachable at that address; one that fails at every address says we are behind a NAT
or a firewall. The majority of the answers of one round decides; a round with no
answers, or a tie, leaves the status as it was and is retried soon.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

import multiaddr
import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID

from ..errors import PeerError, PeerTimeout, RemoteProtocolError
from . import dialback as wire
from .host import P2PHost, relay_of
from .limits import PeerRate
from .reachability_state import Reachability, ReachabilityState
from .streams import ByteStream, Libp2pStream

logger = logging.getLogger(__name__)

SERVERS_PER_ROUND: Final = 3  # peers asked to dial us back in one round
ASK_TIMEOUT_S: Final = 20.0  # one request: the server tries up to MAX_DIAL_ADDRS addresses
DIAL_BACK_TIMEOUT_S: Final = 5.0  # one address, dial + handshake
DIAL_BACK_BUDGET_S: Final = 15.0  # all addresses of one request (under ASK_TIMEOUT_S)
RECHECK_S: Final = 600.0  # re-ask once decided (addresses and NATs change)
RETRY_FIRST_S: Final = 1.0  # no server or no verdict yet: ask again soon...
RETRY_MAX_S: Final = 60.0  # ...backing off to this
SERVE_PER_PEER_PER_S: Final = 1 / 10  # dial-backs we do for one peer, at most
MAX_CONCURRENT_DIAL_BACKS: Final = 4  # over all peers: each is a real outbound dial


@dataclass(frozen=True, slots=True)
class Answer:
    """One server's reply: the AutoNAT status, its text, and the address it reached."""

    server: str
    status: int
    text: str = ""
    addr: str | None = None


def decide(answers: Sequence[Answer]) -> tuple[Reachability, str] | None:
    """The verdict of one round, with its reason; None when it decides nothing.

    Only OK (reached) and E_DIAL_ERROR (tried and failed) count: a refusal (rate limit,
    relayed connection, no usable address) or an error says nothing about us.
    """
    reached = [a for a in answers if a.status == wire.OK]
    failed = [a for a in answers if a.status == wire.E_DIAL_ERROR]
    if len(reached) > len(failed):
        where = next((a.addr for a in reached if a.addr), "our address")
        return (Reachability.PUBLIC,
                f"{len(reached)} of {len(reached) + len(failed)} peers dialled us back "
                f"(at {where})")
    if len(failed) > len(reached):
        return (Reachability.PRIVATE,
                f"{len(failed)} of {len(reached) + len(failed)} peers could not dial us "
                f"back ({failed[0].text or 'no address answered'}): behind a NAT or a "
                "firewall")
    return None


# -- serving dial-backs ------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Observed:
    """What a request's connection says about the requester: its IP (None: unknown)
    and whether it came through a relay (then the IP is the relay's, not theirs)."""

    ip: str | None
    relayed: bool


DialBack = Callable[[str, multiaddr.Multiaddr], Awaitable[None]]
"""Dial ``peer_id`` at ``addr`` on a fresh connection, or raise PeerError."""


class DialBackServer:
    """Answers /libp2p/autonat/1.0.0: dials the requester back at its observed IP."""

    def __init__(self, dial: DialBack, *, rate: PeerRate) -> None:
        self._dial = dial
        self._rate = rate
        self._slots = trio.CapacityLimiter(MAX_CONCURRENT_DIAL_BACKS)
        self.served = 0
        self.refused = 0

    async def handle(self, stream: ByteStream) -> None:
        """The stream handler (P2PHost.set_handler)."""
        await self.serve(stream, observed_of(stream))

    async def serve(self, stream: ByteStream, observed: Observed) -> None:
        """Read one DIAL, answer it, close.

        Raises:
            RemoteProtocolError: the request is not a well-formed AutoNAT message.
        """
        request = await wire.read_message(stream)
        status, text, addr = await self._answer(stream.peer_id, request, observed)
        if status == wire.OK:
            self.served += 1
        elif status in (wire.E_DIAL_REFUSED, wire.E_BAD_REQUEST):
            self.refused += 1
            logger.debug("autonat: refused %s's dial-back request: %s", stream.peer_id, text)
        await stream.send_all(wire.encode_response(status, text, addr))
        await stream.aclose()

    async def _answer(self, peer: str, request: wire.Message, observed: Observed
                      ) -> tuple[int, str, bytes | None]:
        if request.type != wire.Message.DIAL:
            return wire.E_BAD_REQUEST, "expected a DIAL message", None
        try:
            asked_for = str(ID(request.dial.peer.id))
        except Exception:  # junk bytes for a peer ID
            return wire.E_BAD_REQUEST, "the peer ID in the request is not valid", None
        if asked_for != peer:
            return wire.E_BAD_REQUEST, "a peer may only ask to be dialled back itself", None
        if observed.relayed or observed.ip is None:
            return wire.E_DIAL_REFUSED, "the request came through a relay", None
        if self._rate.check(peer) is not None:
            return wire.E_DIAL_REFUSED, "too many dial-back requests, ask later", None
        candidates = wire.dial_candidates(list(request.dial.peer.addrs), observed.ip)
        if not candidates:
            return wire.E_DIAL_REFUSED, f"no TCP address to dial at {observed.ip}", None
        try:
            self._slots.acquire_nowait()
        except trio.WouldBlock:
            return wire.E_DIAL_REFUSED, "busy dialling others back, ask later", None
        try:
            return await self._try(peer, candidates)
        finally:
            self._slots.release()

    async def _try(self, peer: str, candidates: list[multiaddr.Multiaddr]
                   ) -> tuple[int, str, bytes | None]:
        last = "no address answered"
        with trio.move_on_after(DIAL_BACK_BUDGET_S):
            for addr in candidates:
                with trio.move_on_after(DIAL_BACK_TIMEOUT_S) as scope:
                    try:
                        await self._dial(peer, addr)
                    except PeerError as exc:
                        last = f"{addr}: {exc.message}"
                        continue
                    return wire.OK, "", addr.to_bytes()
                if scope.cancelled_caught:
                    last = f"{addr}: no answer within {DIAL_BACK_TIMEOUT_S} s"
        return wire.E_DIAL_ERROR, f"could not dial back {last}", None


def observed_of(stream: ByteStream) -> Observed:
    """The requester's IP and whether its connection is relayed, from a libp2p stream.

    Fails closed: anything we cannot tell (a stream not from libp2p, a connection torn
    down meanwhile) counts as relayed, which refuses the request.
    """
    if not isinstance(stream, Libp2pStream):
        return Observed(None, relayed=True)
    try:
        conn = stream.raw.muxed_conn
        addrs = [str(a) for a in conn.get_transport_addresses()]
        remote = stream.raw.get_remote_address()
    except Exception:  # py-libp2p raises assorted errors on a closing connection
        return Observed(None, relayed=True)
    if any(relay_of(a) for a in addrs) or any("/p2p-circuit" in a for a in addrs):
        return Observed(None, relayed=True)
    return Observed(str(remote[0]) if remote else None, relayed=False)


def serve_dial_backs(host: P2PHost, *, max_peers: int) -> DialBackServer:
    """Register the AutoNAT handler on ``host``; dial-backs use its swarm's transports."""
    network = host.libp2p.get_network()

    async def dial(peer_id: str, addr: multiaddr.Multiaddr) -> None:
        await wire.dial_back(network, peer_id, addr)

    server = DialBackServer(dial, rate=PeerRate(SERVE_PER_PEER_PER_S, max_peers=max_peers))
    host.set_handler(wire.PROTOCOL_ID, server.handle, timeout_s=ASK_TIMEOUT_S)
    return server


# -- asking others -----------------------------------------------------------------------

class ReachabilityProber:
    """Asks connected peers to dial us back and records the verdict in ``state``."""

    def __init__(self, host: P2PHost, state: ReachabilityState, *,
                 rng: random.Random | None = None) -> None:
        self._host = host
        self._state = state
        self._rng = rng or random.Random()
        self.rounds = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Probe until cancelled (returns at once when the config pins the status)."""
        task_status.started()
        if self._state.pinned:
            return
        wait = RETRY_FIRST_S
        while True:
            verdict = decide(await self.probe_once())
            if verdict is None:
                wait = min(wait * 2, RETRY_MAX_S)
            else:
                status, reason = verdict
                if status is not self._state.status:
                    logger.info("reachability: %s (%s)", status.value, reason)
                self._state.set(status, reason)
                wait = RECHECK_S
            await trio.sleep(wait)

    async def probe_once(self) -> list[Answer]:
        """One round: ask up to SERVERS_PER_ROUND direct peers that speak AutoNAT."""
        servers = self.servers()
        self._rng.shuffle(servers)
        answers: list[Answer] = []
        if not servers:
            return answers
        self.rounds += 1
        addrs = self.own_addrs()
        async with trio.open_nursery() as nursery:
            for server in servers[:SERVERS_PER_ROUND]:
                nursery.start_soon(self._ask_into, server, addrs, answers)
        return answers

    def servers(self) -> list[str]:
        """Connected peers, over a direct connection, that identify as AutoNAT servers."""
        lib = self._host.libp2p
        out = []
        for pid in list(lib.get_network().connections):
            if not _direct(lib.get_network().connections.get(pid) or []):
                continue
            try:
                protocols = lib.get_peerstore().get_protocols(pid)
            except Exception:  # identify has not finished yet: not a candidate now
                continue
            if TProtocol(wire.PROTOCOL_ID) in protocols:
                out.append(str(pid))
        return out

    def own_addrs(self) -> list[bytes]:
        """Our direct TCP addresses, without /p2p (servers replace the IP anyway)."""
        out: list[bytes] = []
        for text in self._host.addrs():
            if "/p2p-circuit" in text or "/tcp/" not in text:
                continue
            base = text.split("/p2p/", 1)[0]
            try:
                out.append(multiaddr.Multiaddr(base).to_bytes())
            except Exception:  # one of our own addresses we cannot encode: skip it
                logger.debug("autonat: cannot encode our address %s", base)
        return out

    async def _ask_into(self, server: str, addrs: list[bytes], out: list[Answer]) -> None:
        try:
            out.append(await self.ask(server, addrs))
        except (PeerError, RemoteProtocolError) as exc:
            logger.debug("autonat: asking %s failed: %s", server, exc)

    async def ask(self, server: str, addrs: list[bytes]) -> Answer:
        """Ask ``server`` to dial us back at ``addrs``.

        Raises:
            PeerTimeout: no answer within ASK_TIMEOUT_S. PeerError: the stream failed.
            RemoteProtocolError: the server's answer is not an AutoNAT DIAL_RESPONSE.
        """
        with trio.move_on_after(ASK_TIMEOUT_S):
            stream = await self._host.open_stream(server, wire.PROTOCOL_ID)
            try:
                await stream.send_all(wire.encode_dial(
                    ID.from_base58(self._host.peer_id).to_bytes(), addrs))
                reply = await wire.read_message(stream)
            finally:
                await stream.aclose()
            if reply.type != wire.Message.DIAL_RESPONSE:
                raise RemoteProtocolError(f"autonat: {server} answered a DIAL with a DIAL")
            resp = reply.dialResponse
            addr = None
            if resp.HasField("addr"):
                try:
                    addr = str(multiaddr.Multiaddr(resp.addr))
                except Exception:  # the server's junk: the status still counts
                    addr = None
            return Answer(server, int(resp.status), resp.statusText[:200], addr)
        raise PeerTimeout(server, f"no autonat answer within {ASK_TIMEOUT_S} s", phase="call")


def _direct(conns: object) -> bool:
    """True when one of these swarm connections is not through a relay."""
    if not isinstance(conns, list):
        return False
    for conn in conns:
        try:
            addrs = [str(a) for a in conn.get_transport_addresses()]
        except Exception:  # a connection closing meanwhile
            continue
        if addrs and not any("/p2p-circuit" in a for a in addrs):
            return True
    return False
