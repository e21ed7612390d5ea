"""Decoding identify answers (p2p/identify.py): both framings, and a hostile peer's
answer bounded and cleaned before anyone prints it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from libp2p.identity.identify.pb.identify_pb2 import Identify
from libp2p.utils.varint import encode_uvarint

from peerllm.errors import RemoteProtocolError
from peerllm.p2p.identify import MAX_PROTOCOLS, MAX_TEXT, PeerIdentity, decode_identify

PLAIN = Identify(agent_version="js-libp2p/3.0.2", protocol_version="ipfs/0.1.0",
                 public_key=b"\x08\x01\x12\x20" + b"k" * 32,
                 protocols=["/ipfs/id/1.0.0", "/ipfs/ping/1.0.0"])


def prefixed(msg: Identify) -> bytes:
    body = msg.SerializeToString()
    return bytes(encode_uvarint(len(body))) + body


def test_the_spec_framing_and_the_bare_protobuf_decode_alike() -> None:
    expected = PeerIdentity(agent="js-libp2p/3.0.2",
                            protocols=("/ipfs/id/1.0.0", "/ipfs/ping/1.0.0"))
    assert decode_identify(prefixed(PLAIN)) == expected
    assert decode_identify(PLAIN.SerializeToString()) == expected


def test_no_agent_is_none() -> None:
    assert decode_identify(prefixed(Identify(protocols=["/x/1"]))) == PeerIdentity(
        agent=None, protocols=("/x/1",))


@pytest.mark.parametrize("data", [b"", b"\xff\xff\xff", b"\x0a\x05ab"])
def test_garbage_is_the_peers_protocol_error(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_identify(data)


def test_a_hostile_answer_is_bounded_and_cannot_drive_a_terminal() -> None:
    hostile = Identify(agent_version="evil\x1b[2J\x07" + "a" * 10_000,
                       protocols=[f"/p/{i}" for i in range(1000)] + ["/p/0"])
    ident = decode_identify(prefixed(hostile))
    assert ident.agent is not None and len(ident.agent) == MAX_TEXT
    assert ident.agent.startswith("evil?[2J?")
    assert len(ident.protocols) == MAX_PROTOCOLS == len(set(ident.protocols))


def shown(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


@given(agent=st.text(max_size=64), protocols=st.lists(st.text(min_size=1, max_size=40),
                                                       max_size=10))
def test_round_trip_shows_every_printable_character_as_sent(agent: str,
                                                           protocols: list[str]) -> None:
    ident = decode_identify(prefixed(Identify(agent_version=agent, protocols=protocols)))
    assert ident.agent == (shown(agent) or None)
    assert ident.protocols == tuple(dict.fromkeys(shown(p) for p in protocols))
