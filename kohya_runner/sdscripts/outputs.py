"""What sd-scripts writes into the output and logging folders (§4.1, §5.1, §5.2): LoRA checkpoint
names, sample image names, state folders, TensorBoard run folders and loss tags."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

LORA_EXT = ".safetensors"  # kr always renders save_model_as = "safetensors"
NETWORK_TRAIN = "network_train"  # TensorBoard subfolder (log_tracker_name's default)


def final_lora_name(output_name: str, ext: str = LORA_EXT) -> str:
    return f"{output_name}{ext}"


def epoch_lora_name(output_name: str, epoch: int, ext: str = LORA_EXT) -> str:
    return f"{output_name}-{epoch:06d}{ext}"


def step_lora_name(output_name: str, step: int, ext: str = LORA_EXT) -> str:
    return f"{output_name}-step{step:08d}{ext}"


def checkpoint_names(output_name: str | None, ext: str = LORA_EXT) -> tuple:
    """(epoch_name(e), step_name(s), final_name) following sd-scripts' defaults when output_name is unset."""
    epoch_base = output_name if output_name is not None else "epoch"
    step_base = output_name if output_name is not None else "at"
    final = final_lora_name(output_name if output_name is not None else "last", ext)
    return (lambda e: epoch_lora_name(epoch_base, e, ext), lambda s: step_lora_name(step_base, s, ext), final)


_CHECKPOINT = re.compile(r"-(?:(?P<epoch>\d{6})|step(?P<step>\d{8}))\.safetensors$")


def checkpoint_order(output_name: str, file_name: str) -> tuple[int, int] | None:
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
    seed: int | None


_SAMPLE = re.compile(r"(?P<n>e\d{6}|\d{6,})_(?P<ii>\d{2,})_(?P<stamp>\d{14})(?:_(?P<seed>\d+))?\.png$")


def parse_sample_name(output_name: str | None, file_name: str) -> SampleName | None:
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
