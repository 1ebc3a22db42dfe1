"""Everything sd-scripts-specific, in one place (../shared/sd-scripts-contract.md, commit 48d368f).

The option manifest, how a Spec maps onto training options and the dataset TOML, which options
kr refuses, the offline environment, output names, log lines and TensorBoard tags. Other modules ask
this one instead of knowing sd-scripts themselves.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from .resources import data_dir

SCRIPTS = {"sdxl": "sdxl_train_network", "sd15": "train_network"}
NETWORK_TRAIN = "network_train"  # TensorBoard subfolder (log_tracker_name's default)

# §1.4 / §7.8: the environment every trainer process gets. No code path may reach the network.
OFFLINE_ENV = {
    "PYTHONUNBUFFERED": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DISABLE_TELEMETRY": "1",
    "WANDB_MODE": "disabled",
    "COLUMNS": "200",  # Rich wraps log lines at the console width (80 when not a TTY), §5.3
}


# ----------------------------------------------------------------------------------------------
# The pinned option manifest (vendor/sd-scripts-args.json).


@dataclass(frozen=True)
class Option:
    name: str
    action: str
    type: Optional[str]
    default: Any
    choices: Optional[tuple]
    nargs: Any

    @property
    def is_flag(self) -> bool:
        return self.action == "storetrue"

    @property
    def is_list(self) -> bool:
        return self.nargs in ("*", "+")


def manifest_path() -> Path:
    return data_dir("vendor") / "sd-scripts-args.json"


@lru_cache(maxsize=None)
def _manifest_json() -> dict:
    return json.loads(manifest_path().read_text(encoding="utf-8"))


@lru_cache(maxsize=None)
def manifest(script: str) -> dict[str, Option]:
    options = _manifest_json()["scripts"][script]
    return {
        name: Option(name, o["action"], o["type"], o["default"],
                     tuple(o["choices"]) if o["choices"] is not None else None, o["nargs"])
        for name, o in options.items()
    }


def pinned_commit() -> str:
    return _manifest_json()["commit"]


def script_for(family: str) -> str:
    return SCRIPTS[family]


# ----------------------------------------------------------------------------------------------
# Options kr refuses (§7.8) or manages itself.

MANAGED_BY_KR = {
    "config_file", "output_config", "dataset_config", "output_dir", "output_name", "logging_dir", "log_prefix",
    "log_with", "sample_prompts", "pretrained_model_name_or_path", "tokenizer_cache_dir", "save_model_as",
    "console_log_simple", "console_log_file", "train_data_dir", "reg_data_dir", "in_json", "resume",
}


def refusal(option: str, value: Any = True) -> Optional[str]:
    """Why kr will not pass this option, or None. Off-machine traffic and interactive debugging."""
    if option.startswith(("huggingface_", "wandb_")) or option.endswith("_to_huggingface") \
            or option in ("resume_from_huggingface", "async_upload"):
        return "it sends data to or fetches data from the internet; kr runs offline"
    if option == "log_with" and value not in (None, "tensorboard"):
        return "wandb/all send training data off the machine; kr logs to TensorBoard only"
    if option == "debug_dataset":
        return "it opens an interactive window and never trains"
    if option == "log_tracker_config":
        return "tracker init files configure off-machine trackers"
    return None


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_hub_id(text: str) -> bool:
    """'org/name' that is not a local path would make sd-scripts download from the Hub (§6.1)."""
    return bool(_HUB_ID.match(text)) and not Path(text).exists()


# ----------------------------------------------------------------------------------------------
# Spec → training options. Each entry records which spec field produced it, for error messages.


@dataclass
class RenderPaths:
    """Absolute paths the rendered files point at (all resolved by render / run)."""
    config_file: Path
    dataset_config: Path
    sample_prompts: Path
    output_dir: Path
    logging_dir: Path
    tokenizer_cache_dir: Path
    image_dir: Path
    base: str
    log_prefix: str
    vae: Optional[str] = None
    network_weights: Optional[str] = None
    run_id: Optional[str] = None
    resume: Optional[str] = None  # a state folder to continue from (§7.2)


@dataclass
class Entry:
    section: str
    key: str
    value: Any
    source: str  # the spec path (or "kr") that set it


@dataclass
class TrainingArgs:
    entries: list[Entry] = field(default_factory=list)
    owned: dict[str, str] = field(default_factory=dict)  # option → spec field, even when left unset

    def add(self, section: str, key: str, value: Any, source: str) -> None:
        if not source.startswith("sd_scripts."):
            self.owned[key] = source
        if value is not None:
            self.entries.append(Entry(section, key, value, source))

    def as_dict(self) -> dict[str, Any]:
        return {e.key: e.value for e in self.entries}

    def sections(self) -> list[tuple[str, list[Entry]]]:
        order: dict[str, list[Entry]] = {}
        for entry in self.entries:
            order.setdefault(entry.section, []).append(entry)
        return list(order.items())


def training_args(spec, paths: RenderPaths) -> TrainingArgs:
    """The flat training options for --config_file, every unsafe default set explicitly (§0, §8)."""
    args = TrainingArgs()
    _model_args(args, spec, paths)
    _network_args(args, spec, paths)
    _optimizer_args(args, spec)
    _training_args(args, spec)
    _precision_args(args, spec)
    _sampling_args(args, spec, paths)
    _saving_args(args, spec, paths)
    _logging_args(args, spec, paths)
    script = script_for(spec.model.family)
    for key, value in spec.sd_scripts.items():
        args.add("sd_scripts", key, coerce_raw_option(script, key, value), f"sd_scripts.{key}")
    return args


def _model_args(args: TrainingArgs, spec, paths: RenderPaths) -> None:
    m = spec.model
    args.add("model", "pretrained_model_name_or_path", paths.base, "model.base")
    args.add("model", "vae", paths.vae, "model.vae")
    args.add("model", "tokenizer_cache_dir", str(paths.tokenizer_cache_dir), "model.tokenizer_cache_dir")
    args.add("model", "v_parameterization", True if m.v_parameterization else None, "model.v_parameterization")
    args.add("model", "clip_skip", m.clip_skip, "model.clip_skip")
    args.add("model", "max_token_length", m.max_token_length, "model.max_token_length")
    args.add("dataset", "dataset_config", str(paths.dataset_config), "kr")
    # resolution also in the training file (as the string sd-scripts' TOML path needs, §2.1), so
    # modelspec.resolution records the real size; the dataset TOML's value is the one used.
    width, height = spec.dataset.resolution
    args.add("dataset", "resolution", f"{width},{height}", "dataset.resolution")


def _network_args(args: TrainingArgs, spec, paths: RenderPaths) -> None:
    n = spec.network
    args.add("network", "network_module", n.module, "network.module")
    args.add("network", "network_dim", n.dim, "network.dim")
    args.add("network", "network_alpha", float(n.alpha), "network.alpha")
    args.add("network", "network_dropout", n.dropout, "network.dropout")
    # networks.lora keeps each value as the text after the first '=' (§3.2).
    args.add("network", "network_args", [f"{k}={v}" for k, v in n.args.items()] or None, "network.args")
    args.add("network", "network_train_unet_only", n.unet_only, "network.unet_only")
    args.add("network", "network_weights", paths.network_weights, "network.weights")


def _optimizer_args(args: TrainingArgs, spec) -> None:
    o, s = spec.optimizer, spec.scheduler
    args.add("optimizer", "optimizer_type", o.type, "optimizer.type")
    args.add("optimizer", "optimizer_args", [f"{k}={_literal(v)}" for k, v in o.args.items()] or None, "optimizer.args")
    args.add("optimizer", "learning_rate", float(o.lr), "optimizer.lr")
    args.add("optimizer", "unet_lr", _float(o.unet_lr), "optimizer.unet_lr")
    # nargs="*" in sd-scripts; networks.lora uses the first value for both SDXL text encoders (§3.3).
    te_lr = None if o.text_encoder_lr is None else [float(o.text_encoder_lr)]
    args.add("optimizer", "text_encoder_lr", te_lr, "optimizer.text_encoder_lr")
    args.add("optimizer", "max_grad_norm", float(o.max_grad_norm), "optimizer.max_grad_norm")
    args.add("scheduler", "lr_scheduler", s.name, "scheduler.name")
    # An int is a step count, a float < 1 a ratio (§2.1); the spec keeps that distinction.
    args.add("scheduler", "lr_warmup_steps", s.warmup_steps, "scheduler.warmup_steps")
    args.add("scheduler", "lr_scheduler_num_cycles", s.cycles, "scheduler.cycles")
    args.add("scheduler", "lr_scheduler_power", _float(s.power), "scheduler.power")
    args.add("scheduler", "lr_scheduler_min_lr_ratio", _float(s.min_lr_ratio), "scheduler.min_lr_ratio")
    args.add("scheduler", "lr_scheduler_args", [f"{k}={_literal(v)}" for k, v in s.args.items()] or None, "scheduler.args")


def _training_args(args: TrainingArgs, spec) -> None:
    t = spec.training
    args.add("training", "max_train_epochs", t.epochs, "training.epochs")
    args.add("training", "max_train_steps", t.steps, "training.steps")
    args.add("training", "gradient_accumulation_steps", t.gradient_accumulation_steps, "training.gradient_accumulation_steps")
    args.add("training", "seed", t.seed, "training.seed")
    args.add("training", "noise_offset", _float(t.noise_offset), "training.noise_offset")
    args.add("training", "adaptive_noise_scale", _float(t.adaptive_noise_scale), "training.adaptive_noise_scale")
    args.add("training", "multires_noise_iterations", t.multires_noise_iterations, "training.multires_noise_iterations")
    args.add("training", "multires_noise_discount", _float(t.multires_noise_discount), "training.multires_noise_discount")
    args.add("training", "ip_noise_gamma", _float(t.ip_noise_gamma), "training.ip_noise_gamma")
    args.add("training", "min_snr_gamma", _float(t.min_snr_gamma), "training.min_snr_gamma")
    args.add("training", "loss_type", t.loss_type, "training.loss_type")
    args.add("training", "max_data_loader_n_workers", t.data_loader_workers, "training.data_loader_workers")
    args.add("training", "persistent_data_loader_workers", t.persistent_data_loader_workers,
             "training.persistent_data_loader_workers")


def _precision_args(args: TrainingArgs, spec) -> None:
    p = spec.precision
    args.add("precision", "mixed_precision", p.mixed_precision, "precision.mixed_precision")
    for flag in ("full_bf16", "full_fp16", "fp8_base", "no_half_vae", "gradient_checkpointing",
                 "cache_latents", "cache_latents_to_disk"):
        args.add("precision", flag, getattr(p, flag), f"precision.{flag}")
    sdxl = spec.model.family == "sdxl"  # SDXL-only options (§3.9); train_network.py does not know them
    for flag in ("cache_text_encoder_outputs", "cache_text_encoder_outputs_to_disk"):
        args.add("precision", flag, getattr(p, flag) if sdxl else None, f"precision.{flag}")
    for attention in ("sdpa", "xformers", "mem_eff_attn"):
        args.add("precision", attention, True if p.attention == attention else None, "precision.attention")
    args.add("precision", "vae_batch_size", p.vae_batch_size, "precision.vae_batch_size")


def _sampling_args(args: TrainingArgs, spec, paths: RenderPaths) -> None:
    s = spec.sampling
    if not s.prompts:
        s = s.model_copy(update={"every_n_epochs": None, "every_n_steps": None, "sampler": None, "at_first": None})
    args.add("sampling", "sample_prompts", str(paths.sample_prompts) if s.prompts else None, "sampling.prompts")
    args.add("sampling", "sample_every_n_epochs", s.every_n_epochs, "sampling.every_n_epochs")
    args.add("sampling", "sample_every_n_steps", s.every_n_steps, "sampling.every_n_steps")
    args.add("sampling", "sample_sampler", s.sampler, "sampling.sampler")
    args.add("sampling", "sample_at_first", s.at_first, "sampling.at_first")


def _saving_args(args: TrainingArgs, spec, paths: RenderPaths) -> None:
    s = spec.saving
    args.add("saving", "output_dir", str(paths.output_dir), "kr")
    args.add("saving", "output_name", spec.output_name, "saving.output_name")
    args.add("saving", "save_model_as", "safetensors", "kr")
    args.add("saving", "save_precision", s.precision, "saving.precision")
    args.add("saving", "save_every_n_epochs", s.every_n_epochs, "saving.every_n_epochs")
    args.add("saving", "save_every_n_steps", s.every_n_steps, "saving.every_n_steps")
    args.add("saving", "save_last_n_epochs", s.last_n_epochs, "saving.last_n_epochs")
    args.add("saving", "save_last_n_steps", s.last_n_steps, "saving.last_n_steps")
    args.add("saving", "save_state", s.state, "saving.state")
    args.add("saving", "save_state_on_train_end", s.state_on_train_end, "saving.state_on_train_end")
    args.add("saving", "resume", paths.resume, "kr")
    args.add("saving", "no_metadata", spec.privacy.metadata == "minimal", "privacy.metadata")
    args.add("saving", "training_comment", spec.privacy.training_comment, "privacy.training_comment")
    if paths.run_id:
        # Unknown metadata_* keys land in the header as modelspec.<rest> (§4.4); must be a string.
        args.add("saving", "metadata_kr_run_id", str(paths.run_id), "kr")


def _logging_args(args: TrainingArgs, spec, paths: RenderPaths) -> None:
    args.add("logging", "logging_dir", str(paths.logging_dir), "kr")
    args.add("logging", "log_prefix", paths.log_prefix, "kr")
    args.add("logging", "log_with", "tensorboard", "kr")
    args.add("logging", "log_config", spec.logging.log_config, "logging.log_config")
    args.add("logging", "console_log_simple", spec.logging.console == "simple", "logging.console")


def _float(value: Optional[float]) -> Optional[float]:
    return None if value is None else float(value)


def _literal(value: Any) -> str:
    """optimizer_args values go through ast.literal_eval (§3.3): strings need quotes."""
    if isinstance(value, str):
        try:
            float(value)
            return value  # "0.9,0.999" style tuples and numbers are written as the user gave them
        except ValueError:
            pass
        if re.fullmatch(r"[\d.eE+-]+(,[\d.eE+-]+)+", value) or value in ("True", "False", "None"):
            return value
        return repr(value)
    return repr(value)


# ----------------------------------------------------------------------------------------------
# Checking training options against the manifest: every key an option, every value the form
# sd-scripts' TOML path needs (it skips argparse's type and choices checks, §2.1).


def check_option(script: str, key: str, value: Any) -> Optional[str]:
    """None when `key = value` is a valid training option for `script`, else what is wrong."""
    if key.startswith("metadata_") and key not in manifest(script):
        return None if isinstance(value, str) else "metadata_* values must be strings (sd-scripts fails at save otherwise)"
    option = manifest(script).get(key)
    if option is None:
        return f"is not an option of {script}.py at sd-scripts {pinned_commit()[:7]}"
    reason = refusal(key, value)
    if reason:
        return f"is refused: {reason}"
    if option.is_flag:
        return None if isinstance(value, bool) else "must be true or false"
    if option.is_list:
        if not isinstance(value, list):
            return "must be an array (a bare string is read character by character)"
        problems = [_check_scalar(option, item) for item in value]
        return next((p for p in problems if p), None)
    return _check_scalar(option, value)


def _check_scalar(option: Option, value: Any) -> Optional[str]:
    kind = option.type
    if kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
        return f"must be an integer, not {value!r}"
    if kind == "float" and not (isinstance(value, float) and math.isfinite(value)):
        return f"must be a float written with a decimal point or exponent, not {value!r}"
    if kind == "int_or_float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "must be an integer (steps) or a float below 1 (a ratio)"
        if isinstance(value, float) and value >= 1:
            return "a float is read as a ratio of all steps; give a step count as an integer"
    if kind in ("str", "Path") and not isinstance(value, str):
        return f"must be a string, not {value!r}"
    if option.choices and value not in option.choices:
        allowed = ", ".join(str(c) for c in option.choices if c is not None)
        return f"must be one of {allowed}"
    return None


def coerce_raw_option(script: str, key: str, value: Any) -> Any:
    """A user's sd_scripts.<key> value in the form the manifest wants (int → float for floats)."""
    option = manifest(script).get(key)
    if option is None:
        return value
    if option.type == "float":
        if option.is_list and isinstance(value, list):
            return [float(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
    return value


# ----------------------------------------------------------------------------------------------
# The dataset TOML (§2.3): strict like sd-scripts' voluptuous schema.

_DATASET_LEVEL = {
    "resolution": "resolution", "batch_size": int, "enable_bucket": bool, "min_bucket_reso": int,
    "max_bucket_reso": int, "bucket_reso_steps": int, "bucket_no_upscale": bool, "network_multiplier": float,
    "validation_split": float, "validation_seed": int, "resize_interpolation": str,
}
_SUBSET_COMMON = {
    "num_repeats": int, "shuffle_caption": bool, "caption_separator": str, "keep_tokens": int,
    "keep_tokens_separator": str, "secondary_separator": str, "enable_wildcard": bool, "caption_prefix": str,
    "caption_suffix": str, "color_aug": bool, "flip_aug": bool, "random_crop": bool, "face_crop_aug_range": list,
    "token_warmup_min": int, "token_warmup_step": "number", "custom_attributes": dict, "resize_interpolation": str,
    "caption_dropout_rate": "number", "caption_dropout_every_n_epochs": int, "caption_tag_dropout_rate": "number",
    "caption_extension": str, "class_tokens": str, "cache_info": bool,
}
_SUBSET_ONLY = {"image_dir": str, "is_reg": bool, "alpha_mask": bool}
DATASET_SCHEMA = {
    "general": {**_DATASET_LEVEL, **_SUBSET_COMMON},
    "datasets": {**_DATASET_LEVEL, **_SUBSET_COMMON},
    "subsets": {**_SUBSET_COMMON, **_SUBSET_ONLY},
}


def dataset_config(spec, paths: RenderPaths) -> dict[str, Any]:
    d = spec.dataset
    general: dict[str, Any] = {
        # .caption is sd-scripts' default (§0); kr always says which extension it means.
        "caption_extension": d.caption_extension,
        "shuffle_caption": d.shuffle_caption,
        "keep_tokens": d.keep_tokens,
    }
    if d.keep_tokens_separator:
        general["keep_tokens_separator"] = d.keep_tokens_separator
    width, height = d.resolution
    dataset: dict[str, Any] = {
        "resolution": width if width == height else [width, height],
        "batch_size": d.batch_size,
        "enable_bucket": d.enable_bucket,
        "min_bucket_reso": d.min_bucket_reso,
        "max_bucket_reso": d.max_bucket_reso,
        "bucket_reso_steps": d.bucket_reso_steps,
        "bucket_no_upscale": d.bucket_no_upscale,
    }
    subset: dict[str, Any] = {"image_dir": str(paths.image_dir), "num_repeats": d.repeats}
    for key in ("caption_prefix", "caption_suffix"):
        if getattr(d, key):
            subset[key] = getattr(d, key)
    for key in ("flip_aug", "color_aug", "random_crop"):
        subset[key] = getattr(d, key)
    for key in ("caption_dropout_rate", "caption_tag_dropout_rate"):
        if getattr(d, key):
            subset[key] = float(getattr(d, key))
    dataset["subsets"] = [subset]
    return {"general": general, "datasets": [dataset]}


def check_dataset_config(doc: dict[str, Any]) -> list[str]:
    """Problems sd-scripts' strict dataset schema would raise at start-up, in its path notation."""
    problems = []
    extra = set(doc) - {"general", "datasets"}
    problems += [f"extra keys not allowed @ data['{k}']" for k in sorted(extra)]
    problems += _check_table(doc.get("general", {}), "general", "data['general']")
    datasets = doc.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        return problems + ["required key not provided @ data['datasets']"]
    for i, dataset in enumerate(datasets):
        where = f"data['datasets'][{i}]"
        subsets = dataset.get("subsets")
        problems += _check_table({k: v for k, v in dataset.items() if k != "subsets"}, "datasets", where)
        if not isinstance(subsets, list) or not subsets:
            problems.append(f"required key not provided @ {where}['subsets']")
            continue
        for j, subset in enumerate(subsets):
            sub_where = f"{where}['subsets'][{j}]"
            problems += _check_table(subset, "subsets", sub_where)
            if "image_dir" not in subset:
                problems.append(f"required key not provided @ {sub_where}['image_dir']")
    return problems


def _check_table(table: dict[str, Any], level: str, where: str) -> list[str]:
    schema, problems = DATASET_SCHEMA[level], []
    for key, value in table.items():
        expected = schema.get(key)
        if expected is None:
            problems.append(f"extra keys not allowed @ {where}['{key}']")
        elif not _dataset_type_ok(expected, value):
            name = expected if isinstance(expected, str) else expected.__name__
            problems.append(f"expected {name} for dictionary value @ {where}['{key}']")
    return problems


def _dataset_type_ok(expected: Any, value: Any) -> bool:
    if expected == "resolution":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value))
    if expected == "number":
        return type(value) in (int, float)
    return type(value) is expected  # voluptuous is exact here: 0 is not a float, True is not an int


