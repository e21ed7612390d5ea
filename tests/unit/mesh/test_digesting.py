"""The background digests: every served file hashed once, again only when it changes."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import trio

from peerllm.config import InferenceConfig
from peerllm.inference.registry import open_registry
from peerllm.inference.specs import ModelSpec
from peerllm.mesh.digesting import Digests, digest_pass, keep_digests
from peerllm.testing import FakeBackend, write_fake_gguf
from peerllm.transfer.digests import DigestCache
from tests.helpers import wait_until

CFG = InferenceConfig(warmup_tokens=0, cache_size_gb=1.0)


def sha256_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


async def test_each_model_gets_its_files_digest_and_one_change_each(tmp_path: Path) -> None:
    a = write_fake_gguf(tmp_path / "a.gguf", 300_000)
    b = write_fake_gguf(tmp_path / "b.gguf", 200_000)
    missing = tmp_path / "gone.gguf"
    specs = [ModelSpec(id="a", path=a), ModelSpec(id="b", path=b),
             ModelSpec(id="gone", path=missing)]
    changes: list[int] = []
    book = Digests()
    cache = DigestCache(tmp_path / "fallback")
    async with open_registry(specs, config=CFG, backend=FakeBackend()) as reg:
        await digest_pass(reg, cache, book, on_change=lambda: changes.append(1))
        assert reg.status("a").digest == sha256_of(a)
        assert reg.status("b").digest == sha256_of(b)
        assert reg.status("gone").digest is None and len(changes) == 2
        digest_a = sha256_of(a)
        manifest = book.manifest(digest_a)
        assert manifest is not None and manifest.size == 300_000
        assert book.path(digest_a) == a and book.path("sha256:" + "0" * 64) is None
        assert book.manifest("not a digest") is None
        # Nothing changed: no work, no change.
        await digest_pass(reg, cache, book, on_change=lambda: changes.append(1))
        assert len(changes) == 2
        # A file replaced in place is hashed again; one that appears is hashed now.
        write_fake_gguf(a, 100_000)
        os.utime(a, ns=(1, 1))
        write_fake_gguf(missing, 100_000)
        await digest_pass(reg, cache, book, on_change=lambda: changes.append(1))
        assert reg.status("a").digest == sha256_of(a) != digest_a
        assert reg.status("gone").digest == sha256_of(missing)
        assert book.manifest(digest_a) is None and len(changes) == 4


async def test_a_swap_gets_the_new_files_digest(tmp_path: Path) -> None:
    a = write_fake_gguf(tmp_path / "a.gguf", 100_000)
    b = write_fake_gguf(tmp_path / "b.gguf", 120_000)
    changed = trio.Event()
    async with open_registry([ModelSpec(id="m", path=a)], config=CFG,
                             backend=FakeBackend()) as reg, trio.open_nursery() as nursery:
        nursery.start_soon(lambda: keep_digests(reg, DigestCache(), on_change=changed.set,
                                                poll_s=0.05))
        await changed.wait()
        assert reg.status("m").digest == sha256_of(a)
        reg.replace(ModelSpec(id="m", path=b))
        assert reg.status("m").digest is None  # a new version: not hashed yet
        await wait_until(lambda: reg.status("m").digest == sha256_of(b), what="new digest")
        nursery.cancel_scope.cancel()


async def test_several_variants_take_the_digest_of_the_one_loaded(tmp_path: Path) -> None:
    q4 = write_fake_gguf(tmp_path / "m.Q4_K_M.gguf", 100_000)
    q8 = write_fake_gguf(tmp_path / "m.Q8_0.gguf", 150_000)
    spec = ModelSpec(id="m", variants=(("Q4_K_M", q4), ("Q8_0", q8)))
    async with open_registry([spec], config=CFG, backend=FakeBackend()) as reg:
        book = Digests()
        await digest_pass(reg, DigestCache(), book, on_change=lambda: None)
        assert reg.status("m").digest is None  # which one fits is decided at load time
        status = await reg.load("m")
        await digest_pass(reg, DigestCache(), book, on_change=lambda: None)
        assert status.path is not None and reg.status("m").digest == sha256_of(status.path)
