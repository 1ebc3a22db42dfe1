"""Out-of-memory retries: a run that failed with CUDA out of memory is tried again as a new run, linked to
the first one of its chain in the ledger (runs.retry_of), with the next rung of the memory ladder. The run
folders stay the truth: each attempt has its own folder, spec.json and run.json (which records the link)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._ladder import Rung, next_rung


@dataclass
class Attempt:
    spec: Any  # the failed run's spec with the rung's changes
    options: Any  # run.RunOptions of the new run, linked to the first
    rung: Rung
    first: str  # the chain's first run
    number: int  # 2 for the first retry


def attempts(home: Path, run_id: str) -> list:
    """The chain `run_id` belongs to: its first run and every retry of it, oldest first."""
    from ..ledger import open_ledger

    ledger = open_ledger(home)
    row = ledger.get(run_id)
    return ledger.attempts(row.retry_of or row.run_id)


def next_attempt(home: Path, row) -> Attempt | None:
    """For a run that failed with CUDA out of memory: the next attempt's spec and options. None when it
    failed otherwise, its spec turns retries off (guard.oom_retries), they are used up, or no rung is left."""
    from ..run import RunOptions, load_spec

    if row.status != "failed" or row.reason != "cuda_oom":
        return None
    spec = load_spec(Path(row.run_dir))
    chain = attempts(home, row.run_id)
    if len(chain) - 1 >= spec.guard.oom_retries:
        return None
    found = next_rung(spec)
    if found is None:
        return None
    rung, changed = found
    first = row.retry_of or row.run_id
    options = RunOptions(preset=row.preset, backend=row.backend, sweep_id=row.sweep_id,
                         gpus=[int(g) for g in row.gpu.split(",") if g] if row.gpu is not None else None,
                         retry_of=first, retry_change=rung.text)
    return Attempt(changed, options, rung, first, len(chain) + 1)


def chain_summary(home: Path, run_id: str) -> list[str]:
    """One line per attempt of the chain: its run, what it changed, how it ended."""
    lines = []
    for row in attempts(home, run_id):
        change = f"with {row.retry_change}" if row.retry_change else "as asked"
        ending = "out of memory" if row.reason == "cuda_oom" else row.status
        lines.append(f"{row.run_id} ({change}): {ending}")
    return lines
