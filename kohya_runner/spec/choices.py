"""The values the spec's choice fields accept, and where each list comes from.

Where sd-scripts' argparse declares `choices`, the list is read from the pinned option manifest
(vendor/sd-scripts-args.json), so moving the pin moves them. That read is one small JSON parse paid
when the spec is first imported; commands import the spec, `kr --help` does not.

Where argparse takes free text (optimizer_type, lr_scheduler) the manifest has no list: sdscripts.options
keeps the names sd-scripts' own code accepts at the pin.
"""

from __future__ import annotations

from ..sdscripts.options import (ADAPTIVE_OPTIMIZERS, BUILTIN_OPTIMIZERS, NETWORK_LORA_ARGS,  # noqa: F401 (re-exported)
                                 SCHEDULE_FREE_OPTIMIZERS, SCHEDULERS, SCRIPTS, manifest)


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

# kr's own choice: sd-scripts has one flag per implementation (--sdpa, --xformers, --mem_eff_attn).
ATTENTIONS = ("sdpa", "xformers", "mem_eff_attn", "none")
