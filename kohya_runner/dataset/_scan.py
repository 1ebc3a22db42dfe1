"""Scan: which files in a dataset folder sd-scripts would use, and what lies around them (no file is opened)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import BadInput
from ..sdscripts.cache_files import is_cache_file
from ..sdscripts.captions import caption_file_for
from ..sdscripts.images import BASE_IMAGE_EXTENSIONS, image_extensions, is_sd_image

# Image files people drop into datasets that sd-scripts never reads.
OTHER_IMAGE_EXTENSIONS = frozenset(
    ".gif .tif .tiff .heic .heif .jfif .jpe .avif .jxl .psd .tga .ico .jp2 .exr .dng .svg".split()
)
CAPTION_LIKE_EXTENSIONS = (".txt", ".caption", ".tags", ".cap", ".text")


@dataclass(frozen=True)
class DatasetImage:
    path: Path
    rel: str
    caption_path: Path | None  # the caption file sd-scripts would read, if any

    @property
    def caption_rel(self) -> str | None:
        return self.caption_path.name if self.caption_path else None


@dataclass(frozen=True)
class DatasetScan:
    dir: Path
    images: tuple[DatasetImage, ...]
    ignored_images: tuple[Path, ...]  # image files sd-scripts skips (format or extension spelling)
    caption_files: tuple[Path, ...]  # files with the configured caption extension
    other_caption_files: tuple[Path, ...]  # caption-like files with another extension
    cache_files: tuple[Path, ...]  # sd-scripts caches beside the images
    subdirs: tuple[Path, ...]
    image_extensions: tuple[str, ...]
    caption_extension: str

    def to_dict(self) -> dict:
        return {
            "dir": str(self.dir),
            "images": [img.rel for img in self.images],
            "captions": {img.rel: img.caption_rel for img in self.images},
            "ignored_images": [p.name for p in self.ignored_images],
            "cache_files": [p.name for p in self.cache_files],
            "subdirs": [p.name for p in self.subdirs],
            "image_extensions": list(self.image_extensions),
            "caption_extension": self.caption_extension,
        }


def scan(settings) -> DatasetScan:
    """List the folder once and sort its files into what sd-scripts would read and what it skips
    (`settings` a DatasetSettings). Raises BadInput for a missing folder or a file in its place."""
    root = settings.dir
    if not root.exists():
        raise BadInput(f"dataset folder not found: {root}. Check the path (kr spec key dataset.dir).")
    if not root.is_dir():
        raise BadInput(f"dataset path is not a folder: {root}. Point it at the folder that holds the images.")
    extensions = image_extensions(settings.extra_image_extensions)
    files, subdirs = list_dir(root)
    images = [name for name in files if is_sd_image(name, extensions)]
    file_set = set(files)
    caption_ext = settings.caption_extension
    return DatasetScan(
        dir=root,
        images=tuple(DatasetImage(root / n, n, caption_file_for(root, n, caption_ext, file_set)) for n in images),
        ignored_images=tuple(root / n for n in files if _is_ignored_image(n, extensions)),
        caption_files=tuple(root / n for n in files if caption_ext and n.endswith(caption_ext)),
        other_caption_files=tuple(
            root / n for n in files if _caption_like_ext(n) and not (caption_ext and n.endswith(caption_ext))
        ),
        cache_files=tuple(root / n for n in files if is_cache_file(n)),
        subdirs=tuple(root / d for d in subdirs),
        image_extensions=extensions,
        caption_extension=caption_ext,
    )


def list_dir(root: Path) -> tuple[list[str], list[str]]:
    files, dirs = [], []
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue  # glob's `*` never matches hidden names (also skips our backup folder)
            (dirs if entry.is_dir() else files).append(entry.name)
    return sorted(files), sorted(dirs)


def _is_ignored_image(name: str, extensions: Sequence[str]) -> bool:
    if is_sd_image(name, extensions):
        return False
    ext = os.path.splitext(name)[1].lower()
    return ext in BASE_IMAGE_EXTENSIONS or ext in OTHER_IMAGE_EXTENSIONS or ext in (e.lower() for e in extensions)


def _caption_like_ext(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in CAPTION_LIKE_EXTENSIONS


