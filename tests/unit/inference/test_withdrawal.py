"""Models whose file is bad are not advertised: found at startup (header check) or when
llama.cpp refuses the file, withdrawn until the file changes; slow or short of memory is
not bad."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from peerllm.config import InferenceConfig
from peerllm.errors import ModelLoadError
from peerllm.testing import FAKE_GGUF, FakeBackend, write_fake_gguf

from .test_registry import engine_for, gguf, spec


def advertised(statuses: list) -> list[str]:  # type: ignore[type-arg]
    return [st.id for st in statuses if st.advertised]


def truncated(path: Path) -> Path:
    path.write_bytes(FAKE_GGUF[:10])
    return path


async def test_a_bad_file_at_startup_is_reported_once_and_not_advertised(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    bad = truncated(tmp_path / "bad.gguf")
    specs = [spec("good", gguf(tmp_path / "good.gguf")), spec("bad", bad)]
    async with engine_for(specs, FakeBackend()) as (_, reg):
        assert advertised(reg.list()) == ["good"]
        st = reg.status("bad")
        assert st.state == "failed" and st.error is not None
        assert st.error == f"{bad}: truncated: the file ends inside the tensor count"
        for _ in range(3):
            reg.list()
    warnings = [r for r in caplog.records if "bad" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert "not advertised" in warnings[0].getMessage() and str(bad) in warnings[0].getMessage()


async def test_a_file_llama_cpp_refuses_is_withdrawn_until_it_changes(tmp_path: Path) -> None:
    backend = FakeBackend()
    path = gguf(tmp_path / "m.gguf")
    backend.refuse_paths.add(path)
    async with engine_for([spec("m", path)], backend) as (_, reg):
        assert advertised(reg.list()) == ["m"]
        with pytest.raises(ModelLoadError, match="could not load"):
            await reg.load("m")
        assert advertised(reg.list()) == []
        assert reg.status("m").state == "failed"
        # Replaced with a file llama.cpp takes (another size): offered and loadable again.
        backend.refuse_paths.clear()
        write_fake_gguf(path, 4096)
        assert advertised(reg.list()) == ["m"]
        assert (await reg.load("m")).state == "loaded"
        assert reg.status("m").advertised


async def test_a_bad_file_fixed_in_place_is_offered_again(tmp_path: Path) -> None:
    bad = truncated(tmp_path / "m.gguf")
    async with engine_for([spec("m", bad)], FakeBackend()) as (_, reg):
        assert advertised(reg.list()) == []
        write_fake_gguf(bad, 2048)
        assert advertised(reg.list()) == ["m"]
        assert (await reg.load("m")).state == "loaded"


async def test_a_missing_file_that_appears_is_offered(tmp_path: Path) -> None:
    path = tmp_path / "later.gguf"
    async with engine_for([spec("later", path)], FakeBackend()) as (_, reg):
        assert advertised(reg.list()) == []
        write_fake_gguf(path)
        assert advertised(reg.list()) == ["later"]


async def test_a_load_that_times_out_stays_advertised(tmp_path: Path) -> None:
    backend = FakeBackend()
    slow = gguf(tmp_path / "slow.gguf")
    backend.hang_paths.add(slow)
    async with engine_for([spec("slow", slow)], backend,
                          InferenceConfig(load_timeout_s=0.1)) as (_, reg):
        with pytest.raises(ModelLoadError, match="timed out"):
            await reg.load("slow")
        assert advertised(reg.list()) == ["slow"]  # slow is not broken: try again later


def test_the_stamp_sees_a_same_size_rewrite(tmp_path: Path) -> None:
    from peerllm.inference.slots import file_stamps

    path = gguf(tmp_path / "m.gguf")
    s = spec("m", path)
    before = file_stamps(s)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert file_stamps(s) != before
