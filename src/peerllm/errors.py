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
    │   └── NetworkKeyMismatch     the peer belongs to another private network
    ├── DiscoveryError         a discovery mechanism could not start
    └── NodeNotRunning         the CLI could not reach a daemon's HTTP API

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
    """A dial or call ran past its deadline; ``phase`` is "dial", "open" or "call"."""

    def __init__(self, peer_id: str, message: str, *, phase: str) -> None:
        super().__init__(peer_id, message)
        self.phase = phase


class PeerConnectionLost(PeerError):
    """The connection or stream to the peer broke in the middle of a call."""


class NetworkKeyMismatch(PeerError):
    """The peer is in a different private network (or in none while we are in one)."""


class DiscoveryError(PeerLLMError):
    """A discovery mechanism (mDNS, DHT) could not be started."""


class NodeNotRunning(PeerLLMError):
    """No daemon answered at the given API URL."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__(f"no peerllm node at {url}: {message}")
        self.url = url
