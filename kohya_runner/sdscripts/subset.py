"""One DreamBooth-style subset as sd-scripts reads it (dataset TOML §2.3), the rules it asserts on at
start-up about those settings, and what it makes of an old `N_name` folder."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadInput
from .architectures import FAMILIES, FAMILY_RESOLUTION
from .buckets import FAMILY_BUCKET_STEP_DIVISOR, adjust_bucket_bounds, bucket_bounds_problem
from .cache_files import latents_cached, te_cached
from .captions import CLIP_CHUNK
from .images import dotted

# The --train_data_dir layout: `<repeats>_<class tokens>` folders. Means nothing with a dataset config.
LEGACY_DIR_RE = re.compile(r"^(\d+)_(.*)$")


@dataclass(frozen=True)
class DatasetSettings:
    """What the dataset checks need, in sd-scripts' own terms (one DreamBooth-style subset).

    `resolution` may be an int or (W, H); None takes the family's native size (512 / 1024).
    `extra_image_extensions` None detects the AVIF/JXL PIL plugins in *this* interpreter; pass the
    trainer environment's answer when it differs (e.g. `(".avif",)`). Raises BadInput for values
    sd-scripts rejects.
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
    validation_split: float = 0.0  # the dataset-level key; 0 = no validation split

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "dir", Path(self.dir))
        if self.family not in FAMILIES:
            raise BadInput(f"unknown model family {self.family!r}: use one of {', '.join(FAMILIES)}")
        set_(self, "caption_extension", dotted(self.caption_extension))
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


def dotted(ext: str) -> str:
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


def settings_from_spec(spec) -> DatasetSettings:
    """The subset settings of kr's run spec (duck-typed). Raises BadInput for settings sd-scripts rejects."""
    d = spec.dataset
    return DatasetSettings(
        dir=Path(d.dir), family=spec.model.family, caption_extension=d.caption_extension, trigger=d.trigger,
        caption_prefix=d.caption_prefix, caption_suffix=d.caption_suffix, keep_tokens=d.keep_tokens,
        keep_tokens_separator=d.keep_tokens_separator or "", shuffle_caption=d.shuffle_caption,
        resolution=tuple(d.resolution), enable_bucket=d.enable_bucket, min_bucket_reso=d.min_bucket_reso,
        max_bucket_reso=d.max_bucket_reso, bucket_reso_steps=d.bucket_reso_steps, bucket_no_upscale=d.bucket_no_upscale,
        batch_size=d.batch_size, num_repeats=d.repeats, max_token_length=spec.model.max_token_length,
        cache_latents=latents_cached(spec), cache_te_outputs=te_cached(spec), validation_split=d.validation_split)


def repeats_is(settings: DatasetSettings) -> str:
    return f"num_repeats is {settings.num_repeats}"


def set_repeats(count: int | str) -> str:
    return f"set num_repeats={count}"


def setting_problems(settings: DatasetSettings, unet_only: bool | None = None) -> list[tuple[str, str, str]]:
    """(code, what, fix) for settings sd-scripts refuses or changes at start-up. `unet_only` None means
    the training plan is unknown (the text-encoder caching rule is then not checked)."""
    out: list[tuple[str, str, str]] = []
    if settings.num_repeats < 1:
        out.append(("settings-conflict",
                    f"num_repeats is {settings.num_repeats}: sd-scripts drops the subset and trains on nothing.",
                    "set num_repeats to 1 or more."))
    if settings.cache_te_outputs and settings.family == "sd15":
        out.append(("settings-conflict", "text-encoder output caching exists only for SDXL.",
                    "turn cache_te_outputs off for SD1.5."))
    if settings.cache_te_outputs and settings.shuffle_caption:
        out.append(("settings-conflict",
                    "cache_te_outputs with shuffle_caption: sd-scripts asserts, a cached caption cannot be shuffled.",
                    "turn shuffle_caption off, or cache_te_outputs off."))
    if unet_only is False and settings.cache_te_outputs and settings.family == "sdxl":
        out.append(("settings-conflict", "cache_te_outputs while training the text encoders: sd-scripts asserts.",
                    "set network_train_unet_only (unet_only), or turn cache_te_outputs off."))
    if settings.enable_bucket:
        out += _bucket_setting_problems(settings)
    return out


def _bucket_setting_problems(settings: DatasetSettings) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    divisor = FAMILY_BUCKET_STEP_DIVISOR[settings.family]
    step = settings.bucket_reso_steps
    if step % divisor:
        out.append(("bucket-settings",
                    f"bucket_reso_steps {step} is not a multiple of {divisor}, which {settings.family} requires; sd-scripts asserts.",
                    f"set bucket_reso_steps to 64{' (or 32)' if divisor == 32 else ''}."))
    # with bucket_no_upscale min/max shape no bucket, but sd-scripts still rounds and asserts them
    low, high = adjust_bucket_bounds(settings.min_bucket_reso, settings.max_bucket_reso, step)
    if (low, high) != (settings.min_bucket_reso, settings.max_bucket_reso):
        out.append(("bucket-reso-adjusted",
                    f"sd-scripts rounds min/max_bucket_reso {settings.min_bucket_reso}/{settings.max_bucket_reso} "
                    f"to {low}/{high} (multiples of bucket_reso_steps {step}).",
                    f"set min_bucket_reso={low} and max_bucket_reso={high} to say what happens."))
    problem = bucket_bounds_problem(settings.resolution, low, high)
    if problem:
        out.append(("bucket-settings", *problem))
    return out
