"""The whole peerllm exception tree; everything peerllm raises derives from PeerLLMError.

    PeerLLMError
    ├── ConfigError            a setting is unknown or has a bad value (.key names it)
    ├── IdentityError          the key/identity files cannot be used (.path names the file)
    ├── ProtocolError          (abstract) a frame broke a wire protocol's rules
    │   ├── LocalProtocolError     we tried to send something illegal
    │   └── RemoteProtocolError    the peer sent something illegal
    ├── RecordError            a DHT record is unsigned, forged, expired or malformed
    ├── PeerError              (abstract) talking to one peer failed (.peer_id)
    │   ├── PeerUnavailable        dial failed, no address, refused
    │   ├── PeerTimeout            a dial or call ran past its deadline (.phase)
    │   ├── PeerConnectionLost     the connection or stream broke mid-call
    │   ├── PeerBusy               the peer is up but refused the call for now (a per-peer limit)
    │   ├── NetworkKeyMismatch     the peer belongs to another private network
    │   └── RelayRefused           a circuit relay refused a reservation or a relayed connection
    ├── DiscoveryError         a discovery mechanism could not start
    ├── InvalidField           a request value is bad or over a limit (.field); a ValueError too
    ├── InferenceRejected      a serving node refused or failed a request (.code, .retryable)
    ├── NoRoute                no node in the mesh can take the request (.reasons per candidate)
    ├── NodeNotRunning         no daemon answered at the HTTP API's URL (.url)
    ├── NodeApiError           a daemon answered with an error (.status, .code, .type, .message)
    ├── AuthError              a request is not authorised (.reason, .status 401/403/429)
    ├── TransferError          a model download failed (.digest when known)
    │   ├── SourceFailed           a source sent a bad chunk, stalled or left (.source, .fault)
    │   ├── NoSource               no source has the file, or all failed (.reasons)
    │   ├── DigestMismatch         the file's sha256 is not the one asked for (.expected)
    │   └── NotEnoughSpace         the disk cannot hold the file (.needed, .free)
    └── InferenceError         (abstract) the local engine could not serve a request (.model_id)
        ├── ModelNotFound          no model with that id is configured here
        ├── ModelLoadError         the model file is missing, not GGUF, too big, or failed to load
        ├── ModelBusy              the model's queue is full; retry after .retry_after_s
        ├── InvalidInferenceRequest  the request cannot run on this model (too long, wrong type)
        ├── InferenceCancelled     the request was dropped before it could finish (shutdown)
        └── InferenceTimeout       the request ran past the inference timeout (.timeout_s)

Errors carry their data in fields; callers never branch on message text.
"""

from __future__ import annotations

from enum import IntEnum
from pathlib import Path


class ErrorCode(IntEnum):
    """Stable numeric error codes carried in error frames and API error bodies."""

    BAD_FRAME = 1
    FRAME_TOO_LARGE = 2
    UNSUPPORTED_VERSION = 3
    UNKNOWN_MESSAGE = 4
    BAD_SIGNATURE = 5
    INTERNAL = 6
    BUSY = 7


class PeerLLMError(Exception):
    """`except PeerLLMError` catches everything peerllm raises on purpose."""


