"""Per-token rates: never more than the allowance in a minute; the wait is told."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from peerllm.auth.quota import QuotaBook
from peerllm.errors import AuthError


@given(rpm=st.integers(1, 50), gaps=st.lists(st.floats(0, 5), min_size=1, max_size=200))
def test_requests_in_any_minute_stay_within_the_rate_plus_burst(rpm: int,
                                                                 gaps: list[float]) -> None:
    book, now, admitted = QuotaBook(), 0.0, []
    for gap in gaps:
        now += gap
        refused: AuthError | None = None
        try:
            book.admit("t", requests_per_min=rpm, tokens_per_min=None, now=now)
        except AuthError as exc:
            refused = exc
        if refused is None:
            admitted.append(now)
        else:
            assert refused.status == 429 and refused.retry_after_s is not None
            assert 0 < refused.retry_after_s <= 60.0 / rpm + 1e-9
    # A full bucket (rpm) plus what refills in 60 s (rpm): at most 2 * rpm in any minute.
    for i, t in enumerate(admitted):
        assert sum(1 for u in admitted[i:] if u < t + 60.0) <= 2 * rpm


def test_tokens_are_charged_after_the_request_and_gate_the_next() -> None:
    book = QuotaBook()
    book.admit("t", requests_per_min=None, tokens_per_min=600, now=0.0)
    book.charge_tokens("t", 900, tokens_per_min=600, now=0.0)  # over: the bucket is -300
    with pytest.raises(AuthError) as info:
        book.admit("t", requests_per_min=None, tokens_per_min=600, now=1.0)
    assert info.value.reason == "tokens_limited"
    assert info.value.retry_after_s == pytest.approx((1 - (-300 + 10)) / 10)
    book.admit("t", requests_per_min=None, tokens_per_min=600, now=40.0)  # refilled


def test_unlimited_tokens_are_never_refused() -> None:
    book = QuotaBook()
    for i in range(1000):
        book.admit("t", requests_per_min=None, tokens_per_min=None, now=float(i) / 1000)