# ----------------------------------------------------------------------------------------------
# The sample prompts file (.txt, §3.8): one prompt per line, options after " --".


def sample_prompt_lines(spec) -> list[str]:
    from .spec import sample_prompts

    s = spec.sampling
    width, height = spec.sample_size
    lines = []
    for prompt in sample_prompts(spec):
        parts = [prompt.text]
        if s.negative_prompt:
            parts.append(f"--n {s.negative_prompt}")
        parts += [f"--w {width}", f"--h {height}", f"--d {prompt.seed}", f"--s {s.steps}", f"--l {s.cfg_scale:g}"]
        lines.append(" ".join(parts))
    return lines


_PROMPT_OPTION = re.compile(r"^([a-zA-Z]+) (.*)$")


def parse_prompt_line(line: str) -> dict[str, str]:
    """How sd-scripts reads one .txt prompt line: cut at every ' --' (§3.8). Used to check renders."""
    pieces = line.split(" --")
    parsed = {"prompt": pieces[0].strip()}
    for piece in pieces[1:]:
        match = _PROMPT_OPTION.match(piece.strip())
        if match:
            parsed[match.group(1).lower()] = match.group(2).strip()
    return parsed


# ----------------------------------------------------------------------------------------------
# Output names (§4.1) and TensorBoard (§5.1, §5.2).


