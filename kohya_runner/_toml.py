"""Reading TOML with the standard library's strict parser (tomllib; tomli before 3.11)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

TOMLDecodeError = tomllib.TOMLDecodeError


def loads_strict(text: str) -> dict[str, Any]:
    return tomllib.loads(text)


def load_file(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        return tomllib.load(f)
