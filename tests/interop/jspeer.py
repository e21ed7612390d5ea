"""The stock js-libp2p peer of tests/interop/js/peer.mjs, run from trio: a listener that
stays up for the test (and is always killed with it) and one-shot dials.

peer.mjs prints one JSON object per line ({"event": ...}); these helpers collect them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import trio

from tests.helpers import REPO

JS = REPO / "tests" / "interop" / "js"
INSTALL = "npm ci --prefix tests/interop/js"
DIAL_TIMEOUT_S = 60.0
"""A hang guard only: every step of a dial together takes a second or two on loopback
(peer.mjs bounds each step at 10 s itself)."""

Event = dict[str, Any]


def missing() -> str | None:
    """Why the js peer cannot run here (node or the pinned packages absent), or None."""
    if shutil.which("node") is None:
        return "node (Node.js 20 or later) is not on PATH"
    wanted = json.loads((JS / "package.json").read_text())["dependencies"]
    absent = [name for name in wanted
              if not (JS / "node_modules" / name / "package.json").is_file()]
    if absent:
        return f"npm package(s) {', '.join(absent)} not installed (run `{INSTALL}`)"
    return None


def swarm_key_file(path: Path, key_hex: str) -> Path:
    """Write ``key_hex`` as a standard swarm.key (what js-libp2p's pnet reads), mode 0600."""
    path.write_text(f"/key/swarm/psk/1.0.0/\n/base16/\n{key_hex}\n")
    path.chmod(0o600)
    return path


def _command(*args: str, swarm_key: Path | None) -> list[str]:
    node = shutil.which("node")
    assert node is not None, missing()
    return [node, str(JS / "peer.mjs"), *args,
            *(["--swarm-key", str(swarm_key)] if swarm_key is not None else [])]


@dataclass
class DialResult:
    """What one ``peer.mjs dial`` printed, and how it exited."""

    returncode: int
    events: list[Event]
    stderr: str

    def of(self, event: str) -> list[Event]:
        return [e for e in self.events if e["event"] == event]

    def one(self, event: str) -> Event:
        """The single ``event`` line, failing with everything printed when it is absent."""
        found = self.of(event)
        assert len(found) == 1, f"expected one {event!r} line, got: {self.events}\n{self.stderr}"
        return found[0]

    def errors(self) -> list[Event]:
        return self.of("error")


async def js_dial(addr: str, *, swarm_key: Path | None = None,
                  steps: tuple[str, ...] = ("identify", "ping", "node-info", "dht")
                  ) -> DialResult:
    """Run ``peer.mjs dial addr`` to its end (killed if the test is cancelled)."""
    with trio.fail_after(DIAL_TIMEOUT_S):
        done = await trio.run_process(
            _command("dial", addr, "--steps", ",".join(steps), swarm_key=swarm_key),
            capture_stdout=True, capture_stderr=True, check=False, cwd=JS)
    lines = done.stdout.decode().splitlines()
    return DialResult(done.returncode, [json.loads(line) for line in lines if line.strip()],
                      done.stderr.decode())


@dataclass
class JsListener:
    """A running ``peer.mjs listen``: what it printed so far, its peer id and address."""

    events: list[Event] = field(default_factory=list)
    ended: bool = False  # its stdout closed: it exited
    _changed: trio.Event = field(default_factory=trio.Event)

    @property
    def peer_id(self) -> str:
        return str(self.of("listening")[0]["peer_id"])

    @property
    def addr(self) -> str:
        return str(self.of("listening")[0]["addrs"][0])

    def of(self, event: str, peer_id: str | None = None) -> list[Event]:
        return [e for e in self.events if e["event"] == event
                and (peer_id is None or e.get("peer_id") == peer_id)]

    async def wait_for(self, pred: Callable[[], bool], *, what: str,
                       timeout_s: float = 20.0) -> None:
        """Wait until ``pred()`` holds, rechecked as lines arrive; fail (not hang) after
        ``timeout_s`` with everything the peer printed."""
        with trio.move_on_after(timeout_s):
            while not pred():
                if self.ended:
                    raise AssertionError(f"the js peer exited while we waited for {what}; "
                                         f"it printed: {self.events}")
                await self._changed.wait()
            return
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; "
                             f"the js peer printed: {self.events}")

    async def collect(self, stdout: trio.abc.ReceiveStream) -> None:
        buffer = b""
        async for chunk in stdout:
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            self.events.extend(json.loads(line) for line in complete if line.strip())
            self._wake()
        self.ended = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


@asynccontextmanager
async def js_listener(stderr: Path, *, swarm_key: Path | None = None
                      ) -> AsyncIterator[JsListener]:
    """Run ``peer.mjs listen`` on 127.0.0.1 for the duration of the block.

    Leaving the block cancels the nursery: trio terminates the process (SIGTERM, then
    SIGKILL) and waits for it, whatever the test did. Its stdin is a pipe we hold, so it
    also stops by itself if this process dies. Its stderr goes to ``stderr``.
    """
    peer = JsListener()
    with stderr.open("wb") as err:
        async with trio.open_nursery() as nursery:
            proc: trio.Process = await nursery.start(partial(
                trio.run_process, _command("listen", swarm_key=swarm_key),
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, check=False,
                cwd=JS))
            assert proc.stdout is not None
            nursery.start_soon(peer.collect, proc.stdout)
            try:
                await peer.wait_for(lambda: bool(peer.events), what="the js peer to listen",
                                    timeout_s=DIAL_TIMEOUT_S)
                assert peer.events[0]["event"] == "listening", peer.events
                yield peer
            finally:
                nursery.cancel_scope.cancel()
