"""Marks every test with its kind (the folder it lives in) and declares the fixtures that more
than one folder uses. The helpers themselves are in tests/helpers.py."""

from __future__ import annotations

import functools
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers import Daemon, MakeConfig, free_port, node_config

TESTS = Path(__file__).parent
# Folder -> extra markers. integration/, interop/ and e2e/ start real hosts or processes
# (interop also another libp2p implementation, e2e the model), so `-m "not slow"` is the
# fast lane: unit, component and the root tests.
KINDS: dict[str, tuple[str, ...]] = {
    "unit": (), "component": (), "integration": ("slow",), "interop": ("slow",),
    "e2e": ("slow",)}
# Tests of the whole package, which belong to no kind.
PACKAGE_TESTS = frozenset({"test_layers.py", "test_exports.py"})


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by these markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        try:
            where = item.path.relative_to(TESTS)
        except ValueError:  # a test file given from outside tests/
            continue
        if len(where.parts) == 1 and where.name in PACKAGE_TESTS:
            continue
        kind = where.parts[0]
        if kind not in KINDS:
            raise pytest.UsageError(
                f"tests/{where}: a test lives in tests/unit, tests/component, "
                "tests/integration, tests/interop or tests/e2e (that folder says what it "
                "needs: nothing, in-memory streams, real hosts, another libp2p "
                "implementation, the model), so its markers are right")
        item.add_marker(kind)
        for marker in KINDS[kind]:
            item.add_marker(marker)


@pytest.fixture
def make_config(tmp_path: Path) -> MakeConfig:
    """``node_config`` with this test's tmp_path as the data root."""
    return functools.partial(node_config, tmp_path)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Callable[[str], Daemon]]:
    """Factory for daemons that are killed when the test ends."""
    made: list[Daemon] = []

    def factory(name: str) -> Daemon:
        d = Daemon(name, tmp_path / name, free_port(), free_port())
        made.append(d)
        return d

    yield factory
    for d in made:
        try:
            d.stop(signal.SIGKILL)
        except Exception:  # cleanup must not hide the test's own failure
            pass
