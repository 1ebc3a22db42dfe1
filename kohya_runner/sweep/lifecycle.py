"""A sweep's lifecycle: start (check, cache folders, record, run), resume the unfinished members,
stop it from another terminal."""

from __future__ import annotations

import os
import signal
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

from ..errors import BadInput
from .plan import Member, Plan, refuse_invalid
from .record import Options, Record
from .scheduler import execute, slots_for

DONE = ("succeeded", "diverged")  # a member with one of these is not run again by `kr sweep resume`


def check_members(home: Path, members: list[Member], options: Options) -> None:
    """Every check that can refuse the members, writing nothing: the slots (--max-parallel, --gpus), the
    rendered files and the trainer's command once per backend and family, the dataset once per distinct
    dataset setting (unless skip_check), the base once per distinct base and family. Raises BadInput."""
    from .. import dataset as ds, run as run_mod

    slots = slots_for(options)
    run_options = run_mod.RunOptions(backend=options.backend, gpus=slots[0])
    checks: dict[tuple, tuple[Member, Callable[[], None]]] = {}  # one check per distinct key, in order
    for member in members:
        spec = member.spec
        family = spec.model.family
        checks.setdefault(("trainer", run_mod.backend_for(spec, run_options), family),
                          (member, partial(run_mod.validate, home, spec, run_options)))
        if spec.dataset.dir and not options.skip_check:
            checks.setdefault(("dataset", ds.settings_from_spec(spec)),
                              (member, partial(run_mod.refuse_dataset_errors, home, spec)))
        checks.setdefault(("base", spec.model.base, family), (member, partial(run_mod.check_base, home, spec)))
    kinds = Counter(key[0] for key in checks)
    for key, (member, check) in checks.items():
        try:
            check()
        except BadInput as error:
            if kinds[key[0]] == 1:
                raise
            # members differ in what this check looks at: say which one failed
            raise BadInput(f"{member.label} ({member.describe()}): {error.message}") from None


def prepare_caches(home: Path, members: list[Member], say: Callable[[str], None]) -> None:
    """Each member's keyed cache folder (created if new), as kr run's pre_launch does."""
    from .. import cache, workspace

    for member in members:
        if member.spec.dataset.dir:
            member.cache = cache.prepare(home, member.spec)
    keys = {m.cache.key for m in members if m.cache is not None}
    if keys:
        say(f"{len(members)} member(s) share {len(keys)} cache folder(s) under {workspace.caches_dir(home)}")


def fit_members(home: Path, members: list[Member], options: Options, say: Callable[[str], None]) -> None:
    """Each member's spec fitted to its backend as `kr run` fits a run's (the tiny model's scale, a CPU
    optimizer; kohya_runner.trainers.notes.fit), each note said once. Raises BadInput (a fitted spec that
    breaks a rule)."""
    from .. import run as run_mod
    from ..trainers.notes import fit

    run_options = run_mod.RunOptions(backend=options.backend, gpus=slots_for(options)[0])
    said: set[str] = set()
    for member in members:
        member.spec, notes = fit(home, member.spec, run_mod.backend_for(member.spec, run_options))
        for line in notes:
            if line not in said:
                said.add(line)
                say(line if line.startswith("warning:") else f"note: {line}")


def prepare_members(home: Path, members: list[Member], options: Options, say: Callable[[str], None]) -> None:
    """The specs fitted to their backend, check_members(), then the cache folders: nothing is written (but
    the shared tiny base, built on first use) unless every check passed."""
    fit_members(home, members, options, say)
    check_members(home, members, options)
    prepare_caches(home, members, say)


def start(home: Path, result: Plan, options: Options, say: Callable[[str], None]) -> Record:
    """Check every member, then (and only then) write: cache folders, the sweep record, the runs.
    Raises BadInput before anything is written."""
    from .. import run as run_mod

    if result.invalid and not options.skip_invalid:
        refuse_invalid(result)
    runnable = result.valid
    if not runnable:
        raise BadInput("no member of the sweep is valid; nothing to run")
    fit_members(home, runnable, options, say)
    if options.ray:  # the trainer, base and caches are each worker's own: checked there before each run
        from .remote import connect

        connect(options.ray)  # an unreachable cluster is refused before anything is written
    else:
        check_members(home, runnable, options)
    run_mod.reconcile(home)
    if not options.ray:
        prepare_caches(home, runnable, say)
    record = Record.create(home, result, options)
    execute(home, record, runnable, options, say)
    return record


def resume(home: Path, ref: str, options: Options, say: Callable[[str], None]) -> Record:
    """Run the members of a sweep that have not finished (stopped, crashed, never started; failed with
    retry_failed); members still running under their own supervisors are followed."""
    from .. import run as run_mod
    from ..ledger import open_ledger

    run_mod.reconcile(home)
    record = Record.load(home, ref)
    if record.owner_alive():
        raise BadInput(f"{record.sweep_id} is still running (kr pid {record.data['owner']['pid']}). "
                       "Fix: wait for it, or stop it with Ctrl-C in its terminal")
    stored = record.data.get("options", {})
    merged = Options(gpus=options.gpus if options.gpus is not None else stored.get("gpus"),
                     max_parallel=options.max_parallel or stored.get("max_parallel"),
                     backend=stored.get("backend"), skip_check=options.skip_check or stored.get("skip_check", False),
                     retry_failed=options.retry_failed)
    ledger = open_ledger(home)
    todo, adopt = [], []
    for member in record.members:
        if not member.valid:
            continue
        row = ledger.get(member.runs[-1]) if member.runs else None
        if row is not None and row.active:
            adopt.append((member, row))
        elif row is None or row.status not in DONE + (() if merged.retry_failed else ("failed",)):
            todo.append(member)
    if not todo and not adopt:
        say(f"{record.sweep_id}: every member has finished; nothing to resume")
        return record
    prepare_members(home, todo, merged, say)
    execute(home, record, todo, merged, say, adopt)
    return record


@dataclass
class StopResult:
    sweep_id: str
    owner_pid: int | None  # the kr process running the sweep, asked to stop its members; None if none ran it
    stopped: list = field(default_factory=list)  # RunRows of members stopped here (when no kr ran the sweep)


def stop(home: Path, ref: str) -> StopResult:
    """Stop a sweep from another terminal, like Ctrl-C in its own: the kr process running it gets SIGTERM
    (its members stop, none starts); without one, every member still queued or running is stopped here.
    Raises BadInput for an unknown sweep, Failed for a damaged sweep folder."""
    from .. import run as run_mod
    from ..ledger import open_ledger

    record = Record.load(home, ref)
    if record.owner_alive():
        pid = record.data["owner"]["pid"]
        try:
            os.kill(pid, signal.SIGTERM)  # its handler stops the members (kohya_runner.sweep.scheduler)
            return StopResult(record.sweep_id, pid)
        except ProcessLookupError:
            pass  # it ended just now: stop what it left running
    rows = open_ledger(home).runs(sweep_id=record.sweep_id, status=["queued", "running"])
    return StopResult(record.sweep_id, None, [run_mod.stop(home, row.run_id) for row in rows])
