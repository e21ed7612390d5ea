"""Folders are layers: no import cycle, imports point inward, pure layers do no I/O.

Our own ast-based test rather than import-linter: it is ~250 lines with no new
dependency, it reads exactly the graph /work/shared/hooks/import_cycles.py draws (type-only
imports included, module-level edges), and a failure prints each offending edge with its
file and line. Every module under src/peerllm is checked; a module whose top-level name is
not in LAYERS fails until it is placed.
"""

from __future__ import annotations

import ast
import functools
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "peerllm"

# Innermost first; a module may import its own layer or an inner one, never an outer one.
# Keys are a module's first name under peerllm ("p2p" for peerllm.p2p.host); "peerllm" is
# the facade (__init__), which re-exports node and client, so it sits beside client.
LAYERS: tuple[tuple[str, frozenset[str]], ...] = (
    # Pure root modules plus config (frozen dataclasses and their parsers).
    # audit is core, not pure: it writes the audit log file (one node's port into it).
    ("core", frozenset({"errors", "error_codes", "_types", "_version", "events", "limits",
                        "config", "security_events", "audit"})),
    ("pure", frozenset({"identity", "wire", "scheduling"})),
    # Adapters over one outside library each. metrics wraps prometheus_client and only
    # takes pushed samples, so mesh, node and api may all record into it.
    ("adapters", frozenset({"p2p", "inference", "metrics", "auth", "transfer"})),
    ("mesh", frozenset({"mesh"})),
    # testing ships fakes built from the layers below (it may compose a node); see
    # test_production_code_never_imports_testing for who may import it.
    ("node", frozenset({"node", "testing"})),
    ("edge", frozenset({"api", "client", PACKAGE})),
    ("cli", frozenset({"cli", "__main__"})),
)
# Siblings in these layers each do one job and do not import each other.
INDEPENDENT_LAYERS = frozenset({"pure", "adapters"})
# Pure code: no network, threads, clocks, processes or environment.
PURE = frozenset({"wire", "scheduling", "errors", "error_codes", "_types", "events",
                  "limits", "security_events"})
BANNED_IN_PURE = frozenset({
    "trio", "libp2p", "zeroconf", "llama_cpp", "socket", "time", "httpx", "httpcore", "anyio",
    "asyncio", "os", "threading", "subprocess", "select", "selectors", "psutil", "pynvml",
    "multiaddr", "starlette", "hypercorn"})  # `random` is fine: rngs are passed in, typed
ENV_READERS = frozenset({"cli", "api"})
ENV_NAMES = frozenset({"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"})

