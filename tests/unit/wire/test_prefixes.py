"""Conversation digests: stable across processes and versions, sensitive to every part."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from peerllm.wire.prefixes import PREFIX_DIGEST_BYTES, conversation_digest

TURN = [("system", "be brief"), ("user", "hi"), ("assistant", "hello!")]

_turns = st.lists(st.tuples(st.sampled_from(["system", "user", "assistant"]), st.text()),
                  max_size=6)


def test_the_digest_is_pinned() -> None:
    # Both ends of the mesh compute this; a change here breaks affinity with older nodes.
    assert conversation_digest("gemma", TURN).hex() == "06dc831d7e689a7a"
    assert conversation_digest("m", [("user", "hi")]).hex() == "31c3fc30937793c2"


@given(model=st.text(max_size=20), turns=_turns)
def test_a_digest_is_eight_bytes_and_a_function_of_its_input(
        model: str, turns: list[tuple[str, str]]) -> None:
    first = conversation_digest(model, turns)
    assert len(first) == PREFIX_DIGEST_BYTES
    assert conversation_digest(model, tuple(turns)) == first


def test_every_part_of_the_conversation_counts() -> None:
    base = conversation_digest("gemma", TURN)
    variants = [
        conversation_digest("gemma@ab12cd34", TURN),
        conversation_digest("gemma", TURN[:-1]),
        conversation_digest("gemma", [*TURN[:-1], ("assistant", "hello! ")]),
        conversation_digest("gemma", [TURN[1], TURN[0], TURN[2]]),
        conversation_digest("gemma", [("user", "be brief"), *TURN[1:]]),
        # The boundary between turns is part of the encoding, not just the text.
        conversation_digest("gemma", [("system", "be brief"), ("user", "hihello!")]),
    ]
    assert base not in variants
    assert len(set(variants)) == len(variants)
