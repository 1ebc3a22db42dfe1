"""Resource use of a running trainer: resident memory of its process tree, GPU memory through NVML.

(kohya_runner.resources is about kr's shipped data files; this module is about RAM and VRAM.)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Resources:
    rss: int = 0
    peak_rss: int = 0
    gpu_used: int | None = None
    peak_vram: int | None = None  # memory in use on the run's (first) GPU, at most; None on the CPU


def tree_rss(root_pid: int) -> int:
    """Resident memory of a process and all its descendants (data loader workers included)."""
    import psutil

    try:
        root = psutil.Process(root_pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total


class GpuSampler:
    """GPU memory in use through NVML; silent (None) where there is no NVIDIA driver."""

    def __init__(self) -> None:
        from . import gpus

        self._nvml = gpus.nvml()

    def used_bytes(self, index: int = 0) -> int | None:
        if self._nvml is None:
            return None
        try:
            handle = self._nvml.nvmlDeviceGetHandleByIndex(index)
            return int(self._nvml.nvmlDeviceGetMemoryInfo(handle).used)
        except Exception:
            return None
