"""Staging beside a destination, refusing to overwrite, and small JSON records: shared by install, env and bundle."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .. import atomic
from ..errors import BadInput


@contextmanager
def staging_dir(dest: Path, label: str = "new") -> Iterator[Path]:
    """A fresh folder beside dest (same filesystem, so the final rename is atomic), removed on the way out.

    Raises nothing of kr's.
    """
    import shutil
    import tempfile

    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.kr-{label}-", dir=dest.parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def refuse_existing(dest: Path, force: bool, what: str, fix: str) -> None:
    """Raises BadInput (what, where, fix) when dest exists and not force."""
    if (dest.exists() or dest.is_symlink()) and not force:
        raise BadInput(f"{what} already exists at {dest}. {fix}")


def write_json_atomic(path: Path, data: dict) -> None:
    """Sorted, indented JSON written atomically. Raises nothing of kr's."""
    atomic.write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def now_utc() -> str:
    """The current UTC time, ISO 8601 to the second. Raises nothing."""
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()
