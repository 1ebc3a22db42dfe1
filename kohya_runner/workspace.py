"""The workspace: one root folder (`--home` / KR_HOME) holding the ledger, runs, caches,
tokenizers, user presets and built-in bases.

Default: $XDG_DATA_HOME/kohya-runner, i.e. ~/.local/share/kohya-runner.
"""

from __future__ import annotations

import os
from pathlib import Path


def home(explicit: str | Path | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser().resolve()
    if os.environ.get("KR_HOME"):
        return Path(os.environ["KR_HOME"]).expanduser().resolve()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return (Path(data) / "kohya-runner").resolve()


def config_file(root: Path) -> Path:
    """Optional workspace-wide spec values (e.g. [privacy] metadata = "scrub"), a layer below the presets."""
    return root / "config.toml"


def presets_dir(root: Path) -> Path:
    return root / "presets"


def tokenizers_dir(root: Path) -> Path:
    return root / "tokenizers"


def bases_dir(root: Path) -> Path:
    return root / "bases"


def tiny_base_dir(root: Path, family: str = "sdxl") -> Path:
    return bases_dir(root) / f"tiny-{family}"


def runs_dir(root: Path) -> Path:
    return root / "runs"


def caches_dir(root: Path) -> Path:
    return root / "caches"
