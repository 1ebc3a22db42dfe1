"""Cross-field rules: what sd-scripts asserts at start-up (after loading models, minutes in) or silently
ignores (contract §3, §5.6, §9), checked before anything runs. One function per concern; each returns the
field path it blames, the value and the fix. The order of RULES is the order users read the problems in.
"""

from __future__ import annotations

import difflib

from ..sdscripts import cache_files
from ..sdscripts.prompts import option_at_start
from .choices import ADAPTIVE_OPTIMIZERS, NETWORK_LORA_ARGS, SCHEDULE_FREE_OPTIMIZERS
from .errors import Problem
from .model import Spec
from .prompts import sample_prompts, start_field, template_field


def cross_field_problems(spec: Spec) -> list[Problem]:
    """Every cross-field problem of a valid-typed spec (empty when it is consistent)."""
    return [problem for rule in RULES for problem in rule(spec)]


def _steps_rules(spec: Spec) -> list[Problem]:
    t = spec.training
    if t.epochs is not None and t.steps is not None:
        return [Problem("training.steps", t.steps, "is set together with training.epochs, which overrides it in sd-scripts",
                        "set one of them and the other to none (training.epochs=none or training.steps=none)")]
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
    te_cache = cache_files.te_cached(spec)
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
    latent_cache = cache_files.latents_cached(spec)
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


def _prompt_option_rules(spec: Spec) -> list[Problem]:
    """sd-scripts reads a prompt that starts like one of its options (`n ugly hands`) as that option too
    (line_to_prompt_dict matches the first piece as well): one problem per field that starts such a prompt."""
    out, blamed = [], set()
    for prompt in sample_prompts(spec):
        template = template_field(spec, prompt.kind)[0]
        if " --" in prompt.text and template not in blamed:  # each part is free of " --", but joined…
            blamed.add(template)
            out.append(Problem(template, template_field(spec, prompt.kind)[1],
                               f"filled in, it gives the {prompt.kind} sample prompt {prompt.text.strip()[:60]!r}, "
                               "which contains ' --', where sd-scripts starts reading prompt options",
                               "put a space or a word between the placeholders and any '-' beside them"))
            continue
        option = option_at_start(prompt.text)
        field = start_field(spec, prompt) if option else None
        if option is None or field in blamed:
            continue
        blamed.add(field)
        value = _field_value(spec, field, prompt)
        out.append(Problem(field, value,
                           f"the {prompt.kind} sample prompt {prompt.text.strip()[:60]!r} starts like the prompt "
                           f"option --{option.flag}, so sd-scripts would also read it as the {option.meaning}",
                           f"reword the start of {field} so the prompt no longer begins with '{option.flag} ' "
                           "(e.g. put a word such as 'a' or 'the' before it)"))
    return out


def _field_value(spec: Spec, field: str, prompt) -> object:
    if field.startswith("sampling.prompts["):
        return prompt.subject
    if field == "dataset.trigger":
        return spec.dataset.trigger
    return template_field(spec, prompt.kind)[1]


def _saving_rules(spec: Spec) -> list[Problem]:
    s, out = spec.saving, []
    if s.last_n_epochs is not None and s.every_n_epochs is None:
        out.append(Problem("saving.last_n_epochs", s.last_n_epochs, "has nothing to rotate without saving.every_n_epochs",
                           "set saving.every_n_epochs=1 or remove last_n_epochs"))
    if s.last_n_steps is not None and s.every_n_steps is None:
        out.append(Problem("saving.last_n_steps", s.last_n_steps, "has nothing to rotate without saving.every_n_steps",
                           "set saving.every_n_steps or remove last_n_steps"))
    return out


def _loader_rules(spec: Spec) -> list[Problem]:
    t = spec.training
    if t.persistent_data_loader_workers and t.data_loader_workers == 0:
        return [Problem("training.persistent_data_loader_workers", True, "needs at least one data loader worker (torch raises)",
                        "set training.data_loader_workers=1 or persistent_data_loader_workers=false")]
    return []


def _model_rules(spec: Spec) -> list[Problem]:
    if spec.model.clip_skip is not None and spec.model.family == "sdxl":
        return [Problem("model.clip_skip", spec.model.clip_skip, "is ignored by sdxl_train_network.py",
                        "remove it (SD1.5 only)")]
    return []


def _noise_rules(spec: Spec) -> list[Problem]:
    t = spec.training
    if t.adaptive_noise_scale is not None and t.noise_offset is None:
        return [Problem("training.adaptive_noise_scale", t.adaptive_noise_scale, "needs training.noise_offset",
                        "set training.noise_offset=0.0357")]
    return []


def _network_rules(spec: Spec) -> list[Problem]:
    n, out = spec.network, []
    if "dropout" in n.args and n.dropout is not None:
        out.append(Problem("network.args.dropout", n.args["dropout"], "conflicts with network.dropout", "keep one"))
    if n.module == "networks.lora":
        for key in n.args:
            if key not in NETWORK_LORA_ARGS and key != "dropout":
                close = difflib.get_close_matches(key, NETWORK_LORA_ARGS, n=1)
                fix = f"did you mean network.args.{close[0]}?" if close else f"networks.lora knows: {', '.join(NETWORK_LORA_ARGS)}"
                out.append(Problem(f"network.args.{key}", n.args[key],
                                   "is not a networks.lora argument (sd-scripts would ignore it silently)", fix))
    return out


def _vae_rules(spec: Spec) -> list[Problem]:
    p = spec.precision
    if p.mixed_precision == "fp16" and spec.model.family == "sdxl" and not p.no_half_vae:
        return [Problem("precision.no_half_vae", False, "the SDXL VAE produces NaN latents in fp16",
                        "set precision.no_half_vae=true or precision.mixed_precision=bf16")]
    return []


RULES = (_steps_rules, _precision_rules, _cache_rules, _bucket_rules, _optimizer_rules, _scheduler_rules,
         _sampling_rules, _prompt_option_rules, _saving_rules, _loader_rules, _model_rules, _noise_rules,
         _network_rules, _vae_rules)
