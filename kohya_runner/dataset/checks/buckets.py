"""Buckets: images that do not fit, shrink to a tiny bucket, or are upscaled a lot (sdscripts.buckets)."""

from __future__ import annotations

import math

from ...errors import BadInput
from ...sdscripts.buckets import BucketAssignment, BucketTable, bucket_table_for
from ...sdscripts.subset import DatasetSettings
from .._findings import Finding, finding
from .._probe import ImageProbe
from .._scan import DatasetScan

UPSCALE_WARN_FACTOR = 1.5  # below this an upscale is mild enough not to mention
SMALL_BUCKET_AREA_FRACTION = 0.25  # bucket_no_upscale: warn when the bucket is < 1/4 of the target area


def table_for(found: DatasetScan, probes: list[ImageProbe], settings: DatasetSettings) -> BucketTable | None:
    return bucket_table_or_none([p.size for p in probes if p.size], settings)


def bucket_table_or_none(sizes: list[tuple[int, int]], settings: DatasetSettings) -> BucketTable | None:
    try:
        return bucket_table_for(sizes, settings)
    except BadInput:
        return None  # check() reports the settings themselves as bucket-settings


def bucket_findings(found: DatasetScan, probes: list[ImageProbe], table: BucketTable) -> list[Finding]:
    # the table holds one assignment per image whose size could be read, in scan order
    sized = [img.rel for img, probe in zip(found.images, probes) if probe.size]
    out = []
    for name, assignment in zip(sized, table.assignments):
        out += _one_bucket_findings(name, assignment, table)
    return out


def _one_bucket_findings(name: str, a: BucketAssignment, table: BucketTable) -> list[Finding]:
    w, h = a.size
    bw, bh = a.bucket
    if not table.enable_bucket:
        if a.size == table.resolution:
            return []
        too = "larger" if w >= bw and h >= bh else "smaller"
        return [
            finding(
                "image-size-mismatch", name,
                f"{name} is {w}x{h} but bucketing is off, so it must be exactly {bw}x{bh}; sd-scripts asserts "
                f"('image {'too large' if too == 'larger' else 'size is small'}').",
                "set enable_bucket=true (recommended), or resize the image.",
            )
        ]
    if bw < table.bucket_reso_steps or bh < table.bucket_reso_steps:
        return [
            finding(
                "image-too-small", name,
                f"{name} is {w}x{h}: with bucket_no_upscale its bucket would be {bw}x{bh}, smaller than one step of "
                f"{table.bucket_reso_steps} px, and sd-scripts cannot train it.",
                "use a larger image, or turn bucket_no_upscale off.",
            )
        ]
    if table.bucket_no_upscale:
        target = table.resolution[0] * table.resolution[1]
        if bw * bh < SMALL_BUCKET_AREA_FRACTION * target:
            return [
                finding(
                    "image-small-bucket", name,
                    f"{name} is {w}x{h}; with bucket_no_upscale it trains at {bw}x{bh}, "
                    f"{bw * bh / target:.0%} of the {table.resolution[0]}x{table.resolution[1]} area.",
                    "use a larger image, or turn bucket_no_upscale off to scale it up.",
                )
            ]
        return []
    if a.scale > UPSCALE_WARN_FACTOR:
        return [
            finding(
                "image-upscaled", name,
                f"{name} is {w}x{h} and is upscaled {a.scale:.2f}x (to {a.resized[0]}x{a.resized[1]}) to fill its "
                f"{bw}x{bh} bucket; it will train soft.",
                f"use a source of at least {math.ceil(w * a.scale)}x{math.ceil(h * a.scale)}, or remove it.",
            )
        ]
    return []
