"""Dataset checks for sd-scripts LoRA training: scan, check, buckets, step math, captions, stats, manifest.

The library behind `kr dataset check | caption | stats`, the pre-run check of `kr run` and the dataset
manifest in the run archive. It mirrors what kohya-ss/sd-scripts does at the commit described in
shared/sd-scripts-contract.md (§2.3-2.6, §4.1, §7.4, §7.6), so the check finds problems before a GPU
hour is spent on them:

- images are found the way sd-scripts finds them: directly in the folder (no recursion), extensions
  `.png .jpg .jpeg .webp .bmp` in all-lower or all-upper case (`.avif`/`.jxl` only with their PIL
  plugins), hidden files skipped, sorted by name;
- a caption is `<stem><caption_extension>` beside the image; only its first line is used; a 0-byte file
  makes sd-scripts assert, a non-UTF-8 one crashes it, a missing one trains with an empty caption;
- buckets are computed with sd-scripts' algorithm (`make_bucket_resolutions` + nearest aspect ratio,
  or per-image buckets with `bucket_no_upscale`), and the step arithmetic follows train_network.py.

Nothing here writes into the dataset folder, except `caption()` (which says so).
Heavy imports (PIL, numpy, transformers) happen inside the functions that need them, so importing
this module stays cheap.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
from dataclasses import dataclass, replace as dc_replace
from pathlib import Path
from typing import Iterable, Sequence

from kohya_runner.errors import BadInput, Failed

# --------------------------------------------------------------------------------------------------
# What sd-scripts reads (contract §2.3.3) and what kr recognises around it
# --------------------------------------------------------------------------------------------------

# sd-scripts globs `*<ext>` for exactly these spellings, so `.Png` or `.JPEG ` are silently skipped.
BASE_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# Added by sd-scripts only when one of these modules imports in *its* environment.
PLUGIN_IMAGE_EXTENSIONS = {".avif": ("pillow_avif",), ".jxl": ("jxlpy", "pillow_jxl")}
# Image files people drop into datasets that sd-scripts never reads.
OTHER_IMAGE_EXTENSIONS = frozenset(
    ".gif .tif .tiff .heic .heif .jfif .jpe .avif .jxl .psd .tga .ico .jp2 .exr .dng .svg".split()
)
# Pillow's format name -> extensions that honestly describe the content.
FORMAT_EXTENSIONS = {
    "PNG": (".png",),
    "JPEG": (".jpg", ".jpeg"),
    "MPO": (".jpg", ".jpeg"),  # multi-picture JPEG from phones/cameras; decodes as JPEG
    "WEBP": (".webp",),
    "BMP": (".bmp",),
    "AVIF": (".avif",),
    "JXL": (".jxl",),
}
CAPTION_LIKE_EXTENSIONS = (".txt", ".caption", ".tags", ".cap", ".text")
CAPTION_BACKUP_DIR = ".kr-caption-backup"

FAMILIES = ("sdxl", "sd15")
FAMILY_RESOLUTION = {"sd15": 512, "sdxl": 1024}
FAMILY_BUCKET_STEP_DIVISOR = {"sd15": 64, "sdxl": 32}  # verify_bucket_reso_steps(64 | 32)
CLIP_CHUNK = 75  # CLIP's 77 positions minus BOS/EOS
TOKENIZER_FOLDER = "openai_clip-vit-large-patch14"

UPSCALE_WARN_FACTOR = 1.5  # below this an upscale is mild enough not to mention
SMALL_BUCKET_AREA_FRACTION = 0.25  # bucket_no_upscale: warn when the bucket is < 1/4 of the target area
NEAR_DUP_MAX_BITS = 5  # dHash hamming distance (of 64) still counted as "the same picture"
NEAR_DUP_MAX_COLOR = 16.0  # ... and mean colours within this (0-255) so flat images of different colour differ
SAMPLE_PNG_BYTES_PER_PIXEL = 1.5  # rough size of a sample PNG (photo-like content)
DEFAULT_MAX_TRAIN_STEPS = 1600  # sd-scripts' default when neither steps nor epochs are given

LEGACY_DIR_RE = re.compile(r"^(\d+)_(.*)$")
# Latent/TE caches sd-scripts writes beside images (§7.6).
LATENT_CACHE_RE = re.compile(r"^(?P<stem>.+)_(?P<w>\d{4})x(?P<h>\d{4})_(?P<arch>sd|sdxl)\.npz$")
TE_CACHE_SUFFIX = "_te_outputs.npz"
INFO_CACHE_NAME = "metadata_cache.json"


# --------------------------------------------------------------------------------------------------
# Finding codes: one severity each, so a code alone tells the CLI how bad it is
# --------------------------------------------------------------------------------------------------

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
    "trigger-missing": (ERROR, "the trigger word is not in the caption"),
    "trigger-shuffled": (WARNING, "shuffle_caption moves the trigger (outside keep_tokens)"),
    # settings
    "bucket-settings": (ERROR, "bucket settings sd-scripts rejects"),
    "bucket-reso-adjusted": (WARNING, "min/max bucket reso are rounded to the step"),
    "settings-conflict": (ERROR, "settings sd-scripts refuses together"),
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


def _finding(code: str, file: str | None, message: str, fix: str) -> Finding:
    return Finding(code, FINDING_CODES[code][0], file, message, fix)


# --------------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetSettings:
    """What the dataset checks need, in sd-scripts' own terms (one DreamBooth-style subset).

    `resolution` may be an int or (W, H); None takes the family's native size (512 / 1024).
    `extra_image_extensions` None detects the AVIF/JXL PIL plugins in *this* interpreter; pass the
    trainer environment's answer when it differs (e.g. `(".avif",)`).
    """

    dir: Path
    family: str = "sdxl"
    caption_extension: str = ".txt"
    trigger: str | None = None
    caption_prefix: str | None = None
    caption_suffix: str | None = None
    class_tokens: str | None = None
    keep_tokens: int = 0
    keep_tokens_separator: str = ""
    shuffle_caption: bool = False
    caption_separator: str = ","
    enable_wildcard: bool = False
    resolution: tuple[int, int] | int | None = None
    enable_bucket: bool = True
    min_bucket_reso: int = 256
    max_bucket_reso: int = 1024
    bucket_reso_steps: int = 64
    bucket_no_upscale: bool = False
    batch_size: int = 1
    num_repeats: int = 1
    max_token_length: int | None = None  # None = 75; 150 or 225 extend it
    cache_latents: bool = False
    cache_te_outputs: bool = False
    extra_image_extensions: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "dir", Path(self.dir))
        if self.family not in FAMILIES:
            raise BadInput(f"unknown model family {self.family!r}: use one of {', '.join(FAMILIES)}")
        set_(self, "caption_extension", _dotted(self.caption_extension))
        set_(self, "resolution", _normalise_resolution(self.resolution, self.family))
        if self.batch_size < 1:
            raise BadInput(f"batch_size must be at least 1, got {self.batch_size}")
        if self.bucket_reso_steps < 1:
            raise BadInput(f"bucket_reso_steps must be at least 1, got {self.bucket_reso_steps}")
        if self.max_token_length not in (None, 75, 150, 225):
            raise BadInput(f"max_token_length must be 75, 150 or 225 (or unset), got {self.max_token_length}")
        if self.keep_tokens < 0:
            raise BadInput(f"keep_tokens must be 0 or more, got {self.keep_tokens}")

    @property
    def token_limit(self) -> int:
        return self.max_token_length or CLIP_CHUNK


def _dotted(ext: str) -> str:
    return ext if not ext or ext.startswith(".") else "." + ext


def _normalise_resolution(value, family: str) -> tuple[int, int]:
    if value is None:
        side = FAMILY_RESOLUTION[family]
        return (side, side)
    if isinstance(value, int):
        value = (value, value)
    try:
        width, height = (int(v) for v in value)
    except (TypeError, ValueError):
        raise BadInput(f"resolution must be an int or [W, H], got {value!r}") from None
    if width < 1 or height < 1:
        raise BadInput(f"resolution must be positive, got {width}x{height}")
    return (width, height)


@dataclass(frozen=True)
class TrainingPlan:
    """The training arguments the step arithmetic and the disk estimate need (contract §3.5, §3.8).

    With neither `max_train_epochs` nor `max_train_steps`, sd-scripts trains 1600 steps. When both are
    given, epochs win (as in sd-scripts). `network_dim` None is sd-scripts' fallback rank 4.
    `save_precision` None means the training dtype; we assume fp32 then.
    """

    max_train_epochs: int | None = None
    max_train_steps: int | None = None
    gradient_accumulation_steps: int = 1
    num_processes: int = 1
    save_every_n_epochs: int | None = None
    save_every_n_steps: int | None = None
    save_last_n_epochs: int | None = None
    save_last_n_steps: int | None = None
    sample_every_n_epochs: int | None = None
    sample_every_n_steps: int | None = None
    sample_at_first: bool = False
    sample_prompts: int = 0
    sample_size: tuple[int, int] = (512, 512)
    network_dim: int | None = None
    family: str = "sdxl"
    unet_only: bool = False
    save_precision: str | None = "fp16"
    output_name: str | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise BadInput(f"unknown model family {self.family!r}: use one of {', '.join(FAMILIES)}")
        for name in ("gradient_accumulation_steps", "num_processes"):
            if getattr(self, name) < 1:
                raise BadInput(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_train_epochs is not None and self.max_train_epochs < 1:
            raise BadInput(f"max_train_epochs must be at least 1, got {self.max_train_epochs}")
        if self.max_train_steps is not None and self.max_train_steps < 1:
            raise BadInput(f"max_train_steps must be at least 1, got {self.max_train_steps}")
        if self.save_precision not in (None, "fp16", "bf16", "float", "fp32"):
            raise BadInput(f"save_precision must be fp16, bf16 or float, got {self.save_precision!r}")


# --------------------------------------------------------------------------------------------------
# 1. Scan: which files sd-scripts would use (no file is opened here)
# --------------------------------------------------------------------------------------------------


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


def image_extensions(extra: Iterable[str] | None = None) -> tuple[str, ...]:
    """The extensions sd-scripts globs for. `extra` None detects the AVIF/JXL plugins here."""
    if extra is None:
        from importlib.util import find_spec

        extra = [ext for ext, modules in PLUGIN_IMAGE_EXTENSIONS.items() if any(_has_module(m, find_spec) for m in modules)]
    lowered = list(BASE_IMAGE_EXTENSIONS) + [_dotted(e).lower() for e in extra]
    return tuple(dict.fromkeys(lowered + [e.upper() for e in lowered]))


def _has_module(name: str, find_spec) -> bool:
    try:
        return find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def scan(settings: DatasetSettings) -> DatasetScan:
    """List the folder once and sort its files into what sd-scripts would read and what it skips."""
    root = settings.dir
    if not root.exists():
        raise BadInput(f"dataset folder not found: {root}. Check the path (kr spec key dataset.dir).")
    if not root.is_dir():
        raise BadInput(f"dataset path is not a folder: {root}. Point it at the folder that holds the images.")
    extensions = image_extensions(settings.extra_image_extensions)
    files, subdirs = _list_dir(root)
    images = [name for name in files if _is_sd_image(name, extensions)]
    file_set = set(files)
    caption_ext = settings.caption_extension
    return DatasetScan(
        dir=root,
        images=tuple(DatasetImage(root / n, n, _caption_for(root, n, caption_ext, file_set)) for n in images),
        ignored_images=tuple(root / n for n in files if _is_ignored_image(n, extensions)),
        caption_files=tuple(root / n for n in files if caption_ext and n.endswith(caption_ext)),
        other_caption_files=tuple(
            root / n for n in files if _caption_like_ext(n) and not (caption_ext and n.endswith(caption_ext))
        ),
        cache_files=tuple(root / n for n in files if _is_cache_file(n)),
        subdirs=tuple(root / d for d in subdirs),
        image_extensions=extensions,
        caption_extension=caption_ext,
    )


def _list_dir(root: Path) -> tuple[list[str], list[str]]:
    files, dirs = [], []
    with os.scandir(root) as entries:
        for entry in entries:
            if entry.name.startswith("."):
                continue  # glob's `*` never matches hidden names (also skips our backup folder)
            (dirs if entry.is_dir() else files).append(entry.name)
    return sorted(files), sorted(dirs)


def _is_sd_image(name: str, extensions: Sequence[str]) -> bool:
    return any(name.endswith(ext) for ext in extensions)


def _is_ignored_image(name: str, extensions: Sequence[str]) -> bool:
    if _is_sd_image(name, extensions):
        return False
    ext = os.path.splitext(name)[1].lower()
    return ext in BASE_IMAGE_EXTENSIONS or ext in OTHER_IMAGE_EXTENSIONS or ext in (e.lower() for e in extensions)


def _caption_like_ext(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in CAPTION_LIKE_EXTENSIONS


def _is_cache_file(name: str) -> bool:
    return name == INFO_CACHE_NAME or name.endswith(".npz")


def _caption_for(root: Path, image_name: str, caption_ext: str, file_set: set[str]) -> Path | None:
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


# --------------------------------------------------------------------------------------------------
# Image probing: one read and one decode per image (verify + size + hashes), in parallel
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageProbe:
    size: tuple[int, int] | None = None  # from the header, as sd-scripts' imagesize reads it
    format: str | None = None
    mode: str | None = None
    bytes: int = 0
    sha256: str = ""
    error: str | None = None  # "unreadable" | "truncated" | "corrupt"
    detail: str = ""
    dhash: int | None = None
    mean_rgb: tuple[float, float, float] | None = None
    exif_orientation: int | None = None
    transparent: bool = False


def probe_image(path: str | os.PathLike) -> ImageProbe:
    """Read the file once; hash it, open it from memory, decode it fully and fingerprint it."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return ImageProbe(error="unreadable", detail=exc.strerror or str(exc))
    digest = hashlib.sha256(data).hexdigest()
    from io import BytesIO

    from PIL import Image

    try:
        img = Image.open(BytesIO(data))
    except Exception as exc:  # UnidentifiedImageError, DecompressionBombError, ...
        return ImageProbe(bytes=len(data), sha256=digest, error="unreadable", detail=_short(exc))
    header = ImageProbe(size=img.size, format=img.format, mode=img.mode, bytes=len(data), sha256=digest)
    orientation = _exif_orientation(img)
    if img.format in ("JPEG", "MPO"):
        # DCT scaling decodes every MCU (so truncation still shows) at a fraction of the cost.
        img.draft(img.mode, (max(1, img.size[0] // 8), max(1, img.size[1] // 8)))
    try:
        img.load()  # ImageFile.LOAD_TRUNCATED_IMAGES stays False: a short file must fail here
    except Exception as exc:
        kind = "truncated" if "truncated" in str(exc).lower() else "corrupt"
        return dc_replace(header, error=kind, detail=_short(exc), exif_orientation=orientation)
    try:
        dhash, mean_rgb = _fingerprint(img)
    except Exception:  # an exotic mode Pillow cannot convert: skip the near-duplicate check for it
        dhash, mean_rgb = None, None
    return dc_replace(
        header, dhash=dhash, mean_rgb=mean_rgb, exif_orientation=orientation, transparent=_has_transparency(img)
    )


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _exif_orientation(img) -> int | None:
    try:
        value = img.getexif().get(0x0112)
    except Exception:
        return None
    return int(value) if isinstance(value, int) and value not in (0, 1) else None


def _fingerprint(img) -> tuple[int, tuple[float, float, float]]:
    """dHash (64 bits of horizontal gradients on a 9x8 grey thumbnail) + mean colour, as sd-scripts sees it (RGB)."""
    import numpy as np
    from PIL import Image

    factor = min(img.size) // 64
    small = img.reduce(factor) if factor > 1 and img.mode in ("RGB", "RGBA", "L", "LA") else img  # cheap box shrink first
    thumb = (small if small.mode == "RGB" else small.convert("RGB")).resize((32, 32), Image.Resampling.BOX)
    grey = np.asarray(thumb.convert("L").resize((9, 8), Image.Resampling.BOX), dtype=np.int16)
    bits = (grey[:, 1:] > grey[:, :-1]).flatten()
    dhash = int.from_bytes(np.packbits(bits).tobytes(), "big")
    mean = np.asarray(thumb, dtype=np.float64).reshape(-1, 3).mean(axis=0)
    return dhash, (round(float(mean[0]), 2), round(float(mean[1]), 2), round(float(mean[2]), 2))


def _has_transparency(img) -> bool:
    if img.mode in ("RGBA", "LA", "PA"):
        alpha = img.getchannel("A")
    elif img.mode == "P" and "transparency" in img.info:
        alpha = img.convert("RGBA").getchannel("A")
    else:
        return False
    return alpha.getextrema()[0] < 255


def probe_images(paths: Sequence[Path], workers: int | None = None) -> list[ImageProbe]:
    """probe_image over many files; two or more processes once there are enough images to pay for them."""
    workers = _worker_count(workers, len(paths))
    names = [str(p) for p in paths]
    if workers <= 1:
        return [probe_image(p) for p in names]
    from concurrent.futures import ProcessPoolExecutor

    chunk = max(1, len(names) // (workers * 8))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(probe_image, names, chunksize=chunk))


def _worker_count(requested: int | None, jobs: int) -> int:
    if requested is not None:
        return max(1, requested)
    if jobs < 48:  # a process pool costs ~0.1 s to start; small datasets decode faster than that
        return 1
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, usable))


# --------------------------------------------------------------------------------------------------
# Buckets (contract §2.6; sd-scripts' model_util.make_bucket_resolutions and BucketManager)
# --------------------------------------------------------------------------------------------------


def bucket_resolutions(resolution: tuple[int, int], min_size: int, max_size: int, step: int) -> list[tuple[int, int]]:
    """The predefined buckets: the square, plus for every width from min to max in `step`s the tallest
    height (a multiple of `step`, at most max) whose area stays within W*H, in both orientations."""
    max_area = resolution[0] * resolution[1]
    side = int(math.sqrt(max_area) // step) * step
    resos = {(side, side)}
    for width in range(min_size, max_size + 1, step):
        height = min(max_size, int((max_area // width) // step) * step)
        if height >= min_size:
            resos.add((width, height))
            resos.add((height, width))
    return sorted(resos)


def adjust_bucket_bounds(min_reso: int, max_reso: int, step: int) -> tuple[int, int]:
    """sd-scripts rounds min_bucket_reso down and max_bucket_reso up to a multiple of the step."""
    if min_reso % step:
        min_reso -= min_reso % step
    if max_reso % step:
        max_reso += step - max_reso % step
    return min_reso, max_reso


@dataclass(frozen=True)
class BucketAssignment:
    size: tuple[int, int]
    bucket: tuple[int, int]
    resized: tuple[int, int]  # the size the image is scaled to before the centre crop
    ar_error: float

    @property
    def scale(self) -> float:
        return self.resized[0] / self.size[0] if self.size[0] else 0.0


@dataclass(frozen=True)
class Bucket:
    resolution: tuple[int, int]
    images: int
    items: int  # images x repeats, as sd-scripts logs "count"
    batches: int
    last_batch: int  # size of the last batch; < batch_size means a partial batch

    def to_dict(self) -> dict:
        return {
            "resolution": list(self.resolution),
            "images": self.images,
            "items": self.items,
            "batches": self.batches,
            "last_batch": self.last_batch,
        }


@dataclass(frozen=True)
class BucketTable:
    resolution: tuple[int, int]
    enable_bucket: bool
    bucket_no_upscale: bool
    min_bucket_reso: int
    max_bucket_reso: int
    bucket_reso_steps: int
    batch_size: int
    num_repeats: int
    predefined: tuple[tuple[int, int], ...]
    assignments: tuple[BucketAssignment, ...]
    buckets: tuple[Bucket, ...]

    @property
    def items(self) -> int:
        return sum(b.items for b in self.buckets)

    @property
    def batches(self) -> int:
        return sum(b.batches for b in self.buckets)

    @property
    def partial_batches(self) -> int:
        return sum(1 for b in self.buckets if b.last_batch < self.batch_size)

    @property
    def bucket_items(self) -> list[int]:
        return [b.items for b in self.buckets]

    @property
    def mean_ar_error(self) -> float:
        if not self.assignments:
            return 0.0
        return sum(abs(a.ar_error) for a in self.assignments) / len(self.assignments)

    def to_dict(self) -> dict:
        return {
            "resolution": list(self.resolution),
            "enable_bucket": self.enable_bucket,
            "bucket_no_upscale": self.bucket_no_upscale,
            "min_bucket_reso": self.min_bucket_reso,
            "max_bucket_reso": self.max_bucket_reso,
            "bucket_reso_steps": self.bucket_reso_steps,
            "batch_size": self.batch_size,
            "num_repeats": self.num_repeats,
            "predefined_buckets": len(self.predefined),
            "buckets": [b.to_dict() for b in self.buckets],
            "items": self.items,
            "batches": self.batches,
            "partial_batches": self.partial_batches,
            "mean_ar_error": round(self.mean_ar_error, 6),
        }


def bucket_table(
    sizes: Iterable[tuple[int, int]],
    *,
    resolution: tuple[int, int] | int,
    enable_bucket: bool = True,
    min_bucket_reso: int = 256,
    max_bucket_reso: int = 1024,
    bucket_reso_steps: int = 64,
    bucket_no_upscale: bool = False,
    num_repeats: int = 1,
    batch_size: int = 1,
) -> BucketTable:
    """Assign every image size to its bucket exactly as sd-scripts does, and count items and batches.

    Raises BadInput for bounds sd-scripts asserts on (min > resolution, max < resolution).
    """
    if isinstance(resolution, int):
        resolution = (resolution, resolution)
    resolution = (int(resolution[0]), int(resolution[1]))
    if batch_size < 1:
        raise BadInput(f"batch_size must be at least 1, got {batch_size}")
    sizes = [(int(w), int(h)) for w, h in sizes]
    if enable_bucket:
        min_bucket_reso, max_bucket_reso = adjust_bucket_bounds(min_bucket_reso, max_bucket_reso, bucket_reso_steps)
        problem = _bucket_bounds_problem(resolution, min_bucket_reso, max_bucket_reso)
        if problem:
            raise BadInput(f"{problem[0]} Fix: {problem[1]}")
        predefined = [] if bucket_no_upscale else bucket_resolutions(resolution, min_bucket_reso, max_bucket_reso, bucket_reso_steps)
        assign = (
            (lambda s: _select_no_upscale(s, resolution, bucket_reso_steps))
            if bucket_no_upscale
            else _predefined_selector(predefined)
        )
    else:
        predefined = [resolution]  # one fixed bucket; images are not resized on this path
        assign = _predefined_selector(predefined)
    assignments = [assign(size) for size in sizes]
    return BucketTable(
        resolution=resolution,
        enable_bucket=enable_bucket,
        bucket_no_upscale=bucket_no_upscale and enable_bucket,
        min_bucket_reso=min_bucket_reso,
        max_bucket_reso=max_bucket_reso,
        bucket_reso_steps=bucket_reso_steps,
        batch_size=batch_size,
        num_repeats=num_repeats,
        predefined=tuple(predefined),
        assignments=tuple(assignments),
        buckets=_count_buckets(assignments, num_repeats, batch_size),
    )


def _bucket_bounds_problem(resolution: tuple[int, int], min_reso: int, max_reso: int) -> tuple[str, str] | None:
    """(what, fix) when sd-scripts would assert on the bucket bounds, else None."""
    if min(resolution) < min_reso:
        return (
            f"min_bucket_reso {min_reso} is larger than the resolution's short side {min(resolution)}; sd-scripts asserts.",
            "lower min_bucket_reso or raise the resolution.",
        )
    if max(resolution) > max_reso:
        return (
            f"max_bucket_reso {max_reso} is smaller than the resolution's long side {max(resolution)}; sd-scripts asserts.",
            "raise max_bucket_reso or lower the resolution.",
        )
    return None


def _predefined_selector(predefined: list[tuple[int, int]]):
    ratios = [w / h for w, h in predefined]
    exact = set(predefined)

    def select(size: tuple[int, int]) -> BucketAssignment:
        width, height = size
        aspect = width / height
        if size in exact:
            reso = size  # an image already at a bucket size keeps it, even if another has the same ratio
        else:
            # first bucket (in sorted order) with the smallest aspect-ratio error, like numpy's argmin
            reso = predefined[min(range(len(ratios)), key=lambda i: abs(ratios[i] - aspect))]
        reso_aspect = reso[0] / reso[1]
        scale = reso[1] / height if aspect > reso_aspect else reso[0] / width
        resized = (int(width * scale + 0.5), int(height * scale + 0.5))
        return BucketAssignment(size, reso, resized, reso_aspect - aspect)

    return select


def _round_to_step(value: float, step: int) -> int:
    value = int(value + 0.5)
    return value - value % step


def _select_no_upscale(size: tuple[int, int], resolution: tuple[int, int], step: int) -> BucketAssignment:
    """bucket_no_upscale: shrink (keeping the aspect) only when larger than the area, then floor to the step."""
    width, height = size
    aspect = width / height
    max_area = resolution[0] * resolution[1]
    if width * height > max_area:
        resized_w = math.sqrt(max_area * aspect)
        resized_h = max_area / resized_w
        # round either side to the step; keep whichever rounding distorts the aspect ratio less
        w_rounded = _round_to_step(resized_w, step)
        h_for_w = _round_to_step(w_rounded / aspect, step)
        h_rounded = _round_to_step(resized_h, step)
        w_for_h = _round_to_step(h_rounded * aspect, step)
        err_w = abs(w_rounded / h_for_w - aspect) if h_for_w else math.inf
        err_h = abs(w_for_h / h_rounded - aspect) if h_rounded else math.inf
        if err_w < err_h:
            resized = (w_rounded, int(w_rounded / aspect + 0.5))
        else:
            resized = (int(h_rounded * aspect + 0.5), h_rounded)
    else:
        resized = size
    reso = (resized[0] - resized[0] % step, resized[1] - resized[1] % step)
    ar_error = (reso[0] / reso[1] - aspect) if reso[1] else math.inf
    return BucketAssignment(size, reso, resized, ar_error)


def _count_buckets(assignments: list[BucketAssignment], repeats: int, batch_size: int) -> tuple[Bucket, ...]:
    images: dict[tuple[int, int], int] = {}
    for a in assignments:
        images[a.bucket] = images.get(a.bucket, 0) + 1
    buckets = []
    for reso in sorted(images):
        items = images[reso] * max(repeats, 0)
        batches = math.ceil(items / batch_size)
        last = items - (batches - 1) * batch_size if batches else 0
        buckets.append(Bucket(reso, images[reso], items, batches, last))
    return tuple(buckets)


# --------------------------------------------------------------------------------------------------
# LoRA file size (networks.lora, contract §4.2; checked against the measured files in §11)
# --------------------------------------------------------------------------------------------------

# (in_features, out_features) of every adapted layer, per model part.
def _transformer_block_layers(channels: int, context_dim: int) -> list[tuple[int, int]]:
    c = channels
    return (
        [(c, c)] * 4  # attn1 to_q, to_k, to_v, to_out.0
        + [(c, c), (context_dim, c), (context_dim, c), (c, c)]  # attn2: q from the image, k/v from the text
        + [(c, 8 * c), (4 * c, c)]  # ff.net.0.proj (GEGLU, 2 x 4C) and ff.net.2
    )


def _unet_layers(family: str) -> list[tuple[int, int]]:
    # (channels, Transformer2DModel count, transformer blocks in each); proj_in/proj_out are C -> C
    # (1x1 convs in SD1.5, linears in SDXL: same parameter count for LoRA).
    if family == "sd15":
        context, layout = 768, [(320, 5, 1), (640, 5, 1), (1280, 6, 1)]
    else:
        context, layout = 2048, [(640, 5, 2), (1280, 6, 10)]
    layers: list[tuple[int, int]] = []
    for channels, models, depth in layout:
        per_model = [(channels, channels)] * 2 + _transformer_block_layers(channels, context) * depth
        layers += per_model * models
    return layers


def _clip_layers(layers: int, hidden: int, mlp: int) -> list[tuple[int, int]]:
    return ([(hidden, hidden)] * 4 + [(hidden, mlp), (mlp, hidden)]) * layers  # q, k, v, out_proj, fc1, fc2


def _text_encoder_layers(family: str) -> list[tuple[int, int]]:
    clip_l = _clip_layers(12, 768, 3072)
    return clip_l if family == "sd15" else clip_l + _clip_layers(32, 1280, 5120)  # + OpenCLIP bigG


@dataclass(frozen=True)
class LoraSize:
    modules: int
    tensors: int
    parameters: int
    bytes: int  # estimate: tensor data exactly, safetensors header approximated

    def to_dict(self) -> dict:
        return {"modules": self.modules, "tensors": self.tensors, "parameters": self.parameters, "bytes": self.bytes}


PRECISION_BYTES = {"fp16": 2, "bf16": 2, "float": 4, "fp32": 4, None: 4}
HEADER_BYTES_PER_TENSOR = 150  # '"lora_unet_..._to_k.lora_down.weight":{"dtype":"F16","shape":[..],"data_offsets":[..]}'
HEADER_METADATA_BYTES = 8192  # ss_* / modelspec keys; more with tag frequencies


def lora_file_size(family: str, network_dim: int | None = 4, *, unet_only: bool = False, save_precision: str | None = "fp16") -> LoraSize:
    """Size of one LoRA file from networks.lora (default LierLa targets, no conv_dim)."""
    if family not in FAMILIES:
        raise BadInput(f"unknown model family {family!r}: use one of {', '.join(FAMILIES)}")
    rank = network_dim or 4
    layers = _unet_layers(family) + ([] if unet_only else _text_encoder_layers(family))
    parameters = sum(rank * (fan_in + fan_out) for fan_in, fan_out in layers)  # lora_down + lora_up
    tensors = 3 * len(layers)  # lora_down, lora_up, alpha
    element = PRECISION_BYTES.get(save_precision, 4)
    data = (parameters + len(layers)) * element  # alphas are saved in the same dtype
    return LoraSize(len(layers), tensors, parameters, data + tensors * HEADER_BYTES_PER_TENSOR + HEADER_METADATA_BYTES)


# --------------------------------------------------------------------------------------------------
# Step arithmetic (contract §7.4), saves (§4.1), samples (§3.8)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StepMath:
    items_per_epoch: int
    batches_per_epoch: int
    partial_batches: int
    steps_per_epoch: int
    epochs: int
    total_steps: int
    last_epoch_steps: int
    steps_source: str  # "epochs" | "steps" | "default"
    files_written: tuple[str, ...]
    files_kept: tuple[str, ...]
    peak_files: int
    sample_rounds: int
    sample_images: int
    lora: LoraSize
    sample_bytes: int

    @property
    def lora_bytes_kept(self) -> int:
        return self.lora.bytes * len(self.files_kept)

    @property
    def disk_bytes(self) -> int:
        return self.lora.bytes * max(self.peak_files, len(self.files_kept)) + self.sample_bytes

    def to_dict(self) -> dict:
        return {
            "items_per_epoch": self.items_per_epoch,
            "batches_per_epoch": self.batches_per_epoch,
            "partial_batches": self.partial_batches,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.epochs,
            "total_steps": self.total_steps,
            "last_epoch_steps": self.last_epoch_steps,
            "steps_source": self.steps_source,
            "saves": {
                "written": len(self.files_written),
                "kept": len(self.files_kept),
                "peak": self.peak_files,
                "files_kept": list(self.files_kept),
            },
            "samples": {"rounds": self.sample_rounds, "images": self.sample_images},
            "lora": self.lora.to_dict(),
            "disk": {
                "lora_bytes_kept": self.lora_bytes_kept,
                "lora_bytes_peak": self.lora.bytes * self.peak_files,
                "sample_bytes_estimate": self.sample_bytes,
                "total_bytes_estimate": self.disk_bytes,
            },
        }


def step_math(bucket_items: Sequence[int] | int, batch_size: int, plan: TrainingPlan) -> StepMath:
    """Epoch and step counts, checkpoint files and sample rounds for a run.

    `bucket_items` are the items (images x repeats) per bucket; a plain int means one bucket.
    Each bucket rounds its batches up on its own; optimizer steps per epoch are
    ceil(batches / num_processes / gradient_accumulation_steps).
    """
    counts = [bucket_items] if isinstance(bucket_items, int) else list(bucket_items)
    if batch_size < 1:
        raise BadInput(f"batch_size must be at least 1, got {batch_size}")
    batches = sum(math.ceil(n / batch_size) for n in counts)
    partial = sum(1 for n in counts if n % batch_size)
    steps_per_epoch = math.ceil(batches / plan.num_processes / plan.gradient_accumulation_steps)
    if steps_per_epoch < 1:
        raise BadInput("the dataset has no items, so there is nothing to train: add images or check num_repeats")
    total, source = _total_steps(plan, steps_per_epoch)
    epochs = math.ceil(total / steps_per_epoch)
    written, kept, peak = _simulate_saves(plan, steps_per_epoch, epochs, total)
    rounds = _sample_rounds(plan, epochs, total)
    sample_images = rounds * max(plan.sample_prompts, 0)
    sample_bytes = int(sample_images * plan.sample_size[0] * plan.sample_size[1] * SAMPLE_PNG_BYTES_PER_PIXEL)
    return StepMath(
        items_per_epoch=sum(counts),
        batches_per_epoch=batches,
        partial_batches=partial,
        steps_per_epoch=steps_per_epoch,
        epochs=epochs,
        total_steps=total,
        last_epoch_steps=total - steps_per_epoch * (epochs - 1),
        steps_source=source,
        files_written=tuple(written),
        files_kept=tuple(kept),
        peak_files=peak,
        sample_rounds=rounds,
        sample_images=sample_images,
        lora=lora_file_size(plan.family, plan.network_dim, unet_only=plan.unet_only, save_precision=plan.save_precision),
        sample_bytes=sample_bytes,
    )


def _total_steps(plan: TrainingPlan, steps_per_epoch: int) -> tuple[int, str]:
    if plan.max_train_epochs is not None:  # epochs override steps, as in train_network.py
        return plan.max_train_epochs * steps_per_epoch, "epochs"
    if plan.max_train_steps is not None:
        return plan.max_train_steps, "steps"
    return DEFAULT_MAX_TRAIN_STEPS, "default"


def checkpoint_names(output_name: str | None, ext: str = ".safetensors") -> tuple:
    """(epoch_name(e), step_name(s), final_name) following sd-scripts' defaults when output_name is unset."""
    epoch_base = output_name if output_name is not None else "epoch"
    step_base = output_name if output_name is not None else "at"
    final = (output_name if output_name is not None else "last") + ext
    return (lambda e: f"{epoch_base}-{e:06d}{ext}", lambda s: f"{step_base}-step{s:08d}{ext}", final)


def _simulate_saves(plan: TrainingPlan, steps_per_epoch: int, epochs: int, total: int) -> tuple[list[str], list[str], int]:
    """Walk the save points in training order, applying sd-scripts' rotation rules."""
    epoch_name, step_name, final_name = checkpoint_names(plan.output_name)
    every_epochs, every_steps = plan.save_every_n_epochs, plan.save_every_n_steps
    on_disk: list[str] = []
    written: list[str] = []
    peak = 0

    def save(name: str, remove: str | None) -> None:
        nonlocal peak
        if name in on_disk:
            on_disk.remove(name)  # overwritten in place
        on_disk.append(name)
        written.append(name)
        peak = max(peak, len(on_disk))
        if remove in on_disk:
            on_disk.remove(remove)

    for epoch in range(1, epochs + 1):
        first_step = (epoch - 1) * steps_per_epoch + 1
        last_step = min(epoch * steps_per_epoch, total)
        if every_steps and every_steps > 0:
            start = math.ceil(first_step / every_steps) * every_steps
            for step in range(start, last_step + 1, every_steps):
                save(step_name(step), _removed_step(plan, step, step_name))
        if every_epochs and epoch % every_epochs == 0 and epoch < epochs:  # the last epoch saves as the final model
            save(epoch_name(epoch), _removed_epoch(plan, epoch, epoch_name))
    save(final_name, None)
    return written, on_disk, peak


def _removed_epoch(plan: TrainingPlan, epoch: int, epoch_name) -> str | None:
    if plan.save_last_n_epochs is None:
        return None
    old = epoch - plan.save_every_n_epochs * plan.save_last_n_epochs
    return epoch_name(old) if old > 0 else None


def _removed_step(plan: TrainingPlan, step: int, step_name) -> str | None:
    # save_last_n_steps counts *steps*, not files: step s removes s - M - 1 rounded down to the save interval
    if plan.save_last_n_steps is None:
        return None
    old = step - plan.save_last_n_steps - 1
    old -= old % plan.save_every_n_steps
    return step_name(old) if old > 0 else None


def _sample_rounds(plan: TrainingPlan, epochs: int, total: int) -> int:
    rounds = 1 if plan.sample_at_first else 0
    if plan.sample_every_n_epochs is not None:  # sample_every_n_steps is then ignored
        if plan.sample_every_n_epochs > 0:
            rounds += epochs // plan.sample_every_n_epochs  # every epoch end, the last one included
    elif plan.sample_every_n_steps is not None and plan.sample_every_n_steps > 0:
        rounds += total // plan.sample_every_n_steps
    return rounds


# --------------------------------------------------------------------------------------------------
# Captions: reading like sd-scripts, prefix/suffix, trigger and shuffle rules, token counts
# --------------------------------------------------------------------------------------------------


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


def processed_caption(caption: str, settings: DatasetSettings) -> str:
    """The caption after sd-scripts adds prefix/suffix (joined with a space), before shuffling."""
    if settings.caption_prefix:
        caption = settings.caption_prefix + " " + caption
    if settings.caption_suffix:
        caption = caption + " " + settings.caption_suffix
    return caption


def split_fixed_tags(caption: str, settings: DatasetSettings) -> tuple[list[str], list[str], list[str]]:
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


def _trigger_pattern(trigger: str) -> re.Pattern:
    # CLIP lowercases everything, so the match is case-insensitive; word edges keep "TOK" out of "TOKYO".
    return re.compile(r"(?<!\w)" + re.escape(trigger.strip()) + r"(?!\w)", re.IGNORECASE)


def estimate_clip_tokens(text: str) -> int:
    """A rough CLIP BPE count without the vocabulary: common words are one token, long or rare ones
    split, digits are one token each, punctuation runs about one token per two characters."""
    count = 0
    for piece in re.findall(r"'(?:s|t|re|ve|m|ll|d)|[^\W\d_]+|\d|[^\s\w]+|_+", text.lower()):
        if piece[0].isdigit():
            count += 1
        elif piece[0].isalpha():
            count += 1 if len(piece) <= 10 else math.ceil(len(piece) / 5)
        else:
            count += max(1, math.ceil(len(piece) / 2))
    return count


def _token_upper_bound(text: str) -> int:
    # every BPE token covers at least one non-space byte, so this can never be below the real count
    return len("".join(text.lower().split()).encode("utf-8"))


class TokenCounter:
    """Counts CLIP tokens with the real tokenizer when one is given, else estimates.

    The tokenizer (transformers) is loaded only when some caption could exceed `limit`.
    """

    def __init__(self, tokenizer_dir: Path | None, limit: int):
        self.tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else None
        self.limit = limit
        self.method = "estimate"
        self.problem: str | None = None
        self._tokenizer = None
        self._tried = False

    def count(self, text: str, *, always: bool = False) -> int:
        """Exact when possible and worthwhile (over the limit, or `always`), else the estimate."""
        if (always or _token_upper_bound(text) > self.limit) and self._load():
            return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])
        return estimate_clip_tokens(text)

    def _load(self) -> bool:
        if self._tried:
            return self._tokenizer is not None
        self._tried = True
        if self.tokenizer_dir is None:
            return False
        folder = self.tokenizer_dir / TOKENIZER_FOLDER
        if not (folder / "vocab.json").is_file():
            self.problem = f"no CLIP tokenizer files in {folder}"
            return False
        try:
            from transformers import CLIPTokenizer

            self._tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
        except Exception as exc:  # ImportError, broken files
            self.problem = f"cannot load the CLIP tokenizer from {folder}: {_short(exc)}"
            return False
        self.method = "clip"
        return True


# --------------------------------------------------------------------------------------------------
# 2. check()
# --------------------------------------------------------------------------------------------------


@dataclass
class CheckReport:
    dir: Path
    settings: DatasetSettings
    images: int
    captions: int
    findings: list[Finding]
    buckets: BucketTable | None
    steps: StepMath | None
    token_method: str  # "clip" | "estimate"
    max_tokens: int

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def codes(self) -> set[str]:
        return {f.code for f in self.findings}

    def find(self, code: str) -> list[Finding]:
        return [f for f in self.findings if f.code == code]

    def raise_for_errors(self) -> None:
        """For `kr run`'s pre-run check: Failed (exit 1) naming the first few errors."""
        if self.ok:
            return
        shown = "; ".join(f"{f.file or self.dir.name}: {f.message}" for f in self.errors[:3])
        more = f" (and {len(self.errors) - 3} more)" if len(self.errors) > 3 else ""
        raise Failed(
            f"dataset check found {len(self.errors)} error(s) in {self.dir}: {shown}{more}. "
            f"Run `kr dataset check {self.dir}` for the full list and fixes."
        )

    def to_dict(self) -> dict:
        return {
            "schema": "kr.dataset-check/1",
            "dir": str(self.dir),
            "ok": self.ok,
            "counts": {
                "images": self.images,
                "captions": self.captions,
                "errors": len(self.errors),
                "warnings": len(self.warnings),
            },
            "errors": [f.to_dict() for f in self.errors],
            "warnings": [f.to_dict() for f in self.warnings],
            "tokens": {"method": self.token_method, "limit": self.settings.token_limit, "max": self.max_tokens},
            "buckets": self.buckets.to_dict() if self.buckets else None,
            "steps": self.steps.to_dict() if self.steps else None,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)


def check(
    settings: DatasetSettings,
    plan: TrainingPlan | None = None,
    *,
    tokenizer_dir: Path | None = None,
    workers: int | None = None,
) -> CheckReport:
    """Everything that would go wrong (errors) or quietly badly (warnings) when sd-scripts trains on
    `settings.dir`, plus the bucket table and, with a `plan`, the step arithmetic and disk estimate.

    Reads each file once; writes nothing. Raises BadInput only for a missing folder or bad settings.
    """
    found = scan(settings)
    findings = _settings_findings(settings, plan) + _layout_findings(found, settings)
    probes = probe_images([img.path for img in found.images], workers)
    findings += _image_findings(found, probes)
    findings += _duplicate_findings(found, probes)
    counter = TokenCounter(tokenizer_dir, settings.token_limit)
    caption_findings, max_tokens = _caption_findings(found, settings, counter)
    findings += caption_findings
    if counter.problem:
        findings.append(
            _finding(
                "tokenizer-unavailable", None, f"token counts are estimates: {counter.problem}.",
                "build kr's tokenizer cache, or pass the folder that holds openai_clip-vit-large-patch14/.",
            )
        )
    table = _table_for(found, probes, settings)
    if table is not None:
        findings += _bucket_findings(found, probes, table)
    steps = step_math(table.bucket_items, settings.batch_size, plan) if plan and table and table.items else None
    return CheckReport(
        dir=settings.dir,
        settings=settings,
        images=len(found.images),
        captions=sum(1 for img in found.images if img.caption_path),
        findings=_sorted_findings(findings),
        buckets=table,
        steps=steps,
        token_method=counter.method,
        max_tokens=max_tokens,
    )


def _sorted_findings(findings: list[Finding]) -> list[Finding]:
    order = {code: i for i, code in enumerate(FINDING_CODES)}
    return sorted(findings, key=lambda f: (f.severity != ERROR, order[f.code], f.file or ""))


def _settings_findings(settings: DatasetSettings, plan: TrainingPlan | None) -> list[Finding]:
    out: list[Finding] = []
    if settings.num_repeats < 1:
        out.append(
            _finding(
                "settings-conflict", None,
                f"num_repeats is {settings.num_repeats}: sd-scripts drops the subset and trains on nothing.",
                "set num_repeats to 1 or more.",
            )
        )
    if settings.cache_te_outputs and settings.family == "sd15":
        out.append(
            _finding(
                "settings-conflict", None, "text-encoder output caching exists only for SDXL.",
                "turn cache_te_outputs off for SD1.5.",
            )
        )
    if settings.cache_te_outputs and settings.shuffle_caption:
        out.append(
            _finding(
                "settings-conflict", None,
                "cache_te_outputs with shuffle_caption: sd-scripts asserts, a cached caption cannot be shuffled.",
                "turn shuffle_caption off, or cache_te_outputs off.",
            )
        )
    if plan and settings.cache_te_outputs and settings.family == "sdxl" and not plan.unet_only:
        out.append(
            _finding(
                "settings-conflict", None,
                "cache_te_outputs while training the text encoders: sd-scripts asserts.",
                "set network_train_unet_only (unet_only), or turn cache_te_outputs off.",
            )
        )
    if settings.enable_bucket:
        out += _bucket_setting_findings(settings)
    return out


def _bucket_setting_findings(settings: DatasetSettings) -> list[Finding]:
    out: list[Finding] = []
    divisor = FAMILY_BUCKET_STEP_DIVISOR[settings.family]
    step = settings.bucket_reso_steps
    if step % divisor:
        out.append(
            _finding(
                "bucket-settings", None,
                f"bucket_reso_steps {step} is not a multiple of {divisor}, which {settings.family} requires; sd-scripts asserts.",
                f"set bucket_reso_steps to 64{' (or 32)' if divisor == 32 else ''}.",
            )
        )
    # with bucket_no_upscale min/max shape no bucket, but sd-scripts still rounds and asserts them
    low, high = adjust_bucket_bounds(settings.min_bucket_reso, settings.max_bucket_reso, step)
    if (low, high) != (settings.min_bucket_reso, settings.max_bucket_reso):
        out.append(
            _finding(
                "bucket-reso-adjusted", None,
                f"sd-scripts rounds min/max_bucket_reso {settings.min_bucket_reso}/{settings.max_bucket_reso} "
                f"to {low}/{high} (multiples of bucket_reso_steps {step}).",
                f"set min_bucket_reso={low} and max_bucket_reso={high} to say what happens.",
            )
        )
    problem = _bucket_bounds_problem(settings.resolution, low, high)
    if problem:
        out.append(_finding("bucket-settings", None, *problem))
    return out


def _layout_findings(found: DatasetScan, settings: DatasetSettings) -> list[Finding]:
    out: list[Finding] = []
    match = LEGACY_DIR_RE.match(found.dir.name)
    if match:
        out.append(
            _finding(
                "legacy-dir-name", None,
                f"the folder is named '{found.dir.name}': with a dataset config the '{match.group(1)}' is not a repeat "
                f"count (num_repeats is {settings.num_repeats}) and '{match.group(2)}' is not a class token.",
                f"set num_repeats={match.group(1)} if you meant it; renaming the folder is optional.",
            )
        )
    image_dirs = [(d, _count_images(d, found.image_extensions)) for d in found.subdirs]
    image_dirs = [(d, n) for d, n in image_dirs if n]
    if not found.images:
        out.append(_no_images_finding(found, image_dirs))
    elif image_dirs:
        names = ", ".join(f"{d.name}/ ({n})" for d, n in image_dirs[:5])
        out.append(
            _finding(
                "subfolders-ignored", image_dirs[0][0].name,
                f"images in subfolders are not read (sd-scripts does not recurse): {names}.",
                "move them into the dataset folder, or train them as a separate dataset.",
            )
        )
    out += _ignored_image_findings(found)
    out += _cache_findings(found, settings)
    return out


def _count_images(folder: Path, extensions: Sequence[str]) -> int:
    try:
        files, _ = _list_dir(folder)
    except OSError:
        return 0
    return sum(1 for name in files if _is_sd_image(name, extensions))


def _no_images_finding(found: DatasetScan, image_dirs: list[tuple[Path, int]]) -> Finding:
    legacy = [(d, n) for d, n in image_dirs if LEGACY_DIR_RE.match(d.name)]
    if legacy:
        folder, count = legacy[0]
        repeats = LEGACY_DIR_RE.match(folder.name).group(1)
        return _finding(
            "legacy-parent-dir", folder.name,
            f"{found.dir} holds no images but {len(legacy)} N_name subfolder(s) such as '{folder.name}/' ({count} images): "
            "that is the old --train_data_dir layout. With a dataset config sd-scripts finds nothing, logs "
            "'No data found' and exits 0 without training.",
            f"point the dataset at {folder} and set num_repeats={repeats} (one dataset per subfolder).",
        )
    if image_dirs:
        folder, count = image_dirs[0]
        return _finding(
            "no-images", None,
            f"{found.dir} holds no images itself; '{folder.name}/' has {count}. sd-scripts does not recurse, "
            "logs 'No data found' and exits 0 without training.",
            f"point the dataset at {folder}.",
        )
    ignored = f" ({len(found.ignored_images)} image files in formats it skips)" if found.ignored_images else ""
    return _finding(
        "no-images", None,
        f"no image sd-scripts would read in {found.dir}{ignored}; it logs 'No data found' and exits 0.",
        f"add {', '.join(BASE_IMAGE_EXTENSIONS)} images (lower- or upper-case extensions only).",
    )


def _ignored_image_findings(found: DatasetScan) -> list[Finding]:
    out = []
    for path in found.ignored_images:
        ext = os.path.splitext(path.name)[1]
        if ext.lower() in (e.lower() for e in found.image_extensions):
            why = f"its extension '{ext}' is mixed-case; sd-scripts only matches '{ext.lower()}' or '{ext.upper()}'"
            fix = f"rename it to {os.path.splitext(path.name)[0]}{ext.lower()}."
        elif ext.lower() in PLUGIN_IMAGE_EXTENSIONS:
            plugins = " or ".join(PLUGIN_IMAGE_EXTENSIONS[ext.lower()])
            why = f"{ext} is read only when {plugins} is installed in the trainer environment"
            fix = f"convert it to PNG, or install the plugin in the trainer environment and pass extra_image_extensions=('{ext.lower()}',)."
        else:
            why = f"{ext} is not a format sd-scripts reads"
            fix = "convert it to PNG (lossless) or delete it."
        out.append(_finding("image-ignored-format", path.name, f"{path.name} is ignored by sd-scripts: {why}.", fix))
    return out


def _cache_findings(found: DatasetScan, settings: DatasetSettings) -> list[Finding]:
    """Group cache files by kind; one finding per kind names the first file and the count."""
    image_stems = {os.path.splitext(img.rel)[0] for img in found.images}
    groups: dict[str, list[str]] = {}
    for path in found.cache_files:
        kind = _cache_kind(path.name, image_stems)
        if kind:
            groups.setdefault(kind, []).append(path.name)
    out = []
    why = (
        "sd-scripts reuses these silently, even for another resolution, bucket setting, VAE, base model or caption, "
        "and reads image sizes from cache file names. kr keeps its own caches in its workspace (per model and settings)."
    )
    for kind, names in groups.items():
        more = f" and {len(names) - 1} more" if len(names) > 1 else ""
        used = _cache_used_now(kind, settings)
        out.append(
            _finding(
                "cache-stale", names[0], f"{kind} cache file {names[0]}{more} beside the images: {why}{used}",
                "delete them (kr never needs them) or move them out of the dataset folder.",
            )
        )
    return out


def _cache_used_now(kind: str, settings: DatasetSettings) -> str:
    latent = "latent" in kind and settings.cache_latents
    text = kind.startswith("SDXL text") and settings.cache_te_outputs
    if latent or text:
        return " With these settings sd-scripts would load them instead of encoding again."
    return ""


def _cache_kind(name: str, image_stems: set[str]) -> str | None:
    if name == INFO_CACHE_NAME:
        return "image-info (cache_info)"
    if name.endswith(TE_CACHE_SUFFIX):
        return "SDXL text-encoder output"
    match = LATENT_CACHE_RE.match(name)
    if match:
        return f"{match.group('arch').upper()} latent"
    if name.endswith(".npz"):
        return "legacy latent" if name[:-4] in image_stems else "unknown .npz"
    return None


def _image_findings(found: DatasetScan, probes: list[ImageProbe]) -> list[Finding]:
    out: list[Finding] = []
    for img, probe in zip(found.images, probes):
        out += _one_image_findings(img, probe)
    return out


def _one_image_findings(img: DatasetImage, probe: ImageProbe) -> list[Finding]:
    name = img.rel
    if probe.error == "unreadable":
        return [
            _finding(
                "image-unreadable", name, f"{name} cannot be opened as an image ({probe.detail}); sd-scripts crashes on it.",
                "re-export it as PNG or JPEG, or remove it.",
            )
        ]
    out = []
    if probe.error:
        out.append(
            _finding(
                f"image-{probe.error}", name,
                f"{name} does not decode fully ({probe.detail}); sd-scripts crashes when it loads it.",
                "re-export or re-download it, or remove it (and its caption).",
            )
        )
    ext = os.path.splitext(name)[1].lower()
    expected = FORMAT_EXTENSIONS.get(probe.format or "")
    if expected and ext not in expected:
        out.append(
            _finding(
                "image-wrong-extension", name,
                f"{name} is a {probe.format} file with a '{ext}' extension; PIL reads it anyway, other tools may not.",
                f"rename it to {os.path.splitext(name)[0]}{expected[0]} (the caption keeps its name).",
            )
        )
    if probe.exif_orientation:
        out.append(
            _finding(
                "image-exif-rotated", name,
                f"{name} has EXIF orientation {probe.exif_orientation}: viewers rotate it, sd-scripts trains it unrotated.",
                "apply the rotation to the pixels (e.g. re-save with the orientation baked in).",
            )
        )
    if probe.transparent:
        out.append(
            _finding(
                "image-transparent", name,
                f"{name} has transparent pixels; sd-scripts drops alpha, so they train as their stored colour (often black).",
                "flatten it onto the background you want, or train with alpha_mask.",
            )
        )
    if probe.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        out.append(
            _finding(
                "image-high-bit-depth", name,
                f"{name} is {probe.mode} (16-bit/float greyscale); the RGB conversion sd-scripts does clips it, often to white.",
                "convert it to 8-bit RGB.",
            )
        )
    return out


def _duplicate_findings(found: DatasetScan, probes: list[ImageProbe]) -> list[Finding]:
    out: list[Finding] = []
    first_by_hash: dict[str, str] = {}
    exact_pairs: set[tuple[int, int]] = set()
    index_by_name = {img.rel: i for i, img in enumerate(found.images)}
    for i, (img, probe) in enumerate(zip(found.images, probes)):
        if not probe.sha256:
            continue
        original = first_by_hash.setdefault(probe.sha256, img.rel)
        if original != img.rel:
            exact_pairs.add((index_by_name[original], i))
            out.append(
                _finding(
                    "image-duplicate", img.rel,
                    f"{img.rel} is byte-identical to {original}: it trains twice as often as the others.",
                    f"delete {img.rel} (and its caption) unless the extra weight is intended.",
                )
            )
    out += _near_duplicate_findings(found, probes, exact_pairs)
    return out


def near_duplicate_pairs(probes: Sequence[ImageProbe]) -> list[tuple[int, int, int]]:
    """(i, j, hamming bits) for pairs with close dHashes and close mean colours."""
    import numpy as np

    usable = [i for i, p in enumerate(probes) if p.dhash is not None]
    if len(usable) < 2:
        return []
    hashes = np.array([probes[i].dhash for i in usable], dtype=np.uint64)
    means = np.array([probes[i].mean_rgb for i in usable], dtype=np.float64)
    pairs = []
    for a in range(len(usable) - 1):
        xor = np.bitwise_xor(hashes[a], hashes[a + 1 :])
        bits = np.bitwise_count(xor) if hasattr(np, "bitwise_count") else np.unpackbits(xor.view(np.uint8)).reshape(-1, 64).sum(1)
        colour = np.abs(means[a + 1 :] - means[a]).max(axis=1)
        for offset in np.nonzero((bits <= NEAR_DUP_MAX_BITS) & (colour <= NEAR_DUP_MAX_COLOR))[0]:
            pairs.append((usable[a], usable[a + 1 + int(offset)], int(bits[offset])))
    return pairs


def _near_duplicate_findings(found: DatasetScan, probes: list[ImageProbe], exact: set[tuple[int, int]]) -> list[Finding]:
    out = []
    reported: set[int] = set()
    for i, j, bits in near_duplicate_pairs(probes):
        if (i, j) in exact or j in reported or probes[i].sha256 == probes[j].sha256:
            continue
        reported.add(j)
        first, second = found.images[i].rel, found.images[j].rel
        out.append(
            _finding(
                "image-near-duplicate", second,
                f"{second} looks almost identical to {first} (perceptual hash {bits}/64 bits apart): "
                "near-copies overweight one picture and teach less style.",
                f"keep the better of {first} and {second}, or make sure the difference is intended.",
            )
        )
    return out


def _caption_findings(found: DatasetScan, settings: DatasetSettings, counter: TokenCounter) -> tuple[list[Finding], int]:
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
    return out, max_tokens


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
            _finding(
                "caption-empty", cap, f"{cap} is empty (0 bytes): sd-scripts stops with 'caption file is empty'.",
                f"write a caption into {cap} (e.g. `kr dataset caption DIR --from-filename`), or delete it.",
            )
        ], None
    if read.error == "not-utf8":
        return [
            _finding(
                "caption-not-utf8", cap,
                f"{cap} is not UTF-8 (invalid byte 0x{read.raw[read.bad_offset]:02x} at byte offset {read.bad_offset}); "
                "sd-scripts crashes with UnicodeDecodeError.",
                f"re-save {cap} as UTF-8 (e.g. `iconv -f latin1 -t utf-8`).",
            )
        ], None
    if read.error == "unreadable":
        return [_finding("caption-unreadable", cap, f"{cap} cannot be read.", f"check the permissions of {cap}.")], None
    out = []
    if read.text.startswith("\ufeff"):
        out.append(
            _finding(
                "caption-bom", cap, f"{cap} starts with a UTF-8 byte-order mark; sd-scripts keeps it as part of the first tag.",
                f"re-save {cap} as UTF-8 without BOM.",
            )
        )
    if read.extra_lines:
        out.append(
            _finding(
                "caption-multiline", cap,
                f"{cap} has {read.extra_lines} more non-empty line(s); sd-scripts uses only the first line.",
                "join the caption into one line, or set enable_wildcard=true to pick a random line each time.",
            )
        )
    if not read.caption.strip("\ufeff"):
        out.append(
            _finding(
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
            _finding(
                "caption-other-extension", img.rel,
                f"{img.rel} has a caption in {other.name}, but caption_extension is '{ext}', so sd-scripts will not read it.",
                fix,
            )
        ]
    if settings.class_tokens:
        return [
            _finding(
                "caption-class-tokens", img.rel,
                f"{img.rel} has no {stem}{ext}; sd-scripts uses class_tokens '{settings.class_tokens}' as its whole caption.",
                f"write {stem}{ext} describing the picture.",
            )
        ]
    return [
        _finding(
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
            _finding(
                "trigger-missing", where,
                f"the trigger '{settings.trigger}' is not in the caption of {img.rel}"
                + (" (after caption_prefix/suffix)." if settings.caption_prefix or settings.caption_suffix else "."),
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
        _finding(
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
    return _finding(
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
                _finding(
                    "caption-orphan", path.name, f"{path.name} has no image that sd-scripts would read beside it.",
                    "check the image's name and format, or delete the caption.",
                )
            )
    return out


def _table_for(found: DatasetScan, probes: list[ImageProbe], settings: DatasetSettings) -> BucketTable | None:
    return _bucket_table_or_none([p.size for p in probes if p.size], settings)


def _bucket_table_or_none(sizes: list[tuple[int, int]], settings: DatasetSettings) -> BucketTable | None:
    try:
        return bucket_table(
            sizes,
            resolution=settings.resolution,
            enable_bucket=settings.enable_bucket,
            min_bucket_reso=settings.min_bucket_reso,
            max_bucket_reso=settings.max_bucket_reso,
            bucket_reso_steps=settings.bucket_reso_steps,
            bucket_no_upscale=settings.bucket_no_upscale,
            num_repeats=settings.num_repeats,
            batch_size=settings.batch_size,
        )
    except BadInput:
        return None  # check() reports the settings themselves as bucket-settings


def _bucket_findings(found: DatasetScan, probes: list[ImageProbe], table: BucketTable) -> list[Finding]:
    # the table holds one assignment per image whose size could be read, in scan order
    sized = [img.rel for img, probe in zip(found.images, probes) if probe.size]
    out = []
    for name, assignment in zip(sized, table.assignments):
        out += _one_bucket_findings(name, assignment, table)
    return out


def _one_bucket_findings(name: str, a: BucketAssignment, table: BucketTable) -> list[Finding]:
    w, h = a.size
    bw, bh = a.bucket
    if not table.enable_bucket:
        if a.size == table.resolution:
            return []
        too = "larger" if w >= bw and h >= bh else "smaller"
        return [
            _finding(
                "image-size-mismatch", name,
                f"{name} is {w}x{h} but bucketing is off, so it must be exactly {bw}x{bh}; sd-scripts asserts "
                f"('image {'too large' if too == 'larger' else 'size is small'}').",
                "set enable_bucket=true (recommended), or resize the image.",
            )
        ]
    if bw < table.bucket_reso_steps or bh < table.bucket_reso_steps:
        return [
            _finding(
                "image-too-small", name,
                f"{name} is {w}x{h}: with bucket_no_upscale its bucket would be {bw}x{bh}, smaller than one step of "
                f"{table.bucket_reso_steps} px, and sd-scripts cannot train it.",
                "use a larger image, or turn bucket_no_upscale off.",
            )
        ]
    if table.bucket_no_upscale:
        target = table.resolution[0] * table.resolution[1]
        if bw * bh < SMALL_BUCKET_AREA_FRACTION * target:
            return [
                _finding(
                    "image-small-bucket", name,
                    f"{name} is {w}x{h}; with bucket_no_upscale it trains at {bw}x{bh}, "
                    f"{bw * bh / target:.0%} of the {table.resolution[0]}x{table.resolution[1]} area.",
                    "use a larger image, or turn bucket_no_upscale off to scale it up.",
                )
            ]
        return []
    if a.scale > UPSCALE_WARN_FACTOR:
        return [
            _finding(
                "image-upscaled", name,
                f"{name} is {w}x{h} and is upscaled {a.scale:.2f}x (to {a.resized[0]}x{a.resized[1]}) to fill its "
                f"{bw}x{bh} bucket; it will train soft.",
                f"use a source of at least {math.ceil(w * a.scale)}x{math.ceil(h * a.scale)}, or remove it.",
            )
        ]
    return []


# --------------------------------------------------------------------------------------------------
# 4. caption(): the one command that writes into the dataset folder
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# 5. stats()
# --------------------------------------------------------------------------------------------------

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
    """Counts, formats, resolutions, buckets, caption lengths and frequent words. Reads image headers only."""
    settings = _settings_for(dir, settings)
    found = scan(settings)
    headers = [_image_header(img.path) for img in found.images]
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
        buckets=_bucket_table_or_none(sizes, settings),
        caption_words=_summary([len(t.split()) for t in texts]),
        caption_tokens={**_summary(tokens), "method": counter.method, "limit": settings.token_limit},
        top_words=_top_words(texts, top),
    )


def _settings_for(dir: Path, settings: DatasetSettings | None) -> DatasetSettings:
    if settings is None:
        return DatasetSettings(dir=Path(dir))
    return settings if Path(dir) == settings.dir else dc_replace(settings, dir=Path(dir))


def _image_header(path: Path) -> tuple[str | None, tuple[int, int] | None]:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.format, img.size
    except Exception:
        return None, None


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


# --------------------------------------------------------------------------------------------------
# 6. manifest(): what the run archive stores to trace a LoRA to its exact dataset
# --------------------------------------------------------------------------------------------------


def manifest(dir: Path, settings: DatasetSettings | None = None) -> dict:
    """Relative names, sizes and sha256 of every image sd-scripts would read and of its caption file,
    with counts and a `manifest_sha256` over all of it. No absolute paths, no caption text, no folder
    name, no timestamps: the same bytes always give the same hash."""
    settings = _settings_for(dir, settings)
    found = scan(settings)
    files = []
    for img in found.images:
        files.append(_manifest_entry(img.path, img.rel, "image"))
        if img.caption_path is not None:
            files.append(_manifest_entry(img.caption_path, img.caption_path.name, "caption", image=img.rel))
    body = {
        "schema": "kr.dataset-manifest/1",
        "caption_extension": found.caption_extension,
        "counts": {
            "images": len(found.images),
            "captions": sum(1 for f in files if f["kind"] == "caption"),
            "bytes": sum(f["bytes"] for f in files),
        },
        "files": files,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return {**body, "manifest_sha256": hashlib.sha256(canonical).hexdigest()}


def _manifest_entry(path: Path, rel: str, kind: str, image: str | None = None) -> dict:
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
    except OSError as exc:
        raise Failed(f"cannot read {path} for the dataset manifest: {exc.strerror}. Check its permissions.") from None
    entry = {"path": rel, "kind": kind, "bytes": size, "sha256": digest.hexdigest()}
    if image is not None:
        entry["image"] = image
    return entry


# ---------------------------------------------------------------------------------------------
# From kr's run spec (duck-typed, so this module needs nothing from kohya_runner.spec).


def settings_from_spec(spec) -> DatasetSettings:
    d = spec.dataset
    return DatasetSettings(
        dir=Path(d.dir), family=spec.model.family, caption_extension=d.caption_extension, trigger=d.trigger,
        caption_prefix=d.caption_prefix, caption_suffix=d.caption_suffix, keep_tokens=d.keep_tokens,
        keep_tokens_separator=d.keep_tokens_separator or "", shuffle_caption=d.shuffle_caption,
        resolution=tuple(d.resolution), enable_bucket=d.enable_bucket, min_bucket_reso=d.min_bucket_reso,
        max_bucket_reso=d.max_bucket_reso, bucket_reso_steps=d.bucket_reso_steps, bucket_no_upscale=d.bucket_no_upscale,
        batch_size=d.batch_size, num_repeats=d.repeats, max_token_length=spec.model.max_token_length,
        cache_latents=spec.precision.cache_latents or spec.precision.cache_latents_to_disk,
        cache_te_outputs=spec.precision.cache_text_encoder_outputs or spec.precision.cache_text_encoder_outputs_to_disk)


def plan_from_spec(spec, num_processes: int = 1) -> TrainingPlan:
    t, s, sv = spec.training, spec.sampling, spec.saving
    return TrainingPlan(
        max_train_epochs=t.epochs, max_train_steps=t.steps, gradient_accumulation_steps=t.gradient_accumulation_steps,
        num_processes=num_processes, save_every_n_epochs=sv.every_n_epochs, save_every_n_steps=sv.every_n_steps,
        save_last_n_epochs=sv.last_n_epochs, save_last_n_steps=sv.last_n_steps,
        sample_every_n_epochs=s.every_n_epochs if s.prompts else None,
        sample_every_n_steps=s.every_n_steps if s.prompts else None, sample_at_first=s.at_first and bool(s.prompts),
        sample_prompts=len(s.prompts), sample_size=spec.sample_size, network_dim=spec.network.dim,
        family=spec.model.family, unet_only=spec.network.unet_only, save_precision=sv.precision,
        output_name=spec.output_name)
