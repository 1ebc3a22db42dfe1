"""The run spec's pydantic model: every knob of a LoRA style run, each field described.

Field names are kr's own (grouped, readable); kohya_runner.sdscripts.training_args maps them to sd-scripts options,
whose names each description gives in parentheses. Types and ranges are checked here; rules that span
fields live in rules.py. Descriptions feed `kr presets explain` and the docs: one line, for an artist.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ._checks import file_name, key_value_args, no_option_marker, path_text, prompt_template, single_line
from .choices import (ATTENTIONS, BUILTIN_OPTIMIZERS, LOSS_TYPES, MIXED_PRECISIONS, SAMPLERS, SAVE_PRECISIONS,
                      SCHEDULERS, TOKEN_LENGTHS)

Family = Literal["sdxl", "sd15"]
MetadataPolicy = Literal["keep", "minimal", "scrub"]
Sampler = Literal[SAMPLERS]  # type: ignore[valid-type]
Resolution = tuple[int, int]
ArgValue = bool | int | float | str


class Group(BaseModel):
    # extra="forbid": a misspelled key is an error here, where sd-scripts would silently ignore it.
    model_config = ConfigDict(extra="forbid", validate_default=True)


class ModelSpec(Group):
    base: str | None = Field(None, description="the base model to train on: a .safetensors/.ckpt file, a Diffusers "
                             "folder, or 'tiny' for kr's built-in test model (pretrained_model_name_or_path)")
    family: Family = Field("sdxl", description="model family: sdxl trains with sdxl_train_network.py, "
                           "sd15 with train_network.py")
    vae: str | None = Field(None, description="replacement VAE file or folder; none: the base model's own (vae)")
    tokenizer_cache_dir: str | None = Field(None, description="folder of offline tokenizers sd-scripts loads instead "
                                            "of downloading (tokenizer_cache_dir); none: the workspace's")
    v_parameterization: bool = Field(False, description="the base predicts v instead of noise (SD 2.x-style "
                                     "v-models); off for ordinary SDXL and SD1.5 (v_parameterization)")
    clip_skip: int | None = Field(None, ge=1, le=12, description="use the text encoder's output this many layers from "
                                  "the end, SD1.5 only; 2 is common for anime bases (clip_skip)")
    max_token_length: Literal[TOKEN_LENGTHS] | None = Field(  # type: ignore[valid-type]
        None, description="longest caption in tokens: none for 75, or 150 / 225 for long captions (max_token_length)")

    _paths = field_validator("base", "vae", "tokenizer_cache_dir")(path_text)


class DatasetSpec(Group):
    dir: str | None = Field(None, description="folder holding the training images and their caption files "
                            "(the subset's image_dir)")
    repeats: int = Field(10, ge=1, le=10_000, description="times each image is seen per epoch (num_repeats)")
    caption_extension: str = Field(".txt", description="extension of the caption files beside the images "
                                   "(caption_extension)")
    trigger: str | None = Field("TOK", min_length=1, max_length=100, description="the trigger word your captions use; "
                                "sample prompts insert it as {trigger}; none for a LoRA without one")
    caption_prefix: str | None = Field(None, max_length=500, description="text put before every caption as it is read; "
                                       "the caption files are not changed (caption_prefix)")
    caption_suffix: str | None = Field(None, max_length=500, description="text put after every caption as it is read; "
                                       "the caption files are not changed (caption_suffix)")
    shuffle_caption: bool = Field(False, description="shuffle each caption's comma-separated tags every step "
                                  "(shuffle_caption)")
    keep_tokens: int = Field(0, ge=0, le=100, description="leading tags that stay in place when tags are shuffled or "
                             "dropped, e.g. 1 for the trigger (keep_tokens)")
    keep_tokens_separator: str | None = Field(None, description="a marker in captions: the text before it stays in "
                                              "place, instead of counting keep_tokens (keep_tokens_separator)")
    caption_dropout_rate: float = Field(0.0, ge=0.0, le=1.0, description="chance (0–1) that an image is trained with "
                                        "an empty caption in a step (caption_dropout_rate)")
    caption_tag_dropout_rate: float = Field(0.0, ge=0.0, le=1.0, description="chance (0–1) that each tag is left out "
                                            "of a caption in a step (caption_tag_dropout_rate)")
    resolution: Resolution = Field((1024, 1024), description="training size in pixels: W,H or one number for a square "
                                   "(resolution)")
    enable_bucket: bool = Field(True, description="group images of similar aspect ratio into buckets instead of "
                                "cropping all to one shape (enable_bucket)")
    min_bucket_reso: int = Field(512, ge=32, le=8192, description="smallest bucket side in pixels (min_bucket_reso)")
    max_bucket_reso: int = Field(2048, ge=64, le=8192, description="largest bucket side in pixels (max_bucket_reso)")
    bucket_reso_steps: int = Field(64, ge=8, le=1024, description="bucket sides are multiples of this many pixels "
                                   "(bucket_reso_steps)")
    bucket_no_upscale: bool = Field(False, description="never enlarge a small image to fit a bucket; it gets a bucket "
                                    "near its own size (bucket_no_upscale)")
    batch_size: int = Field(1, ge=1, le=256, description="images per training step; more needs more VRAM (batch_size)")
    flip_aug: bool = Field(False, description="randomly mirror images left to right; avoid for asymmetric subjects "
                           "and lettering (flip_aug)")
    color_aug: bool = Field(False, description="randomly shift the hue of images; needs latent caching off (color_aug)")
    random_crop: bool = Field(False, description="crop a random part of each image instead of the centre; needs "
                              "latent caching off (random_crop)")
    validation_split: float = Field(0.0, ge=0.0, lt=1.0, description="share (0–1) of the images held out of training: "
                                    "enables the validation loss and kr's held-out copying check; 0 is off (validation_split)")
    validation_seed: int | None = Field(None, ge=0, le=2**32 - 1, description="seed choosing the held-out images; none "
                                        "uses training.seed (validation_seed)")

    _paths = field_validator("dir")(path_text)
    _lines = field_validator("trigger", "caption_prefix", "caption_suffix", "keep_tokens_separator")(single_line)
    _marker = field_validator("trigger")(no_option_marker)

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


class NetworkSpec(Group):
    module: str = Field("networks.lora", description="Python module of the network to train; networks.lora is "
                        "sd-scripts' LoRA (network_module)")
    dim: int = Field(16, ge=1, le=1024, description="LoRA rank: how much it can learn; file size grows with it "
                     "(network_dim)")
    alpha: float = Field(8.0, ge=0.0, le=1024.0, description="scales the learned change by alpha / dim; 0 means "
                         "alpha = dim (network_alpha)")
    dropout: float | None = Field(None, ge=0.0, le=1.0, description="dropout on the LoRA's inner neurons, 0–1; none "
                                  "for off (network_dropout)")
    args: dict[str, ArgValue] = Field(default_factory=dict, description="extra module arguments such as "
                                      "conv_dim = 4 (network_args)")
    unet_only: bool = Field(True, description="train only the U-Net, not the text encoders "
                            "(network_train_unet_only)")
    weights: str | None = Field(None, description="start from these existing LoRA weights instead of from "
                                "scratch (network_weights)")

    _paths = field_validator("weights")(path_text)

    @field_validator("module")
    @classmethod
    def _module(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", value):
            raise ValueError("expected an importable module path such as networks.lora")
        return value

    _args = field_validator("args")(key_value_args)


class OptimizerSpec(Group):
    type: str = Field("AdamW", description="a built-in optimizer name (any case, e.g. AdamW8bit, Prodigy) or "
                      "module.Class (optimizer_type)")
    args: dict[str, ArgValue] = Field(default_factory=dict, description="optimizer arguments such as "
                                      "weight_decay = 0.01; strings are quoted for you (optimizer_args)")
    lr: float = Field(1e-4, gt=0.0, le=10.0, description="learning rate: about 1e-4 for AdamW, 1.0 for adaptive "
                      "optimizers such as Prodigy (learning_rate)")
    unet_lr: float | None = Field(None, ge=0.0, le=10.0, description="learning rate of the U-Net; none: "
                                  "optimizer.lr (unet_lr)")
    text_encoder_lr: float | None = Field(None, ge=0.0, le=10.0, description="learning rate of the text encoders; "
                                          "needs network.unet_only = false (text_encoder_lr)")
    max_grad_norm: float = Field(1.0, ge=0.0, le=1000.0, description="clip gradients to this norm; 0 turns "
                                 "clipping off (max_grad_norm)")

    @field_validator("type")
    @classmethod
    def _type(cls, value: str) -> str:
        for name in BUILTIN_OPTIMIZERS:
            if value.lower() == name.lower():
                return name
        if "." in value and re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)+", value):
            return value  # a custom class, module.path.ClassName (contract §3.3)
        import difflib

        close = difflib.get_close_matches(value, BUILTIN_OPTIMIZERS, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]}?" if close else ""
        raise ValueError(f"is not an sd-scripts optimizer.{hint} Built-in names: {', '.join(BUILTIN_OPTIMIZERS)}; "
                         "or give a class path such as pytorch_optimizer.CAME")

    _args = field_validator("args")(key_value_args)


class SchedulerSpec(Group):
    name: Literal[SCHEDULERS] = Field(  # type: ignore[valid-type]
        "constant_with_warmup", description="how the learning rate changes over the run (lr_scheduler)")
    warmup_steps: int | float = Field(0, ge=0, description="learning-rate warm-up: an int is steps, a float below 1 "
                                      "a ratio of all steps (lr_warmup_steps)")
    cycles: int | None = Field(None, ge=1, le=1000, description="restarts of cosine_with_restarts "
                               "(lr_scheduler_num_cycles)")
    power: float | None = Field(None, gt=0.0, le=100.0, description="the polynomial scheduler's power "
                                "(lr_scheduler_power)")
    min_lr_ratio: float | None = Field(None, ge=0.0, le=1.0, description="lowest learning rate as a fraction of lr, "
                                       "for cosine_with_min_lr and warmup_stable_decay (lr_scheduler_min_lr_ratio)")
    args: dict[str, ArgValue] = Field(default_factory=dict, description="extra scheduler arguments, e.g. step_rules "
                                      "for piecewise_constant (lr_scheduler_args)")

    @field_validator("warmup_steps")
    @classmethod
    def _warmup(cls, value: int | float) -> int | float:
        # sd-scripts always reads a float as a ratio (contract §2.1): 100.0 would mean 100 × all steps.
        if isinstance(value, float) and value >= 1:
            if value.is_integer():
                return int(value)
            raise ValueError("a float is a ratio of all steps and must be below 1; give whole steps as an integer")
        return value

    _args = field_validator("args")(key_value_args)


class TrainingSpec(Group):
    epochs: int | None = Field(10, ge=1, le=100_000, description="passes over the dataset; set this or "
                               "training.steps (max_train_epochs)")
    steps: int | None = Field(None, ge=1, le=10_000_000, description="total optimizer steps; set this or "
                              "training.epochs (max_train_steps)")
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024, description="batches added up per optimizer step: a "
                                             "larger effective batch for the same VRAM (gradient_accumulation_steps)")
    seed: int = Field(42, ge=0, le=2**32 - 1, description="random seed of the training, so a run can be repeated "
                      "(seed)")
    noise_offset: float | None = Field(None, ge=0.0, le=1.0, description="lets the LoRA learn very dark and very "
                                       "bright images; 0.03–0.1 is usual (noise_offset)")
    adaptive_noise_scale: float | None = Field(None, ge=0.0, le=1.0, description="adds this × each latent's absolute mean "
                                               "to noise_offset; needs noise_offset (adaptive_noise_scale)")
    multires_noise_iterations: int | None = Field(None, ge=1, le=20, description="pyramid noise at several "
                                                  "resolutions: number of levels, about 6–10 (multires_noise_iterations)")
    multires_noise_discount: float | None = Field(None, gt=0.0, le=1.0, description="multi-resolution noise: how much "
                                                  "weaker each level is, about 0.3 (multires_noise_discount)")
    ip_noise_gamma: float | None = Field(None, ge=0.0, le=1.0, description="input perturbation noise strength, about "
                                         "0.1 (ip_noise_gamma)")
    min_snr_gamma: float | None = Field(None, gt=0.0, le=100.0, description="Min-SNR loss weighting, which often "
                                        "speeds learning up; 5 is usual (min_snr_gamma)")
    loss_type: Literal[LOSS_TYPES] = Field("l2", description="the loss function (loss_type)")  # type: ignore[valid-type]
    data_loader_workers: int = Field(2, ge=0, le=64, description="processes loading images in the background "
                                     "(max_data_loader_n_workers)")
    persistent_data_loader_workers: bool = Field(True, description="keep the loader processes between epochs: faster "
                                                 "epoch starts, more RAM (persistent_data_loader_workers)")


class PrecisionSpec(Group):
    mixed_precision: Literal[MIXED_PRECISIONS] = Field(  # type: ignore[valid-type]
        "bf16", description="compute precision: bf16 (RTX 30xx and newer), fp16, or no for fp32 (mixed_precision)")
    full_bf16: bool = Field(False, description="keep gradients in bf16 too, saving VRAM; needs mixed_precision = bf16 "
                            "(full_bf16)")
    full_fp16: bool = Field(False, description="keep gradients in fp16 too, saving VRAM; needs mixed_precision = fp16 "
                            "(full_fp16)")
    fp8_base: bool = Field(False, description="hold the base model in fp8 to save VRAM; needs mixed precision "
                           "(fp8_base)")
    no_half_vae: bool = Field(False, description="run the VAE in full precision; the SDXL VAE needs it with fp16 "
                              "(no_half_vae)")
    gradient_checkpointing: bool = Field(True, description="recompute activations instead of storing them: much less "
                                         "VRAM, somewhat slower (gradient_checkpointing)")
    attention: Literal[ATTENTIONS] = Field(  # type: ignore[valid-type]
        "sdpa", description="attention implementation: sdpa (PyTorch's), xformers, mem_eff_attn or none "
        "(the --sdpa / --xformers / --mem_eff_attn flags)")
    cache_latents: bool = Field(True, description="encode the images with the VAE once before training instead of "
                                "every step; rules out color_aug and random_crop (cache_latents)")
    cache_latents_to_disk: bool = Field(True, description="keep the cached latents on disk so later runs reuse them "
                                        "(cache_latents_to_disk)")
    cache_text_encoder_outputs: bool = Field(False, description="encode the captions once before training, saving "
                                             "VRAM; SDXL only, needs unet_only and unchanging captions "
                                             "(cache_text_encoder_outputs)")
    cache_text_encoder_outputs_to_disk: bool = Field(False, description="keep the cached caption encodings on disk "
                                                     "so later runs reuse them; SDXL only "
                                                     "(cache_text_encoder_outputs_to_disk)")
    vae_batch_size: int = Field(1, ge=1, le=64, description="images per VAE batch while caching latents "
                                "(vae_batch_size)")


class SamplingSpec(Group):
    prompts: list[str] = Field(default_factory=list, description="subjects of the sample images made during "
                               "training, e.g. 'a man thinking' (sample_prompts)")
    template: str = Field("in the style of {trigger}, {subject}", description="how a subject becomes a prompt; "
                          "{subject} and {trigger} are filled in")
    negative_prompt: str | None = Field(None, description="negative prompt of every sample (the prompt line's --n)")
    width: int | None = Field(None, ge=64, le=4096, description="sample width in pixels; none: the model's native "
                              "size (--w)")
    height: int | None = Field(None, ge=64, le=4096, description="sample height in pixels; none: the model's native "
                               "size (--h)")
    steps: int = Field(28, ge=1, le=1000, description="denoising steps per sample image (--s)")
    cfg_scale: float = Field(7.0, ge=0.0, le=50.0, description="guidance scale: how closely samples follow the "
                             "prompt (--l)")
    seed: int = Field(1234, ge=0, le=2**31 - 1000, description="prompt i uses seed + i, the same in every run (--d)")
    sampler: Sampler = Field("euler_a", description="sampler of the sample images (sample_sampler)")
    every_n_epochs: int | None = Field(1, ge=1, le=100_000, description="make samples every N epochs "
                                       "(sample_every_n_epochs)")
    every_n_steps: int | None = Field(None, ge=1, le=10_000_000, description="make samples every N steps; ignored "
                                      "while every_n_epochs is set (sample_every_n_steps)")
    at_first: bool = Field(True, description="also sample before training: the base model's column "
                           "(sample_at_first)")
    without_trigger: bool = Field(True, description="also each subject alone: does the style leak without the "
                                  "trigger?")
    untriggered_template: str = Field("{subject}", description="the prompt without the trigger; {subject} is "
                                      "filled in")
    variants: list[str] = Field(default_factory=list, description="reworded templates, one more prompt per subject "
                                "each, for prompt sensitivity")
    during_training: Literal["all", "sanity"] = Field("all", description="'sanity' samples only the first two "
                                                      "subjects with the trigger during training, a lean loop; 'all' "
                                                      "every prompt in every form")

    _lines = field_validator("template", "negative_prompt", "untriggered_template")(single_line)
    _marker = field_validator("template", "negative_prompt", "untriggered_template")(no_option_marker)
    _templates = field_validator("template", "untriggered_template")(prompt_template)

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, value: list[str]) -> list[str]:
        for i, prompt in enumerate(value):
            try:
                single_line(prompt)
                no_option_marker(prompt)
            except ValueError as e:
                raise ValueError(f"prompt {i + 1} {e}") from None
            if not prompt.strip():
                raise ValueError(f"prompt {i + 1} is empty")
        return value

    @field_validator("variants")
    @classmethod
    def _variants(cls, value: list[str]) -> list[str]:
        for i, template in enumerate(value):
            try:
                single_line(template)
                no_option_marker(template)
                prompt_template(template)
            except ValueError as e:
                raise ValueError(f"variant {i + 1} {e}") from None
        return value


class GuardSpec(Group):
    """kr's own watch over a run (sd-scripts has none): NaN/inf always ends a run as diverged."""
    divergence_factor: float | None = Field(3.0, gt=1.0, le=1000.0, description="kr stops the run when the average "
                                            "loss rises above this × its running minimum; none turns the rule off")
    warmup_steps: int = Field(50, ge=0, le=10_000_000, description="steps before the divergence rule applies")
    oom_retries: int = Field(3, ge=0, le=10, description="after CUDA out of memory, relaunch as a new linked run with "
                             "the next memory setting, at most this many times; 0: off (kr run --no-retry)")
    oom_retry_rank: bool = Field(False, description="let those retries halve network.dim and alpha as a last "
                                 "setting; off: the LoRA's rank never changes behind your back")


