"""Run real `peerllm` processes on 127.0.0.1 for end-to-end CLI tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def peerllm_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "peerllm", *args]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PEERLLM_", "NODE_"))}
    env.update(extra)
    return env


@dataclass
class Daemon:
    name: str
    data_dir: Path
    p2p_port: int
    api_port: int
    proc: subprocess.Popen[str] | None = None
    banner: list[str] = field(default_factory=list)
    _drainer: threading.Thread | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def peer_id(self) -> str:
        return next(line.split(":", 1)[1].strip() for line in self.banner
                    if line.strip().startswith("peer id"))

    @property
    def addr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.p2p_port}/p2p/{self.peer_id}"

    def start(self, *extra: str, timeout_s: float = 60.0, default_model: bool = False) -> None:
        args = ["node", "--data-dir", str(self.data_dir), "--name", self.name,
                "--listen", f"/ip4/127.0.0.1/tcp/{self.p2p_port}",
                "--api", f"127.0.0.1:{self.api_port}", *extra]
        if not default_model:
            args.append("--no-default-model")
        self.proc = subprocess.Popen(peerllm_cmd(*args), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, env=clean_env())
        self.banner = []
        deadline = time.monotonic() + timeout_s
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                self.proc.wait(10)
                self.proc.stdout.close()
                raise AssertionError(f"{self.name} exited early:\n" + "".join(self.banner))
            self.banner.append(line)
            if line.strip() == "ready":
                # Keep draining output so the child never blocks on a full pipe.
                self._drainer = threading.Thread(target=self._drain, daemon=True)
                self._drainer.start()
                return
        raise AssertionError(f"{self.name} not ready in {timeout_s} s:\n" + "".join(self.banner))

    def _drain(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.banner.append(line)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> float:
        """Signal the daemon; return how long it took to exit."""
        if self.proc is None:
            return 0.0
        t0 = time.monotonic()
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(sig)
                try:
                    self.proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
                    raise
            return time.monotonic() - t0
        finally:
            if self._drainer is not None:
                self._drainer.join(5)
                self._drainer = None
            if self.proc.stdout is not None and not self.proc.stdout.closed:
                self.proc.stdout.close()

    def peers_json(self) -> dict[str, Any]:
        out = subprocess.run(peerllm_cmd("peers", "--json", "--api", self.api),
                             capture_output=True, text=True, env=clean_env(), timeout=30,
                             check=True)
        return json.loads(out.stdout)  # type: ignore[no-any-return]


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
