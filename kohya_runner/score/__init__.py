"""Per-checkpoint scores of a run: style fit, trigger selectivity / leakage, style distance, combined.

    result = score_run(home, "marker-0003")        # samples what is missing, probes, writes scores.json
    recorded(home, "marker-0003")                  # the scores the ledger holds (none: [])
    best_checkpoint(home, "marker-0003", found)    # the checkpoint with the highest score

_combine documents the parts and how they combine; _run gathers them (the probe runs in the trainer's
environment: kohya_runner.tiny.score or kohya_runner/sdscripts/score_probe.py).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import BadInput
from ._combine import COPYING_RATIO, FULL_FIT, REASON, combine
from ._run import dataset_images, score_run, style_references


def recorded(home: Path, run_id: str) -> list[dict]:
    from ..ledger import open_ledger

    return open_ledger(home).scores(run_id)


def best_checkpoint(home: Path, run_id: str, found: list):
    """The checkpoint of `found` with the highest recorded score; BadInput naming `kr score` when none is."""
    scores = {s["checkpoint"]: s.get("score") for s in recorded(home, run_id)}
    scored = [c for c in found if scores.get(c.file.name) is not None]
    if not scored:
        raise BadInput(f"run {run_id} has no scores yet. Fix: `kr score {run_id}` (samples and probes each "
                       "checkpoint), or choose by loss (--by loss)")
    return max(scored, key=lambda c: (scores[c.file.name], -(c.step or 0)))


__all__ = ["COPYING_RATIO", "FULL_FIT", "REASON", "best_checkpoint", "combine", "dataset_images", "recorded",
           "score_run", "style_references"]
