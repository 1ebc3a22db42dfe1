"""Image statistics of a look, numpy only: edge density, dark ink, saturation, lightness, palette, paper
colour. kr's style-distance score (kohya_runner.score) and the tiny world's measurements use them.

    style_stats(image)          -> {"edges": .., "dark": .., "saturation": .., "lightness": ..}
    style_distance(a, b)        -> how far apart two groups of images are on those statistics
    look_vector(images)         -> the mean statistics plus the paper colour, as a vector

Deliberately crude (no learned features, no model download): they must work on a 64 px sample and on a
1024 px one alike, and a score should be explainable by looking at the pictures.
"""

from __future__ import annotations

STAT_NAMES = ("edges", "dark", "saturation", "lightness")


def _array(image):
    import numpy as np

    return np.asarray(image.convert("RGB"), dtype=np.float32)


def background_colour(pixels):
    """The median colour of the image's one-pixel border."""
    import numpy as np

    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    return np.median(border, axis=0)


def style_stats(image) -> dict[str, float]:
    """Edge density, dark-ink fraction, mean saturation and mean lightness of one image (0..1 each)."""
    import numpy as np

    pixels = _array(image) / 255.0
    luma = pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    gradient = np.hypot(np.diff(luma, axis=0)[:, :-1], np.diff(luma, axis=1)[:-1, :])
    high, low = pixels.max(axis=2), pixels.min(axis=2)
    saturation = np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0.0)
    return {"edges": float((gradient > 0.16).mean()), "dark": float((luma < 0.3).mean()),
            "saturation": float(saturation.mean()), "lightness": float(luma.mean())}


def mean_stats(images) -> dict[str, float]:
    import numpy as np

    rows = [style_stats(image) for image in images]
    return {name: float(np.mean([row[name] for row in rows])) for name in STAT_NAMES}


def palette(images, levels: int = 4):
    """A normalised colour histogram (levels^3 bins) over all pixels of the images."""
    import numpy as np

    counts = np.zeros(levels ** 3)
    for image in images:
        bins = np.minimum((_array(image) / 256 * levels).astype(int), levels - 1)
        index = (bins[..., 0] * levels + bins[..., 1]) * levels + bins[..., 2]
        counts += np.bincount(index.ravel(), minlength=levels ** 3)
    return counts / counts.sum()


def style_distance(images_a, images_b) -> float:
    """Distance of two image groups: the statistics' mean gap plus half the palettes' L1 distance."""
    import numpy as np

    a, b = mean_stats(images_a), mean_stats(images_b)
    stats_gap = float(np.mean([abs(a[name] - b[name]) for name in STAT_NAMES]))
    return stats_gap + 0.5 * float(np.abs(palette(images_a) - palette(images_b)).sum()) / 2


LOOK_NAMES = STAT_NAMES + ("paper_r", "paper_g", "paper_b")


def look_vector(images):
    """The mean of `style_stats` plus the background colour (0..1 per channel) over images."""
    import numpy as np

    rows = []
    for image in images:
        stats = style_stats(image)
        paper = background_colour(_array(image)) / 255.0
        rows.append([stats[name] for name in STAT_NAMES] + [float(c) for c in paper])
    return np.mean(np.array(rows, dtype=np.float64), axis=0)