class SavingSpec(Group):
    output_name: str | None = Field(None, description="file name stem of the LoRA files and samples, one plain "
                                    "name; none: the run name (output_name)")
    every_n_epochs: int | None = Field(1, ge=1, le=100_000, description="save a LoRA every N epochs "
                                       "(save_every_n_epochs)")
    every_n_steps: int | None = Field(None, ge=1, le=10_000_000, description="save a LoRA every N steps "
                                      "(save_every_n_steps)")
    last_n_epochs: int | None = Field(None, ge=1, le=100_000, description="keep only the newest N epoch files "
                                      "(save_last_n_epochs)")
    last_n_steps: int | None = Field(None, ge=1, le=10_000_000, description="keep only the step files saved in the "
                                     "last N steps (save_last_n_steps)")
    precision: Literal[SAVE_PRECISIONS] = Field(  # type: ignore[valid-type]
        "fp16", description="number format of the saved LoRA files (save_precision)")
    state: bool = Field(False, description="save resumable training state with every LoRA file; large (save_state)")
    state_on_train_end: bool = Field(False, description="save resumable training state once, at the end "
                                     "(save_state_on_train_end)")

    _name = field_validator("output_name")(file_name)


class LoggingSpec(Group):
    console: Literal["simple", "rich"] = Field("simple", description="trainer console output: simple is plain lines "
                                               "kr can parse (console_log_simple), rich is coloured")
    log_config: bool = Field(False, description="write the hyperparameters into TensorBoard, output_name included "
                             "(log_config)")


