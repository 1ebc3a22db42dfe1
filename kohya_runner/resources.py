"""Where kr's shipped data lives: templates/, presets/ and vendor/.

In a source checkout (and an editable install) they sit beside the package; in a wheel they are
packaged inside it as kohya_runner/templates etc.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


@lru_cache(maxsize=None)
def data_dir(name: str) -> Path:
    for candidate in (PACKAGE_DIR / name, PACKAGE_DIR.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"kr's {name}/ folder is missing from the installation ({PACKAGE_DIR})")


def source_checkout() -> Path | None:
    """The repository root when kr runs from a checkout (not from a wheel), else None."""
    root = PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").is_file() and (root / "vendor").is_dir() else None
