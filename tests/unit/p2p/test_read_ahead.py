"""The checked raw connection reads ahead: Noise's 2-byte length and its message come
from one socket read, and nothing read ahead is lost or reordered."""

from __future__ import annotations

from peerllm.audit import NULL_AUDIT
from peerllm.p2p.pnet import NetworkKey
from peerllm.p2p.transport import MULTISTREAM_HEADER, READ_AHEAD_BYTES, CheckedConn


class _Socket:
    """A raw connection that hands out ``data`` and counts the reads asked of it."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reads: list[int | None] = []

    async def read(self, n: int | None = None) -> bytes:
        self.reads.append(n)
        size = len(self.data) if n is None else n
        out, self.data = self.data[:size], self.data[size:]
        return out

    async def write(self, data: bytes) -> None:
        pass

    async def close(self) -> None:
        pass

    def get_remote_address(self) -> tuple[str, int] | None:
        return ("127.0.0.1", 1)


async def test_small_reads_after_the_check_share_one_socket_read() -> None:
    frames = b"".join(len(b).to_bytes(2, "big") + b for b in (b"tok1", b"token2", b"t3"))
    sock = _Socket(MULTISTREAM_HEADER + frames)
    conn = CheckedConn(sock, key=NetworkKey(None), initiator=True, peer="p",  # type: ignore[arg-type]
                       audit=NULL_AUDIT)
    assert await conn.read(len(MULTISTREAM_HEADER)) == MULTISTREAM_HEADER
    before = len(sock.reads)
    got = []
    for _ in range(3):
        length = int.from_bytes(await conn.read(2), "big")
        got.append(await conn.read(length))
    assert got == [b"tok1", b"token2", b"t3"]
    assert sock.reads[before:] == [READ_AHEAD_BYTES]  # three frames, one read