class PrivacySpec(Group):
    metadata: MetadataPolicy = Field("minimal", description="what LoRA headers keep: keep = all, minimal = the "
                                     "network shape only (no_metadata), scrub = settings without captions or names")
    training_comment: str | None = Field(None, max_length=1000, description="a note stored in the LoRA header "
                                         "(training_comment)")

    _lines = field_validator("training_comment")(single_line)


class EvaluationSpec(Group):
    after_training: Literal["off", "missing", "grid"] = Field(
        "missing", description="after training: 'missing' samples the final checkpoint if training did not; 'grid' "
        "samples base and final on every prompt at evaluation.strengths, then scores; 'off' nothing")
    strengths: list[float] = Field(default_factory=lambda: [1.0], min_length=1, max_length=12, description="LoRA "
                                   "strengths of the post-hoc grid, e.g. [0.5, 0.75, 1.0]")
    batch_size: int = Field(4, ge=1, le=64, description="images per batch of the post-hoc generator "
                            "(gen_img.py --batch_size)")

    @field_validator("strengths")
    @classmethod
    def _strengths(cls, value: list[float]) -> list[float]:
        for strength in value:
            if not -4.0 <= strength <= 4.0:
                raise ValueError(f"strength {strength:g} is outside -4..4 (LoRA strengths are usually 0.3–1.2)")
        return list(dict.fromkeys(value))


class Spec(Group):
    name: str = Field("lora", description="the run name (--name; default: the preset's), one plain file name: "
                      "run ids and, unless saving.output_name is set, the LoRA files are named after it")
    model: ModelSpec = Field(default_factory=ModelSpec)
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    network: NetworkSpec = Field(default_factory=NetworkSpec)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    training: TrainingSpec = Field(default_factory=TrainingSpec)
    precision: PrecisionSpec = Field(default_factory=PrecisionSpec)
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    evaluation: EvaluationSpec = Field(default_factory=EvaluationSpec)
    saving: SavingSpec = Field(default_factory=SavingSpec)
    logging: LoggingSpec = Field(default_factory=LoggingSpec)
    privacy: PrivacySpec = Field(default_factory=PrivacySpec)
    guard: GuardSpec = Field(default_factory=GuardSpec)
    sd_scripts: dict[str, Any] = Field(default_factory=dict, description="any other sd-scripts option by its own "
                                       "name, checked against the pinned manifest")

    _name = field_validator("name")(file_name)

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

    @property
    def training_sample_count(self) -> int:
        """Images per sampling round during training: the lines of the rendered prompts file."""
        from .prompts import training_prompts

        return len(training_prompts(self))


def is_group(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Group)
