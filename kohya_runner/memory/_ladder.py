"""The out-of-memory ladder: the memory settings to try, in the order that costs the least quality and speed.

Each rung is a set of spec changes. A rung applies when it changes something and the changed spec is still
valid. `kr run` / sweeps climb one rung per out-of-memory failure (kohya_runner.memory.retry); a failed
run's hint names the next rung (monitor.oom_hint). Lowering the rank changes the LoRA, so that rung is
only climbed when the spec allows it (guard.oom_retry_rank).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..errors import BadInput

EIGHT_BIT = {"adamw": "AdamW8bit", "lion": "Lion8bit", "sgdnesterov": "SGDNesterov8bit"}


@dataclass
class Rung:
    name: str
    changes: dict[str, Any]  # dotted spec key → new value
    automatic: bool = True  # False: only named in the hint (it changes what the LoRA learns from)

    @property
    def text(self) -> str:
        return ", ".join(f"{key}={_show(value)}" for key, value in self.changes.items())


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def rungs(spec) -> list[Rung]:
    """Every rung that would change this spec, in ladder order (not yet checked for validity)."""
    p, d, n, o, t = spec.precision, spec.dataset, spec.network, spec.optimizer, spec.training
    candidates: list[tuple[bool, Callable[[], Rung]]] = [
        (d.batch_size > 1, lambda: Rung("batch 1 with gradient accumulation", {
            "dataset.batch_size": 1, "training.gradient_accumulation_steps": t.gradient_accumulation_steps * d.batch_size})),
        (not p.gradient_checkpointing, lambda: Rung("gradient checkpointing", {"precision.gradient_checkpointing": True})),
        (spec.model.family == "sdxl" and n.unet_only and not p.cache_text_encoder_outputs,
         lambda: Rung("cached text-encoder outputs", {"precision.cache_text_encoder_outputs": True})),
        (not (p.cache_latents or p.cache_latents_to_disk), lambda: Rung("cached latents", {"precision.cache_latents": True})),
        (o.type.lower() in EIGHT_BIT, lambda: Rung("8-bit optimizer", {"optimizer.type": EIGHT_BIT[o.type.lower()]})),
        (p.mixed_precision == "bf16" and not p.full_bf16, lambda: Rung("bf16 gradients", {"precision.full_bf16": True})),
        (p.mixed_precision != "no" and not p.fp8_base, lambda: Rung("fp8 base model", {"precision.fp8_base": True})),
        (spec.guard.oom_retry_rank and n.dim > 4, lambda: Rung("half the rank", {
            "network.dim": n.dim // 2, "network.alpha": n.alpha / 2})),
        (max(d.resolution) > 768, lambda: Rung("a lower resolution", {"dataset.resolution": 768}, automatic=False)),
    ]
    return [make() for applies, make in candidates if applies]


def apply(spec, rung: Rung):
    """The spec with the rung's changes. Raises BadInput when the result is not a valid spec."""
    from ..spec import build_spec

    data = spec.model_dump(mode="json")
    for key, value in rung.changes.items():
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[leaf] = value
    return build_spec(data, source="the out-of-memory ladder")


def next_rung(spec, *, automatic_only: bool = True) -> tuple[Rung, Any] | None:
    """The first rung that changes the spec into a valid one, and that spec; None when none is left."""
    for rung in rungs(spec):
        if automatic_only and not rung.automatic:
            continue
        try:
            return rung, apply(spec, rung)
        except BadInput:
            continue  # e.g. fp8 base with an attention that cannot take it: the next rung
    return None
