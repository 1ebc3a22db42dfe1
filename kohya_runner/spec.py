"""The run spec: every knob of a LoRA style run, validated. The single source of truth.

Presets, user files and `key.path=value` overrides all end up here; render turns a Spec into
sd-scripts files. Field names are kr's own (grouped, readable); kohya_runner.contract maps them to
sd-scripts options. Types and ranges are checked by pydantic; the rules that span fields (the ones
sd-scripts asserts on at start-up, or silently ignores) are checked by `cross_field_problems`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, Literal, Optional, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import BadInput

Family = Literal["sdxl", "sd15"]
MetadataPolicy = Literal["keep", "minimal", "scrub"]

# The options sd-scripts' argparse offers for these (vendor/sd-scripts-args.json).
SAMPLERS = ("ddim", "pndm", "lms", "euler", "euler_a", "heun", "dpm_2", "dpm_2_a", "dpmsolver",
            "dpmsolver++", "dpmsingle", "k_lms", "k_euler", "k_euler_a", "k_dpm_2", "k_dpm_2_a")
Sampler = Literal[SAMPLERS]  # type: ignore[valid-type]


class Group(BaseModel):
    # extra="forbid": a misspelled key is an error here, where sd-scripts would silently ignore it.
    model_config = ConfigDict(extra="forbid", validate_default=True)


def _single_line(value: Optional[str]) -> Optional[str]:
    """Reject characters that would start a new line in a prompts file or a log (CR, LF, U+2028, …)."""
    if value is None:
        return value
    for ch in value:
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp") and ch != "\t":
            raise ValueError(f"contains the control character {ch!r}; use a single line of plain text")
    return value


def _no_option_marker(value: Optional[str]) -> Optional[str]:
    # sd-scripts cuts prompt lines at every " --" (contract §3.8): the text after it becomes an option.
    if value is not None and " --" in value:
        raise ValueError("contains ' --', which sd-scripts reads as the start of a prompt option")
    return value


def _path_text(value: Optional[str]) -> Optional[str]:
    if value is not None and ("\x00" in value or value.strip() == ""):
        raise ValueError("is not a usable path (empty or contains a NUL byte)")
    return value


class ModelSpec(Group):
    base: Optional[str] = Field(None, description="base model: a .safetensors/.ckpt file, a Diffusers folder, or 'tiny'")
    family: Family = Field("sdxl", description="sdxl → sdxl_train_network.py, sd15 → train_network.py")
    vae: Optional[str] = Field(None, description="replacement VAE file or folder")
    tokenizer_cache_dir: Optional[str] = Field(None, description="offline tokenizer folder (default: the workspace's)")
    v_parameterization: bool = False
    clip_skip: Optional[int] = Field(None, ge=1, le=12, description="SD1.5 only")
    max_token_length: Optional[Literal[150, 225]] = Field(None, description="omit for 75 tokens")

    _paths = field_validator("base", "vae", "tokenizer_cache_dir")(_path_text)


Resolution = tuple[int, int]


class DatasetSpec(Group):
    dir: Optional[str] = Field(None, description="folder holding the images and caption files")
    repeats: int = Field(10, ge=1, le=10_000)
    caption_extension: str = ".txt"
    trigger: Optional[str] = Field("TOK", min_length=1, max_length=100)
    caption_prefix: Optional[str] = Field(None, max_length=500)
    caption_suffix: Optional[str] = Field(None, max_length=500)
    shuffle_caption: bool = False
    keep_tokens: int = Field(0, ge=0, le=100)
    keep_tokens_separator: Optional[str] = None
    caption_dropout_rate: float = Field(0.0, ge=0.0, le=1.0)
    caption_tag_dropout_rate: float = Field(0.0, ge=0.0, le=1.0)
    resolution: Resolution = Field((1024, 1024), description="W,H or one number for a square")
    enable_bucket: bool = True
    min_bucket_reso: int = Field(512, ge=32, le=8192)
    max_bucket_reso: int = Field(2048, ge=64, le=8192)
    bucket_reso_steps: int = Field(64, ge=8, le=1024)
    bucket_no_upscale: bool = False
    batch_size: int = Field(1, ge=1, le=256)
    flip_aug: bool = False
    color_aug: bool = False
    random_crop: bool = False

    _paths = field_validator("dir")(_path_text)
    _lines = field_validator("trigger", "caption_prefix", "caption_suffix", "keep_tokens_separator")(_single_line)
    _marker = field_validator("trigger")(_no_option_marker)

    @field_validator("resolution", mode="before")
    @classmethod
    def _resolution(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("expected a size such as 1024 or 1024,768")
        if isinstance(value, int):
            return (value, value)
        if isinstance(value, str):
            parts = [p.strip() for p in value.replace("x", ",").split(",")]
            if not all(p.isdigit() for p in parts) or len(parts) not in (1, 2):
                raise ValueError("expected a size such as 1024 or 1024,768")
            numbers = [int(p) for p in parts]
            return (numbers[0], numbers[-1])
        if isinstance(value, (list, tuple)) and len(value) == 1:
            return (value[0], value[0])
        return value

    @field_validator("resolution")
    @classmethod
    def _resolution_range(cls, value: Resolution) -> Resolution:
        if not all(64 <= side <= 8192 for side in value):
            raise ValueError("each side must be between 64 and 8192 pixels")
        return value

    @field_validator("caption_extension")
    @classmethod
    def _caption_extension(cls, value: str) -> str:
        value = value if value.startswith(".") else "." + value
        if not re.fullmatch(r"\.[A-Za-z0-9_.-]{1,20}", value):
            raise ValueError("expected a file extension such as .txt")
        return value


NETWORK_LORA_ARGS = ("conv_dim", "conv_alpha", "rank_dropout", "module_dropout", "block_dims", "block_alphas",
                     "conv_block_dims", "conv_block_alphas", "down_lr_weight", "mid_lr_weight", "up_lr_weight",
                     "block_lr_zero_threshold", "loraplus_lr_ratio", "loraplus_unet_lr_ratio",
                     "loraplus_text_encoder_lr_ratio")
ArgValue = Union[bool, int, float, str]


class NetworkSpec(Group):
    module: str = "networks.lora"
    dim: int = Field(16, ge=1, le=1024, description="LoRA rank")
    alpha: float = Field(8.0, ge=0.0, le=1024.0, description="scale = alpha / dim; 0 means alpha = dim")
    dropout: Optional[float] = Field(None, ge=0.0, le=1.0)
    args: dict[str, ArgValue] = Field(default_factory=dict, description="module arguments (network_args)")
    unet_only: bool = True
    weights: Optional[str] = Field(None, description="start from these LoRA weights (network_weights)")

    _paths = field_validator("weights")(_path_text)

    @field_validator("module")
    @classmethod
    def _module(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", value):
            raise ValueError("expected an importable module path such as networks.lora")
        return value

    @field_validator("args")
    @classmethod
    def _args(cls, value: dict[str, ArgValue]) -> dict[str, ArgValue]:
        return _check_key_value_args(value, quote_strings=False)


def _check_key_value_args(args: dict[str, ArgValue], *, quote_strings: bool) -> dict[str, ArgValue]:
    """sd-scripts splits `key=value` items on '=' and keeps them on one line (contract §3.2, §3.3)."""
    for key, value in args.items():
        if not re.fullmatch(r"[A-Za-z_]\w*", key):
            raise ValueError(f"argument name {key!r} is not a plain identifier")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"argument {key} must be a finite number")
        if isinstance(value, str):
            if "=" in value:
                raise ValueError(f"argument {key}: sd-scripts splits on '=', so the value may not contain it")
            _single_line(value)
    return args


ADAPTIVE_OPTIMIZERS = ("Prodigy", "DAdaptation", "DAdaptAdamPreprint", "DAdaptAdaGrad", "DAdaptAdam",
                       "DAdaptAdan", "DAdaptAdanIP", "DAdaptLion", "DAdaptSGD")
SCHEDULE_FREE_OPTIMIZERS = ("RAdamScheduleFree", "AdamWScheduleFree", "SGDScheduleFree")
BUILTIN_OPTIMIZERS = ("AdamW", "AdamW8bit", "SGDNesterov", "SGDNesterov8bit", "Lion", "Lion8bit",
                      "PagedAdamW", "PagedAdamW8bit", "PagedAdamW32bit", "PagedLion8bit", "Adafactor",
                      *ADAPTIVE_OPTIMIZERS, *SCHEDULE_FREE_OPTIMIZERS)


class OptimizerSpec(Group):
    type: str = Field("AdamW", description="a built-in name (case-insensitive) or module.Class")
    args: dict[str, ArgValue] = Field(default_factory=dict, description="optimizer_args; strings are quoted for you")
    lr: float = Field(1e-4, gt=0.0, le=10.0)
    unet_lr: Optional[float] = Field(None, ge=0.0, le=10.0)
    text_encoder_lr: Optional[float] = Field(None, ge=0.0, le=10.0)
    max_grad_norm: float = Field(1.0, ge=0.0, le=1000.0)

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        for name in BUILTIN_OPTIMIZERS:
            if value.lower() == name.lower():
                return name
        if "." in value and re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+", value):
            return value  # a custom class, module.path.ClassName (contract §3.3)
        close = difflib.get_close_matches(value, BUILTIN_OPTIMIZERS, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]}?" if close else ""
        raise ValueError(f"is not an sd-scripts optimizer.{hint} Built-in names: {', '.join(BUILTIN_OPTIMIZERS)}; "
                         "or give a class path such as pytorch_optimizer.CAME")

    @field_validator("args")
    @classmethod
    def _args(cls, value: dict[str, ArgValue]) -> dict[str, ArgValue]:
        return _check_key_value_args(value, quote_strings=True)


SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial",
              "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay", "piecewise_constant", "adafactor")


class SchedulerSpec(Group):
    name: Literal[SCHEDULERS] = "constant_with_warmup"  # type: ignore[valid-type]
    warmup_steps: Union[int, float] = Field(0, ge=0, description="an int is steps, a float < 1 a ratio of all steps")
    cycles: Optional[int] = Field(None, ge=1, le=1000)
    power: Optional[float] = Field(None, gt=0.0, le=100.0)
    min_lr_ratio: Optional[float] = Field(None, ge=0.0, le=1.0)
    args: dict[str, ArgValue] = Field(default_factory=dict)

    @field_validator("warmup_steps")
    @classmethod
    def _warmup(cls, value: Union[int, float]) -> Union[int, float]:
        # sd-scripts always reads a float as a ratio (contract §2.1): 100.0 would mean 100 × all steps.
        if isinstance(value, float) and value >= 1:
            if value.is_integer():
                return int(value)
            raise ValueError("a float is a ratio of all steps and must be below 1; give whole steps as an integer")
        return value

    @field_validator("args")
    @classmethod
    def _args(cls, value: dict[str, ArgValue]) -> dict[str, ArgValue]:
        return _check_key_value_args(value, quote_strings=True)


class TrainingSpec(Group):
    epochs: Optional[int] = Field(10, ge=1, le=100_000)
    steps: Optional[int] = Field(None, ge=1, le=10_000_000)
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024)
    seed: int = Field(42, ge=0, le=2**32 - 1)
    noise_offset: Optional[float] = Field(None, ge=0.0, le=1.0)
    adaptive_noise_scale: Optional[float] = Field(None, ge=0.0, le=1.0)
    multires_noise_iterations: Optional[int] = Field(None, ge=1, le=20)
    multires_noise_discount: Optional[float] = Field(None, gt=0.0, le=1.0)
    ip_noise_gamma: Optional[float] = Field(None, ge=0.0, le=1.0)
    min_snr_gamma: Optional[float] = Field(None, gt=0.0, le=100.0)
    loss_type: Literal["l1", "l2", "huber", "smooth_l1"] = "l2"
    data_loader_workers: int = Field(2, ge=0, le=64)
    persistent_data_loader_workers: bool = True


class PrecisionSpec(Group):
    mixed_precision: Literal["no", "fp16", "bf16"] = "bf16"
    full_bf16: bool = False
    full_fp16: bool = False
    fp8_base: bool = False
    no_half_vae: bool = False
    gradient_checkpointing: bool = True
    attention: Literal["sdpa", "xformers", "mem_eff_attn", "none"] = "sdpa"
    cache_latents: bool = True
    cache_latents_to_disk: bool = True
    cache_text_encoder_outputs: bool = False
    cache_text_encoder_outputs_to_disk: bool = False
    vae_batch_size: int = Field(1, ge=1, le=64)


class SamplingSpec(Group):
    prompts: list[str] = Field(default_factory=list, description="subjects, e.g. 'a man thinking'")
    template: str = Field("in the style of {trigger}, {subject}", description="how a subject becomes a prompt")
    negative_prompt: Optional[str] = None
    width: Optional[int] = Field(None, ge=64, le=4096, description="default: the model's native size")
    height: Optional[int] = Field(None, ge=64, le=4096)
    steps: int = Field(28, ge=1, le=1000)
    cfg_scale: float = Field(7.0, ge=0.0, le=50.0)
    seed: int = Field(1234, ge=0, le=2**31 - 1000, description="prompt i uses seed + i, the same in every run")
    sampler: Sampler = "euler_a"  # type: ignore[valid-type]
    every_n_epochs: Optional[int] = Field(1, ge=1, le=100_000)
    every_n_steps: Optional[int] = Field(None, ge=1, le=10_000_000)
    at_first: bool = Field(True, description="sample before training: the base model's column")
    without_trigger: bool = Field(True, description="also each subject alone: does the style leak without the trigger?")
    untriggered_template: str = Field("{subject}", description="the prompt without the trigger")
    variants: list[str] = Field(default_factory=list, description="reworded templates, for prompt sensitivity")

    _lines = field_validator("template", "negative_prompt", "untriggered_template")(_single_line)
    _marker = field_validator("template", "negative_prompt", "untriggered_template")(_no_option_marker)

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, value: list[str]) -> list[str]:
        for i, prompt in enumerate(value):
            try:
                _single_line(prompt)
                _no_option_marker(prompt)
            except ValueError as e:
                raise ValueError(f"prompt {i + 1} {e}") from None
            if not prompt.strip():
                raise ValueError(f"prompt {i + 1} is empty")
        return value

    @field_validator("template", "untriggered_template")
    @classmethod
    def _template(cls, value: str) -> str:
        return _check_template(value)

    @field_validator("variants")
    @classmethod
    def _variants(cls, value: list[str]) -> list[str]:
        for i, template in enumerate(value):
            try:
                _single_line(template)
                _no_option_marker(template)
                _check_template(template)
            except ValueError as e:
                raise ValueError(f"variant {i + 1} {e}") from None
        return value


def _check_template(value: str) -> str:
    if "{subject}" not in value:
        raise ValueError("must contain {subject}")
    try:
        value.format(subject="s", trigger="t")
    except (KeyError, IndexError, ValueError):
        raise ValueError("may only use the placeholders {subject} and {trigger} (write {{ and }} for braces)") from None
    return value


class GuardSpec(Group):
    """kr's own watch over a run (sd-scripts has none): NaN/inf always ends a run as diverged."""
    divergence_factor: Optional[float] = Field(3.0, gt=1.0, le=1000.0,
                                               description="stop when avr_loss rises above this × its running minimum")
    warmup_steps: int = Field(50, ge=0, le=10_000_000, description="steps before the divergence rule applies")


