"""Findings: one code each, with one severity, so a code alone tells the CLI how bad it is."""

from __future__ import annotations

from dataclasses import dataclass


ERROR, WARNING = "error", "warning"

FINDING_CODES: dict[str, tuple[str, str]] = {
    # dataset layout
    "no-images": (ERROR, "no image sd-scripts would read; it logs 'No data found' and exits 0"),
    "legacy-parent-dir": (ERROR, "the folder holds N_name subfolders instead of images"),
    "legacy-dir-name": (WARNING, "folder named N_name; the number means nothing with a dataset config"),
    "subfolders-ignored": (WARNING, "images in subfolders are not read (no recursion)"),
    "cache-stale": (WARNING, "sd-scripts cache files beside the images are reused silently"),
    # images
    "image-unreadable": (ERROR, "the file cannot be opened as an image"),
    "image-truncated": (ERROR, "the image data ends early"),
    "image-corrupt": (ERROR, "the image data does not decode"),
    "image-too-small": (ERROR, "smaller than one bucket step; sd-scripts cannot bucket it"),
    "image-size-mismatch": (ERROR, "bucketing is off and the image is not exactly the resolution"),
    "image-ignored-format": (WARNING, "a format or extension spelling sd-scripts skips"),
    "image-wrong-extension": (WARNING, "the extension does not match the content"),
    "image-upscaled": (WARNING, "upscaled a lot to fill its bucket"),
    "image-small-bucket": (WARNING, "bucket_no_upscale gives this image a much smaller bucket"),
    "image-exif-rotated": (WARNING, "EXIF says rotate; sd-scripts ignores EXIF orientation"),
    "image-transparent": (WARNING, "transparent pixels train as their stored colour"),
    "image-high-bit-depth": (WARNING, "16-bit/float greyscale converts badly to RGB"),
    "image-duplicate": (WARNING, "byte-identical to another image"),
    "image-near-duplicate": (WARNING, "visually almost identical to another image"),
    # captions
    "caption-missing": (ERROR, "no caption file; sd-scripts trains with an empty caption"),
    "caption-class-tokens": (WARNING, "no caption file; class_tokens is used as the whole caption"),
    "caption-other-extension": (ERROR, "a caption exists but with another extension than configured"),
    "caption-empty": (ERROR, "0-byte caption file; sd-scripts asserts"),
    "caption-blank": (ERROR, "the caption's first line is blank; trains with an empty caption"),
    "caption-not-utf8": (ERROR, "not UTF-8; sd-scripts crashes"),
    "caption-unreadable": (ERROR, "the caption file cannot be read"),
    "caption-bom": (WARNING, "starts with a UTF-8 BOM, which becomes part of the caption"),
    "caption-multiline": (WARNING, "only the first line is used"),
    "caption-orphan": (WARNING, "a caption file without an image"),
    "caption-too-long": (WARNING, "more CLIP tokens than the limit; the rest is cut silently"),
    "trigger-missing": (WARNING, "the trigger word is not in the caption (learned without it)"),
    "trigger-unused": (ERROR, "no caption contains the trigger word"),
    "trigger-shuffled": (WARNING, "shuffle_caption moves the trigger (outside keep_tokens)"),
    # settings
    "bucket-settings": (ERROR, "bucket settings sd-scripts rejects"),
    "bucket-reso-adjusted": (WARNING, "min/max bucket reso are rounded to the step"),
    "settings-conflict": (ERROR, "settings sd-scripts refuses together"),
    "validation-empty": (WARNING, "validation_split holds out no image: no validation loss"),
    "validation-overlap": (WARNING, "validation_split's two parts share images (sd-scripts rounds them differently)"),
    "tokenizer-unavailable": (WARNING, "token counts are estimates: the tokenizer folder is missing"),
}


@dataclass(frozen=True)
class Finding:
    code: str
    severity: str
    file: str | None  # relative to the dataset folder (posix), None for the dataset as a whole
    message: str
    fix: str

    def to_dict(self) -> dict:
        return {"code": self.code, "severity": self.severity, "file": self.file, "message": self.message, "fix": self.fix}


def finding(code: str, file: str | None, message: str, fix: str) -> Finding:
    return Finding(code, FINDING_CODES[code][0], file, message, fix)
