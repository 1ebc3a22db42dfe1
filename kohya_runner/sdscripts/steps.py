"""sd-scripts' step arithmetic (contract §7.4), checkpoint saves and rotation (§4.1) and sample rounds
(§3.8), as train_network.py does them, plus the disk estimate that follows."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from ..errors import BadInput
from .architectures import FAMILIES
from .lora_size import LoraSize, lora_file_size
from .outputs import checkpoint_names

DEFAULT_MAX_TRAIN_STEPS = 1600  # sd-scripts' default when neither steps nor epochs are given
SAMPLE_PNG_BYTES_PER_PIXEL = 1.5  # rough size of a sample PNG (photo-like content)


@dataclass(frozen=True)
class TrainingPlan:
    """The training arguments the step arithmetic and the disk estimate need (contract §3.5, §3.8).

    With neither `max_train_epochs` nor `max_train_steps`, sd-scripts trains 1600 steps. When both are
    given, epochs win (as in sd-scripts). `network_dim` None is sd-scripts' fallback rank 4.
    `save_precision` None means the training dtype; we assume fp32 then. Raises BadInput for values
    sd-scripts rejects.
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
    """Epoch and step counts, checkpoint files and sample rounds for a run. Raises BadInput when the
    batch size is below 1 or the dataset has no items.

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


def plan_from_spec(spec, num_processes: int = 1) -> TrainingPlan:
    """The TrainingPlan of kr's run spec (duck-typed). Raises BadInput for values sd-scripts rejects."""
    t, s, sv = spec.training, spec.sampling, spec.saving
    return TrainingPlan(
        max_train_epochs=t.epochs, max_train_steps=t.steps, gradient_accumulation_steps=t.gradient_accumulation_steps,
        num_processes=num_processes, save_every_n_epochs=sv.every_n_epochs, save_every_n_steps=sv.every_n_steps,
        save_last_n_epochs=sv.last_n_epochs, save_last_n_steps=sv.last_n_steps,
        sample_every_n_epochs=s.every_n_epochs if s.prompts else None,
        sample_every_n_steps=s.every_n_steps if s.prompts else None, sample_at_first=s.at_first and bool(s.prompts),
        sample_prompts=spec.training_sample_count, sample_size=spec.sample_size, network_dim=spec.network.dim,
        family=spec.model.family, unet_only=spec.network.unet_only, save_precision=sv.precision,
        output_name=spec.output_name)
