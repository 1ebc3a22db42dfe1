"""The one GPU probe: which GPUs kr may use, and the default choice of `kr run` and `kr sweep`.

The rule: CUDA_VISIBLE_DEVICES, when set, is the list (a value that is not a list of numbers, e.g.
GPU UUIDs, means none kr can pin); otherwise every GPU NVML sees; no NVIDIA driver means none.
`kr run` takes the first of them, `kr sweep` one slot per each; none means the CPU.
"""

from __future__ import annotations

import os


def nvml():
    """The initialised pynvml module, or None where there is no NVIDIA driver (imported lazily)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:
        return None


def visible() -> list[int]:
    """The GPUs kr may use, by the rule above."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        try:
            return [int(part) for part in listed.split(",") if part.strip()]
        except ValueError:
            return []
    driver = nvml()
    if driver is None:
        return []
    try:
        return list(range(driver.nvmlDeviceGetCount()))
    except Exception:
        return []
    finally:
        try:
            driver.nvmlShutdown()
        except Exception:
            pass


def default_for_run() -> list[int] | None:
    """`kr run` without --gpu: the first visible GPU, or None (the CPU)."""
    found = visible()
    return found[:1] or None


def default_for_sweep() -> list[int]:
    """`kr sweep` without --gpus: every visible GPU (one slot each); [] means CPU slots."""
    return visible()
