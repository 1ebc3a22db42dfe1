"""stats(): counts, formats, resolutions, buckets, caption lengths and frequent words of a dataset."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace as dc_replace
from pathlib import Path
from typing import Iterable

from ..sdscripts.buckets import BucketTable
from ..sdscripts.captions import processed_caption, read_caption
from ..sdscripts.subset import DatasetSettings
from ._probe import image_header
from ._scan import DatasetImage, scan
from ._tokens import TokenCounter
from .checks.buckets import bucket_table_or_none


STOPWORDS = frozenset(
    "a an the of in on at to and or with by for from is are be as it its this that into over under".split()
)


@dataclass
class DatasetStats:
    dir: Path
    images: int
    captions: int
    missing_captions: int
    image_bytes: int
    formats: dict[str, int]
    resolutions: dict[str, int]  # "WxH" -> count, most common first
    orientations: dict[str, int]
    buckets: BucketTable | None
    caption_words: dict[str, float]
    caption_tokens: dict
    top_words: list[tuple[str, int]]

    def to_dict(self) -> dict:
        return {
            "schema": "kr.dataset-stats/1",
            "dir": str(self.dir),
            "counts": {
                "images": self.images,
                "captions": self.captions,
                "missing_captions": self.missing_captions,
                "image_bytes": self.image_bytes,
            },
            "formats": self.formats,
            "resolutions": self.resolutions,
            "orientations": self.orientations,
            "buckets": self.buckets.to_dict() if self.buckets else None,
            "caption_words": self.caption_words,
            "caption_tokens": self.caption_tokens,
            "top_words": [{"word": w, "count": n} for w, n in self.top_words],
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)


def stats(dir: Path, settings: DatasetSettings | None = None, *, tokenizer_dir: Path | None = None, top: int = 20) -> DatasetStats:
    """Counts, formats, resolutions, buckets, caption lengths and frequent words. Reads image headers only.
    Raises BadInput for a missing folder."""
    settings = settings_for(dir, settings)
    found = scan(settings)
    headers = [image_header(img.path) for img in found.images]
    sizes = [size for _, size in headers if size]
    captions = [_usable_caption(img, settings) for img in found.images]
    texts = [c for c in captions if c is not None]
    counter = TokenCounter(tokenizer_dir, settings.token_limit)
    tokens = [counter.count(processed_caption(t, settings), always=True) for t in texts]
    return DatasetStats(
        dir=found.dir,
        images=len(found.images),
        captions=len(texts),
        missing_captions=sum(1 for img in found.images if img.caption_path is None),
        image_bytes=sum(_file_size(img.path) for img in found.images),
        formats=_histogram(fmt or "unreadable" for fmt, _ in headers),
        resolutions=_histogram(f"{w}x{h}" for w, h in sizes),
        orientations=_histogram("square" if w == h else "landscape" if w > h else "portrait" for w, h in sizes),
        buckets=bucket_table_or_none(sizes, settings),
        caption_words=_summary([len(t.split()) for t in texts]),
        caption_tokens={**_summary(tokens), "method": counter.method, "limit": settings.token_limit},
        top_words=_top_words(texts, top),
    )


def settings_for(dir: Path, settings: DatasetSettings | None) -> DatasetSettings:
    if settings is None:
        return DatasetSettings(dir=Path(dir))
    return settings if Path(dir) == settings.dir else dc_replace(settings, dir=Path(dir))


def _usable_caption(img: DatasetImage, settings: DatasetSettings) -> str | None:
    read = read_caption(img.caption_path, enable_wildcard=settings.enable_wildcard)
    return None if read.path is None or read.error else read.caption


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _histogram(values: Iterable[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _summary(values: list[int]) -> dict[str, float]:
    if not values:
        return {"min": 0, "mean": 0.0, "max": 0}
    return {"min": min(values), "mean": round(sum(values) / len(values), 2), "max": max(values)}


def _top_words(texts: list[str], top: int) -> list[tuple[str, int]]:
    counts: dict[str, int] = {}
    for text in texts:
        for word in re.findall(r"[^\W\d_][\w'-]*", text.lower()):
            if word not in STOPWORDS:
                counts[word] = counts.get(word, 0) + 1
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
