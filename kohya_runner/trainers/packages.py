"""Which optional package an sd-scripts optimizer imports, and whether a trainer's python has it.

sd-scripts imports these only when the optimizer is built, minutes into a run (after caching), and
fails with a half-Japanese "No bitsandbytes / …" line; asking the trainer's python first is cheap.
"""

from __future__ import annotations

import json
import subprocess

# import name -> pip name
PIP_NAMES = {"bitsandbytes": "bitsandbytes", "prodigyopt": "prodigyopt", "dadaptation": "dadaptation",
             "lion_pytorch": "lion-pytorch", "schedulefree": "schedulefree"}


def module_for(optimizer_type: str) -> str | None:
    """The module sd-scripts (train_util.get_optimizer at the pin) imports for `optimizer_type`, None for
    torch's own optimizers and Adafactor (transformers, always there). Raises nothing."""
    lowered = optimizer_type.lower()
    if "." in optimizer_type:  # module.path.ClassName
        return optimizer_type.split(".")[0]
    if lowered.endswith("8bit") or lowered.startswith("paged"):
        return "bitsandbytes"
    if lowered == "prodigy":
        return "prodigyopt"
    if lowered.startswith("dadapt"):
        return "dadaptation"
    if lowered == "lion":
        return "lion_pytorch"
    if lowered.endswith("schedulefree"):
        return "schedulefree"
    return None


def pip_name(module: str) -> str:
    return PIP_NAMES.get(module, module)


_FIND = "import importlib.util, json, sys; print(json.dumps([m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]))"


def missing_modules(python: str, modules: list[str] | tuple[str, ...], timeout: float = 60.0) -> list[str] | None:
    """Those of `modules` that `python` cannot import (find_spec: nothing is imported, so it is cheap);
    None when `python` could not be asked. Raises nothing."""
    if not modules:
        return []
    try:
        result = subprocess.run([python, "-c", _FIND, *modules], capture_output=True, text=True, timeout=timeout)
        return list(json.loads(result.stdout.strip().splitlines()[-1])) if result.returncode == 0 else None
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


def available_here(module: str) -> bool:
    """Whether kr's own python (the tiny trainer's) can import `module`. Raises nothing."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def missing_package_hint(spec, exception: str | None) -> str | None:
    """The fix for a trainer that stopped on the missing package of its optimizer, in English and naming the
    override (sd-scripts' own line is "No bitsandbytes / bitsandbytesがインストールされていないようです");
    None when the `exception` line names another package (xformers, …). Raises nothing."""
    if spec is None or not exception:
        return None
    wanted = spec.optimizer.type
    module = module_for(wanted)
    if module is None:
        return None
    names = {module.lower(), pip_name(module).lower()} | ({"prodigy"} if module == "prodigyopt" else set())
    if not names & set(_words(exception)):
        return None
    return (f"optimizer.type = {wanted} needs {pip_name(module)}: install it into the trainer environment "
            f"(`<trainer python> -m pip install {pip_name(module)}`; `kr doctor PRESET` checks it), or run with "
            "optimizer.type=AdamW")


def _words(text: str) -> list[str]:
    import re

    return re.findall(r"[a-z0-9_\-]+", text.lower())