def final_lora_name(output_name: str) -> str:
    return f"{output_name}.safetensors"


def epoch_lora_name(output_name: str, epoch: int) -> str:
    return f"{output_name}-{epoch:06d}.safetensors"


def step_lora_name(output_name: str, step: int) -> str:
    return f"{output_name}-step{step:08d}.safetensors"


_CHECKPOINT = re.compile(r"-(?:(?P<epoch>\d{6})|step(?P<step>\d{8}))\.safetensors$")


def checkpoint_order(output_name: str, file_name: str) -> Optional[tuple[int, int]]:
    """(kind, number) of an intermediate LoRA file, for picking the newest; None if not one of ours."""
    if not file_name.startswith(output_name + "-"):
        return None
    match = _CHECKPOINT.search(file_name[len(output_name):])
    if not match:
        return None
    return (0, int(match["epoch"])) if match["epoch"] else (1, int(match["step"]))


@dataclass(frozen=True)
class SampleName:
    """A parsed `sample/{output_name}_{N}_{ii}_{YYYYmmddHHMMSS}[_{seed}].png` (§4.1)."""
    kind: str  # "epoch" (N = e{epoch:06d}; epoch 0 is sample_at_first, the base model) | "step" (N = {step:06d})
    number: int
    index: int  # ii: the line of the prompts file
    stamp: str
    seed: Optional[int]


