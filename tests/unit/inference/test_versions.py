"""Model versions in the registry: hot swap, remove (waiting or cancelling), digest pins."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from peerllm.errors import InferenceCancelled, ModelNotFound
from peerllm.events import Done, TokenChunk
from peerllm.inference.versions import PIN_MIN_HEX, ModelRef, parse_ref
from peerllm.testing import FakeBackend
from tests.helpers import wait_until
from tests.unit.inference.test_registry import MB, engine_for, gguf, req, spec

DIGEST_A = "sha256:" + hashlib.sha256(b"a").hexdigest()
DIGEST_B = "sha256:" + hashlib.sha256(b"b").hexdigest()


# -- pins --------------------------------------------------------------------------------


@given(st.text(alphabet="0123456789abcdefABCDEF", min_size=PIN_MIN_HEX, max_size=64))
def test_a_pin_of_8_to_64_hex_digits_parses_lowercased(pin: str) -> None:
    assert parse_ref(f"gemma@{pin}") == ModelRef("gemma", pin.lower())


@pytest.mark.parametrize("pin", ["", "1234567", "xyzxyzxyz", "1" * 65, "1234abcd@1234abcd"])
def test_a_bad_pin_is_model_not_found_saying_what_a_pin_is(pin: str) -> None:
    with pytest.raises(ModelNotFound, match="is not a version pin"):
        parse_ref(f"gemma@{pin}")


def test_an_unpinned_id_is_itself() -> None:
    assert parse_ref("a/b:c") == ModelRef("a/b:c") and str(ModelRef("x", "1234abcd")) == \
        "x@1234abcd"


async def test_pins_resolve_to_the_current_version_only(tmp_path: Path) -> None:
    async with engine_for([spec("a", gguf(tmp_path / "a.gguf"), digest=DIGEST_A)],
                          FakeBackend()) as (engine, reg):
        pin_a = "a@" + DIGEST_A[7:15]
        assert reg.status(pin_a).digest == DIGEST_A
        _, done = await engine.complete(req(pin_a))
        assert done.finish_reason == "length"
        reg.replace(spec("a", gguf(tmp_path / "b.gguf"), digest=DIGEST_B))
        with pytest.raises(ModelNotFound, match=f"a is at {DIGEST_B[7:15]}"):
            reg.admit(pin_a)
        assert reg.status("a@" + DIGEST_B[7:71].upper()).digest == DIGEST_B


async def test_a_pin_before_the_digest_is_known_says_so(tmp_path: Path) -> None:
    path = gguf(tmp_path / "a.gguf")
    async with engine_for([spec("a", path)], FakeBackend()) as (_, reg):
        with pytest.raises(ModelNotFound, match="digest is not computed yet"):
            reg.status("a@" + DIGEST_A[7:15])
        reg.set_digest("a", DIGEST_A)
        assert reg.status("a@" + DIGEST_A[7:15]).digest == DIGEST_A
        with pytest.raises(ValueError, match="not a digest"):
            reg.set_digest("a", "sha256:nothex")


async def test_a_digest_computed_for_a_replaced_version_is_dropped(tmp_path: Path) -> None:
    async with engine_for([spec("a", gguf(tmp_path / "a.gguf"))], FakeBackend()) as (_, reg):
        old = reg.spec("a")
        reg.replace(spec("a", gguf(tmp_path / "b.gguf")))
        reg.set_digest("a", DIGEST_A, spec=old)
        assert reg.status("a").digest is None


# -- hot swap ----------------------------------------------------------------------------


async def test_hot_swap_under_a_running_stream_loses_nothing(tmp_path: Path) -> None:
    backend = FakeBackend()
    old_path, new_path = gguf(tmp_path / "old.gguf"), gguf(tmp_path / "new.gguf")
    async with engine_for([spec("a", old_path, replicas=2)], backend) as (engine, reg):
        await reg.load("a")
        backend.gate.clear()  # the running stream is held mid-generation
        async with engine.stream(req(max_tokens=5)) as stream:
            await wait_until(lambda: reg.status("a").active == 1, what="generating")
            reg.replace(spec("a", new_path, digest=DIGEST_B))
            st_new = reg.status("a")
            assert (st_new.digest, st_new.replicas, st_new.active) == (DIGEST_B, 0, 0)
            # The old version was loaded: the new one loads in the background now.
            await wait_until(lambda: reg.status("a").state == "loaded", what="new loaded")
            backend.gate.set()
            items = [item async for item in stream]
        text = "".join(i.text for i in items if isinstance(i, TokenChunk))
        assert text == "t0 t1 t2 t3 t4 " and isinstance(items[-1], Done)
        assert items[-1].finish_reason == "length"
        old, new = backend.opened[0], backend.opened[1]
        assert (old.path, new.path) == (old_path, new_path)
        await wait_until(lambda: old.closed, what="old version freed once drained")
        _, done = await engine.complete(req())
        assert done.finish_reason == "length" and not new.closed
        assert len(backend.opened) == 2  # the next request ran on the preloaded new version
        assert reg.reserved_bytes == reg.status("a").memory_bytes


async def test_a_swap_that_does_not_fit_waits_for_the_old_version(tmp_path: Path) -> None:
    backend = FakeBackend()
    from peerllm.config import InferenceConfig

    tight = InferenceConfig(warmup_tokens=0, max_queue=1, cache_size_gb=0.05)  # ~51 MB
    async with engine_for([spec("a", gguf(tmp_path / "old.gguf", 30 * MB))], backend,
                          config=tight) as (engine, reg):
        await reg.load("a")
        backend.gate.clear()
        async with engine.stream(req(max_tokens=2)) as stream:
            await wait_until(lambda: reg.status("a").active == 1, what="generating")
            reg.replace(spec("a", gguf(tmp_path / "new.gguf", 30 * MB)))
            await trio.sleep(0.05)
            assert len(backend.opened) == 1 and reg.status("a").state == "loading"
            backend.gate.set()
            async for _ in stream:
                pass
        await wait_until(lambda: reg.status("a").state == "loaded", what="new loaded")
        assert backend.opened[0].closed and len(backend.opened) == 2
        assert reg.reserved_bytes <= reg.budget_bytes


async def test_replacing_an_idle_unloaded_model_loads_nothing(tmp_path: Path) -> None:
    backend = FakeBackend()
    async with engine_for([spec("a", gguf(tmp_path / "a.gguf"))], backend) as (engine, reg):
        reg.keep_alive("a", 30)
        reg.replace(spec("a", gguf(tmp_path / "b.gguf")))
        assert reg.status("a").state == "available" and not backend.opened
        await engine.complete(req())
        assert backend.opened[0].path == tmp_path / "b.gguf"
        assert reg.expires_at("a") is not None  # keep_alive carried over to the new version
        with pytest.raises(ModelNotFound):
            reg.replace(spec("nope", tmp_path / "b.gguf"))


# -- remove ------------------------------------------------------------------------------


async def test_remove_refuses_new_requests_and_waits_for_running_ones(tmp_path: Path) -> None:
    backend = FakeBackend()
    async with engine_for([spec("a", gguf(tmp_path / "a.gguf")),
                           spec("b", gguf(tmp_path / "b.gguf"))], backend) as (engine, reg):
        await reg.load("a")
        backend.gate.clear()
        removed = trio.Event()

        async def remove() -> None:
            await reg.remove("a")
            removed.set()

        # The nursery outlives the stream: remove() returns once the stream is released.
        async with trio.open_nursery() as nursery, engine.stream(req(max_tokens=3)) as stream:
            await wait_until(lambda: reg.status("a").active == 1, what="generating")
            nursery.start_soon(remove)
            await wait_until(lambda: [m.id for m in reg.list()] == ["b"], what="gone")
            with pytest.raises(ModelNotFound):
                reg.admit("a")
            assert not removed.is_set() and not backend.opened[0].closed
            backend.gate.set()
            items = [item async for item in stream]
            assert isinstance(items[-1], Done) and items[-1].finish_reason == "length"
        assert removed.is_set() and backend.opened[0].closed and reg.reserved_bytes == 0


async def test_remove_with_cancel_ends_running_and_queued_requests(tmp_path: Path) -> None:
    backend = FakeBackend()
    async with engine_for([spec("a", gguf(tmp_path / "a.gguf"))], backend) as (engine, reg):
        await reg.load("a")
        backend.gate.clear()
        errors: list[InferenceCancelled] = []

        async def run() -> None:
            try:
                await engine.complete(req(max_tokens=10_000))
            except InferenceCancelled as exc:
                errors.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)  # generating (max_concurrent 1)
            await wait_until(lambda: reg.status("a").active == 1, what="running")
            nursery.start_soon(run)  # queued behind it
            await wait_until(lambda: reg.status("a").queued == 1, what="queued")
            await reg.remove("a", cancel=True)
        assert [e.message for e in errors] == ["the model was deleted"] * 2
        assert backend.opened[0].closed and reg.reserved_bytes == 0


async def test_remove_cancels_old_versions_still_draining(tmp_path: Path) -> None:
    backend = FakeBackend()
    async with engine_for([spec("a", gguf(tmp_path / "a.gguf"))], backend) as (engine, reg):
        backend.gate.clear()

        async def swap_then_remove() -> None:
            await wait_until(lambda: reg.status("a").active == 1, what="running")
            reg.replace(spec("a", gguf(tmp_path / "b.gguf")))
            await reg.remove("a", cancel=True)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(swap_then_remove)
            with pytest.raises(InferenceCancelled, match="the model was deleted"):
                await engine.complete(req(max_tokens=10_000))
        with pytest.raises(ModelNotFound):
            reg.status("a")
        await wait_until(lambda: reg.reserved_bytes == 0, what="all freed")
