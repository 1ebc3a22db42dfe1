"""caption(): the one command that writes into a user's dataset folder (caption files only, with a backup)."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import Failed
from ..sdscripts.captions import read_caption
from ..sdscripts.subset import DatasetSettings
from ._scan import DatasetImage, DatasetScan, scan

CAPTION_BACKUP_DIR = ".kr-caption-backup"


@dataclass(frozen=True)
class CaptionChange:
    image: str
    caption: str  # caption file name, relative to the dataset folder
    old: str | None  # None: the file does not exist yet
    new: str
    old_sha256: str | None  # what the file held when planned; apply() refuses if it changed since

    def to_dict(self) -> dict:
        return {"image": self.image, "caption": self.caption, "old": self.old, "new": self.new}


@dataclass
class CaptionPlan:
    dir: Path
    caption_extension: str
    changes: list[CaptionChange]
    unchanged: int
    skipped: list[tuple[str, str]]  # (file, reason)
    diff: str
    written: bool = False
    backup_dir: Path | None = None

    def apply(self) -> "CaptionPlan":
        """Back up every caption file that changes, then write the new ones atomically."""
        if self.written or not self.changes:
            return self
        _refuse_if_changed(self)
        self.backup_dir = _backup_captions(self.dir, [c for c in self.changes if c.old is not None])
        for change in self.changes:
            _write_atomic(self.dir / change.caption, change.new.encode("utf-8"))
        self.written = True
        return self

    def to_dict(self) -> dict:
        return {
            "schema": "kr.dataset-caption/1",
            "dir": str(self.dir),
            "caption_extension": self.caption_extension,
            "changes": [c.to_dict() for c in self.changes],
            "unchanged": self.unchanged,
            "skipped": [{"file": f, "reason": r} for f, r in self.skipped],
            "written": self.written,
            "backup_dir": str(self.backup_dir) if self.backup_dir else None,
        }


def caption(
    dir: Path,
    *,
    prefix: str | None = None,
    replace: tuple[str, str] | None = None,
    from_filename: bool = False,
    caption_extension: str = ".txt",
    dry_run: bool = False,
) -> CaptionPlan:
    """Write caption files for the images sd-scripts would read in `dir`. Images are never touched.

    This command writes into the dataset folder: the caption files it changes, and a copy of each
    changed file's old content under `<dir>/.kr-caption-backup/<timestamp>/` (hidden, so sd-scripts
    ignores it). The plan's `diff` (unified) is computed before anything is written; with
    `dry_run=True` nothing is written at all, and `plan.apply()` may be called later.

    Per image, in this order: `from_filename` replaces the text with words from the file name
    (`a_man_thinking-01.png` -> "a man thinking"); `replace=(old, new)` substitutes text; `prefix`
    is put in front unless the caption already starts with it (never doubled). A prefix ending in a
    letter or digit is joined with ", ", one ending in punctuation with a space. Images without a
    caption file are skipped unless `from_filename` gives them one. Files are written as UTF-8 via a
    temp file and a rename; a file's trailing newline is kept.
    """
    settings = DatasetSettings(dir=Path(dir), caption_extension=caption_extension)
    found = scan(settings)
    changes, skipped, unchanged = [], [], 0
    for img in found.images:
        outcome = _plan_caption(img, found, prefix, replace, from_filename)
        if isinstance(outcome, CaptionChange):
            changes.append(outcome)
        elif outcome is None:
            unchanged += 1
        else:
            skipped.append(outcome)
    plan = CaptionPlan(found.dir, found.caption_extension, changes, unchanged, skipped, _caption_diff(changes))
    return plan if dry_run else plan.apply()


def _plan_caption(img: DatasetImage, found: DatasetScan, prefix, replace, from_filename):
    """A CaptionChange, None (nothing to do) or (file, reason) when the image is skipped."""
    stem = os.path.splitext(img.rel)[0]
    path = found.dir / (stem + found.caption_extension) if img.caption_path is None else img.caption_path
    read = read_caption(img.caption_path)
    if read.error == "not-utf8":
        return (path.name, f"not UTF-8 (byte offset {read.bad_offset}); re-save it as UTF-8 first")
    if read.error == "unreadable":
        return (path.name, "cannot be read")
    old = read.text if read.path and not read.error else ("" if read.path else None)
    body, ending = _split_trailing_newline(old or "")
    if from_filename:
        body = caption_from_filename(img.rel)
        if not body:
            return (img.rel, "the file name has no words to use")
    elif old is None:
        return (img.rel, f"no caption file {stem}{found.caption_extension} (use from_filename to create one)")
    if replace:
        body = body.replace(replace[0], replace[1])
    if prefix and not body.lstrip("\ufeff").startswith(prefix.strip()):
        body = _join_prefix(prefix, body)
    new = body + ending
    if new == old:
        return None
    old_sha = hashlib.sha256(read.raw).hexdigest() if read.path else None
    return CaptionChange(img.rel, path.name, old, new, old_sha)


def _split_trailing_newline(text: str) -> tuple[str, str]:
    stripped = text.rstrip("\r\n")
    return stripped, text[len(stripped):]


def _join_prefix(prefix: str, body: str) -> str:
    if not body.strip():
        return prefix.strip()
    if prefix[-1].isspace():
        return prefix + body
    return prefix + (", " if prefix[-1].isalnum() else " ") + body


def caption_from_filename(name: str) -> str:
    """`a_man_thinking-01.png` -> "a man thinking": separators become spaces, counters at either end go."""
    stem = os.path.splitext(os.path.basename(name))[0]
    stem = re.sub(r"\(\d+\)|\[\d+\]", " ", stem)  # "photo (2)" copies
    words = [w for w in re.split(r"[\s_\-.]+", stem) if w]
    while words and words[0].isdigit():
        words.pop(0)
    while words and words[-1].isdigit():
        words.pop()
    return " ".join(words)


def _caption_diff(changes: list[CaptionChange]) -> str:
    import difflib

    parts = []
    for change in changes:
        old_lines = (change.old or "").splitlines(keepends=True)
        new_lines = change.new.splitlines(keepends=True)
        old_name = f"a/{change.caption}" if change.old is not None else "/dev/null"
        for line in difflib.unified_diff(_ensure_eol(old_lines), _ensure_eol(new_lines), old_name, f"b/{change.caption}"):
            parts.append(line)
    return "".join(parts)


def _ensure_eol(lines: list[str]) -> list[str]:
    return [line if line.endswith("\n") else line + "\n" for line in lines]


def _refuse_if_changed(plan: CaptionPlan) -> None:
    for change in plan.changes:
        path = plan.dir / change.caption
        current = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None
        if current != change.old_sha256:
            raise Failed(
                f"{path} changed since the caption plan was made; nothing was written. Run `kr dataset caption` again."
            )


def _backup_captions(root: Path, changes: list[CaptionChange]) -> Path | None:
    if not changes:
        return None
    import shutil
    import time

    base = root / CAPTION_BACKUP_DIR
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = base / stamp
    suffix = 1
    while target.exists():  # two runs in the same second
        suffix += 1
        target = base / f"{stamp}-{suffix}"
    target.mkdir(parents=True)
    for change in changes:
        shutil.copy2(root / change.caption, target / change.caption)
    return target


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.kr-tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if path.exists():
            import shutil

            shutil.copymode(path, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
