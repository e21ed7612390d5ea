"""How one AutoNAT round's answers become a verdict (p2p/reachability.decide)."""

from __future__ import annotations

from peerllm.p2p import dialback as wire
from peerllm.p2p.reachability import Answer, decide
from peerllm.p2p.reachability_state import Reachability

REACHED = Answer("s1", wire.OK, addr="/ip4/198.51.100.2/tcp/4001")
FAILED = Answer("s2", wire.E_DIAL_ERROR, "could not dial back /ip4/198.51.100.11/tcp/4001")
REFUSED = Answer("s3", wire.E_DIAL_REFUSED, "too many dial-back requests")


def test_a_majority_of_dial_backs_means_public() -> None:
    verdict = decide([REACHED, REACHED, FAILED])
    assert verdict is not None
    status, reason = verdict
    assert status is Reachability.PUBLIC
    assert "2 of 3" in reason and "198.51.100.2" in reason


def test_a_majority_of_failures_means_private_and_says_why() -> None:
    verdict = decide([FAILED, REFUSED])
    assert verdict is not None
    status, reason = verdict
    assert status is Reachability.PRIVATE
    assert "NAT" in reason and "198.51.100.11" in reason


def test_refusals_ties_and_silence_decide_nothing() -> None:
    assert decide([]) is None
    assert decide([REFUSED, Answer("s4", wire.E_INTERNAL_ERROR)]) is None
    assert decide([REACHED, FAILED]) is None
