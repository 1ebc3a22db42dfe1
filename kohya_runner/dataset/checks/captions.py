"""Captions: missing, empty, undecodable or multi-line files, orphans, trigger placement, token length."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

from ...sdscripts.captions import CaptionRead, processed_caption, read_caption, split_fixed_tags
from ...sdscripts.subset import DatasetSettings
from .._findings import Finding, finding
from .._scan import DatasetImage, DatasetScan
from .._tokens import TokenCounter


def _trigger_pattern(trigger: str) -> re.Pattern:
    # CLIP lowercases everything, so the match is case-insensitive; word edges keep "TOK" out of "TOKYO".
    return re.compile(r"(?<!\w)" + re.escape(trigger.strip()) + r"(?!\w)", re.IGNORECASE)


def caption_findings(found: DatasetScan, settings: DatasetSettings, counter: TokenCounter) -> tuple[list[Finding], int]:
    out: list[Finding] = []
    others = _other_caption_index(found)
    trigger = _trigger_pattern(settings.trigger) if settings.trigger else None
    max_tokens = 0
    used_captions = set()
    for img in found.images:
        read = read_caption(img.caption_path, enable_wildcard=settings.enable_wildcard)
        if img.caption_path:
            used_captions.add(img.caption_path.name)
        problems, used_text = _caption_file_findings(img, read, settings, others)
        out += problems
        if used_text is None:
            continue
        # with enable_wildcard one line is picked at random *after* prefix/suffix were added to the
        # whole text, so each line stands alone and the prefix reaches only the first
        variants = processed_caption(used_text, settings).split("\n")
        out += _first_finding(_trigger_findings(img, read, text, settings, trigger) for text in variants)
        tokens = max(counter.count(text) for text in variants)
        max_tokens = max(max_tokens, tokens)
        if tokens > settings.token_limit:
            out.append(_too_long_finding(img, read, tokens, settings, counter))
    out += _orphan_caption_findings(found, used_captions)
    out += _unused_trigger_finding(out, found, settings)
    return out, max_tokens


def _unused_trigger_finding(findings: list[Finding], found: DatasetScan, settings: DatasetSettings) -> list[Finding]:
    """One caption without the trigger is a choice (a plain contrast picture) or a slip, so a warning;
    no caption with it leaves the style without a word to call it by, so an error."""
    missing = sum(1 for f in findings if f.code == "trigger-missing")
    if not settings.trigger or not found.images or missing < len(found.images):
        return []
    return [finding("trigger-unused", None,
                    f"none of the {missing} captions contains the trigger '{settings.trigger}': the LoRA would "
                    f"learn the style with no word to call it by.",
                    f"add '{settings.trigger}' to the captions (`kr dataset caption DIR --prefix 'in the style of "
                    f"{settings.trigger}, '`), or set dataset.trigger to the word your captions use.")]


def _first_finding(groups: Iterable[list[Finding]]) -> list[Finding]:
    for group in groups:
        if group:
            return group[:1]
    return []


def _other_caption_index(found: DatasetScan) -> dict[str, Path]:
    """Name without its last extension -> caption-like file. Looked up only for images without a caption,
    by stem (`x.caption`) or by full image name (`x.png.txt`, which sd-scripts never matches)."""
    index: dict[str, Path] = {}
    for path in found.other_caption_files + found.caption_files:
        index.setdefault(os.path.splitext(path.name)[0], path)
    return index


def _caption_file_findings(
    img: DatasetImage, read: CaptionRead, settings: DatasetSettings, others: dict[str, Path]
) -> tuple[list[Finding], str | None]:
    """Findings about the caption file itself, and the caption text sd-scripts would use (None if it crashes)."""
    if read.path is None:
        return _missing_caption_findings(img, settings, others), (settings.class_tokens or "")
    cap = read.path.name
    if read.error == "empty":
        return [
            finding(
                "caption-empty", cap, f"{cap} is empty (0 bytes): sd-scripts stops with 'caption file is empty'.",
                f"write a caption into {cap} (e.g. `kr dataset caption DIR --from-filename`), or delete it.",
            )
        ], None
    if read.error == "not-utf8":
        return [
            finding(
                "caption-not-utf8", cap,
                f"{cap} is not UTF-8 (invalid byte 0x{read.raw[read.bad_offset]:02x} at byte offset {read.bad_offset}); "
                "sd-scripts crashes with UnicodeDecodeError.",
                f"re-save {cap} as UTF-8 (e.g. `iconv -f latin1 -t utf-8`).",
            )
        ], None
    if read.error == "unreadable":
        return [finding("caption-unreadable", cap, f"{cap} cannot be read.", f"check the permissions of {cap}.")], None
    out = []
    if read.text.startswith("\ufeff"):
        out.append(
            finding(
                "caption-bom", cap, f"{cap} starts with a UTF-8 byte-order mark; sd-scripts keeps it as part of the first tag.",
                f"re-save {cap} as UTF-8 without BOM.",
            )
        )
    if read.extra_lines:
        out.append(
            finding(
                "caption-multiline", cap,
                f"{cap} has {read.extra_lines} more non-empty line(s); sd-scripts uses only the first line.",
                "join the caption into one line, or set enable_wildcard=true to pick a random line each time.",
            )
        )
    if not read.caption.strip("\ufeff"):
        out.append(
            finding(
                "caption-blank", cap,
                f"{cap} has a blank first line, so {img.rel} trains with an empty caption"
                + (" (sd-scripts reads only the first line)." if read.extra_lines else "."),
                f"put the caption on the first line of {cap}.",
            )
        )
    return out, read.caption


def _missing_caption_findings(img: DatasetImage, settings: DatasetSettings, others: dict[str, Path]) -> list[Finding]:
    ext = settings.caption_extension
    stem = os.path.splitext(img.rel)[0]
    other = others.get(stem) or others.get(img.rel)
    if other is not None:
        other_stem, other_ext = os.path.splitext(other.name)
        if other_stem == stem:
            fix = f"set caption_extension='{other_ext}' (kr: dataset.caption_extension), or rename the captions to {ext}."
        else:
            fix = f"rename {other.name} to {stem}{ext} (sd-scripts looks for <image stem>{ext})."
        return [
            finding(
                "caption-other-extension", img.rel,
                f"{img.rel} has a caption in {other.name}, but caption_extension is '{ext}', so sd-scripts will not read it.",
                fix,
            )
        ]
    if settings.class_tokens:
        return [
            finding(
                "caption-class-tokens", img.rel,
                f"{img.rel} has no {stem}{ext}; sd-scripts uses class_tokens '{settings.class_tokens}' as its whole caption.",
                f"write {stem}{ext} describing the picture.",
            )
        ]
    return [
        finding(
            "caption-missing", img.rel,
            f"{img.rel} has no caption file {stem}{ext}; sd-scripts trains it with an empty caption.",
            f"write {stem}{ext} (e.g. `kr dataset caption DIR --from-filename --prefix '...'`).",
        )
    ]


def _trigger_findings(img: DatasetImage, read: CaptionRead, text: str, settings: DatasetSettings, trigger) -> list[Finding]:
    if trigger is None:
        return []
    where = read.path.name if read.path else img.rel
    if not trigger.search(text):
        return [
            finding(
                "trigger-missing", where,
                f"the trigger '{settings.trigger}' is not in the caption of {img.rel}"
                + (" (after caption_prefix/suffix)" if settings.caption_prefix or settings.caption_suffix else "")
                + ": this picture is learned without it, so its look also answers prompts without the trigger "
                  "(intended only for plain contrast pictures).",
                f"add '{settings.trigger}' to {where}, set caption_prefix, or run `kr dataset caption DIR --prefix '...{settings.trigger}...'`.",
            )
        ]
    if not settings.shuffle_caption:
        return []
    fixed, flex, suffix = split_fixed_tags(text, settings)
    if len(fixed) + len(flex) + len(suffix) < 2 or any(trigger.search(t) for t in fixed + suffix):
        return []
    position = next(i for i, tag in enumerate(flex) if trigger.search(tag)) + len(fixed) + 1
    return [
        finding(
            "trigger-shuffled", where,
            f"shuffle_caption moves the trigger '{settings.trigger}' in {img.rel}: it is in tag {position}, "
            f"outside the first keep_tokens={settings.keep_tokens} tag(s).",
            f"set keep_tokens={position}, or put the trigger first (caption_prefix) with keep_tokens=1"
            + (f", or place it before keep_tokens_separator '{settings.keep_tokens_separator}'." if settings.keep_tokens_separator else "."),
        )
    ]


def _too_long_finding(img: DatasetImage, read: CaptionRead, tokens: int, settings: DatasetSettings, counter: TokenCounter) -> Finding:
    where = read.path.name if read.path else img.rel
    how = "CLIP tokens" if counter.method == "clip" else "CLIP tokens (estimated without the tokenizer)"
    longer = " or set max_token_length=150/225" if settings.token_limit < 225 else ""
    return finding(
        "caption-too-long", where,
        f"the caption of {img.rel} is about {tokens} {how}, over the limit of {settings.token_limit}; "
        "sd-scripts cuts the rest silently.",
        f"shorten {where} (put what matters first){longer}.",
    )


def _orphan_caption_findings(found: DatasetScan, used: set[str]) -> list[Finding]:
    out = []
    image_names = {img.rel for img in found.images}  # `x.png.txt` is reported as caption-other-extension
    for path in found.caption_files:
        if path.name not in used and os.path.splitext(path.name)[0] not in image_names:
            out.append(
                finding(
                    "caption-orphan", path.name, f"{path.name} has no image that sd-scripts would read beside it.",
                    "check the image's name and format, or delete the caption.",
                )
            )
    return out
