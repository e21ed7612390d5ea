"""The public facade is exactly what __all__ says, and it is complete.

Complete means: every exception in errors.py's tree (all that ``open_node``, ``Node`` and
``NodeClient`` raise on purpose derive from PeerLLMError) and every config type
``open_node`` takes can be imported from ``peerllm`` itself.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
import re
import types

import peerllm
from peerllm import errors

EXPECTED = [
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


def test_all_is_pinned_and_sorted() -> None:
    assert peerllm.__all__ == EXPECTED
    assert sorted(peerllm.__all__) == peerllm.__all__


def test_all_matches_public_names() -> None:
    public = {name for name, value in vars(peerllm).items()
              if not name.startswith("_") and not isinstance(value, types.ModuleType)}
    assert sorted(public | {"__version__"}) == peerllm.__all__


def test_exports_print_as_peerllm() -> None:
    wrong = {name: getattr(peerllm, name).__module__ for name in peerllm.__all__
             if name != "__version__" and getattr(peerllm, name).__module__ != "peerllm"}
    assert wrong == {}


def _all_modules() -> None:
    """Import every peerllm module, so error classes defined anywhere are subclasses now."""
    for info in pkgutil.walk_packages(peerllm.__path__, "peerllm."):
        if info.name != "peerllm.__main__":  # it runs the CLI
            importlib.import_module(info.name)


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def test_every_error_in_the_tree_is_exported() -> None:
    _all_modules()
    public = {c for c in _subclasses(peerllm.PeerLLMError) if not c.__name__.startswith("_")}
    missing = sorted(c.__qualname__ for c in public
                     if getattr(peerllm, c.__name__, None) is not c)
    assert missing == [], "add these to peerllm.__all__ (or make them private)"


def test_errors_docstring_draws_the_whole_tree() -> None:
    """Every class in errors.py appears in the tree its docstring draws, and nothing else."""
    doc = ast.get_docstring(ast.parse(inspect.getsource(errors))) or ""
    drawn = set(re.findall(r"[├└]── (\w+)", doc)) | {"PeerLLMError"}  # the root
    defined = {name for name, value in vars(errors).items() if isinstance(value, type)
               and issubclass(value, peerllm.PeerLLMError)}
    assert drawn == defined


def test_open_node_config_types_are_exported() -> None:
    hints = [p.annotation for p in inspect.signature(peerllm.open_node).parameters.values()]
    names = {n for h in hints for n in re.findall(r"[A-Za-z_]\w*", str(h))} - {"None"}
    assert names and names <= set(peerllm.__all__)
    sections = [type(v) for f in dataclasses.fields(peerllm.NodeConfig)
                if dataclasses.is_dataclass(v := getattr(peerllm.NodeConfig(), f.name))]
    assert sections and all(getattr(peerllm, s.__name__, None) is s for s in sections)


def test_exported_errors_share_one_root() -> None:
    exported = [getattr(peerllm, n) for n in peerllm.__all__]
    errs = [e for e in exported if isinstance(e, type) and issubclass(e, BaseException)]
    assert errs and all(issubclass(e, peerllm.PeerLLMError) for e in errs)
