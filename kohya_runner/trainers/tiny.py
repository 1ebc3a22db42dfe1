"""The built-in tiny trainer (kohya_runner.tiny): same command-line shape as sd-scripts' scripts.

adapt() fits a run spec to the tiny model before anything is rendered: the shipped presets are written
for SDXL on a 24 GB GPU (1024 px, 8-bit AdamW, bf16, 28-step samples), and the tiny model is a 64 px CPU
model. The adapted spec is the one rendered and recorded in the run folder (spec.json, config.toml);
each change is named in a note the caller prints.
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import Launch, trainer_env

MODULES = {"sdxl": "kohya_runner.tiny", "sd15": "kohya_runner.tiny.sd15"}

NATIVE = 64  # the tiny base's native resolution (kohya_runner.tiny.base.NATIVE_RESOLUTION)
LARGEST = 2 * NATIVE  # above this a run on the tiny model is only slower, not different
# Sampling, not training, is most of a tiny run's time: a preset written for a real model (20-50 steps)
# samples with a few steps; one written for the tiny model (at most 12, as tiny-demo) is left as it is.
SAMPLE_STEPS = 20  # enough for the pretrained tiny base to draw; more only costs time
SAMPLE_CFG = 3.0  # its small text encoders overshoot at the CFG of full-size presets (5-7)

# Arguments each CPU stand-in accepts; the rest belong to the replaced optimizer (e.g. Prodigy's d_coef).
_KEEP_ARGS = {"AdamW": {"weight_decay", "betas", "eps", "amsgrad"},
              "SGDNesterov": {"weight_decay", "momentum", "dampening"},
              "Lion": {"weight_decay", "betas"}}
STAND_IN_LR = 1e-4  # for adaptive optimizers (lr ≈ 1.0) replaced by AdamW: the presets' AdamW rate


def launch(family: str, config_file: Path, run_dir: Path, gpus: list[int] | None) -> Launch:
    argv = [sys.executable, "-m", MODULES[family], "--config_file", str(config_file)]
    return Launch("tiny", argv, run_dir, trainer_env(gpus))


def adapt(home: Path, spec):
    """(spec fitted to the tiny model, notes): the tiny base built if missing; training above 128 px brought
    to the native 64 px, samples to 64 px × 20 steps at CFG 3, bf16/fp16 to fp32 and loader workers to 0 (the CPU);
    an optimizer whose package kr's python lacks replaced by its CPU equivalent (torch's AdamW for
    bitsandbytes' 8-bit/paged AdamW, …): the tiny run then exercises the pipeline with the preset as written
    everywhere else, instead of failing minutes in on a GPU-only optimizer.

    Raises SpecError (BadInput) only if the adapted values break a rule, which would be a bug here.
    """
    from ..spec import build_spec

    notes = []
    if spec.model.base == "tiny":
        built = ensure_base(home, spec.model.family)
        if built:
            notes.append(f"built kr's tiny {spec.model.family} base (once) in {built}")
    data = spec.model_dump(mode="json")
    scale = _scale_changes(spec, data)
    if scale:
        notes.append("tiny model, native scale: " + "; ".join(scale) + " (recorded in the run's spec.json)")
    optimizer = _optimizer_change(spec, data)
    if optimizer:
        notes.append(optimizer)
    if not notes or (len(notes) == 1 and notes[0].startswith("built")):
        return spec, notes
    return build_spec(data, source="the spec fitted to the tiny model"), notes


def ensure_base(home: Path, family: str) -> Path | None:
    """Build kr's tiny base of `family` if it is not there; the folder when it was built now, else None."""
    from .. import workspace

    folder = workspace.tiny_base_dir(home, family)
    if (folder / "model_index.json").is_file():
        return None
    from ..tiny import build_tiny_base

    return build_tiny_base(folder, family)


def _scale_changes(spec, data: dict) -> list[str]:
    changes = []
    d, s, p, t = data["dataset"], data["sampling"], data["precision"], data["training"]
    if max(spec.dataset.resolution) > LARGEST:
        step = 32 if spec.model.family == "sdxl" else 64  # sd-scripts' bucket step rule per family
        changes.append(f"training at {NATIVE} px (preset: {_size(spec.dataset.resolution)})")
        d.update(resolution=[NATIVE, NATIVE], min_bucket_reso=min(step, NATIVE), max_bucket_reso=LARGEST,
                 bucket_reso_steps=step)
    if spec.sampling.prompts:
        width, height = spec.sample_size
        sample = []
        if max(width, height) > LARGEST:
            s.update(width=NATIVE, height=NATIVE)
            sample.append(f"{NATIVE} px (preset: {_size((width, height))})")
        if spec.sampling.steps > SAMPLE_STEPS:
            s["steps"] = SAMPLE_STEPS
            sample.append(f"{SAMPLE_STEPS} steps (preset: {spec.sampling.steps})")
        if spec.sampling.cfg_scale > SAMPLE_CFG + 1:
            s["cfg_scale"] = SAMPLE_CFG
            sample.append(f"CFG {SAMPLE_CFG:g} (preset: {spec.sampling.cfg_scale:g})")
        if sample:
            changes.append("samples at " + ", ".join(sample))
    if spec.precision.mixed_precision != "no" or spec.precision.full_bf16 or spec.precision.full_fp16:
        p.update(mixed_precision="no", full_bf16=False, full_fp16=False, fp8_base=False)
        changes.append(f"fp32 on the CPU (preset: {spec.precision.mixed_precision})")
    if spec.training.data_loader_workers:
        t.update(data_loader_workers=0, persistent_data_loader_workers=False)
        changes.append(f"no data-loader processes (preset: {spec.training.data_loader_workers})")
    return changes


def _size(size) -> str:
    width, height = size
    return f"{width}" if width == height else f"{width}×{height}"


def _optimizer_change(spec, data: dict) -> str | None:
    """Replace an optimizer kr's python cannot build by its CPU equivalent; the note says which and why."""
    from .packages import available_here, module_for, pip_name

    wanted = spec.optimizer.type
    module = module_for(wanted)
    if module is None or "." in wanted:
        return None  # torch's own, Adafactor, or a custom class (its import error names it)
    schedule_free = wanted.lower().endswith("schedulefree")
    if available_here(module) and not schedule_free:
        return None
    replacement = stand_in(wanted)
    o = data["optimizer"]
    o["type"] = replacement
    o["args"] = {k: v for k, v in o["args"].items() if k in _KEEP_ARGS[replacement]}
    why = "the tiny trainer implements no schedule-free optimizer" if schedule_free and available_here(module) \
        else f"{pip_name(module)} is not installed in kr's environment"
    lr = ""
    if wanted.lower() == "prodigy" or wanted.lower().startswith("dadapt"):
        o.update(lr=STAND_IN_LR, unet_lr=None, text_encoder_lr=None)
        lr = f" at lr {STAND_IN_LR:g} (an adaptive optimizer's lr ≈ 1 is no learning rate for AdamW)"
    return (f"optimizer: {replacement}{lr} instead of {wanted} on the tiny trainer ({why}); sd-scripts runs "
            f"{wanted} as written")


def stand_in(wanted: str) -> str:
    """The CPU optimizer the tiny trainer uses for `wanted` when its package is missing."""
    from .packages import available_here

    lowered = wanted.lower()
    if lowered == "sgdnesterov8bit":
        return "SGDNesterov"
    if lowered in ("lion8bit", "pagedlion8bit") and available_here("lion_pytorch"):
        return "Lion"
    return "AdamW"