class SavingSpec(Group):
    output_name: Optional[str] = Field(None, description="file name stem of the LoRA (default: the preset name)")
    every_n_epochs: Optional[int] = Field(1, ge=1, le=100_000)
    every_n_steps: Optional[int] = Field(None, ge=1, le=10_000_000)
    last_n_epochs: Optional[int] = Field(None, ge=1, le=100_000, description="keep only the newest N epoch files")
    last_n_steps: Optional[int] = Field(None, ge=1, le=10_000_000)
    precision: Literal["fp16", "bf16", "float"] = "fp16"
    state: bool = Field(False, description="save resumable state with every checkpoint")
    state_on_train_end: bool = False

    @field_validator("output_name")
    @classmethod
    def _output_name(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return value
        _single_line(value)
        if "/" in value or "\\" in value or value in (".", "..") or value.startswith(".") or not value.strip():
            raise ValueError("must be a plain file name (no folders, not starting with a dot)")
        if len(value.encode()) > 120:
            raise ValueError("is too long for a file name (120 bytes at most)")
        return value


class LoggingSpec(Group):
    console: Literal["simple", "rich"] = Field("simple", description="simple = plain lines kr can parse")
    log_config: bool = Field(False, description="hyperparameters into TensorBoard (includes output_name)")


class PrivacySpec(Group):
    metadata: MetadataPolicy = Field("minimal", description="keep | minimal | scrub the LoRA header")
    training_comment: Optional[str] = Field(None, max_length=1000)

    _lines = field_validator("training_comment")(_single_line)


class Spec(Group):
    name: str = Field("lora", description="the preset or run name")
    model: ModelSpec = Field(default_factory=ModelSpec)
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    precision: PrecisionSpec = Field(default_factory=PrecisionSpec)
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    saving: SavingSpec = Field(default_factory=SavingSpec)
    logging: LoggingSpec = Field(default_factory=LoggingSpec)
    privacy: PrivacySpec = Field(default_factory=PrivacySpec)
    guard: GuardSpec = Field(default_factory=GuardSpec)
    sd_scripts: dict[str, Any] = Field(default_factory=dict, description="any other sd-scripts option, checked against the pinned manifest")

    _name = field_validator("name")(_single_line)

    def hash(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def output_name(self) -> str:
        return self.saving.output_name or self.name

    @property
    def sample_size(self) -> tuple[int, int]:
        native = 1024 if self.model.family == "sdxl" else 512
        return (self.sampling.width or native, self.sampling.height or native)


# ----------------------------------------------------------------------------------------------
# Errors: one readable line per problem, naming the field path, the bad value and the fix.


@dataclass(frozen=True)
class Problem:
    path: str
    value: Any
    message: str
    fix: str = ""

    def render(self) -> str:
        shown = _show(self.value)
        text = f"{self.path} = {shown}: {self.message}" if shown is not None else f"{self.path}: {self.message}"
        return f"{text}. Fix: {self.fix}" if self.fix else text


class SpecError(BadInput):
    def __init__(self, problems: list[Problem], source: str = "the run spec"):
        self.problems = problems
        lines = "\n".join(f"  - {p.render()}" for p in problems)
        super().__init__(f"{source} has {len(problems)} problem{'s' if len(problems) > 1 else ''}:\n{lines}")


_MISSING = object()


def _show(value: Any) -> Optional[str]:
    if value is _MISSING:
        return None
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def problems_from_validation(error: ValidationError) -> list[Problem]:
    problems = []
    for item in error.errors():
        loc = [str(part) for part in item["loc"]]
        path = ".".join(loc)
        message = item["msg"].removeprefix("Value error, ")
        value = item.get("input", _MISSING)
        fix = ""
        if item["type"] == "extra_forbidden":
            value = _MISSING
            message, fix = _unknown_key_message(loc)
        elif item["type"] == "missing":
            value = _MISSING
        elif item["type"] == "literal_error":
            fix = f"use one of the listed values, e.g. {path}={_first_literal(item)}"
        else:
            fix = _example_fix(loc)
        problems.append(Problem(path, value, message, fix))
    return problems


def _first_literal(item: dict) -> str:
    expected = (item.get("ctx") or {}).get("expected", "")
    match = re.search(r"'([^']*)'", expected)
    return match.group(1) if match else "…"


def _example_fix(loc: list[str]) -> str:
    """'e.g. network.dim=16': the field's built-in default as a value of the right type."""
    model: Any = Spec
    for part in loc[:-1]:
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None or not _is_group(field.annotation):
            return ""
        model = field.annotation
    field = model.model_fields.get(loc[-1]) if hasattr(model, "model_fields") else None
    if field is None or field.default is None or not isinstance(field.default, (bool, int, float, str, tuple)):
        return ""
    default = field.default
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else str(default).lower() if isinstance(default, bool) else default
    return f"give a value like the default, e.g. {'.'.join(loc)}={shown}"


def _unknown_key_message(loc: list[str]) -> tuple[str, str]:
    known = _field_names(loc[:-1])
    close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
    message = "unknown key (sd-scripts would ignore it silently; kr refuses it)"
    if close:
        return message, f"did you mean '{'.'.join(loc[:-1] + [close[0]])}'?"
    return message, f"known keys here: {', '.join(known)}" if known else "remove it"


def _field_names(loc: list[str]) -> list[str]:
    model: Any = Spec
    for part in loc:
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None or not _is_group(field.annotation):
            return []
        model = field.annotation
    return list(model.model_fields)


def _is_group(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Group)


# ----------------------------------------------------------------------------------------------
# Cross-field rules: what sd-scripts asserts at start-up (after loading models, minutes in) or
# silently ignores (contract §3, §5.6, §9). Each returns the field path it blames and the fix.


def cross_field_problems(spec: Spec) -> list[Problem]:
    rules = (_steps_rules, _precision_rules, _cache_rules, _bucket_rules, _optimizer_rules,
             _scheduler_rules, _sampling_rules, _saving_rules, _misc_rules)
    return [problem for rule in rules for problem in rule(spec)]


def _steps_rules(spec: Spec) -> list[Problem]:
    t = spec.training
    if t.epochs is not None and t.steps is not None:
        return [Problem("training.steps", t.steps, "is set together with training.epochs, which overrides it in sd-scripts",
                        "set one of them and the other to none (training.steps=none)")]
    if t.epochs is None and t.steps is None:
        return [Problem("training.epochs", None, "neither epochs nor steps is set (sd-scripts would default to 1600 steps)",
                        "set training.epochs or training.steps")]
    return []


def _precision_rules(spec: Spec) -> list[Problem]:
    p, out = spec.precision, []
    if p.full_bf16 and p.mixed_precision != "bf16":
        out.append(Problem("precision.full_bf16", True, f"needs mixed_precision = bf16, not {p.mixed_precision}",
                           "set precision.mixed_precision=bf16 or precision.full_bf16=false"))
    if p.full_fp16 and p.mixed_precision != "fp16":
        out.append(Problem("precision.full_fp16", True, f"needs mixed_precision = fp16, not {p.mixed_precision}",
                           "set precision.mixed_precision=fp16 or precision.full_fp16=false"))
    if p.full_bf16 and p.full_fp16:
        out.append(Problem("precision.full_fp16", True, "full_fp16 and full_bf16 exclude each other", "keep one"))
    if p.fp8_base and p.mixed_precision == "no":
        out.append(Problem("precision.fp8_base", True, "needs mixed precision (fp16 or bf16)",
                           "set precision.mixed_precision=bf16"))
    return out


def _cache_rules(spec: Spec) -> list[Problem]:
    p, d, out = spec.precision, spec.dataset, []
    te_cache = p.cache_text_encoder_outputs or p.cache_text_encoder_outputs_to_disk
    if te_cache and spec.model.family != "sdxl":
        out.append(Problem("precision.cache_text_encoder_outputs", True, "is an SDXL-only option",
                           "set precision.cache_text_encoder_outputs=false for SD1.5"))
    elif te_cache and not spec.network.unet_only:
        out.append(Problem("precision.cache_text_encoder_outputs", True,
                           "needs network.unet_only = true (the text encoders cannot be trained from cached outputs)",
                           "set network.unet_only=true or precision.cache_text_encoder_outputs=false"))
    if te_cache:
        for field in ("shuffle_caption", "caption_dropout_rate", "caption_tag_dropout_rate"):
            if getattr(d, field):
                out.append(Problem(f"dataset.{field}", getattr(d, field),
                                   "changes captions every step, so cached text-encoder outputs would be wrong",
                                   "turn it off or set precision.cache_text_encoder_outputs=false"))
    latent_cache = p.cache_latents or p.cache_latents_to_disk
    for field in ("color_aug", "random_crop"):
        if latent_cache and getattr(d, field):
            out.append(Problem(f"dataset.{field}", True, "cannot be used with cached latents",
                               f"set dataset.{field}=false or precision.cache_latents=false and cache_latents_to_disk=false"))
    return out


def _bucket_rules(spec: Spec) -> list[Problem]:
    d, out = spec.dataset, []
    step = 32 if spec.model.family == "sdxl" else 64
    if d.bucket_reso_steps % step:
        out.append(Problem("dataset.bucket_reso_steps", d.bucket_reso_steps,
                           f"must be divisible by {step} for {spec.model.family}", f"use {step} or 64"))
    if d.enable_bucket and not d.bucket_no_upscale:
        if d.min_bucket_reso > min(d.resolution):
            out.append(Problem("dataset.min_bucket_reso", d.min_bucket_reso,
                               f"is above the resolution's smaller side {min(d.resolution)}",
                               f"set dataset.min_bucket_reso={min(256, min(d.resolution))}"))
        if d.max_bucket_reso < max(d.resolution):
            out.append(Problem("dataset.max_bucket_reso", d.max_bucket_reso,
                               f"is below the resolution's larger side {max(d.resolution)}",
                               f"set dataset.max_bucket_reso={max(d.resolution) * 2}"))
    if d.shuffle_caption and d.trigger and d.keep_tokens == 0 and not d.keep_tokens_separator:
        out.append(Problem("dataset.keep_tokens", 0, "shuffle_caption is on, so the trigger can move away from the start",
                           "set dataset.keep_tokens=1 (the trigger's tag) or dataset.shuffle_caption=false"))
    return out


def _optimizer_rules(spec: Spec) -> list[Problem]:
    o, out = spec.optimizer, []
    if o.type in ADAPTIVE_OPTIMIZERS:
        for field in ("lr", "unet_lr", "text_encoder_lr"):
            value = getattr(o, field)
            if value is not None and 0 < value <= 0.1:
                out.append(Problem(f"optimizer.{field}", value,
                                   f"is far too low for {o.type}, an adaptive optimizer that wants lr ≈ 1.0",
                                   f"set optimizer.{field}=1.0"))
        rates = {v for v in (o.lr, o.unet_lr, o.text_encoder_lr) if v}
        if len(rates) > 1 and not out:
            out.append(Problem("optimizer.unet_lr", o.unet_lr, f"{o.type} uses only the first group's lr",
                               "leave unet_lr and text_encoder_lr unset"))
    if o.text_encoder_lr is not None and spec.network.unet_only:
        out.append(Problem("optimizer.text_encoder_lr", o.text_encoder_lr,
                           "has no effect with network.unet_only = true",
                           "remove it or set network.unet_only=false"))
    if o.type == "Adafactor" and o.args.get("relative_step", True) and spec.scheduler.name != "adafactor":
        out.append(Problem("optimizer.args", o.args, "Adafactor with relative_step (its default) replaces the schedule",
                           "set optimizer.args.relative_step=false (and scale_parameter=false, warmup_init=false) "
                           "or scheduler.name=adafactor"))
    return out


def _scheduler_rules(spec: Spec) -> list[Problem]:
    s, out = spec.scheduler, []
    if s.name in ("constant", "adafactor") and s.warmup_steps:
        out.append(Problem("scheduler.warmup_steps", s.warmup_steps, f"{s.name} does not take warmup (sd-scripts raises)",
                           "set scheduler.name=constant_with_warmup or scheduler.warmup_steps=0"))
    if s.name == "adafactor" and spec.optimizer.type != "Adafactor":
        out.append(Problem("scheduler.name", s.name, "works only with the Adafactor optimizer",
                           "pick another scheduler, e.g. constant_with_warmup"))
    if spec.optimizer.type in SCHEDULE_FREE_OPTIMIZERS and (s.name != "constant" or s.warmup_steps):
        out.append(Problem("scheduler.name", s.name, f"{spec.optimizer.type} replaces the scheduler (it would be ignored)",
                           "set scheduler.name=constant and scheduler.warmup_steps=0; warm up through optimizer.args"))
    if s.name == "piecewise_constant" and "step_rules" not in s.args:
        out.append(Problem("scheduler.args", s.args, "piecewise_constant needs step_rules", 'set scheduler.args.step_rules="1:10,0.1"'))
    return out


def _sampling_rules(spec: Spec) -> list[Problem]:
    s, out = spec.sampling, []
    if s.every_n_epochs is not None and s.every_n_steps is not None:
        out.append(Problem("sampling.every_n_steps", s.every_n_steps, "is ignored by sd-scripts when every_n_epochs is set",
                           "set sampling.every_n_epochs=none or sampling.every_n_steps=none"))
    for field, size in (("width", s.width), ("height", s.height)):
        if size is not None and size % 8:
            out.append(Problem(f"sampling.{field}", size, "is not a multiple of 8 (sd-scripts would floor it)",
                               f"use {size - size % 8}"))
    if "{trigger}" in s.template and not spec.dataset.trigger and s.prompts:
        out.append(Problem("dataset.trigger", None, "the sampling template uses {trigger} but no trigger is set",
                           "set dataset.trigger=TOK (your captions' trigger word)"))
    for prompt in sample_prompts(spec):
        if prompt.text.lstrip().startswith("#") or not prompt.text.strip():
            out.append(Problem(f"sampling.prompts[{prompt.subject_index}]", prompt.subject,
                               f"its {prompt.kind} prompt is empty or starts with '#', so sd-scripts would skip the line",
                               "start the prompt with a word"))
            break
    return out


def _saving_rules(spec: Spec) -> list[Problem]:
    s, out = spec.saving, []
    if s.last_n_epochs is not None and s.every_n_epochs is None:
        out.append(Problem("saving.last_n_epochs", s.last_n_epochs, "has nothing to rotate without saving.every_n_epochs",
                           "set saving.every_n_epochs=1 or remove last_n_epochs"))
    if s.last_n_steps is not None and s.every_n_steps is None:
        out.append(Problem("saving.last_n_steps", s.last_n_steps, "has nothing to rotate without saving.every_n_steps",
                           "set saving.every_n_steps or remove last_n_steps"))
    return out


def _misc_rules(spec: Spec) -> list[Problem]:
    out = []
    if spec.training.persistent_data_loader_workers and spec.training.data_loader_workers == 0:
        out.append(Problem("training.persistent_data_loader_workers", True, "needs at least one data loader worker (torch raises)",
                           "set training.data_loader_workers=1 or persistent_data_loader_workers=false"))
    if spec.model.clip_skip is not None and spec.model.family == "sdxl":
        out.append(Problem("model.clip_skip", spec.model.clip_skip, "is ignored by sdxl_train_network.py",
                           "remove it (SD1.5 only)"))
    if spec.training.adaptive_noise_scale is not None and spec.training.noise_offset is None:
        out.append(Problem("training.adaptive_noise_scale", spec.training.adaptive_noise_scale, "needs training.noise_offset",
                           "set training.noise_offset=0.0357"))
    if "dropout" in spec.network.args and spec.network.dropout is not None:
        out.append(Problem("network.args.dropout", spec.network.args["dropout"], "conflicts with network.dropout", "keep one"))
    if spec.network.module == "networks.lora":
        for key in spec.network.args:
            if key not in NETWORK_LORA_ARGS and key != "dropout":
                close = difflib.get_close_matches(key, NETWORK_LORA_ARGS, n=1)
                fix = f"did you mean network.args.{close[0]}?" if close else f"networks.lora knows: {', '.join(NETWORK_LORA_ARGS)}"
                out.append(Problem(f"network.args.{key}", spec.network.args[key],
                                   "is not a networks.lora argument (sd-scripts would ignore it silently)", fix))
    if spec.precision.mixed_precision == "fp16" and spec.model.family == "sdxl" and not spec.precision.no_half_vae:
        out.append(Problem("precision.no_half_vae", False, "the SDXL VAE produces NaN latents in fp16",
                           "set precision.no_half_vae=true or precision.mixed_precision=bf16"))
    return out


def render_prompt(spec: Spec, subject: str, template: Optional[str] = None) -> str:
    """A sampling subject as the full prompt, e.g. 'in the style of TOK, a man thinking'."""
    return (template or spec.sampling.template).format(subject=subject, trigger=spec.dataset.trigger or "")


@dataclass(frozen=True)
class SamplePrompt:
    """One line of the sample prompts file: which subject, in which form (sd-scripts numbers them 00, 01, …)."""
    index: int
    subject_index: int
    subject: str
    kind: str  # "trigger" | "no-trigger" | "variant-1", "variant-2", …
    text: str
    seed: int


def sample_prompts(spec: Spec) -> list[SamplePrompt]:
    """Every subject with the trigger, then without it, then in each reworded variant. A subject keeps one
    seed in all its forms and in every run, so sheets compare like with like."""
    s = spec.sampling
    forms = [("trigger", s.template)]
    if s.without_trigger and spec.dataset.trigger:
        forms.append(("no-trigger", s.untriggered_template))
    forms += [(f"variant-{i + 1}", template) for i, template in enumerate(s.variants)]
    prompts = []
    for kind, template in forms:
        for i, subject in enumerate(s.prompts):
            prompts.append(SamplePrompt(len(prompts), i, subject, kind, render_prompt(spec, subject, template), s.seed + i))
    return prompts


# ----------------------------------------------------------------------------------------------
# Building a Spec from layers of plain dicts.


def build_spec(data: dict, source: str = "the run spec") -> Spec:
    """Validate a layered dict into a Spec, or raise SpecError listing every problem."""
    try:
        spec = Spec.model_validate(data)
    except ValidationError as error:
        raise SpecError(problems_from_validation(error), source) from None
    problems = cross_field_problems(spec)
    if problems:
        raise SpecError(problems, source)
    return spec


# ----------------------------------------------------------------------------------------------
# key.path=value overrides, typed by the spec (like torchtune / OneTrainer).


@dataclass(frozen=True)
class Override:
    path: tuple[str, ...]
    value: Any
    text: str


def parse_override(text: str) -> Override:
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise BadInput(f"override {text!r} is not of the form key.path=value, e.g. optimizer.lr=1e-4")
    path = tuple(key.split("."))
    if any(not part for part in path):
        raise BadInput(f"override {text!r}: the key {key!r} has an empty part")
    return Override(path, coerce_value(path, raw), text)


def coerce_value(path: tuple[str, ...], raw: str) -> Any:
    """Turn the text after '=' into the type the spec expects at `path`."""
    annotation = annotation_at(path)
    if raw.strip().lower() in ("none", "null") and _accepts_none(annotation):
        return None
    if _is_plain_str(annotation):
        return raw
    return _parse_literal(raw)


def _parse_literal(raw: str) -> Any:
    """A TOML literal (number, bool, array, inline table) when it parses as one, else the text itself."""
    from ._toml import loads_strict

    try:
        return loads_strict(f"v = {raw}")["v"]
    except Exception:
        return raw


def annotation_at(path: tuple[str, ...]) -> Any:
    """The type annotation the spec declares at `path`; unknown paths raise BadInput with a suggestion."""
    model: Any = Spec
    for depth, part in enumerate(path):
        fields = model.model_fields
        if part not in fields:
            _raise_unknown_path(path, depth, list(fields))
        annotation = fields[part].annotation
        if _is_group(annotation):
            model = annotation
            continue
        if depth == len(path) - 1:
            return annotation
        if get_origin(annotation) is dict:
            if part == "sd_scripts" and depth == len(path) - 2:
                return Any
            if depth == len(path) - 2:
                return get_args(annotation)[1]
        raise BadInput(f"override key {'.'.join(path)!r}: {'.'.join(path[:depth + 1])} has no sub-keys")
    raise BadInput(f"override key {'.'.join(path)!r} names a whole group; give one of its keys, e.g. "
                   f"{'.'.join(path)}.{next(iter(model.model_fields))}=…")


def _raise_unknown_path(path: tuple[str, ...], depth: int, known: list[str]) -> None:
    close = difflib.get_close_matches(path[depth], known, n=1, cutoff=0.5)
    where = ".".join(path[:depth]) or "the spec"
    hint = f"did you mean '{'.'.join(path[:depth] + (close[0],))}'?" if close else f"keys in {where}: {', '.join(known)}"
    raise BadInput(f"unknown key '{'.'.join(path)}': {where} has no '{path[depth]}'. Fix: {hint} "
                   "(`kr presets explain NAME` lists every key)")


def _accepts_none(annotation: Any) -> bool:
    return annotation is Any or type(None) in get_args(annotation)


def _is_plain_str(annotation: Any) -> bool:
    if annotation is str:
        return True
    args = [a for a in get_args(annotation) if a is not type(None)]
    return get_origin(annotation) is Union and args == [str]


def leaf_paths(model: type[BaseModel] = Spec, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every settable key of the spec, e.g. ('optimizer', 'lr')."""
    paths = []
    for name, field in model.model_fields.items():
        if _is_group(field.annotation):
            paths.extend(leaf_paths(field.annotation, prefix + (name,)))
        else:
            paths.append(prefix + (name,))
    return paths


def describe(path: tuple[str, ...]) -> str:
    model: Any = Spec
    for part in path[:-1]:
        model = model.model_fields[part].annotation
    return model.model_fields[path[-1]].description or ""


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """{"optimizer": {"lr": 1e-4, "args": {"weight_decay": 0.01}}} → {"optimizer.lr": …, "optimizer.args.weight_decay": …}."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat
