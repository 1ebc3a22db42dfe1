"""Which image files sd-scripts reads (contract §2.3.3): directly in the folder (no recursion), these
extensions in all-lower or all-upper case (`.avif`/`.jxl` only with their PIL plugins), hidden files
skipped, sorted by name."""

from __future__ import annotations

from typing import Iterable, Sequence

# sd-scripts globs `*<ext>` for exactly these spellings, so `.Png` or `.JPEG ` are silently skipped.
BASE_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# Added by sd-scripts only when one of these modules imports in *its* environment.
PLUGIN_IMAGE_EXTENSIONS = {".avif": ("pillow_avif",), ".jxl": ("jxlpy", "pillow_jxl")}


def dotted(ext: str) -> str:
    return ext if not ext or ext.startswith(".") else "." + ext


def image_extensions(extra: Iterable[str] | None = None) -> tuple[str, ...]:
    """The extensions sd-scripts globs for. `extra` None detects the AVIF/JXL plugins here."""
    if extra is None:
        from importlib.util import find_spec

        extra = [ext for ext, modules in PLUGIN_IMAGE_EXTENSIONS.items() if any(_has_module(m, find_spec) for m in modules)]
    lowered = list(BASE_IMAGE_EXTENSIONS) + [dotted(e).lower() for e in extra]
    return tuple(dict.fromkeys(lowered + [e.upper() for e in lowered]))


def _has_module(name: str, find_spec) -> bool:
    try:
        return find_spec(name) is not None
    except (ImportError, ValueError):
        return False



def is_sd_image(name: str, extensions: Sequence[str]) -> bool:
    return any(name.endswith(ext) for ext in extensions)
