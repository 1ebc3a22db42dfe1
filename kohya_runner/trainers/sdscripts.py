"""The real trainer: an unmodified sd-scripts checkout and the Python of its environment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from .. import contract
from ..resources import source_checkout


def find_checkout(home: Path) -> Optional[Path]:
    """KR_SD_SCRIPTS, then vendor/sd-scripts in a source checkout, then <home>/vendor/sd-scripts."""
    candidates = []
    if os.environ.get("KR_SD_SCRIPTS"):
        candidates.append(Path(os.environ["KR_SD_SCRIPTS"]).expanduser())
    repo = source_checkout()
    if repo:
        candidates.append(repo / "vendor" / "sd-scripts")
    candidates.append(home / "vendor" / "sd-scripts")
    for candidate in candidates:
        if (candidate / "train_network.py").is_file():
            return candidate.resolve()
    return None


def find_python(home: Path, checkout: Optional[Path]) -> Optional[str]:
    """KR_SD_PYTHON, then the trainer venv kr vendor created, else None (the caller decides)."""
    if os.environ.get("KR_SD_PYTHON"):
        return os.environ["KR_SD_PYTHON"]
    for env in ([checkout.parent / "env"] if checkout else []) + [home / "vendor" / "env"]:
        python = env / "bin" / "python"
        if python.exists():
            return str(python)
    return None


def single_gpu_command(family: str, config_file: Path, checkout: Optional[Path], python: Optional[str]) -> list[str]:
    """Plain `python script.py --config_file …`: signals and exit codes reach the trainer directly (§1.2 B)."""
    script = f"{contract.script_for(family)}.py"
    script_path = str(checkout / script) if checkout else f"<sd-scripts>/{script}"
    return [python or "python", script_path, "--config_file", str(config_file)]
