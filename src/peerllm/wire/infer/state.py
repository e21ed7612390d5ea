"""The per-stream state machine of /peerllm/infer/1.0.0, one side each (h11 style);
a stream both ends agreed to reuse starts over at its next request (Rule 4).

``ClientStream`` and ``ServerStream`` offer ``send(msg) -> bytes``,
``receive_data(bytes)`` (``b""`` is EOF) and ``next_event()`` returning a message,
``NEED_DATA`` or ``CLOSED``; every message is checked against ``TRANSITIONS``.
"""

from __future__ import annotations

import enum
from typing import Final

from ...errors import LocalProtocolError, RemoteProtocolError
from ..framing import CLOSED, NEED_DATA, FrameDecoder, encode_frame
from .codec import message_from_map, message_to_map
from .messages import (
    MAX_INFER_FRAME_BYTES,
    Accepted,
    Cancel,
    Done,
    Error,
    InferRequest,
    Message,
    Tokens,
)


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class State(enum.Enum):
    """One side's view of the stream (each side keeps its own)."""

    IDLE = "IDLE"
    """No request yet."""
    AWAIT_ACCEPT = "AWAIT_ACCEPT"
    """The request is out; the server owes Accepted or Error."""
    STREAMING = "STREAMING"
    """Accepted; Tokens flow until Done or Error."""
    FINISHED = "FINISHED"
    """Done or Error was sent/received; only EOF (and, at the server, a late Cancel) follow."""
    REJECTING = "REJECTING"
    """Server only: the client broke the protocol; we may send one Error, then reset."""
    ERROR = "ERROR"
    """A protocol error happened; nothing more may be sent or received. Reset the stream."""


CLIENT, SERVER = Role.CLIENT, Role.SERVER
IDLE, AWAIT_ACCEPT, STREAMING = State.IDLE, State.AWAIT_ACCEPT, State.STREAMING
FINISHED, REJECTING, ERROR = State.FINISHED, State.REJECTING, State.ERROR

# TRANSITIONS[side][state][(sender, message type)] -> next state of that side.
#
# Rule 1: a message missing from the table is a LocalProtocolError when we send it and
#         a RemoteProtocolError when the peer does; either moves the side to ERROR
#         (the server to REJECTING while it still owes an answer).
# Rule 2: the two views differ only where messages cross in flight: a Cancel sent
#         before the client saw Done/Error reaches a FINISHED server, which ignores it.
# Rule 3: every message after the request carries the request's id; the only
#         exception is an Error with id 0, allowed before Accepted, meaning "the server
#         could not decode the request".
# Rule 4: a stream whose request offered ``reuse``, whose Accepted agreed, and which
#         ended with Done (no Error, no Cancel either way) is ``reusable``: in FINISHED
#         the client may then send its next InferRequest (-> AWAIT_ACCEPT), and the
#         request-scoped state starts over. Nothing else leaves FINISHED.
_LIFECYCLE: Final[dict[State, dict[tuple[Role, type[Message]], State]]] = {
    IDLE: {(CLIENT, InferRequest): AWAIT_ACCEPT},
    AWAIT_ACCEPT: {
        (SERVER, Accepted): STREAMING,
        (SERVER, Error): FINISHED,
        (CLIENT, Cancel): AWAIT_ACCEPT,
    },
    STREAMING: {
        (SERVER, Tokens): STREAMING,
        (SERVER, Done): FINISHED,
        (SERVER, Error): FINISHED,
        (CLIENT, Cancel): STREAMING,
    },
    FINISHED: {},
    ERROR: {},
}
TRANSITIONS: Final[dict[Role, dict[State, dict[tuple[Role, type[Message]], State]]]] = {
    CLIENT: _LIFECYCLE,
    SERVER: {
        **_LIFECYCLE,
        FINISHED: {(CLIENT, Cancel): FINISHED},
        REJECTING: {(SERVER, Error): FINISHED},
    },
}
_ON_PEER_VIOLATION: Final[dict[Role, dict[State, State]]] = {
    CLIENT: {},
    SERVER: {IDLE: REJECTING, AWAIT_ACCEPT: REJECTING, STREAMING: REJECTING},
}
"""State entered when the peer breaks the protocol; ERROR if not listed."""


