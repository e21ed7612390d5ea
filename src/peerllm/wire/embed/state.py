"""One side of one /peerllm/embed stream, sans-IO: one request, one answer (h11 style).

``send(msg) -> bytes``, ``receive_data(bytes)`` (``b""`` is EOF) and ``next_event()``
returning a message, ``NEED_DATA`` or ``CLOSED``. The client sends one EmbedRequest
and receives one Embeddings (one vector per input, its request's id) or Error; the
server the other way round. Anything else is a protocol error, and poisons the side.
"""

from __future__ import annotations

from typing import Any

from ...errors import LocalProtocolError, RemoteProtocolError
from ..framing import CLOSED, NEED_DATA, FrameDecoder, encode_frame
from .codec import message_from_map, message_to_map
from .messages import (
    MAX_ANSWER_FRAME_BYTES,
    MAX_REQUEST_FRAME_BYTES,
    Embeddings,
    EmbedRequest,
    Error,
    Message,
)

Event = Message | type[NEED_DATA] | type[CLOSED]


class _Side:
    def __init__(self, *, receive_cap: int, send_cap: int) -> None:
        self._decoder = FrameDecoder(receive_cap)
        self._send_cap = send_cap
        self.request: EmbedRequest | None = None
        self.answered = False  # the answer (Embeddings or Error) went by

    def receive_data(self, data: bytes) -> None:
        self._decoder.feed(data)

    def _encode(self, msg: Message) -> bytes:
        return encode_frame(message_to_map(msg), max_frame_bytes=self._send_cap)

    def _next_map(self) -> dict[str, Any] | type[NEED_DATA] | type[CLOSED]:
        return self._decoder.next_frame()


class ClientSide(_Side):
    """The caller's side: ``send(request)``, then read the answer."""

    def __init__(self) -> None:
        super().__init__(receive_cap=MAX_ANSWER_FRAME_BYTES, send_cap=MAX_REQUEST_FRAME_BYTES)

    def send(self, req: EmbedRequest) -> bytes:
        if self.request is not None:
            raise LocalProtocolError("an embed stream carries one request")
        data = self._encode(req)
        self.request = req
        return data

    def next_event(self) -> Event:
        """The answer, NEED_DATA or CLOSED.

        Raises:
            RemoteProtocolError: a malformed frame, a second answer, a request, an
                answer for another request id or with a vector count unlike the inputs.
        """
        frame = self._next_map()
        if not isinstance(frame, dict):
            return frame
        msg = message_from_map(frame)
        req = self.request
        if req is None or self.answered or isinstance(msg, EmbedRequest):
            raise RemoteProtocolError(f"unexpected {type(msg).__name__} on an embed stream")
        # An error with id 0 means "could not decode your request" (as in infer).
        if msg.request_id != req.request_id and not (isinstance(msg, Error)
                                                     and msg.request_id == 0):
            raise RemoteProtocolError(f"answer for request {msg.request_id}, "
                                      f"expected {req.request_id}")
        if isinstance(msg, Embeddings) and msg.count != len(req.inputs):
            raise RemoteProtocolError(f"{msg.count} vectors for {len(req.inputs)} inputs")
        self.answered = True
        return msg


class ServerSide(_Side):
    """The serving side: read the request, then ``send`` the answer."""

    def __init__(self) -> None:
        super().__init__(receive_cap=MAX_REQUEST_FRAME_BYTES, send_cap=MAX_ANSWER_FRAME_BYTES)

    def send(self, answer: Embeddings | Error) -> bytes:
        if self.answered:
            raise LocalProtocolError("an embed stream carries one answer")
        data = self._encode(answer)
        self.answered = True
        return data

    def next_event(self) -> Event:
        """The request, NEED_DATA or CLOSED (the client may close after the answer).

        Raises:
            RemoteProtocolError: a malformed frame, or anything but one request.
        """
        frame = self._next_map()
        if not isinstance(frame, dict):
            return frame
        msg = message_from_map(frame)
        if self.request is not None or not isinstance(msg, EmbedRequest):
            raise RemoteProtocolError(f"unexpected {type(msg).__name__} on an embed stream")
        self.request = msg
        return msg
