"""The cache files sd-scripts writes beside the images (contract §7.6): latent caches
`<stem>_<W>x<H>_<arch>.npz`, SDXL text-encoder caches `<stem>_te_outputs.npz` and the image-info
cache, the arrays each must hold, and which of them a spec makes it write to disk."""

from __future__ import annotations

import re

ARCH_SUFFIX = {"sdxl": "sdxl", "sd15": "sd"}
LATENT_CACHE_RE = re.compile(r"^(?P<stem>.+)_(?P<w>\d{4})x(?P<h>\d{4})_(?P<arch>sd|sdxl)\.npz$")
TE_CACHE_SUFFIX = "_te_outputs.npz"
INFO_CACHE_NAME = "metadata_cache.json"  # cache_info
LATENT_ARRAYS = ("latents", "original_size", "crop_ltrb")
TE_ARRAYS = ("hidden_state1", "hidden_state2", "pool2")


def latent_cache_pattern(stem: str, family: str) -> re.Pattern:
    """The latent cache file name of the image `stem` for `family`, any bucket size."""
    return re.compile(re.escape(stem) + r"_\d{4}x\d{4}_" + ARCH_SUFFIX[family] + r"\.npz$")


def te_cache_name(stem: str) -> str:
    return stem + TE_CACHE_SUFFIX


def latent_arrays(flip_aug: bool, alpha_mask: bool) -> tuple[str, ...]:
    """The arrays every latent cache file holds with these subset settings."""
    return LATENT_ARRAYS + (("latents_flipped",) if flip_aug else ()) + (("alpha_mask",) if alpha_mask else ())


def latents_on_disk(spec) -> bool:
    return bool(spec.precision.cache_latents_to_disk)


def te_on_disk(spec) -> bool:
    """Text-encoder outputs go to disk only for SDXL (train_network.py has no such option)."""
    return spec.model.family == "sdxl" and bool(spec.precision.cache_text_encoder_outputs_to_disk)


def te_cached(spec) -> bool:
    """Text-encoder outputs cached at all (in memory or on disk)."""
    p = spec.precision
    return bool(p.cache_text_encoder_outputs or p.cache_text_encoder_outputs_to_disk)


def latents_cached(spec) -> bool:
    p = spec.precision
    return bool(p.cache_latents or p.cache_latents_to_disk)


def is_cache_file(name: str) -> bool:
    return name == INFO_CACHE_NAME or name.endswith(".npz")


def cache_kind(name: str, image_stems: set[str]) -> str | None:
    """What a cache file beside the images is, for messages; None if it is not one."""
    if name == INFO_CACHE_NAME:
        return "image-info (cache_info)"
    if name.endswith(TE_CACHE_SUFFIX):
        return "SDXL text-encoder output"
    match = LATENT_CACHE_RE.match(name)
    if match:
        return f"{match.group('arch').upper()} latent"
    if name.endswith(".npz"):
        return "legacy latent" if name[:-4] in image_stems else "unknown .npz"
    return None
