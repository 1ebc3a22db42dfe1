"""Image probing: one read and one decode per image (verify + size + hashes + fingerprint), in parallel."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, replace as dc_replace
from pathlib import Path
from typing import Sequence


@dataclass(frozen=True)
class ImageProbe:
    size: tuple[int, int] | None = None  # from the header, as sd-scripts' imagesize reads it
    format: str | None = None
    mode: str | None = None
    bytes: int = 0
    sha256: str = ""
    error: str | None = None  # "unreadable" | "truncated" | "corrupt"
    detail: str = ""
    dhash: int | None = None
    mean_rgb: tuple[float, float, float] | None = None
    exif_orientation: int | None = None
    transparent: bool = False


def probe_image(path: str | os.PathLike) -> ImageProbe:
    """Read the file once; hash it, open it from memory, decode it fully and fingerprint it."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return ImageProbe(error="unreadable", detail=exc.strerror or str(exc))
    digest = hashlib.sha256(data).hexdigest()
    from io import BytesIO

    from PIL import Image

    try:
        img = Image.open(BytesIO(data))
    except Exception as exc:  # UnidentifiedImageError, DecompressionBombError, ...
        return ImageProbe(bytes=len(data), sha256=digest, error="unreadable", detail=short_message(exc))
    header = ImageProbe(size=img.size, format=img.format, mode=img.mode, bytes=len(data), sha256=digest)
    orientation = _exif_orientation(img)
    if img.format in ("JPEG", "MPO"):
        # DCT scaling decodes every MCU (so truncation still shows) at a fraction of the cost.
        img.draft(img.mode, (max(1, img.size[0] // 8), max(1, img.size[1] // 8)))
    try:
        img.load()  # ImageFile.LOAD_TRUNCATED_IMAGES stays False: a short file must fail here
    except Exception as exc:
        kind = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        return dc_replace(header, error=kind, detail=short_message(exc), exif_orientation=orientation)
    try:
        dhash, mean_rgb = _fingerprint(img)
    except Exception:  # an exotic mode Pillow cannot convert: skip the near-duplicate check for it
        dhash, mean_rgb = None, None
    return dc_replace(
        header, dhash=dhash, mean_rgb=mean_rgb, exif_orientation=orientation, transparent=_has_transparency(img)
    )


def short_message(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _exif_orientation(img) -> int | None:
    try:
        value = img.getexif().get(0x0112)
    except Exception:
        return None
    return int(value) if isinstance(value, int) and value not in (0, 1) else None


def _fingerprint(img) -> tuple[int, tuple[float, float, float]]:
    """dHash (64 bits of horizontal gradients on a 9x8 grey thumbnail) + mean colour, as sd-scripts sees it (RGB)."""
    import numpy as np
    from PIL import Image

    factor = min(img.size) // 64
    small = img.reduce(factor) if factor > 1 and img.mode in ("RGB", "RGBA", "L", "LA") else img  # cheap box shrink first
    thumb = (small if small.mode == "RGB" else small.convert("RGB")).resize((32, 32), Image.Resampling.BOX)
    grey = np.asarray(thumb.convert("L").resize((9, 8), Image.Resampling.BOX), dtype=np.int16)
    bits = (grey[:, 1:] > grey[:, :-1]).flatten()
    dhash = int.from_bytes(np.packbits(bits).tobytes(), "big")
    mean = np.asarray(thumb, dtype=np.float64).reshape(-1, 3).mean(axis=0)
    return dhash, (round(float(mean[0]), 2), round(float(mean[1]), 2), round(float(mean[2]), 2))


def _has_transparency(img) -> bool:
    if img.mode in ("RGBA", "LA", "PA"):
        alpha = img.getchannel("A")
    elif img.mode == "P" and "transparency" in img.info:
        alpha = img.convert("RGBA").getchannel("A")
    else:
        return False
    return alpha.getextrema()[0] < 255


def probe_images(paths: Sequence[Path], workers: int | None = None) -> list[ImageProbe]:
    """probe_image over many files; two or more processes once there are enough images to pay for them."""
    workers = _worker_count(workers, len(paths))
    names = [str(p) for p in paths]
    if workers <= 1:
        return [probe_image(p) for p in names]
    from concurrent.futures import ProcessPoolExecutor

    chunk = max(1, len(names) // (workers * 8))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(probe_image, names, chunksize=chunk))


def _worker_count(requested: int | None, jobs: int) -> int:
    if requested is not None:
        return max(1, requested)
    if jobs < 48:  # a process pool costs ~0.1 s to start; small datasets decode faster than that
        return 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, usable))


def image_header(path: Path) -> tuple[str | None, tuple[int, int] | None]:
    """(format, size) from the header only; (None, None) when it does not open."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.format, img.size
    except Exception:
        return None, None
