"""Idle unloading (Ollama's keep_alive) on a virtual clock.

The fake backend loads and generates in worker threads, which an autojumping clock would
skip past (timing the requests out), so these tests use pytest-trio's ``mock_clock``
(stopped) and move it by hand.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import trio
import trio.testing

from peerllm.errors import ModelNotFound
from peerllm.testing import FakeBackend
from tests.unit.inference.test_registry import engine_for, gguf, req, spec


async def jump(clock: trio.testing.MockClock, seconds: float) -> None:
    clock.jump(seconds)
    await trio.testing.wait_all_tasks_blocked()


async def test_an_idle_model_is_unloaded_after_its_keep_alive(
        tmp_path: Path, mock_clock: trio.testing.MockClock) -> None:
    async with engine_for([spec("a", gguf(tmp_path / "a.gguf"))], FakeBackend()) as (eng, reg):
        reg.keep_alive("a", 300)
        await eng.complete(req())
        assert reg.expires_at("a") == trio.current_time() + 300
        await jump(mock_clock, 299)
        assert reg.status("a").state == "loaded"
        await jump(mock_clock, 2)
        assert reg.status("a").state == "available" and reg.expires_at("a") is None
        # The next request loads it again, with the same idle time.
        await eng.complete(req())
        assert reg.status("a").state == "loaded"
        assert reg.expires_at("a") == trio.current_time() + 300


async def test_a_request_restarts_the_idle_clock(
        tmp_path: Path, mock_clock: trio.testing.MockClock) -> None:
    async with engine_for([spec("a", gguf(tmp_path / "a.gguf"))], FakeBackend()) as (eng, reg):
        reg.keep_alive("a", 60)
        await eng.complete(req())
        await jump(mock_clock, 50)
        await eng.complete(req())
        await jump(mock_clock, 50)  # 100 s after the first request, 50 after the last
        assert reg.status("a").state == "loaded"
        await jump(mock_clock, 11)
        assert reg.status("a").state == "available"


async def test_keep_alive_zero_unloads_when_the_requests_are_done(
        tmp_path: Path, mock_clock: trio.testing.MockClock) -> None:
    async with engine_for([spec("a", gguf(tmp_path / "a.gguf"))], FakeBackend()) as (eng, reg):
        await reg.load("a")
        async with eng.stream(req(max_tokens=3)) as stream:
            reg.keep_alive("a", 0)
            assert reg.expires_at("a") == trio.current_time()  # in use: counted from now
            await trio.testing.wait_all_tasks_blocked()
            assert reg.status("a").state == "loaded"  # never under a running request
            _ = [item async for item in stream]
        await trio.testing.wait_all_tasks_blocked()
        assert reg.status("a").state == "available"


async def test_forever_and_the_default_never_unload(
        tmp_path: Path, mock_clock: trio.testing.MockClock) -> None:
    specs = [spec("a", gguf(tmp_path / "a.gguf")), spec("b", gguf(tmp_path / "b.gguf"))]
    async with engine_for(specs, FakeBackend()) as (eng, reg):
        reg.keep_alive("a", 5)
        reg.keep_alive("a", math.inf)
        await eng.complete(req("a"))
        await eng.complete(req("b"))
        assert reg.expires_at("a") is None and reg.expires_at("b") is None
        await jump(mock_clock, 10**6)
        assert reg.status("a").state == reg.status("b").state == "loaded"


async def test_keep_alive_refusals(tmp_path: Path) -> None:
    async with engine_for([spec("a", gguf(tmp_path / "a.gguf"))], FakeBackend()) as (_, reg):
        with pytest.raises(ModelNotFound):
            reg.keep_alive("nope", 1)
        with pytest.raises(ValueError, match="keep_alive"):
            reg.keep_alive("a", -1)
