"""sd-scripts' validation split (dataset keys `validation_split` / `validation_seed`, library/train_util.py
split_train_val): which images of a DreamBooth-style subset it trains on and which it holds out.

sd-scripts builds every dataset twice, a training copy and a validation copy, and splits each subset's
image list in both (regularization subsets are never split: all of them train, none validates):

- the list is `glob_images(image_dir)`: `*<ext>` for each extension, de-duplicated and sorted as strings;
- it is shuffled with `random.shuffle` after `random.seed(validation_seed)` (the global state is restored
  afterwards); with no validation_seed it shuffles with the global state as it is, so the training copy
  and the validation copy get *different* shuffles and may overlap — kr therefore always writes a seed;
- the training copy keeps the first `ceil(n * (1 - split))` images, the validation copy the last
  `round(n * split)` (from index `n - round(n * split)`). The two counts are rounded differently, so they
  can add up to more than n (an image both trained on and held out: n=6, split=0.25 gives 5 + 2) or the
  validation part can be empty (n=3, split=0.1);
- a subset with no image at all makes sd-scripts crash (`zip(*[])` unpacks to nothing).

A `random.Random(seed)` instance shuffles exactly like the global `random` after `random.seed(seed)` (the
global functions are the bound methods of one hidden Random instance), so this module never touches the
global state.
"""

from __future__ import annotations

import glob
import math
import os
import random
from pathlib import Path
from typing import Iterable

from .images import image_extensions


def split(paths: list[str], validation_split: float, seed: int) -> tuple[list[str], list[str]]:
    """(training part, validation part) of one subset's image list, exactly as sd-scripts' split_train_val
    gives them to the training and the validation copy of the dataset for `validation_seed = seed`.
    Raises ValueError for an empty list, as sd-scripts does."""
    shuffled = list(paths)
    if not shuffled:
        raise ValueError("not enough values to unpack (expected 2, got 0)")  # sd-scripts: paths, sizes = zip(*[])
    random.Random(seed).shuffle(shuffled)
    train_end = math.ceil(len(shuffled) * (1 - validation_split))
    validation_start = len(shuffled) - round(len(shuffled) * validation_split)
    return shuffled[0:train_end], shuffled[validation_start:]


def sizes(count: int, validation_split: float) -> tuple[int, int]:
    """(training images, validation images) of a subset of `count` images; they may overlap (see above)."""
    if count <= 0:
        return 0, 0
    return math.ceil(count * (1 - validation_split)), round(count * validation_split)


def glob_images(image_dir: str | os.PathLike, extra_extensions: Iterable[str] | None = None) -> list[str]:
    """sd-scripts' glob_images(image_dir, "*"): the image paths it lists, sorted as strings. `extra_extensions`
    are the plugin extensions (`.avif`, `.jxl`) of the trainer's environment; None detects them here."""
    directory = str(image_dir)
    found: set[str] = set()
    for ext in image_extensions(extra_extensions):
        found.update(glob.glob(os.path.join(glob.escape(directory), "*" + ext)))
    return sorted(found)


def held_out(image_dir: str | os.PathLike, validation_split: float, seed: int,
             extra_extensions: Iterable[str] | None = None) -> list[Path]:
    """The images sd-scripts holds out of training for `validation_split` / `validation_seed = seed`, in its
    order. Only the file names matter: the same names in another folder (kr's cache of links) are split
    alike. Empty for a split of 0 (or below) and for a folder without images."""
    if validation_split <= 0.0:
        return []
    paths = glob_images(image_dir, extra_extensions)
    if not paths:
        return []
    return [Path(p) for p in split(paths, validation_split, seed)[1]]


def clean_split(count: int, near: float) -> float | None:
    """The two-decimal validation_split nearest `near` whose parts of `count` images neither overlap nor leave
    one empty; None when there is none (fewer than 2 images)."""
    fits = [k / 100 for k in range(1, 100) if _clean(count, k / 100)]
    return min(fits, key=lambda s: (abs(s - near), s)) if fits else None


def _clean(count: int, validation_split: float) -> bool:
    train, held = sizes(count, validation_split)
    return train >= 1 and held >= 1 and train + held == count