_SAMPLE = re.compile(r"(?P<n>e\d{6}|\d{6,})_(?P<ii>\d{2,})_(?P<stamp>\d{14})(?:_(?P<seed>\d+))?\.png$")


def parse_sample_name(output_name: Optional[str], file_name: str) -> Optional[SampleName]:
    """A sample image's epoch or step, prompt index and seed; None for any other file."""
    rest = file_name
    if output_name:
        if not file_name.startswith(output_name + "_"):
            return None
        rest = file_name[len(output_name) + 1:]
    match = _SAMPLE.fullmatch(rest)
    if not match:
        return None
    n = match["n"]
    kind, number = ("epoch", int(n[1:])) if n.startswith("e") else ("step", int(n))
    return SampleName(kind, number, int(match["ii"]), match["stamp"], int(match["seed"]) if match["seed"] else None)


def state_dirs(output_dir: Path, output_name: str) -> list[Path]:
    """State folders (`{name}-{epoch:06d}-state`, `{name}-step{step:08d}-state`, `{name}-state`)."""
    if not output_dir.is_dir():
        return []
    return [p for p in output_dir.iterdir() if p.is_dir() and p.name.startswith(output_name) and p.name.endswith("-state")
            and (p / "train_state.json").is_file()]


def tensorboard_run_dirs(logging_dir: Path, log_prefix: str) -> list[Path]:
    """`{logging_dir}/{log_prefix}{YYYYmmddHHMMSS}/network_train/` folders, oldest first."""
    if not logging_dir.is_dir():
        return []
    found = [d / NETWORK_TRAIN for d in logging_dir.iterdir()
             if d.name.startswith(log_prefix) and (d / NETWORK_TRAIN).is_dir()]
    return sorted(found)