class ConfigError(PeerLLMError):
    """A configuration value is unknown or invalid; ``key`` is its dotted name."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class IdentityError(PeerLLMError):
    """The node's identity files exist but cannot be used; ``path`` names the file.

    Never handled by regenerating the identity: that would silently change who the
    node is.
    """

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


class ProtocolError(PeerLLMError):
    """A wire protocol rule was broken. Abstract: raise a Local/Remote subclass."""

    def __init__(self, message: str, *, code: ErrorCode = ErrorCode.BAD_FRAME) -> None:
        if type(self) is ProtocolError:
            raise TypeError("ProtocolError is abstract; use Local- or RemoteProtocolError")
        super().__init__(message)
        self.code = code


class LocalProtocolError(ProtocolError):
    """We tried to send a message the protocol does not allow (a bug on our side)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that break the protocol; the stream is reset, the node stays up."""


class RecordError(PeerLLMError):
    """A DHT record failed validation (unsigned, forged, expired, wrong key, malformed)."""


class PeerError(PeerLLMError):
    """Talking to one peer failed. Abstract; ``peer_id`` says which peer."""

    def __init__(self, peer_id: str, message: str) -> None:
        if type(self) is PeerError:
            raise TypeError("PeerError is abstract")
        super().__init__(f"peer {peer_id}: {message}")
        self.peer_id = peer_id
        self.message = message


class PeerUnavailable(PeerError):
    """The peer could not be reached (no address, refused, dial failed)."""


class PeerTimeout(PeerError):
    """A dial or call ran past its deadline; ``phase`` is "dial", "open", "call", or for an
    inference stream "first_token" or "stall" (the peer went silent)."""

    def __init__(self, peer_id: str, message: str, *, phase: str) -> None:
        super().__init__(peer_id, message)
        self.phase = phase


class PeerConnectionLost(PeerError):
    """The connection or stream to the peer broke in the middle of a call."""


class PeerBusy(PeerError):
    """The peer answered but refused the call for now (over a per-peer limit of its own).

    Not a failure of the peer: it is up and keeps the stream open; ask again later.
    """


class NetworkKeyMismatch(PeerError):
    """The peer is in a different private network (or in none while we are in one).

    ``suspected`` is True when the evidence is only behaviour (the peer went silent or
    hung up right after the handshake, as a peer of another network does, but as a
    stalled or overloaded one might too): such a peer is dialled again with backoff.
    """

    def __init__(self, peer_id: str, message: str, *, suspected: bool = False) -> None:
        super().__init__(peer_id, message)
        self.suspected = suspected


class RelayRefused(PeerError):
    """A circuit relay refused a reservation or a relayed connection (its status named)."""


class DiscoveryError(PeerLLMError):
    """A discovery mechanism (mDNS, DHT) could not be started."""


class InferenceRejected(PeerLLMError):
    """A serving node refused or failed a request; ``code`` is the wire error code.

    ``retryable`` says whether another attempt (later, or on another peer) may succeed;
    ``peer_id`` is set when a remote peer reported the error.
    """

    def __init__(self, code: str, message: str, *, retryable: bool,
                 retry_after_s: float | None = None, peer_id: str | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable
        self.retry_after_s = retry_after_s
        self.peer_id = peer_id


class InvalidField(PeerLLMError, ValueError):
    """A request value is malformed or over a limit; ``field`` names it.

    ``field`` is the request's own name for it (``messages[2].content``, ``top_k``);
    ``too_large`` marks the prompt-size limits, which callers may report apart. Also a
    ValueError, as any bad argument to a constructor is.
    """

    def __init__(self, field: str, problem: str, *, too_large: bool = False) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem
        self.too_large = too_large


class NoRoute(PeerLLMError):
    """No node can serve the request; ``reasons`` says why, per candidate.

    ``known`` is False when nobody in the mesh has the model at all; ``retry_after_s`` is
    the soonest a busy candidate expects a free slot; ``versions`` (a pinned id nobody
    serves at that version): node -> the digest it serves instead (None: not known yet).
    """

    def __init__(self, model: str, reasons: dict[str, str], *, known: bool,
                 retry_after_s: float | None = None,
                 versions: dict[str, str | None] | None = None) -> None:
        detail = "; ".join(f"{k}: {v}" for k, v in reasons.items()) or "no node serves it"
        super().__init__(f"model {model!r}: {detail}")
        self.model = model
        self.reasons = reasons
        self.known = known
        self.retry_after_s = retry_after_s
        self.versions = dict(versions or {})


class NodeNotRunning(PeerLLMError):
    """No daemon answered at the given API URL (refused, unreachable, or silent)."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(f"no peerllm node at {url}: {message}")
        self.url = url
        self.message = message


