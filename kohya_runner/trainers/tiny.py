"""The built-in tiny trainer (kohya_runner.tiny): same command-line shape as sd-scripts' scripts."""

from __future__ import annotations

import sys
from pathlib import Path

from . import Launch, trainer_env

MODULES = {"sdxl": "kohya_runner.tiny", "sd15": "kohya_runner.tiny.sd15"}


def launch(family: str, config_file: Path, run_dir: Path, gpus: list[int] | None) -> Launch:
    argv = [sys.executable, "-m", MODULES[family], "--config_file", str(config_file)]
    return Launch("tiny", argv, run_dir, trainer_env(gpus))
