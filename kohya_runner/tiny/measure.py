"""Simple image measurements that say whether the tiny base drew what it was asked, and in what look.

    largest_blob(image)       -> Blob(colour="red", shape="circle", fill_ratio=0.78, area=0.21) or None
    style_stats(image)        -> {"edges": .., "dark": .., "saturation": .., "lightness": ..}
    style_distance(a, b)      -> how far apart two groups of images are on those statistics
    style_progress(before, after, plain, styled)
                              -> how far `after` moved from `before` toward a style, as a share of
                                 the way from `plain` to `styled` renderings (0: not at all, 1: all of it)
    style_direction(before, after, plain, styled)
                              -> the cosine between that move and the style's direction

Deliberately crude (numpy only, no learned features): they have to work on 64 px samples of a
1.6 M-parameter model, and a test that fails should be explainable by looking at the picture.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..imagestats import (LOOK_NAMES, STAT_NAMES, _array, background_colour, look_vector, mean_stats, palette,
                          style_distance, style_stats)
from .world import COLOURS

# fill ratio (blob area / bounding-box area) of each measurable shape, drawn flat at 64 px
SHAPE_FILL = {"square": 0.95, "circle": 0.78, "triangle": 0.50, "star": 0.38}
FOREGROUND_DISTANCE = 60  # RGB distance from the background colour that makes a pixel "object"

# the look statistics live in kohya_runner.imagestats (the scores use them too); still importable from here
__all__ = ["LOOK_NAMES", "STAT_NAMES", "Blob", "background_colour", "largest_blob", "look_vector", "mean_stats",
           "palette", "style_direction", "style_distance", "style_progress", "style_stats"]


@dataclass(frozen=True)
class Blob:
    colour: str  # nearest of world.COLOURS
    shape: str  # nearest of SHAPE_FILL by fill ratio
    fill_ratio: float
    area: float  # share of the image


def largest_blob(image, min_area: float = 0.01) -> Blob | None:
    """The largest 4-connected region that stands out from the background, or None."""
    import numpy as np

    pixels = _array(image)
    mask = np.linalg.norm(pixels - background_colour(pixels), axis=2) > FOREGROUND_DISTANCE
    region = _largest_component(mask)
    if region is None or region.sum() < min_area * mask.size:
        return None
    ys, xs = np.nonzero(region)
    box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
    fill = float(region.sum() / box)
    median = np.median(pixels[region], axis=0)
    colour = min(COLOURS, key=lambda name: _hue_distance(median, COLOURS[name]))
    shape = min(SHAPE_FILL, key=lambda name: abs(SHAPE_FILL[name] - fill))
    return Blob(colour, shape, fill, float(region.sum() / mask.size))


def _hue_distance(rgb, reference) -> float:
    import colorsys

    h1, _, s1 = colorsys.rgb_to_hls(*(float(c) / 255 for c in rgb))
    h2, _, _ = colorsys.rgb_to_hls(*(c / 255 for c in reference))
    delta = abs(h1 - h2)
    return min(delta, 1 - delta) + (0.5 if s1 < 0.2 else 0.0)  # greys match no colour well


def _largest_component(mask):
    import numpy as np

    labels = np.zeros(mask.shape, dtype=np.int32)
    best, best_size, current = None, 0, 0
    height, width = mask.shape
    for start in zip(*np.nonzero(mask)):
        if labels[start]:
            continue
        current += 1
        stack, size = [start], 0
        labels[start] = current
        while stack:
            y, x = stack.pop()
            size += 1
            for ny, nx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
                if 0 <= ny < height and 0 <= nx < width and mask[ny, nx] and not labels[ny, nx]:
                    labels[ny, nx] = current
                    stack.append((ny, nx))
        if size > best_size:
            best, best_size = current, size
    return None if best is None else labels == best


def style_progress(before, after, plain, styled) -> float:
    """The move from `before` to `after` (samples at the same seeds) projected on the way from `plain`
    to `styled` (the same scenes rendered both ways), as a share of that way."""
    import numpy as np

    way = look_vector(styled) - look_vector(plain)
    move = look_vector(after) - look_vector(before)
    return float(np.dot(move, way) / np.dot(way, way))


def style_direction(before, after, plain, styled) -> float:
    """The cosine between the move from `before` to `after` and the way from `plain` to `styled`."""
    import numpy as np

    way = look_vector(styled) - look_vector(plain)
    move = look_vector(after) - look_vector(before)
    return float(np.dot(move, way) / (np.linalg.norm(move) * np.linalg.norm(way) + 1e-12))
