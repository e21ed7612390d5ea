"""A plain py-libp2p peer, run as its own process by the plain-peer tests: TCP, Noise,
Yamux, and only the protocols py-libp2p serves by default (identify, identify push,
ping) — no PeerLLM protocol. Its own process, so its identify agent is py-libp2p's.

Prints one JSON line per fact on stdout: ``{"addr": ...}`` once listening, then
``{"event": "connected"|"disconnected", "peer": ..., "inbound": ...}`` per connection,
and ``{"dialled": ...}`` after ``--dial ADDR`` connected. Runs until stdin closes.

Usage: python plain_libp2p_peer.py [--dial MULTIADDR]
"""

from __future__ import annotations

import json
import sys

import multiaddr
import trio
from libp2p import generate_new_ed25519_identity, new_host
from libp2p.abc import INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.network.config import ConnectionConfig
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX
from libp2p.stream_muxer.yamux.yamux import Yamux


def say(**fact: object) -> None:
    print(json.dumps(fact), flush=True)


class Events(INotifee):
    async def connected(self, network: INetwork, conn: INetConn) -> None:
        say(event="connected", peer=str(conn.muxed_conn.peer_id),
            inbound=not getattr(conn.muxed_conn, "is_initiator", False))

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        say(event="disconnected", peer=str(conn.muxed_conn.peer_id))

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None


async def main(dial: str | None) -> None:
    keypair = generate_new_ed25519_identity()
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    host = new_host(
        key_pair=keypair,
        sec_opt={TProtocol(NOISE): NoiseTransport(
            keypair, noise_privkey=create_x25519_key_pair().private_key)},
        muxer_opt={TProtocol(YAMUX): Yamux},
        listen_addrs=listen,
        connection_config=ConnectionConfig(max_connections_per_peer=1, min_connections=0,
                                           low_watermark=0),
    )
    host.get_network().register_notifee(Events())
    async with host.run(listen):
        say(addr=str(host.get_addrs()[0]))
        if dial is not None:
            with trio.fail_after(10):
                await host.connect(info_from_p2p_addr(multiaddr.Multiaddr(dial)))
            say(dialled=dial)
        # Until the test closes our stdin.
        await trio.to_thread.run_sync(sys.stdin.read)


if __name__ == "__main__":
    args = sys.argv[1:]
    trio.run(main, args[1] if args[:1] == ["--dial"] else None)
