"""Per-checkpoint scores of a run: style fit, trigger selectivity / leakage, style distance, combined.

    result = score_run(home, "marker-0003")        # samples what is missing, probes, writes scores.json
    recorded(home, "marker-0003")                  # the scores the ledger holds (none: [])
    best_checkpoint(home, "marker-0003", found)    # the checkpoint with the highest score
    top(entries)                                   # the highest-scoring entry (the one ranking rule)

_combine documents the parts and how they combine; _run gathers them (the probe runs in the trainer's
environment: kohya_runner.tiny.score or kohya_runner/sdscripts/score_probe.py).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import BadInput
from ._combine import COPYING_RATIO, FULL_FIT, REASON, combine
from ._run import dataset_images, score_run, style_references, timing


def recorded(home: Path, run_id: str) -> list[dict]:
    from ..ledger import open_ledger

    return open_ledger(home).scores(run_id)


def top(entries: list[dict]) -> dict | None:
    """The highest-scoring of a run's score entries, or None when none has a score. A tie goes to the
    later checkpoint (it trained longer for the same score)."""
    scored = [e for e in entries if e.get("score") is not None]
    return max(scored, key=lambda e: (e["score"], e.get("step") or 0, e.get("epoch") or 0)) if scored else None


def best_of(found: list, scores: dict[str, dict]):
    """The checkpoint of `found` whose entry in `scores` (file name → entry) is top(), or None."""
    best = top([scores[c.file.name] for c in found if c.file.name in scores])
    return None if best is None else next(c for c in found if c.file.name == best["checkpoint"])


def best_checkpoint(home: Path, run_id: str, found: list):
    """The checkpoint of `found` with the highest recorded score; BadInput naming `kr score` when none is."""
    chosen = best_of(found, {s["checkpoint"]: s for s in recorded(home, run_id)})
    if chosen is None:
        raise BadInput(f"run {run_id} has no scores yet. Fix: `kr score {run_id}` (samples and probes each "
                       "checkpoint), or choose by loss (--by loss)")
    return chosen


__all__ = ["COPYING_RATIO", "FULL_FIT", "REASON", "best_checkpoint", "best_of", "combine", "dataset_images",
           "recorded", "score_run", "style_references", "timing", "top"]
