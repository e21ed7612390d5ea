"""protect() over in-memory connections: the pnet wire format, and a peer of another
network refused at once on both sides, with the cause named, a WARNING and an audit line."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing
from libp2p.io.abc import ReadWriteCloser

from peerllm.errors import NetworkKeyMismatch
from peerllm.p2p.pnet import NONCE_LEN, NetworkKey, XSalsa20
from peerllm.p2p.transport import MULTISTREAM_HEADER, OLD_PRELUDE_MAGIC, SILENT_PEER_S, protect
from peerllm.security_events import AuditEvent
from tests.helpers import RecordingAudit

OPEN = NetworkKey(None)
K1 = NetworkKey.from_hex("11" * 32)
K2 = NetworkKey.from_hex("22" * 32)
HELLO = MULTISTREAM_HEADER + b"\x07/noise\n"


class MemoryConn:
    """One end of an in-memory byte pipe, shaped as a libp2p ReadWriteCloser."""

    def __init__(self, stream: trio.abc.Stream, port: int) -> None:
        self._stream = stream
        self._port = port

    async def read(self, n: int | None = None) -> bytes:
        try:
            return bytes(await self._stream.receive_some(n))
        except trio.ClosedResourceError:
            return b""

    async def write(self, data: bytes) -> None:
        await self._stream.send_all(data)

    async def close(self) -> None:
        await self._stream.aclose()

    def get_remote_address(self) -> tuple[str, int] | None:
        return ("10.0.0.9", self._port)


def pipe() -> tuple[MemoryConn, MemoryConn]:
    left, right = trio.testing.memory_stream_pair()
    return MemoryConn(left, 4001), MemoryConn(right, 4002)


async def read_exactly(conn: ReadWriteCloser, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = await conn.read(n - len(buf))
        assert chunk, f"EOF after {len(buf)} of {n} bytes"
        buf += chunk
    return buf


async def test_the_same_key_talks_and_the_wire_is_the_pnet_spec() -> None:
    raw_a, raw_b = pipe()
    a = protect(raw_a, K1, initiator=True, peer="B")
    await a.write(HELLO)
    # On the wire: a 24-byte nonce, then the bytes XORed with XSalsa20(key, nonce).
    nonce = await read_exactly(raw_b, NONCE_LEN)
    assert XSalsa20(bytes.fromhex("11" * 32), nonce).xor(
        await read_exactly(raw_b, len(HELLO))) == HELLO
    raw_a, raw_b = pipe()
    a = protect(raw_a, K1, initiator=True, peer="B")
    b = protect(raw_b, K1, initiator=False, peer="10.0.0.9:4001")
    with trio.fail_after(5):
        await a.write(HELLO)
        assert await read_exactly(b, len(HELLO)) == HELLO
        await b.write(MULTISTREAM_HEADER + b"more")
        assert await read_exactly(a, len(MULTISTREAM_HEADER) + 4) == MULTISTREAM_HEADER + b"more"
        await a.write(b"after the check, anything")
        assert await read_exactly(b, 25) == b"after the check, anything"


async def test_the_open_network_is_plain_bytes() -> None:
    raw_a, raw_b = pipe()
    a = protect(raw_a, OPEN, initiator=True, peer="B")
    await a.write(HELLO)
    assert await read_exactly(raw_b, len(HELLO)) == HELLO  # nothing in front of multistream
    b = protect(raw_b, OPEN, initiator=False, peer="10.0.0.9:4001")
    await raw_a.write(HELLO)
    # A varint reader asks for one byte at a time; it gets them one at a time.
    assert [await b.read(1) for _ in range(3)] == [b"\x13", b"/", b"m"]


@pytest.mark.parametrize(("ours", "theirs", "cause"), [
    (K1, K2, "holds another key"),
    (OPEN, K1, "probably in a private network"),
    (K1, OPEN, "in the open network (no network key)"),
])
async def test_another_network_is_refused_on_both_sides(
        ours: NetworkKey, theirs: NetworkKey, cause: str,
        caplog: pytest.LogCaptureFixture) -> None:
    raw_a, raw_b = pipe()
    audit_a, audit_b = RecordingAudit(), RecordingAudit()
    a = protect(raw_a, theirs, initiator=True, peer="PEER-B", audit=audit_a)
    b = protect(raw_b, ours, initiator=False, peer="10.0.0.9:4001", audit=audit_b)
    failures: dict[str, NetworkKeyMismatch] = {}

    async def side(name: str, conn: ReadWriteCloser) -> None:
        await conn.write(HELLO)  # both ends open with multistream-select
        with pytest.raises(NetworkKeyMismatch) as info:
            await read_exactly(conn, len(HELLO))
        failures[name] = info.value

    with caplog.at_level(logging.WARNING), trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(side, "dialler", a)
            nursery.start_soon(side, "listener", b)
    assert cause in failures["listener"].message
    assert "network key differs" in failures["dialler"].message
    assert failures["dialler"].peer_id == "PEER-B"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(w.startswith("refused connection to PEER-B: network key differs")
               for w in warnings), warnings
    assert any(w.startswith("refused inbound connection from 10.0.0.9:4001: ")
               and cause in w for w in warnings), warnings
    assert audit_a.of(AuditEvent.NETWORK_KEY_MISMATCH)[0]["direction"] == "outbound"
    (line,) = audit_b.of(AuditEvent.NETWORK_KEY_MISMATCH)
    assert (line["direction"], line["peer"]) == ("inbound", "10.0.0.9:4001")
    assert "11" * 32 not in caplog.text and "22" * 32 not in caplog.text


@pytest.mark.parametrize("key", [OPEN, K1])
async def test_an_older_peerllm_is_named(key: NetworkKey) -> None:
    raw_a, raw_b = pipe()
    b = protect(raw_b, key, initiator=False, peer="10.0.0.9:4001")
    await raw_a.write(OLD_PRELUDE_MAGIC + b"\x00" + bytes(32))  # the pre-#11 prelude
    with trio.fail_after(5), pytest.raises(NetworkKeyMismatch, match=r"older PeerLLM"):
        await b.read(1)


async def test_a_private_peer_that_hangs_up_after_the_nonce_holds_another_key() -> None:
    raw_a, raw_b = pipe()
    a = protect(raw_a, K1, initiator=True, peer="PEER-B")
    await a.write(HELLO)
    await raw_b.write(b"\x5a" * NONCE_LEN)  # its nonce, then nothing: it hung up
    await raw_b.close()
    with trio.fail_after(5), pytest.raises(NetworkKeyMismatch, match="right after the pnet"):
        await a.read(64)


async def test_an_open_peer_that_hangs_up_is_just_gone() -> None:
    raw_a, raw_b = pipe()
    a = protect(raw_a, OPEN, initiator=True, peer="PEER-B")
    await raw_b.close()
    assert await a.read(64) == b""  # an EOF says nothing about keys in the open network


@pytest.mark.parametrize("key", [OPEN, K1])
async def test_a_dialled_peer_that_stays_silent_is_of_another_network(
        key: NetworkKey, autojump_clock: trio.abc.Clock,
        caplog: pytest.LogCaptureFixture) -> None:
    # A js-libp2p listener of another network reads our bytes as a length prefix and
    # waits for the rest: it never sends a byte back.
    raw_a, raw_b = pipe()
    a = protect(raw_a, key, initiator=True, peer="PEER-B")
    await a.write(HELLO)
    assert await raw_b.read(4096)  # it hears us, then says nothing
    start = trio.current_time()
    with caplog.at_level(logging.WARNING), \
            pytest.raises(NetworkKeyMismatch, match=r"sent nothing for 1\.5 s"):
        await a.read(64)
    assert trio.current_time() - start == pytest.approx(SILENT_PEER_S)
    assert any("network key differs" in r.getMessage() for r in caplog.records)


async def test_a_silent_dialler_is_left_to_the_upgrade_timeout(
        autojump_clock: trio.abc.Clock) -> None:
    # The rule is for peers we dialled: a listener does not judge a slow dialler.
    raw_a, raw_b = pipe()
    b = protect(raw_b, OPEN, initiator=False, peer="10.0.0.9:4001")
    with trio.move_on_after(60) as scope:
        await b.read(64)
    assert scope.cancelled_caught
    await raw_a.close()
