"""Temporary re-export shim: sd-scripts knowledge now lives in kohya_runner.sdscripts.

Kept so modules not yet migrated (spec, run, monitor, report, archive, checkpoints, doctor, ...) keep
working; it is deleted once their imports point at kohya_runner.sdscripts.<module>.
"""

from __future__ import annotations

from .sdscripts.dataset_config import DATASET_SCHEMA, check_dataset_config, dataset_config
from .sdscripts.environment import OFFLINE_ENV
from .sdscripts.logs import (
    AVR_LOSS, CACHING, EPOCH_LINE, EXCEPTION_LINE, FAILURES, MODEL_SAVED, NO_DATA, NUM_EPOCHS, REMOVING_CHECKPOINT,
    SAMPLING, SAVING_CHECKPOINT, STEPS_BAR, TOTAL_STEPS,
)
from .sdscripts.options import (
    MANAGED_BY_KR, SCRIPTS, Option, check_option, coerce_raw_option, looks_like_hub_id, manifest, manifest_path,
    pinned_commit, refusal, script_for,
)
from .sdscripts.outputs import (
    LOSS_TAGS, NETWORK_TRAIN, SampleName, checkpoint_order, epoch_lora_name, final_lora_name, parse_sample_name,
    state_dirs, step_lora_name, tensorboard_run_dirs,
)
from .sdscripts.prompts import parse_prompt_line
from .sdscripts.training_args import Entry, RenderPaths, TrainingArgs, training_args


def sample_prompt_lines(spec) -> list[str]:
    """The old one-argument form: the prompts come from kr's spec module."""
    from .sdscripts.prompts import sample_prompt_lines as lines
    from .spec import sample_prompts

    return lines(spec, sample_prompts(spec))


__all__ = [
    "AVR_LOSS", "CACHING", "DATASET_SCHEMA", "EPOCH_LINE", "EXCEPTION_LINE", "FAILURES", "LOSS_TAGS", "MANAGED_BY_KR",
    "MODEL_SAVED", "NETWORK_TRAIN", "NO_DATA", "NUM_EPOCHS", "OFFLINE_ENV", "REMOVING_CHECKPOINT", "SAMPLING",
    "SAVING_CHECKPOINT", "SCRIPTS", "STEPS_BAR", "TOTAL_STEPS", "Entry", "Option", "RenderPaths", "SampleName",
    "TrainingArgs", "check_dataset_config", "check_option", "checkpoint_order", "coerce_raw_option", "dataset_config",
    "epoch_lora_name", "final_lora_name", "looks_like_hub_id", "manifest", "manifest_path", "parse_prompt_line",
    "parse_sample_name", "pinned_commit", "refusal", "sample_prompt_lines", "script_for", "state_dirs",
    "step_lora_name", "tensorboard_run_dirs", "training_args",
]
