"""The router and a caller's refusals (unauthorized / forbidden / rate_limited), on a
virtual clock: a healthy peer that will not serve this caller is not a broken one; the
next replica is asked at once; when nobody takes it the caller hears the refusal."""

from __future__ import annotations

import pytest
import trio

from peerllm.errors import InferenceRejected

from .fakes import make_router, ok, run, state


def refusal(code: str, *, retry_after_s: float | None = None) -> InferenceRejected:
    return InferenceRejected(code, f"{code}: because", retryable=code == "rate_limited",
                             retry_after_s=retry_after_s)


async def test_a_refusing_replica_is_skipped_without_backoff_or_blame(
        autojump_clock: trio.abc.Clock) -> None:
    router, node, client = make_router({"a": [[refusal("forbidden")]] * 4,
                                        "b": [ok()] * 4})
    start = trio.current_time()
    for _ in range(4):  # more than the breaker's threshold
        text, _ = await run(router)
        assert text == "ab"
    assert state(router, "a") == state(router, "b") == "closed"
    assert node.suspected == [] and node.discovered == []
    assert trio.current_time() - start == pytest.approx(0.4)  # four times b's 0.1 s
    assert [peer for peer, _, _ in client.calls].count("b") == 4


@pytest.mark.parametrize(("codes", "heard"), [
    (["unauthorized", "unauthorized"], "unauthorized"),
    (["unauthorized", "forbidden"], "forbidden"),
    (["rate_limited", "forbidden"], "rate_limited"),
])
async def test_when_every_replica_refuses_the_caller_hears_the_closest_to_yes(
        autojump_clock: trio.abc.Clock, codes: list[str], heard: str) -> None:
    router, node, _ = make_router({"a": [[refusal(codes[0], retry_after_s=3.0)]],
                                   "b": [[refusal(codes[1], retry_after_s=3.0)]]})
    with pytest.raises(InferenceRejected) as err:
        await run(router)
    assert err.value.code == heard
    assert state(router, "a") == state(router, "b") == "closed"
    assert node.discovered == []  # replicas answered: no point looking for more
    if heard == "rate_limited":
        assert err.value.retry_after_s == 3.0


async def test_a_refusal_and_a_failure_answer_with_the_refusal(
        autojump_clock: trio.abc.Clock) -> None:
    broken = InferenceRejected("internal", "engine crashed", retryable=True)
    router, _, _ = make_router({"a": [[refusal("unauthorized")]], "b": [[broken]]})
    with pytest.raises(InferenceRejected) as err:
        await run(router)
    assert err.value.code == "unauthorized"
    assert state(router, "a") == "closed"