LOSS_TAGS = ("loss/current", "loss/average", "loss/epoch_average")


# ----------------------------------------------------------------------------------------------
# Console output (§5.3–§5.6): what the monitor matches. English prefixes only (messages are bilingual).

TOTAL_STEPS = re.compile(r"total optimization steps / .*?:\s*(\d+)")
NUM_EPOCHS = re.compile(r"num epochs / .*?:\s*(\d+)")
EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+)\s*$")
SAVING_CHECKPOINT = re.compile(r"saving checkpoint: (.+)$")
REMOVING_CHECKPOINT = re.compile(r"removing old checkpoint: (.+)$")
SAMPLING = re.compile(r"generating sample images at step")
MODEL_SAVED = re.compile(r"(^|\s)model saved\.\s*$")
NO_DATA = re.compile(r"No data found\. Please verify")
CACHING = re.compile(r"caching latents|caching Text Encoder outputs")
# tqdm: `steps:  10%|█         | 200/2000 [03:10<28:30,  1.05it/s, avr_loss=0.0912]`
STEPS_BAR = re.compile(
    r"^steps:\s*\d+%\|[^|]*\|\s*(?P<n>\d+)/(?P<total>\d+)\s*\[(?P<elapsed>[^<\]]*)<(?P<eta>[^,\]]*)"
    r"(?:,\s*(?P<rate>[\d.]+|\?)(?P<unit>it/s|s/it))?(?P<postfix>[^\]]*)\]")
