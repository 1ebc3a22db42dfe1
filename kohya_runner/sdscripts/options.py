"""The pinned option manifest (vendor/sd-scripts-args.json): options, their forms and choices, and
the options kr refuses (off-machine traffic, interactive debugging) or manages itself."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..resources import data_dir

SCRIPTS = {"sdxl": "sdxl_train_network", "sd15": "train_network"}
DEFAULT_SCRIPT = SCRIPTS["sdxl"]


@dataclass(frozen=True)
class Option:
    name: str
    action: str
    type: str | None
    default: Any
    choices: tuple | None
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
    """Every option of `script` at the pin. Raises KeyError for a script the manifest does not hold."""
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


def choices(option: str, script: str = DEFAULT_SCRIPT) -> tuple[str, ...]:
    """The values argparse accepts for `option` at the pin, () when it takes free text.

    Only `sample_sampler` has a choices list at 48d368f; `optimizer_type` and `lr_scheduler` are
    free strings resolved at run time (see BUILTIN_OPTIMIZERS and SCHEDULERS).
    Raises KeyError when `option` is not an option of `script`.
    """
    found = manifest(script)[option].choices
    return tuple(str(c) for c in found if c is not None) if found else ()


# sd-scripts resolves these names in train_util.get_optimizer / get_scheduler_fix, not argparse, so
# the manifest cannot list them; these are the built-in names at the pin.
ADAPTIVE_OPTIMIZERS = ("Prodigy", "DAdaptation", "DAdaptAdamPreprint", "DAdaptAdaGrad", "DAdaptAdam",
                       "DAdaptAdan", "DAdaptAdanIP", "DAdaptLion", "DAdaptSGD")
SCHEDULE_FREE_OPTIMIZERS = ("RAdamScheduleFree", "AdamWScheduleFree", "SGDScheduleFree")
BUILTIN_OPTIMIZERS = ("AdamW", "AdamW8bit", "SGDNesterov", "SGDNesterov8bit", "Lion", "Lion8bit",
                    "PagedAdamW", "PagedAdamW8bit", "PagedAdamW32bit", "PagedLion8bit", "Adafactor",
                    *ADAPTIVE_OPTIMIZERS, *SCHEDULE_FREE_OPTIMIZERS)
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial",
                    "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay", "piecewise_constant", "adafactor")


# networks/lora.py's create_network reads these network_args keys and silently ignores any other.
NETWORK_LORA_ARGS = ("conv_dim", "conv_alpha", "rank_dropout", "module_dropout", "block_dims", "block_alphas",
                     "conv_block_dims", "conv_block_alphas", "down_lr_weight", "mid_lr_weight", "up_lr_weight",
                     "block_lr_zero_threshold", "loraplus_lr_ratio", "loraplus_unet_lr_ratio",
                     "loraplus_text_encoder_lr_ratio")


# ----------------------------------------------------------------------------------------------
# Options kr refuses (§7.8) or manages itself.

MANAGED_BY_KR = {
    "config_file", "output_config", "dataset_config", "output_dir", "output_name", "logging_dir", "log_prefix",
    "log_with", "sample_prompts", "pretrained_model_name_or_path", "tokenizer_cache_dir", "save_model_as",
    "console_log_simple", "console_log_file", "train_data_dir", "reg_data_dir", "in_json", "resume",
}


def refusal(option: str, value: Any = True) -> str | None:
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
# Checking training options against the manifest: every key an option, every value the form
# sd-scripts' TOML path needs (it skips argparse's type and choices checks, §2.1).


def check_option(script: str, key: str, value: Any) -> str | None:
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


def _check_scalar(option: Option, value: Any) -> str | None:
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
