"""sd-scripts cache files left beside the images (§7.6): reused silently, so reported."""

from __future__ import annotations

import os

from ...sdscripts.cache_files import cache_kind
from ...sdscripts.subset import DatasetSettings
from .._findings import Finding, finding
from .._scan import DatasetScan


def cache_findings(found: DatasetScan, settings: DatasetSettings) -> list[Finding]:
    """Group cache files by kind; one finding per kind names the first file and the count."""
    image_stems = {os.path.splitext(img.rel)[0] for img in found.images}
    groups: dict[str, list[str]] = {}
    for path in found.cache_files:
        kind = cache_kind(path.name, image_stems)
        if kind:
            groups.setdefault(kind, []).append(path.name)
    out = []
    why = (
        "sd-scripts reuses these silently, even for another resolution, bucket setting, VAE, base model or caption, "
        "and reads image sizes from cache file names. kr keeps its own caches in its workspace (per model and settings)."
    )
    for kind, names in groups.items():
        more = f" and {len(names) - 1} more" if len(names) > 1 else ""
        used = _cache_used_now(kind, settings)
        out.append(
            finding(
                "cache-stale", names[0], f"{kind} cache file {names[0]}{more} beside the images: {why}{used}",
                "delete them (kr never needs them) or move them out of the dataset folder.",
            )
        )
    return out


def _cache_used_now(kind: str, settings: DatasetSettings) -> str:
    latent = "latent" in kind and settings.cache_latents
    text = kind.startswith("SDXL text") and settings.cache_te_outputs
    if latent or text:
        return " With these settings sd-scripts would load them instead of encoding again."
    return ""