@dataclass(frozen=True)
class Edge:
    src: str
    dst: str
    file: str  # relative to src/
    line: int
    type_only: bool

    def __str__(self) -> str:
        kind = ", type-only" if self.type_only else ""
        return f"{self.src} -> {self.dst} ({self.file}:{self.line}{kind})"


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    edges: tuple[Edge, ...]             # to peerllm modules, ancestors included
    external: tuple[tuple[str, int], ...]  # (top-level outside module, line)
    env_reads: tuple[int, ...]          # lines that touch os.environ / os.getenv & co


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module) -> list[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement with whether it sits under ``if TYPE_CHECKING:``."""
    found: list[tuple[ast.Import | ast.ImportFrom, bool]] = []

    def visit(node: ast.AST, type_only: bool) -> None:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append((node, type_only))
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_only)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, type_only)

    visit(tree, False)
    return found


def _env_reads(tree: ast.Module) -> list[int]:
    os_names = {a.asname or a.name for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names if a.name == "os"}
    lines = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
             and n.module == "os" and any(a.name in ENV_NAMES for a in n.names)]
    lines += [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Attribute)
              and n.attr in ENV_NAMES and isinstance(n.value, ast.Name)
              and n.value.id in os_names]
    return sorted(lines)


@functools.cache
def load(src: Path = SRC, package: str = PACKAGE) -> dict[str, Module]:
    paths: dict[str, Path] = {}
    for f in (src / package).rglob("*.py"):
        rel = f.relative_to(src).with_suffix("")
        paths[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = f
    modules: dict[str, Module] = {}
    for name, f in sorted(paths.items()):
        pkg = name if f.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(f.read_text(encoding="utf-8"))
        edges: set[Edge] = set()
        external: set[tuple[str, int]] = set()
        for node, type_only in _imports(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    base = ".".join(parts + ([base] if base else []))
                # `from pkg import sub` runs pkg and pkg.sub, as import_cycles.py counts
                # it; but `from .. import sub` inside pkg is no import of pkg's
                # __init__ (for the root: the facade), which `from .. import Name` is.
                subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in paths]
                only_subs = len(subs) == len(node.names) and name.startswith(base + ".")
                targets = subs if only_subs else [*subs, base]
            for target in targets:
                if target.split(".")[0] != package:
                    external.add((target.split(".")[0], node.lineno))
                    continue
                while target and target not in paths:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(Edge(name, target, str(f.relative_to(src)), node.lineno,
                                   type_only))
        modules[name] = Module(name, f, tuple(sorted(edges, key=lambda e: (e.line, e.dst))),
                               tuple(sorted(external)), tuple(_env_reads(tree)))
    return modules


def graph_edges(mod: Module) -> list[Edge]:
    """The edges import_cycles.py counts: a package's own modules always run after its
    __init__ has started, so an import of an ancestor package is no cycle."""
    return [e for e in mod.edges if not mod.name.startswith(e.dst + ".")]


def cycle_through(modules: dict[str, Module], start: str) -> list[Edge]:
    """A shortest import cycle through ``start`` as its edges, or [] if there is none."""
    back: dict[str, Edge] = {}
    queue = deque([start])
    while queue:
        here = queue.popleft()
        for edge in graph_edges(modules[here]):
            if edge.dst == start:
                path = [edge]
                while path[0].src != start:
                    path.insert(0, back[path[0].src])
                return path
            if edge.dst not in back and edge.dst != start:
                back[edge.dst] = edge
                queue.append(edge.dst)
    return []


def component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer_of(module: str) -> tuple[int, str]:
    for rank, (layer, members) in enumerate(LAYERS):
        if component(module) in members:
            return rank, layer
    raise AssertionError(f"{module} is in no layer: add {component(module)!r} to LAYERS "
                         "in tests/test_layers.py")


def outward_edges(mod: Module) -> list[Edge]:
    """Edges to an outer layer, or to an independent sibling in the same layer."""
    rank, layer = layer_of(mod.name)
    bad = []
    for edge in mod.edges:
        dst_rank, _ = layer_of(edge.dst)
        sibling = (dst_rank == rank and layer in INDEPENDENT_LAYERS
                   and component(edge.dst) != component(mod.name))
        if dst_rank > rank or sibling:
            bad.append(edge)
    return bad


def fail(headline: str, items: Iterable[object]) -> NoReturn:
    """Fail with one offending edge (or import) per line, and no assert-rewrite noise."""
    pytest.fail("\n  ".join([headline, *map(str, items)]), pytrace=False)


def _params() -> list[object]:
    return [pytest.param(name, id=name) for name in load()]


@pytest.mark.parametrize("name", _params())
def test_no_import_cycle(name: str) -> None:
    cycle = cycle_through(load(), name)
    if cycle:
        fail(f"{name} is on an import cycle:", cycle)


@pytest.mark.parametrize("name", _params())
def test_imports_point_inward(name: str) -> None:
    mod = load()[name]
    bad = outward_edges(mod)
    if bad:
        fail(f"{name} (layer {layer_of(name)[1]}) imports outward:",
             [f"{e}, layer {layer_of(e.dst)[1]}" for e in bad])


@pytest.mark.parametrize("name", [n for n in load() if component(n) in PURE])
def test_pure_modules_do_no_io(name: str) -> None:
    mod = load()[name]
    bad = [f"{m} (line {line})" for m, line in mod.external if m in BANNED_IN_PURE]
    if bad:
        fail(f"{mod.path}: pure code imports", bad)


@pytest.mark.parametrize("name", _params())
def test_only_the_edge_reads_the_environment(name: str) -> None:
    mod = load()[name]
    if component(name) not in ENV_READERS and mod.env_reads:
        fail(f"{mod.path} reads the process environment; take it as a parameter from cli/:",
             [f"line {line}" for line in mod.env_reads])


def test_production_code_never_imports_testing() -> None:
    bad = [e for m in load().values() if component(m.name) != "testing"
           for e in m.edges if component(e.dst) == "testing"]
    if bad:
        fail("peerllm.testing is for tests only:", bad)


def test_every_module_says_what_it_is_for() -> None:
    missing = [str(m.path) for m in load().values()
               if not ast.get_docstring(ast.parse(m.path.read_text(encoding="utf-8")))]
    assert not missing, f"no module docstring: {missing}"


# -- the checker itself, on small made-up packages -----------------------------------------

def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, Module]:
    for rel, text in files.items():
        path = tmp_path / "pkg" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text('"""doc."""\n' + text, encoding="utf-8")
    return load.__wrapped__(tmp_path, "pkg")


def test_type_only_imports_close_a_cycle(tmp_path: Path) -> None:
    mods = _tree(tmp_path, {
        "__init__.py": "",
        "node.py": "from .mesh import router\n",
        "mesh/__init__.py": "",
        "mesh/router.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                          "    from ..node import Node\n",
    })
    cycle = cycle_through(mods, "pkg.mesh.router")
    assert [str(e) for e in cycle] == [
        "pkg.mesh.router -> pkg.node (pkg/mesh/router.py:4, type-only)",
        "pkg.node -> pkg.mesh.router (pkg/node.py:2)"]
    assert cycle_through(mods, "pkg.mesh") == []


def test_facade_imports_and_env_reads_are_seen(tmp_path: Path) -> None:
    mods = _tree(tmp_path, {
        "__init__.py": "from .wire import codec\n",
        "wire/__init__.py": "",
        "wire/codec.py": "import os as o\nfrom os import getenv\nfrom .. import Thing\n"
                         "x = o.environ.get('A')\n",
    })
    codec = mods["pkg.wire.codec"]
    assert [e.dst for e in codec.edges] == ["pkg"]      # the facade, not a submodule
    assert graph_edges(codec) == []                      # an ancestor: no cycle edge
    assert codec.env_reads == (3, 5)
    assert ("os", 2) in codec.external
