"""Thumbnails for the board's grids: a large sample is shown as a JPEG of THUMB_SIDE, made once per image
file (keyed by its path, size and time) into the workspace's caches, so neither a second visit nor a
restarted board pays for it again. A run's page warms its thumbnails in the background while the
browser is still reading the page."""

from __future__ import annotations

import hashlib
import io
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

THUMB_SIDE = 320  # CSS shows grid cells at up to 192 px; 320 stays sharp on a 1.5× screen
WORKERS = 2  # Pillow decodes and resizes outside the GIL


class Thumbnails:
    def __init__(self, folder: Path):
        self.folder = folder
        self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="kr-thumbs")
        self._lock = threading.Lock()
        self._making: dict[Path, Future] = {}
        self._known: dict[tuple, Path | None] = {}  # (image, mtime, size) → its thumbnail's path, or None: small

    def get(self, image: Path) -> Path | bytes:
        """The image itself when it is small enough; else its thumbnail: the cached file, or the bytes just
        made (also when the cache cannot be written)."""
        target = self._target(image)
        if target is None or target.is_file():
            return image if target is None else target
        return self._make(image, target).result()

    def warm(self, images: list[Path]) -> None:
        """Start making the thumbnails these images lack (a page that shows them is on its way); the
        looking happens in the background too."""
        threading.Thread(target=self._warm, args=(list(images),), daemon=True, name="kr-thumbs-warm").start()

    def _warm(self, images: list[Path]) -> None:
        for image in images:
            try:
                target = self._target(image)
            except OSError:
                continue
            if target is not None and not target.is_file():
                self._make(image, target)

    def _target(self, image: Path) -> Path | None:
        """Where the image's thumbnail goes, or None when the image is small enough to be its own."""
        stat = image.stat()
        known = (str(image), stat.st_mtime_ns, stat.st_size)
        if known not in self._known:
            key = hashlib.sha1(f"{image}\0{stat.st_mtime_ns}\0{stat.st_size}\0{THUMB_SIDE}".encode()).hexdigest()
            self._known[known] = None if _side(image) <= THUMB_SIDE else self.folder / key[:2] / f"{key}.jpg"
        return self._known[known]

    def _make(self, image: Path, target: Path) -> Future:
        with self._lock:
            future = self._making.get(target)
            if future is None:
                future = self._making[target] = self._pool.submit(self._write, image, target)
                future.add_done_callback(lambda _: self._forget(target))
        return future

    def _forget(self, target: Path) -> None:
        with self._lock:
            self._making.pop(target, None)

    def _write(self, image: Path, target: Path) -> bytes:
        from PIL import Image

        from .. import atomic

        with Image.open(image) as picture:
            picture = picture.convert("RGB")
            picture.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)
            buffer = io.BytesIO()
            picture.save(buffer, "JPEG", quality=88)
        data = buffer.getvalue()
        try:
            atomic.write_bytes(target, data)
        except OSError:  # a full or read-only workspace: serve it all the same, cache nothing
            pass
        return data


def _side(image: Path) -> int:
    """The larger side, from the file's header only."""
    from PIL import Image

    with Image.open(image) as picture:
        return max(picture.size)
