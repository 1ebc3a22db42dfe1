"""`kr run --fit`: the fastest memory setting whose estimated peak fits the chosen GPU's free memory.

Fastest first: gradient checkpointing off and no fp8 base (where the spec stays valid), then gradient
checkpointing off alone, then the spec as asked; when none of these fits, the out-of-memory ladder's rungs
in order from the spec as asked (kohya_runner.memory._ladder), so a spec that fits is never made slower.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import BadInput
from ._estimate import GIB, Estimate, estimate
from ._ladder import Rung, apply, next_rung

MARGIN = 0.92  # of the free memory: other processes and the allocator's peaks
FAST = {"precision.gradient_checkpointing": False, "precision.fp8_base": False}


@dataclass
class Fit:
    spec: Any
    estimate: Estimate
    free: int
    changes: list[tuple[str, Any, Any]]  # (key, before, after) from the asked spec to the chosen one

    def text(self) -> str:
        chose = ", ".join(f"{key}={_show(after)}" for key, _, after in self.changes) or "the spec as it is"
        return (f"fit: {chose}: {self.estimate.total / GIB:.1f} GiB estimated of {self.free / GIB:.1f} GiB free "
                f"({self.estimate.basis})")


def _show(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def fit(spec, free: int, measured_runs: list | None = None) -> Fit:
    """The chosen spec. Raises BadInput when even the last rung does not fit."""
    from ..spec import diff

    budget = free * MARGIN
    for candidate in _faster(spec) + [spec]:
        found = estimate(candidate, measured_runs)
        if found.total <= budget:
            break
    else:
        candidate = spec
        while found.total > budget:
            step = next_rung(candidate)
            if step is None:
                raise BadInput(f"this run needs about {found.total / GIB:.1f} GiB even with every memory setting, and "
                               f"the GPU has {free / GIB:.1f} GiB free. Fix: a smaller resolution or rank, another GPU "
                               "(--gpu N), or close what else uses this one (nvidia-smi)")
            candidate = step[1]
            found = estimate(candidate, measured_runs)
    changes = [(c.path, c.before, c.after) for c in diff(spec, candidate)]
    return Fit(candidate, found, free, changes)


def _faster(spec) -> list:
    """Faster variants of the spec, fastest first: without every memory saver of FAST, then without
    gradient checkpointing alone (only valid ones that differ from the spec)."""
    out = []
    for changes in (FAST, {"precision.gradient_checkpointing": False}):
        try:
            variant = apply(spec, Rung("faster", changes))
        except BadInput:
            continue
        if variant != spec and all(variant != known for known in out):
            out.append(variant)
    return out
