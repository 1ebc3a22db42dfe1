"""Atomic file writes: a temp file in the same folder, fsync, then rename. Readers never see half a file."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


def _temp_copy(path: Path, data: bytes | None = None, source: Path | None = None) -> str:
    """`data` (or the content of `source`, streamed) durably in a temp file beside `path`; the caller
    moves it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if source is not None:
                with open(source, "rb") as src:
                    shutil.copyfileobj(src, f, 1 << 20)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tmp


def _replace(tmp: str, path: Path) -> Path:
    try:
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    """Write data to path atomically (a temp file beside it, fsync, rename). Raises nothing of kr's (OSError passes)."""
    return _replace(_temp_copy(path, data), path)


def copy_file(source: Path, path: Path) -> Path:
    """A copy of `source` at `path`, streamed (LoRAs and bases can be large).

    Raises nothing of kr's (OSError passes).
    """
    return _replace(_temp_copy(path, source=source), path)


def write_text(path: Path, text: str) -> Path:
    """write_bytes of text. Raises nothing of kr's (OSError passes)."""
    return write_bytes(path, text.encode("utf-8"))


def write_new(path: Path, data: bytes) -> Path:
    """Like write_bytes, but never replaces an existing file (a hard link fails if the name exists).

    Raises nothing of kr's (OSError passes; FileExistsError when path exists).
    """
    tmp = _temp_copy(path, data)
    try:
        os.link(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def swap_dir(staging: Path, target: Path) -> bool:
    """Rename a fully built `staging` folder to `target`. An existing target is kept until the rename
    succeeded (and put back if it fails). Returns whether one was replaced.
    Raises nothing of kr's (OSError passes; the old folder is restored first).
    """
    if not target.exists() and not target.is_symlink():
        os.rename(staging, target)
        return False
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.kr-old-", dir=target.parent))
    os.rename(target, old / "previous")
    try:
        os.rename(staging, target)
    except OSError:
        os.rename(old / "previous", target)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
    return True
