"""How a checkpoint's parts become one score (documented here, printed by `kr runs best --by score`).

Parts, each measured against the base model at the same noise, prompts and seeds:

- fit        (base loss - LoRA loss) / base loss: the fixed-noise, fixed-timestep denoising loss on the
             dataset's images, conditioned on their captions (held-out images when the run has a
             validation split). Higher: the LoRA models the style's images better.
- copying    the LoRA's held-out/train loss ratio over the base's; above COPYING_RATIO the LoRA fits the
             images it trained on much better than unseen ones of the same style: a warning, not a part.
- selectivity  change_with / (change_with + change_without): how much of the LoRA's change to the
             U-Net's noise prediction happens with the trigger in the prompt (1: only with it; 0.5: as much
             without it, the style leaks into every prompt). leakage = change_without / change_with.
- style      (d(base, train) - d(LoRA, train)) / d(base, train) for samples with the trigger at strength
             1, where d is kohya_runner.imagestats.style_distance (edges, dark ink, saturation, lightness,
             palette) to the training images: 1 = its samples look like the training set, 0 = no closer
             than the base's. style_without is the same for samples without the trigger (leak you can see).

score = 100 × effect × selectivity, with effect = the mean of clip(style, 0, 1) and clip(fit / FULL_FIT, 0, 1)
(whichever are measured). A LoRA without a trigger (dataset.trigger none) counts selectivity as 1.
"""

from __future__ import annotations

import math
from typing import Any

FULL_FIT = 0.2  # a 20 % lower denoising loss than the base's on the style's images counts as a full fit
COPYING_RATIO = 1.15


def _clip(value: float) -> float:
    return max(0.0, min(1.0, value))


def combine(parts: dict[str, Any], has_trigger: bool) -> dict[str, Any]:
    """Fill in derived parts (fit, selectivity, leakage, copying) and the score; returns `parts`.
    A measurement that is not a finite number counts as not measured."""
    for key, value in list(parts.items()):
        if isinstance(value, float) and not math.isfinite(value):
            parts[key] = None
    base_loss, loss = parts.get("base_train_loss"), parts.get("train_loss")
    held, base_held = parts.get("held_out_loss"), parts.get("base_held_out_loss")
    if held is not None and base_held:
        parts["fit"] = (base_held - held) / base_held
    elif loss is not None and base_loss:
        parts["fit"] = (base_loss - loss) / base_loss
    if held is not None and loss and base_held and base_loss:
        ratio = (held / loss) / (base_held / base_loss)
        parts["copying_ratio"] = ratio
        parts["copying"] = ratio > COPYING_RATIO
    with_, without = parts.get("change_with"), parts.get("change_without")
    if has_trigger and with_ is not None and without is not None and with_ + without > 0:
        parts["selectivity"] = with_ / (with_ + without)
        parts["leakage"] = without / with_ if with_ > 0 else None
    effects = []
    if parts.get("style") is not None:
        effects.append(_clip(parts["style"]))
    if parts.get("fit") is not None:
        effects.append(_clip(parts["fit"] / FULL_FIT))
    selectivity = parts.get("selectivity") if has_trigger else 1.0
    if effects and selectivity is not None:
        parts["score"] = round(100.0 * sum(effects) / len(effects) * selectivity, 2)
    else:
        parts["score"] = None
    return parts


REASON = ("score = 100 × effect × selectivity: effect is how far the checkpoint moves toward the training images' "
          "look (style distance of its samples with the trigger) and lowers the denoising loss on them (fit), "
          "selectivity how much of its change needs the trigger (leakage lowers it)")
