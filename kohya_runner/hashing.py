"""File digests, read in 1 MiB blocks (LoRAs, bases and tarballs can be large)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path | str) -> str:
    """The sha256 hex digest of a file. Raises nothing of kr's (OSError passes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
