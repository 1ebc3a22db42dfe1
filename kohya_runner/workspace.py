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
    """The built-in tiny base of a family; named with its format version, so a kr that ships a new
    tiny base builds it beside the old one (which runs trained on it still name) instead of over it."""
    from .tiny.base import FORMAT_VERSION

    return bases_dir(root) / f"tiny-{family}-v{FORMAT_VERSION}"


def runs_dir(root: Path) -> Path:
    return root / "runs"


def caches_dir(root: Path) -> Path:
    return root / "caches"


def ledger_file(root: Path) -> Path:
    return root / "ledger.sqlite"


def recorded(root: Path) -> bool:
    """Has kr recorded anything here: a ledger, or run folders (from which a ledger can be rebuilt)?"""
    return ledger_file(root).is_file() or runs_dir(root).is_dir()


def require_recorded(root: Path) -> Path:
    """The root, for commands that read what kr recorded; such a command must not create a workspace (a
    mistyped --home would silently become a new, empty one). Raises BadInput when nothing is recorded."""
    if not recorded(root):
        from .errors import BadInput

        raise BadInput(f"no kr workspace at {root} (no ledger, no runs). Fix: pass the workspace kr wrote "
                       "to with --home (or KR_HOME); the first `kr run`, `kr sweep` or `kr demo` creates one")
    return root


def settled_ledger(root: Path):
    """The workspace's ledger (rebuilt from the run folders if its file is missing; read-only on a full or
    read-only disk, where nothing is settled), with runs whose kr process died settled first
    (run.reconcile), so no reader takes a dead run for a running one. Raises BadInput for a damaged ledger
    (naming `kr runs rebuild`), Failed when it cannot be created."""
    from .ledger import ACTIVE, open_ledger

    ledger = open_ledger(root)
    if not ledger.read_only and ledger.runs(status=list(ACTIVE)):  # only then is the (heavier) run module needed
        from .run import reconcile

        reconcile(root)
    return ledger
