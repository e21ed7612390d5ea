"""What this machine has: CPU cores, RAM (psutil) and GPUs with VRAM (NVML when present)."""

from __future__ import annotations

import logging
import os
import threading

import psutil

from ..wire.nodeinfo import Gpu, Resources

logger = logging.getLogger(__name__)


class GpuProbe:
    """NVML access that degrades to "no GPUs" when there is no driver or no device.

    NVML is initialised once, lazily; a machine without NVIDIA's library (like every
    CI machine here) reports an explicitly empty GPU list rather than an error.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready: bool | None = None
        self.unavailable_reason: str | None = None

    def _init(self) -> bool:
        if self._ready is not None:
            return self._ready
        try:
            import pynvml

            pynvml.nvmlInit()
            self._ready = True
        except Exception as exc:  # pynvml raises NVMLError subclasses per missing piece
            self._ready = False
            self.unavailable_reason = f"{type(exc).__name__}: {exc}"
            logger.debug("no NVML GPUs: %s", self.unavailable_reason)
        return self._ready

    def gpus(self) -> tuple[Gpu, ...]:
        with self._lock:
            if not self._init():
                return ()
            import pynvml

            out: list[Gpu] = []
            try:
                for i in range(pynvml.nvmlDeviceGetCount()):
                    handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                    mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
                    name = pynvml.nvmlDeviceGetName(handle)
                    if isinstance(name, bytes):
                        name = name.decode("utf-8", "replace")
                    out.append(Gpu(index=i, name=str(name)[:256], vram_total_bytes=int(mem.total),
                                   vram_free_bytes=int(mem.free)))
            except Exception:  # a GPU that vanished mid-probe: report what we have
                logger.warning("NVML query failed", exc_info=True)
            return tuple(out)


def probe_resources(gpus: GpuProbe) -> Resources:
    """A fresh snapshot; cheap enough (~tens of µs without GPUs) to call per request."""
    vm = psutil.virtual_memory()
    return Resources(cpu_cores=os.cpu_count() or 1, ram_total_bytes=int(vm.total),
                     ram_free_bytes=int(vm.available), gpus=gpus.gpus())
