"""Reusing an infer stream (Rule 4): the next request is legal only after a clean Done
that both ends agreed to, and the flags stay off the wire unless set."""

from __future__ import annotations

import pytest

from peerllm.errors import LocalProtocolError, RemoteProtocolError
from peerllm.wire import infer as wi

SAMPLING = wi.Sampling(max_tokens=4, temperature=0.0, top_p=1.0, top_k=0, repeat_penalty=1.0)


def req(rid: int, *, reuse: bool = True) -> wi.InferRequest:
    return wi.InferRequest(request_id=rid, model="m", messages=None, prompt="p",
                           sampling=SAMPLING, deadline_ms=1000, reuse=reuse)


def exchange(client: wi.ClientStream, server: wi.ServerStream, rid: int, *,
             reuse: bool = True, agree: bool = True, end: str = "done") -> None:
    server.receive_data(client.send(req(rid, reuse=reuse)))
    assert server.next_event() == req(rid, reuse=reuse)
    frames = [wi.Accepted(request_id=rid, served_by="s", model="m", reuse=agree)]
    if end == "done":
        frames.append(wi.Done(request_id=rid, finish_reason="stop", prompt_tokens=1,
                              completion_tokens=0, ttft_ms=None, total_ms=1.0))
    else:
        frames.append(wi.Error(request_id=rid, code="internal", message="x",
                               retryable=False))
    for frame in frames:
        client.receive_data(server.send(frame))
        assert client.next_event() == frame


def test_a_stream_both_ends_agreed_to_reuse_carries_the_next_request() -> None:
    client, server = wi.ClientStream(), wi.ServerStream()
    exchange(client, server, 1)
    assert client.reusable and server.reusable
    exchange(client, server, 2)  # the request-scoped state started over
    assert client.request_id == server.request_id == 2
    assert client.accepted is not None and client.accepted.request_id == 2


@pytest.mark.parametrize(("reuse", "agree", "end"), [
    (False, False, "done"), (True, False, "done"), (True, True, "error")])
def test_no_next_request_without_agreement_and_a_clean_done(reuse: bool, agree: bool,
                                                             end: str) -> None:
    client, server = wi.ClientStream(), wi.ServerStream()
    exchange(client, server, 1, reuse=reuse, agree=agree, end=end)
    assert not client.reusable and not server.reusable
    with pytest.raises(LocalProtocolError):
        client.send(req(2))
    # A client that sends one anyway (its bytes made by a fresh stream): refused.
    server.receive_data(wi.ClientStream().send(req(2)))
    with pytest.raises(RemoteProtocolError):
        server.next_event()


def test_a_request_whose_client_sent_cancel_is_not_reusable() -> None:
    client, server = wi.ClientStream(), wi.ServerStream()
    server.receive_data(client.send(req(1)))
    server.next_event()
    client.receive_data(server.send(wi.Accepted(request_id=1, served_by="s", model="m",
                                                reuse=True)))
    client.next_event()
    server.receive_data(client.send(wi.Cancel(request_id=1)))
    server.next_event()
    done = wi.Done(request_id=1, finish_reason="cancelled", prompt_tokens=1,
                   completion_tokens=0, ttft_ms=None, total_ms=1.0)
    client.receive_data(server.send(done))
    client.next_event()
    assert not client.reusable and not server.reusable


def test_the_flags_are_sent_only_when_true_and_read_back() -> None:
    assert "reuse" not in wi.message_to_map(req(1, reuse=False))
    assert wi.message_to_map(req(1))["reuse"] is True
    assert wi.message_from_map(wi.message_to_map(req(1))) == req(1)
    acc = wi.Accepted(request_id=1, served_by="s", model="m", reuse=True)
    assert wi.message_from_map(wi.message_to_map(acc)) == acc
    m = wi.message_to_map(req(1))
    m["reuse"] = "yes"
    with pytest.raises(RemoteProtocolError, match="reuse"):
        wi.message_from_map(m)
