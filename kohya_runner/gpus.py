"""The one GPU probe: which GPUs kr may use, and the default choice of `kr run` and `kr sweep`.

The rule: CUDA_VISIBLE_DEVICES, when set, is the list (a value that is not a list of numbers, e.g.
GPU UUIDs, means none kr can pin); otherwise every GPU NVML sees; no NVIDIA driver means none.
`kr run` takes the first of them, `kr sweep` one slot per each; none means the CPU. A GPU asked for
by number must be one of them (`check_requested`): CUDA would otherwise hide a wrong number and the
trainer would quietly run on the CPU.
"""

from __future__ import annotations

import os

from .errors import BadInput


def nvml():
    """The initialised pynvml module, or None where there is no NVIDIA driver (imported lazily). Raises nothing."""
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:
        return None


def visible() -> list[int]:
    """The GPUs kr may use, by the rule above. Raises nothing."""
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
    """`kr run` without --gpu: the first visible GPU, or None (the CPU). Raises nothing."""
    found = visible()
    return found[:1] or None


def default_for_sweep() -> list[int]:
    """`kr sweep` without --gpus: every visible GPU (one slot each); [] means CPU slots. Raises nothing."""
    return visible()


def check_requested(gpus: list[int], option: str = "--gpu") -> None:
    """Refuse GPU numbers kr may not use (by the rule above); [] (the CPU) is always fine.

    `option` is the flag the numbers came from (`--gpu` for `kr run`, `--gpus` for `kr sweep`).
    Raises BadInput naming the first unusable or repeated number, the GPUs visible and the fix.
    """
    if not gpus:
        return
    repeated = sorted({gpu for gpu in gpus if gpus.count(gpu) > 1})
    if repeated:
        once = ",".join(map(str, dict.fromkeys(gpus)))
        raise BadInput(f"{option} lists GPU {repeated[0]} more than once. "
                       f"Fix: name each GPU once, e.g. {option} {once}.")
    available = visible()
    for gpu in gpus:
        if gpu not in available:
            raise BadInput(_not_there(gpu, available, option))


def _not_there(gpu: int, available: list[int], option: str) -> str:
    where = _why_visible()
    if not available:
        return (f"{option} asks for GPU {gpu}, but no GPU is visible on this machine ({where}). "
                f"Fix: {option} cpu trains on the CPU.")
    listed = ", ".join(map(str, available))
    count = f"{len(available)} GPU{'s are' if len(available) > 1 else ' is'} visible ({listed}; {where})"
    return (f"{option} asks for GPU {gpu}, which is not there: {count}. "
            f"Fix: {option} {available[0]} (any of {listed}), or {option} cpu.")


def _why_visible() -> str:
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return f"CUDA_VISIBLE_DEVICES={listed!r}"
    driver = nvml()
    if driver is None:
        return "no NVIDIA driver answers"
    try:
        driver.nvmlShutdown()
    except Exception:
        pass
    return "as the NVIDIA driver counts them"


def driver_present() -> bool:
    """True when an NVIDIA driver is present: `nvidia-smi -L` lists a GPU, or NVML's library loads.

    `kr vendor env` uses it to choose a CUDA or CPU build of torch, so it ignores CUDA_VISIBLE_DEVICES
    (that hides GPUs from one process, not from the machine). Raises nothing.
    """
    import shutil
    import subprocess

    if shutil.which("nvidia-smi"):
        try:
            result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
            if result.returncode == 0 and "GPU" in result.stdout:
                return True
        except (OSError, subprocess.TimeoutExpired):
            pass
    import ctypes

    for name in ("libnvidia-ml.so.1", "nvml.dll"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False