AVR_LOSS = re.compile(r"avr_loss=([^,\]\s]+)")
EXCEPTION_LINE = re.compile(r"^(?P<type>[A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Invalid|Exit)):?\s*(?P<message>.*)$")

# Failure signatures, most specific first: (reason, pattern, what happened).
FAILURES = [
    ("cuda_oom", re.compile(r"CUDA out of memory|OutOfMemoryError|out of memory on device"), "CUDA ran out of memory"),
    ("no_data", NO_DATA, "sd-scripts found no images ('No data found') and exited 0 without training"),
    ("dataset_config", re.compile(r"MultipleInvalid|extra keys not allowed @|required key not provided @|"
                                  r"expected \w+ for dictionary value @"), "the dataset TOML broke sd-scripts' schema"),
    ("missing_tokenizer", re.compile(r"Can't load tokenizer|expected str, bytes or os\.PathLike object, not NoneType"),
     "a tokenizer could not be loaded offline"),
    ("missing_model", re.compile(r"is neither a valid local path nor a valid repo id|model is not found as a file|"
                                 r"Cannot load model|OfflineModeIsEnabled|does not appear to have a file named"),
     "the base model could not be loaded"),
    ("missing_package", re.compile(r"ImportError: No \w+|ModuleNotFoundError: No module named"), "an optional package is missing"),
    ("dataset_file", re.compile(r"caption file is empty|illegal char in file|Error loading file:|UnicodeDecodeError"),
     "a dataset file could not be read"),
    ("unknown_optimizer", re.compile(r"module 'torch\.optim' has no attribute"), "the optimizer name is unknown"),
    ("config_missing", re.compile(r"\.toml not found\."), "the training TOML was not found"),
    ("bad_option", re.compile(r"error: unrecognized arguments|error: argument --"), "sd-scripts rejected a command-line option"),
]
