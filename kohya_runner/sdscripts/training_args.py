"""Spec → sd-scripts training options (the flat --config_file table). Each entry records which spec
field produced it, for error messages. The spec is duck-typed: this package never imports kr's Spec."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .options import MANAGED_BY_KR, coerce_raw_option, script_for


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
    vae: str | None = None
    network_weights: str | None = None
    run_id: str | None = None
    resume: str | None = None  # a state folder to continue from (§7.2)


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


# Options kr writes into dataset.toml from the spec; sd-scripts takes most of them as options too.
DATASET_OPTIONS = {
    "train_data_dir": "dataset.dir", "num_repeats": "dataset.repeats", "train_batch_size": "dataset.batch_size",
    "caption_extension": "dataset.caption_extension", "shuffle_caption": "dataset.shuffle_caption",
    "keep_tokens": "dataset.keep_tokens", "keep_tokens_separator": "dataset.keep_tokens_separator",
    "caption_dropout_rate": "dataset.caption_dropout_rate",
    "caption_tag_dropout_rate": "dataset.caption_tag_dropout_rate",
    "caption_prefix": "dataset.caption_prefix", "caption_suffix": "dataset.caption_suffix",
    "color_aug": "dataset.color_aug", "flip_aug": "dataset.flip_aug", "random_crop": "dataset.random_crop",
    "enable_bucket": "dataset.enable_bucket", "min_bucket_reso": "dataset.min_bucket_reso",
    "max_bucket_reso": "dataset.max_bucket_reso", "bucket_reso_steps": "dataset.bucket_reso_steps",
    "bucket_no_upscale": "dataset.bucket_no_upscale",
}

# Options whose value has another shape in the spec (a list of "k=v" vs a table, a flag vs a choice, a file vs
# subjects, sd-scripts' parent of "10_name" folders vs the image folder itself): typing the sd-scripts name
# with an sd-scripts value cannot simply be moved to the spec field.
RESHAPED = {"network_args", "optimizer_args", "lr_scheduler_args", "text_encoder_lr", "sdpa", "xformers",
            "mem_eff_attn", "no_metadata", "console_log_simple", "sample_prompts", "train_data_dir"}


def option_fields(spec) -> dict[str, str]:
    """Every sd-scripts option the spec owns → its spec path, e.g. learning_rate → optimizer.lr; "kr" for the
    options kr sets itself. Built from training_args itself (its `.owned`), so the two never disagree."""
    blank = Path()
    paths = RenderPaths(blank, blank, blank, blank, blank, blank, blank, base="", log_prefix="", run_id="x",
                        resume="x")
    owned = training_args(spec, paths).owned
    return {**{key: "kr" for key in MANAGED_BY_KR}, **DATASET_OPTIONS, **owned}


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
    # Written into dataset.toml only (dataset_config); owned here so a raw sd_scripts.validation_* is refused.
    args.add("dataset", "validation_split", None, "dataset.validation_split")
    args.add("dataset", "validation_seed", None, "dataset.validation_seed")


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


def _float(value: float | None) -> float | None:
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
