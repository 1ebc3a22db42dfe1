"""Helpers for the dataset tests: small, distinct, real images and settings sized for them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from kohya_runner.dataset import DatasetSettings

CAPTION = "in the style of TOK, a man thinking"


def pixels(seed: int, size=(128, 128)) -> np.ndarray:
    """A smooth random field: distinct seeds give unrelated perceptual hashes."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray((rng.random((12, 12, 3)) * 255).astype(np.uint8))
    return np.asarray(coarse.resize(size, Image.Resampling.BILINEAR))


def make_image(path: Path, seed: int = 0, size=(128, 128), fmt: str | None = None, **save) -> Path:
    Image.fromarray(pixels(seed, size)).save(path, format=fmt, **save)
    return path


def make_dataset(root: Path, n: int = 3, caption_text: str = CAPTION, size=(128, 128)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        make_image(root / f"img{i}.png", seed=100 + i, size=size)
        (root / f"img{i}.txt").write_text(f"{caption_text} {i}", encoding="utf-8")
    return root


def settings(root: Path, **overrides) -> DatasetSettings:
    values = dict(
        dir=root, family="sd15", trigger="TOK", resolution=128, min_bucket_reso=64, max_bucket_reso=256, bucket_reso_steps=64
    )
    values.update(overrides)
    return DatasetSettings(**values)


def findings(report, code: str) -> list[str | None]:
    return [f.file for f in report.findings if f.code == code]


def only(report, code: str):
    matches = report.find(code)
    assert len(matches) == 1, [f.to_dict() for f in report.findings]
    return matches[0]
