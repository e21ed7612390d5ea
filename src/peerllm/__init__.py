"""peerllm public API. Anything not re-exported here may change without notice.

Layers (imports point inward): errors/_types/config <- identity, wire, scheduling
<- p2p, inference <- node <- api, cli.
"""

from ._version import __version__ as __version__
from .client import NodeApiError as NodeApiError
from .client import NodeClient as NodeClient
from .config import NodeConfig as NodeConfig
from .errors import ConfigError as ConfigError
from .errors import IdentityError as IdentityError
from .errors import NetworkKeyMismatch as NetworkKeyMismatch
from .errors import PeerConnectionLost as PeerConnectionLost
from .errors import PeerError as PeerError
from .errors import PeerLLMError as PeerLLMError
from .errors import PeerTimeout as PeerTimeout
from .errors import PeerUnavailable as PeerUnavailable
from .errors import ProtocolError as ProtocolError
from .errors import RemoteProtocolError as RemoteProtocolError
from .node import Node as Node
from .node import open_node as open_node

__all__ = [
    "ConfigError",
    "IdentityError",
    "NetworkKeyMismatch",
    "Node",
    "NodeApiError",
    "NodeClient",
    "NodeConfig",
    "PeerConnectionLost",
    "PeerError",
    "PeerLLMError",
    "PeerTimeout",
    "PeerUnavailable",
    "ProtocolError",
    "RemoteProtocolError",
    "__version__",
    "open_node",
]

for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__") and not isinstance(_obj, str):
        try:
            _obj.__module__ = "peerllm"
        except (AttributeError, TypeError):  # builtins-backed objects refuse; harmless
            pass
del _name, _obj
