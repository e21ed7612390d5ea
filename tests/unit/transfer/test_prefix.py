"""The in-order sha256: any verification order gives the file's digest, and chunks that
arrive in order are never read back."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from peerllm.transfer.prefix import PrefixHash

CHUNKS = [bytes([i]) * (7 + i) for i in range(12)]
WHOLE = "sha256:" + hashlib.sha256(b"".join(CHUNKS)).hexdigest()


@given(st.permutations(range(len(CHUNKS))), st.integers(0, 4))
def test_any_order_hashes_the_whole_file(order: list[int], held: int) -> None:
    reads: list[int] = []

    def read(i: int) -> bytes:
        reads.append(i)
        return CHUNKS[i]

    h = PrefixHash(len(CHUNKS), read, max_held=held)
    verified: set[int] = set()
    for i in order:
        verified.add(i)
        h.offer(i, CHUNKS[i], verified)
    assert h.done and h.digest() == WHOLE
    assert len(reads) == len(set(reads)) == h.read_back  # each chunk read back at most once


def test_in_order_chunks_are_hashed_from_memory() -> None:
    h = PrefixHash(len(CHUNKS), lambda i: b"never", max_held=0)
    for i, c in enumerate(CHUNKS):
        h.offer(i, c, set(range(i + 1)))
    assert h.digest() == WHOLE and h.read_back == 0


def test_a_resumed_prefix_is_read_once() -> None:
    reads: list[int] = []
    h = PrefixHash(len(CHUNKS), lambda i: reads.append(i) or CHUNKS[i])  # type: ignore[func-returns-value]
    h.catch_up({0, 1, 2, 5})
    assert reads == [0, 1, 2] and h.next == 3
