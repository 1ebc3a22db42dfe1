"""sd-scripts' aspect-ratio buckets (contract §2.6; model_util.make_bucket_resolutions and BucketManager):
which bucket every image lands in, and how many items and batches each bucket holds."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from ..errors import BadInput

FAMILY_BUCKET_STEP_DIVISOR = {"sd15": 64, "sdxl": 32}  # verify_bucket_reso_steps(64 | 32)


def bucket_resolutions(resolution: tuple[int, int], min_size: int, max_size: int, step: int) -> list[tuple[int, int]]:
    """The predefined buckets: the square, plus for every width from min to max in `step`s the tallest
    height (a multiple of `step`, at most max) whose area stays within W*H, in both orientations."""
    max_area = resolution[0] * resolution[1]
    side = int(math.sqrt(max_area) // step) * step
    resos = {(side, side)}
    for width in range(min_size, max_size + 1, step):
        height = min(max_size, int((max_area // width) // step) * step)
        if height >= min_size:
            resos.add((width, height))
            resos.add((height, width))
    return sorted(resos)


def adjust_bucket_bounds(min_reso: int, max_reso: int, step: int) -> tuple[int, int]:
    """sd-scripts rounds min_bucket_reso down and max_bucket_reso up to a multiple of the step."""
    if min_reso % step:
        min_reso -= min_reso % step
    if max_reso % step:
        max_reso += step - max_reso % step
    return min_reso, max_reso


@dataclass(frozen=True)
class BucketAssignment:
    size: tuple[int, int]
    bucket: tuple[int, int]
    resized: tuple[int, int]  # the size the image is scaled to before the centre crop
    ar_error: float

    @property
    def scale(self) -> float:
        return self.resized[0] / self.size[0] if self.size[0] else 0.0


@dataclass(frozen=True)
class Bucket:
    resolution: tuple[int, int]
    images: int
    items: int  # images x repeats, as sd-scripts logs "count"
    batches: int
    last_batch: int  # size of the last batch; < batch_size means a partial batch

    def to_dict(self) -> dict:
        return {
            "resolution": list(self.resolution),
            "images": self.images,
            "items": self.items,
            "batches": self.batches,
            "last_batch": self.last_batch,
        }


@dataclass(frozen=True)
class BucketTable:
    resolution: tuple[int, int]
    enable_bucket: bool
    bucket_no_upscale: bool
    min_bucket_reso: int
    max_bucket_reso: int
    bucket_reso_steps: int
    batch_size: int
    num_repeats: int
    predefined: tuple[tuple[int, int], ...]
    assignments: tuple[BucketAssignment, ...]
    buckets: tuple[Bucket, ...]

    @property
    def items(self) -> int:
        return sum(b.items for b in self.buckets)

    @property
    def batches(self) -> int:
        return sum(b.batches for b in self.buckets)

    @property
    def partial_batches(self) -> int:
        return sum(1 for b in self.buckets if b.last_batch < self.batch_size)

    @property
    def bucket_items(self) -> list[int]:
        return [b.items for b in self.buckets]

    @property
    def mean_ar_error(self) -> float:
        if not self.assignments:
            return 0.0
        return sum(abs(a.ar_error) for a in self.assignments) / len(self.assignments)

    def to_dict(self) -> dict:
        return {
            "resolution": list(self.resolution),
            "enable_bucket": self.enable_bucket,
            "bucket_no_upscale": self.bucket_no_upscale,
            "min_bucket_reso": self.min_bucket_reso,
            "max_bucket_reso": self.max_bucket_reso,
            "bucket_reso_steps": self.bucket_reso_steps,
            "batch_size": self.batch_size,
            "num_repeats": self.num_repeats,
            "predefined_buckets": len(self.predefined),
            "buckets": [b.to_dict() for b in self.buckets],
            "items": self.items,
            "batches": self.batches,
            "partial_batches": self.partial_batches,
            "mean_ar_error": round(self.mean_ar_error, 6),
        }


def bucket_table(
    sizes: Iterable[tuple[int, int]],
    *,
    resolution: tuple[int, int] | int,
    enable_bucket: bool = True,
    min_bucket_reso: int = 256,
    max_bucket_reso: int = 1024,
    bucket_reso_steps: int = 64,
    bucket_no_upscale: bool = False,
    num_repeats: int = 1,
    batch_size: int = 1,
) -> BucketTable:
    """Assign every image size to its bucket exactly as sd-scripts does, and count items and batches.

    Raises BadInput for bounds sd-scripts asserts on (min > resolution, max < resolution).
    """
    if isinstance(resolution, int):
        resolution = (resolution, resolution)
    resolution = (int(resolution[0]), int(resolution[1]))
    if batch_size < 1:
        raise BadInput(f"batch_size must be at least 1, got {batch_size}")
    sizes = [(int(w), int(h)) for w, h in sizes]
    if enable_bucket:
        min_bucket_reso, max_bucket_reso = adjust_bucket_bounds(min_bucket_reso, max_bucket_reso, bucket_reso_steps)
        problem = bucket_bounds_problem(resolution, min_bucket_reso, max_bucket_reso)
        if problem:
            raise BadInput(f"{problem[0]} Fix: {problem[1]}")
        predefined = [] if bucket_no_upscale else bucket_resolutions(resolution, min_bucket_reso, max_bucket_reso, bucket_reso_steps)
        assign = (
            (lambda s: _select_no_upscale(s, resolution, bucket_reso_steps))
            if bucket_no_upscale
            else _predefined_selector(predefined)
        )
    else:
        predefined = [resolution]  # one fixed bucket; images are not resized on this path
        assign = _predefined_selector(predefined)
    assignments = [assign(size) for size in sizes]
    return BucketTable(
        resolution=resolution,
        enable_bucket=enable_bucket,
        bucket_no_upscale=bucket_no_upscale and enable_bucket,
        min_bucket_reso=min_bucket_reso,
        max_bucket_reso=max_bucket_reso,
        bucket_reso_steps=bucket_reso_steps,
        batch_size=batch_size,
        num_repeats=num_repeats,
        predefined=tuple(predefined),
        assignments=tuple(assignments),
        buckets=_count_buckets(assignments, num_repeats, batch_size),
    )


def bucket_bounds_problem(resolution: tuple[int, int], min_reso: int, max_reso: int) -> tuple[str, str] | None:
    """(what, fix) when sd-scripts would assert on the bucket bounds, else None."""
    if min(resolution) < min_reso:
        return (
            f"min_bucket_reso {min_reso} is larger than the resolution's short side {min(resolution)}; sd-scripts asserts.",
            "lower min_bucket_reso or raise the resolution.",
        )
    if max(resolution) > max_reso:
        return (
            f"max_bucket_reso {max_reso} is smaller than the resolution's long side {max(resolution)}; sd-scripts asserts.",
            "raise max_bucket_reso or lower the resolution.",
        )
    return None


def _predefined_selector(predefined: list[tuple[int, int]]):
    ratios = [w / h for w, h in predefined]
    exact = set(predefined)

    def select(size: tuple[int, int]) -> BucketAssignment:
        width, height = size
        aspect = width / height
        if size in exact:
            reso = size  # an image already at a bucket size keeps it, even if another has the same ratio
        else:
            # first bucket (in sorted order) with the smallest aspect-ratio error, like numpy's argmin
            reso = predefined[min(range(len(ratios)), key=lambda i: abs(ratios[i] - aspect))]
        reso_aspect = reso[0] / reso[1]
        scale = reso[1] / height if aspect > reso_aspect else reso[0] / width
        resized = (int(width * scale + 0.5), int(height * scale + 0.5))
        return BucketAssignment(size, reso, resized, reso_aspect - aspect)

    return select


def _round_to_step(value: float, step: int) -> int:
    value = int(value + 0.5)
    return value - value % step


def _select_no_upscale(size: tuple[int, int], resolution: tuple[int, int], step: int) -> BucketAssignment:
    """bucket_no_upscale: shrink (keeping the aspect) only when larger than the area, then floor to the step."""
    width, height = size
    aspect = width / height
    max_area = resolution[0] * resolution[1]
    if width * height > max_area:
        resized_w = math.sqrt(max_area * aspect)
        resized_h = max_area / resized_w
        # round either side to the step; keep whichever rounding distorts the aspect ratio less
        w_rounded = _round_to_step(resized_w, step)
        h_for_w = _round_to_step(w_rounded / aspect, step)
        h_rounded = _round_to_step(resized_h, step)
        w_for_h = _round_to_step(h_rounded * aspect, step)
        err_w = abs(w_rounded / h_for_w - aspect) if h_for_w else math.inf
        err_h = abs(w_for_h / h_rounded - aspect) if h_rounded else math.inf
        if err_w < err_h:
            resized = (w_rounded, int(w_rounded / aspect + 0.5))
        else:
            resized = (int(h_rounded * aspect + 0.5), h_rounded)
    else:
        resized = size
    reso = (resized[0] - resized[0] % step, resized[1] - resized[1] % step)
    ar_error = (reso[0] / reso[1] - aspect) if reso[1] else math.inf
    return BucketAssignment(size, reso, resized, ar_error)


def _count_buckets(assignments: list[BucketAssignment], repeats: int, batch_size: int) -> tuple[Bucket, ...]:
    images: dict[tuple[int, int], int] = {}
    for a in assignments:
        images[a.bucket] = images.get(a.bucket, 0) + 1
    buckets = []
    for reso in sorted(images):
        items = images[reso] * max(repeats, 0)
        batches = math.ceil(items / batch_size)
        last = items - (batches - 1) * batch_size if batches else 0
        buckets.append(Bucket(reso, images[reso], items, batches, last))
    return tuple(buckets)


def bucket_table_for(sizes: Iterable[tuple[int, int]], settings) -> BucketTable:
    """bucket_table with a subset's settings (a DatasetSettings). Raises BadInput like bucket_table."""
    return bucket_table(
        sizes,
        resolution=settings.resolution,
        enable_bucket=settings.enable_bucket,
        min_bucket_reso=settings.min_bucket_reso,
        max_bucket_reso=settings.max_bucket_reso,
        bucket_reso_steps=settings.bucket_reso_steps,
        bucket_no_upscale=settings.bucket_no_upscale,
        num_repeats=settings.num_repeats,
        batch_size=settings.batch_size,
    )
