"""Watching a run while it trains: the Supervisor, the detached supervisor process, `kr runs tail`.

The Supervisor follows the run's trainer.log (monitor.LogFollower), keeps the ledger current, kills a
NaN or runaway run at once, stops on request (SIGINT → SIGTERM → SIGKILL to the whole group until it is
empty) and hands the end to run.finalize(). It runs inside `kr run`, or detached as
`python -m kohya_runner.supervisor supervise RUN_ID --home H` (spawn_detached_supervisor).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, TypeVar

from . import run as run_mod, runfolder
from .archive import CheckpointVerifier, plots_in_background
from .errors import Failed, KrError
from .ledger import Ledger, RunRow, open_ledger
from .monitor import LogFollower, LossGuard, Progress, sample_plan
from .process import STOP_TIMEOUTS, GroupStopper, group_alive, same_process, start_time
from .usage import GpuSampler, Resources, tree_memory

LEDGER_EVERY = 2.0  # seconds between progress writes to the ledger
T = TypeVar("T")


class Supervisor:
    def __init__(self, home: Path, run_id: str, process: subprocess.Popen | None = None,
                 on_update: Callable[[Progress, Resources], None] | None = None,
                 timeouts: tuple[float, float] = STOP_TIMEOUTS,
                 on_event: Callable[[str, str | None, Progress], None] | None = None):
        self.home = home
        self.ledger = open_ledger(home)
        self.row = self.ledger.get(run_id)
        self.run_dir = Path(self.row.run_dir)
        self.spec = run_mod.load_spec(self.run_dir)
        self.process = process
        self.on_update = on_update
        self.timeouts = timeouts
        self.follower = LogFollower(runfolder.of(self.run_dir).log, on_segment=on_event)
        self.progress = self.follower.progress
        _plan_samples(self.progress, self.run_dir, self.spec)
        self.resources = Resources()
        self.stopper: GroupStopper | None = None
        self.stop_requested = False
        self.diverged = False
        self._gpu: GpuSampler | None = None
        self._ledger_warned = False
        # The shared cache folder's lock taken by launch(); dropped once the caching phase is over.
        self.cache_lock = getattr(process, "kr_cache_lock", None)
        self.loss_guard = LossGuard(self.spec.guard.divergence_factor, self.spec.guard.warmup_steps)
        self.archive_inputs = run_mod.ArchiveInputs(self.run_dir, self.row, self.spec)
        # Hashes each checkpoint as it appears (and draws loss.png at `model saved.`), not after the trainer exits
        self.verifier = CheckpointVerifier(self.run_dir, title=run_id)

    def request_stop(self) -> None:
        """Ctrl-C or `kr runs stop`: a second request skips straight to the harder signals."""
        if self.stop_requested and self.stopper is not None:
            self.stopper.deadline = 0.0
            return
        self.stop_requested = True
        self._ledger(lambda ledger: ledger.update(self.row.run_id, stop_requested=1))
        self.stopper = GroupStopper(self.row.pgid or self.process.pid, self.timeouts)

    def _kill_diverged(self) -> None:
        if not self.diverged:
            self.diverged = True
            # Nothing worth saving in a NaN or runaway run: end it at once (SIGTERM, SIGKILL 3 s later).
            self.stopper = GroupStopper(self.row.pgid or self.process.pid, (0.0, 3.0), first=signal.SIGTERM)

    def run(self) -> RunRow:
        """Follow the run to its end; returns its finished ledger row. Raises nothing of its own."""
        returncode: int | None = None
        last_ledger = last_check = 0.0
        while True:
            self._on_events(self.follower.poll())
            self._release_cache_when_cached()
            returncode = self._poll()
            now = time.monotonic()
            if now - last_check >= 1.0:
                last_check = now
                self._check_stop_request()
                self._sample_resources()
            if self.stopper is not None:
                self.stopper.step()
            if self.on_update:
                self.on_update(self.progress, self.resources)
            if now - last_ledger >= LEDGER_EVERY:
                last_ledger = now
                self._record_progress()
            if returncode is not None or (self.process is None and not same_process(self.row.pid, self.row.pid_start)):
                break
            time.sleep(0.1)
        self._on_events(self.follower.finish())
        self._empty_group()
        from . import cache

        cache.after_run(self.cache_lock, self.progress.phase)  # ended mid-caching: delete what it half wrote
        # `kr runs stop` may have signalled the group before this loop saw its request in the ledger.
        stopped = self.stop_requested or bool(self._ledger(lambda ledger: ledger.get(self.row.run_id).stop_requested))
        with plots_in_background():  # loss.png does not hold up the ledger and the summary
            row = run_mod.finalize(self.home, self.row.run_id, self.progress, returncode, stop_requested=stopped,
                                   diverged=self.diverged, spec=self.spec, resources=self.resources,
                                   inputs=self.archive_inputs.result(), row=self.row)
        if row.status == "succeeded" and not self.stop_requested:
            self._after_training()
        return row

    def _after_training(self) -> None:
        """Post-hoc samples (spec.evaluation.after_training); a stop request ends them, keeping what was made."""
        from .sample import after_training

        try:
            # stderr: `kr run --json` keeps stdout for its JSON
            after_training(self.home, self.row.run_id, say=lambda line: print(f"kr: {line}", file=sys.stderr, flush=True))
        except KeyboardInterrupt:
            print("kr: post-hoc sampling stopped; the images made so far are kept", file=sys.stderr, flush=True)

    def _ledger(self, use: Callable[[Ledger], T]) -> T | None:
        """`use(ledger)`, or None when the ledger cannot be used now (deleted and not yet rebuilt, damaged,
        a full disk): the run goes on, its folder has the truth, and finalize reports the ledger's state.
        A deleted or replaced ledger file is reopened (and rebuilt) by the Ledger itself."""
        try:
            return use(self.ledger)
        except (KrError, sqlite3.Error, OSError) as error:
            if not self._ledger_warned:
                self._ledger_warned = True
                print(f"kr: {self.row.run_id}: the ledger cannot be used now ({error}); the run goes on",
                      file=sys.stderr, flush=True)
            return None

    def _on_events(self, events: list[tuple[str, str | None]]) -> None:
        for _, event in events:
            self.verifier.on_event(event, self.progress)
            if event == "nan" or self.progress.nan:
                self._kill_diverged()
            elif event == "step" and not self.diverged:
                reason = self.loss_guard.check(self.progress)
                if reason:
                    self.progress.divergence = reason
                    self._kill_diverged()

    def _release_cache_when_cached(self) -> None:
        if self.cache_lock is not None and self.cache_lock.held and self.progress.phase not in ("starting", "caching"):
            self.cache_lock.release()

    def _poll(self) -> int | None:
        return self.process.poll() if self.process is not None else None

    def _check_stop_request(self) -> None:
        if not self.stop_requested and self._ledger(lambda ledger: ledger.get(self.row.run_id).stop_requested):
            self.request_stop()

    def _sample_resources(self) -> None:
        if self._gpu is None:
            self._gpu = GpuSampler()
        pid = self.process.pid if self.process is not None else self.row.pid
        self.resources.rss = tree_memory(pid) if pid else 0
        self.resources.peak_rss = max(self.resources.peak_rss, self.resources.rss)
        self.resources.gpu_used = self._gpu.used_bytes()
        if self.row.gpu:  # a GPU run: NVML's memory in use on its first GPU
            used = self._gpu.used_bytes(int(self.row.gpu.split(",")[0]))
            if used is not None:
                self.resources.peak_vram = max(self.resources.peak_vram or 0, used)

    def _record_progress(self) -> None:
        p = self.progress
        self._ledger(lambda ledger: ledger.update(
            self.row.run_id, steps_done=p.steps_done, steps_total=p.steps_total, epoch=p.epoch,
            epochs_total=p.epochs_total, loss=run_mod.finite(p.avr_loss), min_loss=p.min_loss,
            it_per_s=p.it_per_s, peak_rss=self.resources.peak_rss or None, peak_vram=self.resources.peak_vram))

    def _empty_group(self) -> None:
        """The trainer may be gone while data loader workers linger; nothing of the run may stay behind."""
        pgid = self.row.pgid or (self.process.pid if self.process else None)
        if pgid and group_alive(pgid):
            GroupStopper(pgid, (2.0, 3.0), first=signal.SIGTERM).run()


# ----------------------------------------------------------------------------------------------
# Following a run from another terminal (`kr runs tail`).


def _plan_samples(progress: Progress, run_dir: Path, spec) -> None:
    plan = sample_plan(run_dir, spec)
    if plan is not None:
        progress.plan_samples(*plan)


def follow(home: Path, run_id: str, on_update: Callable[[Progress, Resources], None] | None = None,
           on_text: Callable[[str], None] | None = None, poll: float = 0.25,
           on_event: Callable[[str, str | None, Progress], None] | None = None) -> RunRow:
    """Replay the run's log, then follow it until the ledger says it ended; `on_event` sees every
    segment in order, `on_update` the state after each read. Raises BadInput for an unknown run."""
    ledger = open_ledger(home)
    row = ledger.get(run_id)
    follower = LogFollower(runfolder.of(row.run_dir).log, on_segment=on_event)
    try:
        _plan_samples(follower.progress, Path(row.run_dir), run_mod.load_spec(Path(row.run_dir)))
    except (OSError, ValueError):
        pass  # no readable spec: no sampling plan, the rest works
    resources = Resources()
    last_check = 0.0
    while True:
        for segment, _ in follower.poll():
            if on_text:
                on_text(segment)
        now = time.monotonic()
        if now - last_check >= 1.0:
            last_check = now
            row = ledger.get(run_id)
            if not row.active:
                break
            trainer_alive = bool(row.pid) and (same_process(row.pid, row.pid_start) or group_alive(row.pgid))
            if not trainer_alive and not same_process(row.supervisor_pid, row.supervisor_start):
                row = run_mod.settle_from_files(home, row)
                break
            resources.rss = tree_memory(row.pid) if trainer_alive else 0
            resources.peak_rss = max(resources.peak_rss, resources.rss)
        if on_update:
            on_update(follower.progress, resources)
        time.sleep(poll)
    # The run ended between two reads: what it wrote since the last one (its last epoch, `model saved.`).
    for segment, _ in follower.finish():
        if on_text:
            on_text(segment)
    if on_update:
        on_update(follower.progress, resources)
    return ledger.get(run_id)


# ----------------------------------------------------------------------------------------------
# Detached supervision: `python -m kohya_runner.supervisor supervise RUN_ID --home H`.


def spawn_detached_supervisor(home: Path, run_id: str) -> int:
    """Start a supervisor process that outlives this one; returns its pid. Raises BadInput for an
    unknown run."""
    folder = runfolder.of(open_ledger(home).get(run_id).run_dir)
    with open(folder.supervisor_log, "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "kohya_runner.supervisor", "supervise", run_id,
                                    "--home", str(home)],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                                   cwd=str(folder.root))
    # The supervisor records itself when it launches the trainer; until then the row says queued.
    open_ledger(home).update(run_id, supervisor_pid=process.pid, supervisor_start=start_time(process.pid))
    return process.pid


def supervise_main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m kohya_runner.supervisor")
    parser.add_argument("command", choices=["supervise"])
    parser.add_argument("run_id")
    parser.add_argument("--home", required=True)
    args = parser.parse_args(argv)
    home = Path(args.home)
    state: dict = {"stop": False, "supervisor": None}

    def on_signal(*_) -> None:
        if state["supervisor"] is not None:
            state["supervisor"].request_stop()
        else:
            state["stop"] = True  # still waiting for the cache lock: do not start at all

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    run_id = args.run_id
    while True:
        try:
            process = run_mod.launch(home, run_id, cancelled=lambda: state["stop"])
        except Failed as error:
            print(error.message, file=sys.stderr)
            return 1
        supervisor = state["supervisor"] = Supervisor(home, run_id, process)
        if state["stop"]:
            supervisor.request_stop()
        row = supervisor.run()
        # a sweep member's retry is the sweep's to start (it owns the GPU slots)
        retry = None if supervisor.stop_requested or row.sweep_id else run_mod.prepare_retry(home, row, say=print)
        if retry is None:
            return 0 if row.status == "succeeded" else 1
        state["supervisor"], run_id = None, retry.run_id  # the next attempt, in this same process
        open_ledger(home).update(run_id, supervisor_pid=os.getpid(), supervisor_start=start_time(os.getpid()))


if __name__ == "__main__":
    sys.exit(supervise_main(sys.argv[1:]))
