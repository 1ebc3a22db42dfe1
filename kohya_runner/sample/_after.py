"""What a finished run samples post hoc (spec.evaluation.after_training), run by its supervisor."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .. import runfolder
from ..errors import KrError
from ._plan import Request


def after_training(home: Path, run_id: str, say: Callable[[str], None] = print) -> dict[str, Any] | None:
    """Sample the final checkpoint when training missed it ('missing'), or the full grid and the scores
    ('grid'). A failure here is reported, never fatal: the run itself succeeded."""
    try:
        return _after_training(home, run_id, say)
    except KrError as error:  # e.g. a damaged ledger: the run's own outcome is already recorded in its folder
        say(f"post-hoc sampling skipped: {error.message}")
        return None


def _after_training(home: Path, run_id: str, say: Callable[[str], None]) -> dict[str, Any] | None:
    from ..ledger import open_ledger
    from ..run import load_spec
    from ._job import prepare, run

    row = open_ledger(home).get(run_id)
    spec = load_spec(Path(row.run_dir))
    mode = spec.evaluation.after_training
    if mode == "off" or row.status != "succeeded" or not spec.sampling.prompts:
        return None
    if mode == "missing":
        if final_sampled(row, spec):
            return None
        kinds = ["trigger"] if spec.sampling.during_training == "sanity" else ["trigger", "no-trigger", "variants"]
        request = Request(checkpoints="final", kinds=kinds, base=False, batch_size=spec.evaluation.batch_size)
        say(f"sampling the final checkpoint post hoc (training's sampling cadence missed epoch {row.epochs_total})")
    else:
        request = Request(checkpoints="final", strengths=list(spec.evaluation.strengths),
                          batch_size=spec.evaluation.batch_size)
        say("sampling the post-hoc grid: base and final checkpoint, every prompt form, strengths "
            + ", ".join(f"{s:g}" for s in spec.evaluation.strengths))
    gpus = [int(g) for g in row.gpu.split(",")][:1] if row.gpu else None
    try:
        summary = run(prepare(home, run_id, request, gpus), say=say)
    except KrError as error:
        say(f"post-hoc sampling failed: {error.message}")
        return None
    say(f"post-hoc samples: {summary['images']}/{summary['planned']} images in {summary['folder']}")
    if mode == "grid":
        from ..score import score_run, top

        try:
            scored = score_run(home, run_id, gpus=gpus, say=say)
        except KrError as error:
            say(f"scoring failed: {error.message}")
            return summary
        best = top(scored["checkpoints"])
        if best:
            say(f"scores: best {best['label']} with {best['score']:.1f} (kr runs best {run_id})")
    return summary


def final_sampled(row, spec) -> bool:
    """True when training made samples of the final checkpoint (its last epoch or step)."""
    from ..report import column_key as sample_column, scan_samples

    found = scan_samples(Path(row.run_dir), spec.output_name)
    keys = {key for key, _ in found}
    wanted = {sample_column("epoch", row.epochs_total) if row.epochs_total else None,
              sample_column("step", row.steps_total) if row.steps_total else None}
    return bool(keys & wanted) or not runfolder.of(row.run_dir).output.is_dir()