class NodeApiError(PeerLLMError):
    """A daemon answered with an error.

    ``status`` is the HTTP status; it is 200 when the error arrived inside a stream that
    had already started. ``code``, ``type`` and ``param`` are the error body's fields when
    it has them (OpenAI-style ``{"error": {...}}``), ``retry_after_s`` the ``Retry-After``
    header of a busy node.
    """

    def __init__(self, status: int, message: str, *, code: str | None = None,
                 type: str | None = None, param: str | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.code = code
        self.type = type
        self.param = param
        self.retry_after_s = retry_after_s


class AuthError(PeerLLMError):
    """A request is not authorised; ``reason`` is one of ``peerllm.auth.reasons``.

    ``status`` is the HTTP status it maps to: 401 (no usable credential: missing,
    malformed, forged, expired, revoked, untrusted issuer), 403 (a valid credential
    without the role or the model) or 429 (over its rate; ``retry_after_s`` says when).
    The message names the problem and never contains the token.
    """

    def __init__(self, reason: str, message: str, *, status: int,
                 retry_after_s: float | None = None) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s


class TransferError(PeerLLMError):
    """A model download failed; ``digest`` is the file's when known."""

    def __init__(self, message: str, *, digest: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.digest = digest


class SourceFailed(TransferError):
    """One source failed us; ``source`` names it (a peer id or a URL's host) and
    ``fault`` says how: bad_chunk, stalled, refused, busy, not_found, gone, bad_answer.
    Always the source's fault (remote): the download goes on with the others."""

    FAULTS = ("bad_chunk", "stalled", "refused", "busy", "not_found", "gone", "bad_answer")

    def __init__(self, source: str, fault: str, message: str, *, digest: str | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(f"{source}: {message}", digest=digest)
        self.source = source
        self.fault = fault
        self.retry_after_s = retry_after_s


class NoSource(TransferError):
    """Nothing can provide the file, or every source failed; ``reasons`` maps each
    source tried to why it was dropped."""

    def __init__(self, message: str, *, digest: str | None = None,
                 reasons: dict[str, str] | None = None) -> None:
        super().__init__(message, digest=digest)
        self.reasons = dict(reasons or {})


class DigestMismatch(TransferError):
    """The assembled file's sha256 is not the one asked for; nothing was installed."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"the file's digest is {actual}, expected {expected}",
                         digest=expected)
        self.expected = expected
        self.actual = actual


class NotEnoughSpace(TransferError):
    """The target's disk has ``free`` bytes, the file needs ``needed``."""

    def __init__(self, path: Path, needed: int, free: int) -> None:
        super().__init__(f"{path.parent}: needs {needed} bytes free, has {free}")
        self.path = path
        self.needed = needed
        self.free = free


class InferenceError(PeerLLMError):
    """The local inference engine could not serve a request. Abstract; ``model_id`` says
    which model."""

    def __init__(self, model_id: str, message: str) -> None:
        if type(self) is InferenceError:
            raise TypeError("InferenceError is abstract")
        super().__init__(f"model {model_id}: {message}")
        self.model_id = model_id
        self.message = message


class ModelNotFound(InferenceError):
    """No model with this id is configured on this node (the caller asked for it), or
    not the version a pinned id (``id@<digest prefix>``) names; ``reason`` says which."""

    def __init__(self, model_id: str, *, reason: str = "no such model on this node") -> None:
        super().__init__(model_id, reason)


class ModelLoadError(InferenceError):
    """The model could not be loaded: missing or non-GGUF file, no memory budget left,
    load timeout, or llama.cpp refused it. Other models keep serving."""


class ModelBusy(InferenceError):
    """The model's queue is full; ``retry_after_s`` estimates when a slot frees up."""

    def __init__(self, model_id: str, retry_after_s: float) -> None:
        super().__init__(model_id, f"busy, retry after {retry_after_s:.1f}s")
        self.retry_after_s = retry_after_s


class InvalidInferenceRequest(InferenceError):
    """The request cannot run on this model (prompt longer than the context window,
    generation on an embedding-only model, ...); the caller must change it."""


class InferenceCancelled(InferenceError):
    """The request was dropped before it finished because the engine is shutting down or
    the model was unloaded under it."""


class InferenceTimeout(InferenceError):
    """The request ran past the engine's inference timeout (``timeout_s``)."""

    def __init__(self, model_id: str, timeout_s: float) -> None:
        super().__init__(model_id, f"inference timed out after {timeout_s:g}s")
        self.timeout_s = timeout_s
