"""The values the spec's choice fields accept, and where each list comes from.

Where sd-scripts' argparse declares `choices`, the list is read from the pinned option manifest
(vendor/sd-scripts-args.json), so moving the pin moves them. That read is one small JSON parse paid
when the spec is first imported; commands import the spec, `kr --help` does not.

Where argparse takes free text (optimizer_type, lr_scheduler) the manifest has no list: the names below
are the ones sd-scripts' own code accepts at the pin, kept here by hand.
"""

from __future__ import annotations

from ..contract import SCRIPTS, manifest


def manifest_choices(option: str) -> tuple:
    """The choices every LoRA entry script declares for `option`, in the manifest's order; argparse's
    None ("not given") left out, since the spec says that with an optional field."""
    per_script = [manifest(script)[option].choices or () for script in SCRIPTS.values()]
    first, *others = per_script
    return tuple(c for c in first if c is not None and all(c in other for other in others))


SAMPLERS = manifest_choices("sample_sampler")
LOSS_TYPES = manifest_choices("loss_type")
MIXED_PRECISIONS = manifest_choices("mixed_precision")
SAVE_PRECISIONS = manifest_choices("save_precision")
TOKEN_LENGTHS = manifest_choices("max_token_length")

# train_util.get_optimizer matches these case-insensitively; anything else must be a module.Class path.
# Adaptive ones set their own step size (they want lr ≈ 1.0); schedule-free ones replace the scheduler.
ADAPTIVE_OPTIMIZERS = ("Prodigy", "DAdaptation", "DAdaptAdamPreprint", "DAdaptAdaGrad", "DAdaptAdam",
                       "DAdaptAdan", "DAdaptAdanIP", "DAdaptLion", "DAdaptSGD")
SCHEDULE_FREE_OPTIMIZERS = ("RAdamScheduleFree", "AdamWScheduleFree", "SGDScheduleFree")
BUILTIN_OPTIMIZERS = ("AdamW", "AdamW8bit", "SGDNesterov", "SGDNesterov8bit", "Lion", "Lion8bit",
                      "PagedAdamW", "PagedAdamW8bit", "PagedAdamW32bit", "PagedLion8bit", "Adafactor",
                      *ADAPTIVE_OPTIMIZERS, *SCHEDULE_FREE_OPTIMIZERS)

# train_util.get_scheduler_fix: diffusers' SchedulerType names at the pin, plus sd-scripts' own "adafactor".
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial",
              "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay", "piecewise_constant", "adafactor")

# kr's own choice: sd-scripts has one flag per implementation (--sdpa, --xformers, --mem_eff_attn).
ATTENTIONS = ("sdpa", "xformers", "mem_eff_attn", "none")

# networks/lora.py's create_network reads these network_args keys and silently ignores any other.
NETWORK_LORA_ARGS = ("conv_dim", "conv_alpha", "rank_dropout", "module_dropout", "block_dims", "block_alphas",
                     "conv_block_dims", "conv_block_alphas", "down_lr_weight", "mid_lr_weight", "up_lr_weight",
                     "block_lr_zero_threshold", "loraplus_lr_ratio", "loraplus_unet_lr_ratio",
                     "loraplus_text_encoder_lr_ratio")
