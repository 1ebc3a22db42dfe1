"""Images: unreadable, truncated or corrupt files, wrong extensions, EXIF rotation, alpha, bit depth."""

from __future__ import annotations

import os

from .._findings import Finding, finding
from .._probe import ImageProbe
from .._scan import DatasetImage, DatasetScan

# Pillow's format name -> extensions that honestly describe the content.
FORMAT_EXTENSIONS = {
    "PNG": (".png",),
    "JPEG": (".jpg", ".jpeg"),
    "MPO": (".jpg", ".jpeg"),  # multi-picture JPEG from phones/cameras; decodes as JPEG
    "WEBP": (".webp",),
    "BMP": (".bmp",),
    "AVIF": (".avif",),
    "JXL": (".jxl",),
}


def image_findings(found: DatasetScan, probes: list[ImageProbe]) -> list[Finding]:
    out: list[Finding] = []
    for img, probe in zip(found.images, probes):
        out += _one_image_findings(img, probe)
    return out


def _one_image_findings(img: DatasetImage, probe: ImageProbe) -> list[Finding]:
    name = img.rel
    if probe.error == "unreadable":
        return [
            finding(
                "image-unreadable", name, f"{name} cannot be opened as an image ({probe.detail}); sd-scripts crashes on it.",
                "re-export it as PNG or JPEG, or remove it.",
            )
        ]
    out = []
    if probe.error:
        out.append(
            finding(
                f"image-{probe.error}", name,
                f"{name} does not decode fully ({probe.detail}); sd-scripts crashes when it loads it.",
                "re-export or re-download it, or remove it (and its caption).",
            )
        )
    ext = os.path.splitext(name)[1].lower()
    expected = FORMAT_EXTENSIONS.get(probe.format or "")
    if expected and ext not in expected:
        out.append(
            finding(
                "image-wrong-extension", name,
                f"{name} is a {probe.format} file with a '{ext}' extension; PIL reads it anyway, other tools may not.",
                f"rename it to {os.path.splitext(name)[0]}{expected[0]} (the caption keeps its name).",
            )
        )
    if probe.exif_orientation:
        out.append(
            finding(
                "image-exif-rotated", name,
                f"{name} has EXIF orientation {probe.exif_orientation}: viewers rotate it, sd-scripts trains it unrotated.",
                "apply the rotation to the pixels (e.g. re-save with the orientation baked in).",
            )
        )
    if probe.transparent:
        out.append(
            finding(
                "image-transparent", name,
                f"{name} has transparent pixels; sd-scripts drops alpha, so they train as their stored colour (often black).",
                "flatten it onto the background you want, or train with alpha_mask.",
            )
        )
    if probe.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        out.append(
            finding(
                "image-high-bit-depth", name,
                f"{name} is {probe.mode} (16-bit/float greyscale); the RGB conversion sd-scripts does clips it, often to white.",
                "convert it to 8-bit RGB.",
            )
        )
    return out
