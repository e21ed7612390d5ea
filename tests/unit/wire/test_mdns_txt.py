"""mDNS TXT record codec: round trips within the 255-byte entry limit; hostile records refused."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerllm.wire.mdns_txt import (
    MAX_ADDR_KEYS,
    MAX_NAME_BYTES,
    MAX_TXT_ENTRY_BYTES,
    MdnsAnnouncement,
    MdnsPeer,
    TxtRecord,
    decode_txt,
    encode_txt,
    instance_label,
)

_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def new_peer_id() -> str:
    return "12D3KooW" + "".join(random.choices(_B58, k=44))


def announcement(name: str, *, models: list[str] | None = None, n_addrs: int = 1
                 ) -> MdnsAnnouncement:
    pid = new_peer_id()
    addrs = tuple(f"/ip4/127.0.0.1/tcp/{4001 + i}/p2p/{pid}" for i in range(n_addrs))
    return MdnsAnnouncement(peer_id=pid, name=name, port=4001, addrs=addrs,
                            models=tuple(models or ()))


def wire_form(record: TxtRecord) -> dict[bytes, bytes | None]:
    """The properties as zeroconf hands them to a browser."""
    return {k.encode(): v.encode() for k, v in record.properties.items()}


def test_long_addr_lists_are_split_and_models_truncated() -> None:
    ann = announcement("alice", models=[f"model-{i:03d}-q4_k_m.gguf" for i in range(40)],
                       n_addrs=6)
    record = encode_txt(ann)
    assert "addrs" not in record.properties
    assert {"addr0", "addr1"} <= record.properties.keys()
    peer = decode_txt(wire_form(record))
    assert peer.addrs == ann.addrs and record.addrs_left_out == 0
    assert 0 < len(peer.models) < 40
    assert peer.models == ann.models[: len(peer.models)]
    assert record.models_left_out == 40 - len(peer.models)


def test_unpublishable_models_are_left_out_not_fatal() -> None:
    ann = announcement("bob", models=["a,b", "", "lone-\ud800", "fine"])
    record = encode_txt(ann)
    assert decode_txt(wire_form(record)).models == ("fine",)
    assert record.models_left_out == 3


def test_instance_label_fits_one_dns_label() -> None:
    ann = announcement("n" * MAX_NAME_BYTES)
    assert len(instance_label(ann).encode()) <= 63


# -- properties -------------------------------------------------------------------------

_peer_ids = st.text(alphabet=_B58, min_size=1, max_size=60)
_names = st.text(min_size=1, max_size=MAX_NAME_BYTES).filter(
    lambda n: "." not in n and n.isprintable() and len(n.encode()) <= MAX_NAME_BYTES)
_addr_heads = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789/._-", max_size=120)


@st.composite
def announcements(draw: st.DrawFn) -> MdnsAnnouncement:
    pid = draw(_peer_ids)
    heads = draw(st.lists(_addr_heads, max_size=12))
    addrs = tuple(f"/{h}/p2p/{pid}" for h in heads
                  if len(f"addr0=/{h}/p2p/{pid}") <= MAX_TXT_ENTRY_BYTES)
    return MdnsAnnouncement(peer_id=pid, name=draw(_names), port=draw(st.integers(0, 65535)),
                            addrs=addrs, models=tuple(draw(st.lists(st.text(), max_size=30))))


@given(announcements())
def test_round_trip(ann: MdnsAnnouncement) -> None:
    record = encode_txt(ann)
    for key, value in record.properties.items():
        assert len(key.encode()) + 1 + len(value.encode()) <= MAX_TXT_ENTRY_BYTES
    if not ann.addrs:
        with pytest.raises(ValueError, match="no addrs"):
            decode_txt(wire_form(record))
        return
    peer = decode_txt(wire_form(record))
    assert (peer.peer_id, peer.name) == (ann.peer_id, ann.name)
    kept = len(ann.addrs) - record.addrs_left_out
    assert peer.addrs == ann.addrs[:kept] and kept >= min(len(ann.addrs), MAX_ADDR_KEYS)
    publishable = [m for m in ann.models if m and "," not in m and _encodes(m)]
    assert peer.models == tuple(publishable[: len(peer.models)])
    assert record.models_left_out == len(ann.models) - len(peer.models)


def _encodes(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


_keys = st.sampled_from([b"peer_id", b"name", b"models", b"addrs", b"addr0", b"addr1",
                         b"addr4", b"other"])


def decodes_to_a_valid_peer_or_refuses(props: dict[bytes, bytes | None]) -> None:
    try:
        peer = decode_txt(props)
    except ValueError:
        return
    assert isinstance(peer, MdnsPeer) and peer.addrs
    # Whatever decodes is something we would have been allowed to announce ourselves.
    MdnsAnnouncement(peer_id=peer.peer_id, name=peer.name, port=0, addrs=peer.addrs)


@given(st.dictionaries(_keys, st.none() | st.binary(max_size=300)))
def test_hostile_bytes(props: dict[bytes, bytes | None]) -> None:
    decodes_to_a_valid_peer_or_refuses(props)


@given(announcements(), _keys, st.none() | st.binary(max_size=300) | st.text().map(
    lambda t: t.encode("utf-8", "surrogatepass")))
def test_valid_record_with_one_hostile_value(ann: MdnsAnnouncement, key: bytes,
                                             value: bytes | None) -> None:
    decodes_to_a_valid_peer_or_refuses({**wire_form(encode_txt(ann)), key: value})


@pytest.mark.parametrize(
    "props",
    [
        {},
        {b"name": b"x", b"addrs": b"/ip4/1.2.3.4/tcp/1/p2p/12D3KooWabc"},
        {b"peer_id": b"\xff\xfe", b"name": b"x", b"addrs": b"/p2p/\xff\xfe"},
        {b"peer_id": None, b"name": b"x", b"addrs": b"/p2p/x"},
        {b"peer_id": b"12D3KooWabc", b"name": b"x" * 200, b"addrs": b"/p2p/12D3KooWabc"},
        {b"peer_id": b"12D3KooWabc", b"name": b"x", b"addrs": b"/ip4/1.2.3.4/p2p/12D3KooWzzz"},
        {b"peer_id": b"12D3KooWabc", b"name": b"x"},
        {b"peer_id": b"0OIl", b"name": b"x", b"addrs": b"/p2p/0OIl"},
        {b"peer_id": b"12D3KooWabc", b"name": b"a\xed\xa0\x80", b"addrs": b"/p2p/12D3KooWabc"},
        {b"peer_id": b"12D3KooWabc", b"name": b"a.b", b"addrs": b"/p2p/12D3KooWabc"},
    ],
)
def test_decode_rejects_hostile_txt(props: dict[bytes, bytes | None]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - any ValueError (incl. Unicode) is a reject
        decode_txt(props)


@pytest.mark.parametrize("name", ["", "a.b", "tab\there", "x" * (MAX_NAME_BYTES + 1), "\ud800"])
def test_announcement_refuses_unpublishable_names(name: str) -> None:
    with pytest.raises(ValueError, match="name"):
        announcement(name)
