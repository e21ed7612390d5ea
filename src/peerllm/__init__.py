"""peerllm public API. Anything not re-exported here (or from peerllm.testing) may change.

Run a node inside your trio program with ``open_node(NodeConfig(...))`` (optionally on
your own model runtime, a ``ModelBackend``), or talk to a running daemon with
``NodeClient``. ``open_generation`` takes a ``GenerationRequest``
and streams ``TokenChunk`` then ``Done`` events. Every exception either can raise is exported here,
and ``except PeerLLMError`` catches them all.

Layers, innermost first (a module imports only its own layer or inner ones; the full
table is in tests/test_layers.py): errors/error_codes/_types/events/security_events/config/
audit < identity, wire, scheduling < p2p, inference, metrics < mesh < node < api, client < cli.
"""

from ._version import __version__ as __version__
from .client import NodeClient as NodeClient
from .config import ApiConfig as ApiConfig
from .config import AuditConfig as AuditConfig
from .config import AuthConfig as AuthConfig
from .config import DiscoveryConfig as DiscoveryConfig
from .config import InferenceConfig as InferenceConfig
from .config import ModelsConfig as ModelsConfig
from .config import NodeConfig as NodeConfig
from .config import NodeIdentityConfig as NodeIdentityConfig
from .config import P2PConfig as P2PConfig
from .config import SchedulingSettings as SchedulingSettings
from .errors import AuthError as AuthError
from .errors import ConfigError as ConfigError
from .errors import DigestMismatch as DigestMismatch
from .errors import DiscoveryError as DiscoveryError
from .errors import IdentityError as IdentityError
from .errors import InferenceCancelled as InferenceCancelled
from .errors import InferenceError as InferenceError
from .errors import InferenceRejected as InferenceRejected
from .errors import InferenceTimeout as InferenceTimeout
from .errors import InvalidField as InvalidField
from .errors import InvalidInferenceRequest as InvalidInferenceRequest
from .errors import LocalProtocolError as LocalProtocolError
from .errors import ModelBusy as ModelBusy
from .errors import ModelLoadError as ModelLoadError
from .errors import ModelNotFound as ModelNotFound
from .errors import NetworkKeyMismatch as NetworkKeyMismatch
from .errors import NodeApiError as NodeApiError
from .errors import NodeNotRunning as NodeNotRunning
from .errors import NoRoute as NoRoute
from .errors import NoSource as NoSource
from .errors import NotEnoughSpace as NotEnoughSpace
from .errors import PeerBusy as PeerBusy
from .errors import PeerConnectionLost as PeerConnectionLost
from .errors import PeerError as PeerError
from .errors import PeerLLMError as PeerLLMError
from .errors import PeerTimeout as PeerTimeout
from .errors import PeerUnavailable as PeerUnavailable
from .errors import ProtocolError as ProtocolError
from .errors import RecordError as RecordError
from .errors import RelayRefused as RelayRefused
from .errors import RemoteProtocolError as RemoteProtocolError
from .errors import SourceFailed as SourceFailed
from .errors import TransferError as TransferError
from .events import Done as Done
from .events import TokenChunk as TokenChunk
from .inference.backend import ModelBackend as ModelBackend
from .inference.request import ChatMessage as ChatMessage
from .inference.request import GenerationRequest as GenerationRequest
from .inference.request import SamplingParams as SamplingParams
from .mesh.routed import Routed as Routed
from .node import Node as Node
from .node import open_node as open_node

__all__ = [
    "ApiConfig",
    "AuditConfig",
    "AuthConfig",
    "AuthError",
    "ChatMessage",
    "ConfigError",
    "DigestMismatch",
    "DiscoveryConfig",
    "DiscoveryError",
    "Done",
    "GenerationRequest",
    "IdentityError",
    "InferenceCancelled",
    "InferenceConfig",
    "InferenceError",
    "InferenceRejected",
    "InferenceTimeout",
    "InvalidField",
    "InvalidInferenceRequest",
    "LocalProtocolError",
    "ModelBackend",
    "ModelBusy",
    "ModelLoadError",
    "ModelNotFound",
    "ModelsConfig",
    "NetworkKeyMismatch",
    "NoRoute",
    "NoSource",
    "Node",
    "NodeApiError",
    "NodeClient",
    "NodeConfig",
    "NodeIdentityConfig",
    "NodeNotRunning",
    "NotEnoughSpace",
    "P2PConfig",
    "PeerBusy",
    "PeerConnectionLost",
    "PeerError",
    "PeerLLMError",
    "PeerTimeout",
    "PeerUnavailable",
    "ProtocolError",
    "RecordError",
    "RelayRefused",
    "RemoteProtocolError",
    "Routed",
    "SamplingParams",
    "SchedulingSettings",
    "SourceFailed",
    "TokenChunk",
    "TransferError",
    "__version__",
    "open_node",
]

# Tracebacks and reprs say ``peerllm.NoRoute``, the name users import, not the private
# module it happens to live in (trio and httpx do the same).
for _name in __all__:
    _obj = globals()[_name]
    if not isinstance(_obj, str):
        _obj.__module__ = "peerllm"
del _name, _obj
