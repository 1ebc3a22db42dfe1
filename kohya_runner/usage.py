"""Resource use of a running trainer: the memory of its process tree, GPU memory through NVML.

Memory is PSS (proportional set size): a page shared by N processes counts 1/N in each. Summing RSS
over the tree counts the pages that forked data-loader workers share with the trainer once per worker
(a real SDXL run on a 23 GiB machine read "34.76 GB"). Where PSS cannot be read, the largest process's
RSS plus the USS (private pages) of the others is used, which also counts shared pages once.
(kohya_runner.resources is about kr's shipped data files; this module is about RAM and VRAM.)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Resources:
    rss: int = 0  # the tree's memory (PSS), the field keeps its old name
    peak_rss: int = 0  # the largest tree PSS seen; stored in the ledger's peak_rss column
    gpu_used: int | None = None
    peak_vram: int | None = None  # memory in use on the run's (first) GPU, at most; None on the CPU


MEMORY_LABEL = "memory (PSS)"  # how views and reports name Resources.rss / the ledger's peak_rss


def _tree(root_pid: int) -> list:
    import psutil

    try:
        root = psutil.Process(root_pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def tree_rss(root_pid: int) -> int:
    """Resident memory summed over a process and its descendants: counts shared pages once per process
    (what `ps` adds up; kept to show the difference, not for display)."""
    import psutil

    total = 0
    for proc in _tree(root_pid):
        try:
            total += proc.memory_info().rss
        except psutil.Error:
            continue
    return total


def tree_memory(root_pid: int) -> int:
    """The memory a process tree really holds: the sum of PSS over the tree; where a process's PSS
    cannot be read, the largest RSS plus the private memory (USS) of every other process."""
    import psutil

    pss_total, complete = 0, True
    entries: list[tuple[int, int]] = []  # (rss, private bytes: USS, or RSS where USS is unreadable)
    for proc in _tree(root_pid):
        try:
            info = proc.memory_full_info()
        except psutil.AccessDenied:
            complete = False
            try:
                rss = proc.memory_info().rss
            except psutil.Error:
                continue
            entries.append((rss, rss))
            continue
        except psutil.Error:
            continue  # gone meanwhile
        pss = getattr(info, "pss", None)
        complete = complete and pss is not None
        pss_total += pss or 0
        entries.append((info.rss, getattr(info, "uss", info.rss)))
    if complete or not entries:
        return pss_total
    entries.sort(reverse=True)
    return entries[0][0] + sum(private for _, private in entries[1:])


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
