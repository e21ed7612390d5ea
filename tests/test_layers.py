"""Folders are layers: pure layers do no I/O; imports point inward."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "peerllm"
PURE = ("wire", "scheduling")
BANNED_IN_PURE = {"trio", "libp2p", "zeroconf", "llama_cpp", "socket", "time", "os", "threading",
                  "random", "asyncio", "httpx", "psutil", "pynvml", "multiaddr", "starlette",
                  "hypercorn"}
# Inner layers must not import outer ones (names are peerllm subpackages/modules).
OUTER_OF = {
    "identity": {"p2p", "inference", "node", "api", "cli", "wire", "scheduling"},
    "wire": {"identity", "p2p", "inference", "node", "api", "cli", "config"},
    "scheduling": {"identity", "p2p", "inference", "node", "api", "cli"},
    "p2p": {"node", "api", "cli", "inference"},
    "inference": {"node", "api", "cli", "p2p"},
}


def imports_of(path: Path) -> tuple[set[str], set[str]]:
    """(top-level external modules, peerllm-internal top-level names) imported by a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    # Imports under `if TYPE_CHECKING:` are for annotations only and never run.
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) \
                and node.test.id == "TYPE_CHECKING":
            node.body = []
    external: set[str] = set()
    internal: set[str] = set()
    pkg_parts = path.relative_to(SRC).parts[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top == "peerllm":
                    internal.add(alias.name.split(".")[1])
                else:
                    external.add(top)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module:
                top = node.module.split(".")[0]
                if top == "peerllm":
                    internal.add(node.module.split(".")[1])
                else:
                    external.add(top)
            elif node.level > 0:
                base = list(pkg_parts[: len(pkg_parts) - (node.level - 1)])
                target = base + (node.module.split(".") if node.module else [])
                if target:
                    internal.add(target[0])
                else:
                    internal.update(a.name for a in node.names)
    return external, internal


def test_pure_layers_do_no_io() -> None:
    for layer in PURE:
        for path in (SRC / layer).rglob("*.py"):
            external, _ = imports_of(path)
            assert not external & BANNED_IN_PURE, f"{path}: {external & BANNED_IN_PURE}"


def test_imports_point_inward() -> None:
    for layer, outer in OUTER_OF.items():
        for path in (SRC / layer).rglob("*.py"):
            _, internal = imports_of(path)
            internal.discard(layer)
            assert not internal & outer, f"{path} imports outer layer(s) {internal & outer}"


def test_every_module_says_what_it_is_for() -> None:
    for path in SRC.rglob("*.py"):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
        assert doc, f"{path} has no module docstring"
