"""How sd-scripts finds and reads a caption (contract §2.3.3, §2.4): `<stem><caption_extension>` beside
the image (with the face-crop fallback); only its first line is used (all lines with wildcards); a
0-byte file makes it assert, a non-UTF-8 one crashes it; prefix/suffix and keep_tokens splitting."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

CLIP_CHUNK = 75  # CLIP's 77 positions minus BOS/EOS: the token limit when max_token_length is unset


def caption_file_for(root: Path, image_name: str, caption_ext: str, file_set: set[str]) -> Path | None:
    """sd-scripts' read_caption: `<stem><ext>`, then the face-crop fallback (stem without its last 4 `_` parts)."""
    stem = os.path.splitext(image_name)[0]
    candidates = [stem + caption_ext]
    parts = stem.split("_")
    if len(parts) >= 5:
        candidates.append("_".join(parts[:-4]) + caption_ext)
    for name in candidates:
        if name in file_set:
            return root / name
    return None


@dataclass(frozen=True)
class CaptionRead:
    path: Path | None
    raw: bytes = b""
    text: str | None = None  # whole decoded file
    caption: str | None = None  # what sd-scripts uses (first line, or all lines with wildcards)
    error: str | None = None  # "empty" | "not-utf8" | "unreadable"
    bad_offset: int | None = None
    extra_lines: int = 0  # non-blank lines after the first that are ignored


def read_caption(path: Path | None, *, enable_wildcard: bool = False) -> CaptionRead:
    if path is None:
        return CaptionRead(None)
    try:
        raw = path.read_bytes()
    except OSError:
        return CaptionRead(path, error="unreadable")
    if not raw:
        return CaptionRead(path, raw, error="empty")
    try:
        text = raw.decode("utf-8")  # sd-scripts opens with encoding="utf-8": a BOM stays in the text
    except UnicodeDecodeError as exc:
        return CaptionRead(path, raw, error="not-utf8", bad_offset=exc.start)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")  # universal newlines, like "rt"
    if enable_wildcard:
        caption = "\n".join(line.strip() for line in lines if line.strip())
        extra = 0
    else:
        caption = lines[0].strip()
        extra = sum(1 for line in lines[1:] if line.strip())
    return CaptionRead(path, raw, text, caption, extra_lines=extra)


def processed_caption(caption: str, settings) -> str:
    """The caption after sd-scripts adds prefix/suffix (joined with a space), before shuffling."""
    if settings.caption_prefix:
        caption = settings.caption_prefix + " " + caption
    if settings.caption_suffix:
        caption = caption + " " + settings.caption_suffix
    return caption


def split_fixed_tags(caption: str, settings) -> tuple[list[str], list[str], list[str]]:
    """(fixed, shuffled, fixed_suffix) tags, as sd-scripts splits them when shuffling."""
    separator = settings.caption_separator
    keep_sep = settings.keep_tokens_separator
    if keep_sep and keep_sep in caption:
        fixed_part, flex_part = caption.split(keep_sep, 1)
        suffix: list[str] = []
        if keep_sep in flex_part:
            flex_part, suffix_part = flex_part.split(keep_sep, 1)
            suffix = [t.strip() for t in suffix_part.split(separator) if t.strip()]
        fixed = [t.strip() for t in fixed_part.split(separator) if t.strip()]
        return fixed, [t.strip() for t in flex_part.split(separator) if t.strip()], suffix
    tags = [t.strip() for t in caption.strip().split(separator)]
    keep = settings.keep_tokens
    return (tags[:keep], tags[keep:], []) if keep > 0 else ([], tags, [])