class InferStream:
    """One side of one infer stream; use ``ClientStream`` or ``ServerStream``.

    A ``RemoteProtocolError`` from ``next_event`` poisons receiving: every later call
    raises again. A ``LocalProtocolError`` from ``send`` moves the stream to ERROR.
    Either way the caller should reset the stream (a server in REJECTING may first
    send one ``Error``, e.g. ``error_for_violation(exc, request_id=...)``).
    """

    our_role: Role
    their_role: Role

    def __init__(self) -> None:
        if type(self) is InferStream:
            raise TypeError("InferStream is abstract; use ClientStream or ServerStream")
        self._state = IDLE
        self._decoder = FrameDecoder(MAX_INFER_FRAME_BYTES)
        self._request: InferRequest | None = None
        self._error: RemoteProtocolError | None = None
        self._reuse_agreed = False  # Accepted said reuse (Rule 4)
        self._done = False  # this request ended with Done
        self._cancelled = False  # a Cancel was sent or received for this request

    @property
    def state(self) -> State:
        return self._state

    @property
    def request(self) -> InferRequest | None:
        """The stream's request once sent (client) or received (server)."""
        return self._request

    @property
    def request_id(self) -> int | None:
        return None if self._request is None else self._request.request_id

    def send(self, msg: Message) -> bytes:
        """Check that our side may send ``msg`` now and return its frame bytes.

        Raises:
            LocalProtocolError: ``msg`` is not allowed in this state, has the wrong
                request id, breaks a field rule or exceeds the frame cap
                (code FRAME_TOO_LARGE). The stream moves to ERROR.
        """
        try:
            new_state = self._transition(self.our_role, msg)
            data = encode_frame(message_to_map(msg), max_frame_bytes=MAX_INFER_FRAME_BYTES)
        except LocalProtocolError:
            self._state = ERROR
            raise
        self._state = new_state
        self._on_message(msg)
        return data

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes read from the stream; ``b""`` means the peer closed it.

        Raises:
            LocalProtocolError: data fed after EOF.
        """
        self._decoder.feed(data)

    def next_event(self) -> Message | type[NEED_DATA] | type[CLOSED]:
        """The next message from the peer, ``NEED_DATA`` or ``CLOSED`` (clean end).

        Raises:
            RemoteProtocolError: a bad frame, a malformed message, a message the peer
                may not send now or with another request id, or (client) EOF before
                Done/Error. Receiving is poisoned from then on.
        """
        if self._error is not None:
            raise RemoteProtocolError(
                f"infer stream already failed: {self._error}", code=self._error.code
            ) from self._error
        try:
            frame = self._decoder.next_frame()
            if frame is NEED_DATA:
                return NEED_DATA
            if frame is CLOSED:
                return self._on_eof()
            msg = message_from_map(frame)
            self._state = self._transition(self.their_role, msg)
        except RemoteProtocolError as exc:
            self._error = exc
            self._state = _ON_PEER_VIOLATION[self.our_role].get(self._state, ERROR)
            raise
        self._on_message(msg)
        return msg

    @property
    def reusable(self) -> bool:
        """Rule 4: the next request may be sent on this stream."""
        return (self._state is FINISHED and self._request is not None
                and self._request.reuse and self._reuse_agreed and self._done
                and not self._cancelled)

    def _transition(self, sender: Role, msg: Message) -> State:
        error = LocalProtocolError if sender is self.our_role else RemoteProtocolError
        if isinstance(msg, InferRequest) and sender is CLIENT and self.reusable:
            return AWAIT_ACCEPT  # Rule 4
        new_state = TRANSITIONS[self.our_role][self._state].get((sender, type(msg)))
        if new_state is None:
            raise error(
                f"{sender.value} may not send {type(msg).__name__} in state {self._state.name}"
            )
        if isinstance(msg, InferRequest) or msg.request_id == self.request_id:
            return new_state
        if isinstance(msg, Error) and msg.request_id == 0 and self._may_send_anonymous():
            return new_state
        raise error(
            f"{type(msg).__name__} for request {msg.request_id} "
            f"on the stream of request {self.request_id}"
        )

    def _may_send_anonymous(self) -> bool:
        raise NotImplementedError

    def _on_message(self, msg: Message) -> None:
        if isinstance(msg, InferRequest):
            self._request = msg
            self._reuse_agreed = self._done = self._cancelled = False
        elif isinstance(msg, Accepted):
            self._reuse_agreed = msg.reuse
        elif isinstance(msg, Done):
            self._done = True
        elif isinstance(msg, Cancel):
            self._cancelled = True

    def _on_eof(self) -> type[CLOSED]:
        raise NotImplementedError


class ClientStream(InferStream):
    """The client side: sends one InferRequest (and maybe Cancel), receives the answer.

    ``tokens_received`` and ``text_received`` say how much of the answer arrived, so a
    router whose stream broke knows whether it may simply fail over (0 tokens) or must
    resume elsewhere with ``resume_text=text_received``.
    """

    our_role, their_role = CLIENT, SERVER

    def __init__(self) -> None:
        super().__init__()
        self.accepted: Accepted | None = None
        self.outcome: Done | Error | None = None
        self.tokens_received = 0
        self.cancel_sent = False
        self._parts: list[str] = []

    @property
    def text_received(self) -> str:
        """All Tokens text received so far (new text only, without resume_text)."""
        if len(self._parts) > 1:
            self._parts[:] = ["".join(self._parts)]
        return self._parts[0] if self._parts else ""

    def _may_send_anonymous(self) -> bool:
        return self._state is AWAIT_ACCEPT

    def _on_message(self, msg: Message) -> None:
        super()._on_message(msg)
        if isinstance(msg, InferRequest):  # a reused stream's next request starts over
            self.accepted, self.outcome, self.tokens_received = None, None, 0
            self.cancel_sent = False
            self._parts = []
        if isinstance(msg, Tokens):
            self.tokens_received += msg.n_tokens
            self._parts.append(msg.text)
        elif isinstance(msg, Accepted):
            self.accepted = msg
        elif isinstance(msg, Done | Error):
            self.outcome = msg
        elif isinstance(msg, Cancel):
            self.cancel_sent = True

    def _on_eof(self) -> type[CLOSED]:
        if self._state is FINISHED:
            return CLOSED
        raise RemoteProtocolError(
            f"stream ended before done (in {self._state.name}, "
            f"{self.tokens_received} tokens received)"
        )


class ServerStream(InferStream):
    """The server side: receives one InferRequest, sends Accepted, Tokens, Done or Error.

    ``cancel_requested`` becomes true when the client sends Cancel or closes the stream
    before the answer is finished: stop generating and finish with
    ``Done(finish_reason="cancelled")`` (or ``Error(code="cancelled")`` before Accepted).
    """

    our_role, their_role = SERVER, CLIENT

    def __init__(self) -> None:
        super().__init__()
        self.cancel_requested = False
        self.tokens_sent = 0

    def _may_send_anonymous(self) -> bool:
        return self._state is REJECTING and self._request is None

    def _on_message(self, msg: Message) -> None:
        super()._on_message(msg)
        if isinstance(msg, InferRequest):  # a reused stream's next request starts over
            self.cancel_requested = False
            self.tokens_sent = 0
        if isinstance(msg, Tokens):
            self.tokens_sent += msg.n_tokens
        elif isinstance(msg, Cancel) and self._state is not FINISHED:
            self.cancel_requested = True

    def _on_eof(self) -> type[CLOSED]:
        if self._state in (AWAIT_ACCEPT, STREAMING):
            self.cancel_requested = True  # closing the stream cancels the request
        return CLOSED

