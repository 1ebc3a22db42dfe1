"""Running a sweep's members: the slot scheduler.

Members run as ordinary runs (each under its own detached supervisor, linked by runs.sweep_id): one per
slot, pinned with CUDA_VISIBLE_DEVICES, longest first, the next one as soon as a slot's trainer has
exited. Members sharing a cache folder wait until the first of them has left its caching phase
(kohya_runner.cache), so the VAE encodes every image once. Each member's trainer.log is read by the one
log follower (kohya_runner.monitor.LogFollower). While it runs, the sweep shows one line per active member
and an overall ETA: through `say.update(lines, overall)` when `say` is a sweep view (kohya_runner.cli.live:
a block redrawn in place on a terminal, plain lines otherwise), else as plain lines every 30 s.
"""

from __future__ import annotations

import contextlib
import os
import sys
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .. import runfolder
from ..errors import BadInput, KrError
from ..ledger import duration_text
from ..monitor import LogFollower, eta_seconds, sample_plan
from .plan import Member
from .record import Options, Record

POLL = 0.1


def detect_gpus() -> list[int]:
    """The GPUs a sweep uses by default (kohya_runner.gpus: the one rule)."""
    from .. import gpus

    return gpus.default_for_sweep()


def slots_for(options: Options) -> list[list[int]]:
    """One slot per GPU (CUDA_VISIBLE_DEVICES=<gpu>); without GPUs, max_parallel CPU slots (default 1)."""
    gpus = detect_gpus() if options.gpus is None else options.gpus
    if options.max_parallel is not None and options.max_parallel < 1:
        raise BadInput("--max-parallel must be at least 1")
    if gpus:
        return [[g] for g in gpus][: options.max_parallel or len(gpus)]
    return [[] for _ in range(options.max_parallel or 1)]


def slot_label(gpus: list[int]) -> str:
    return f"gpu {gpus[0]}" if gpus else "cpu"


@dataclass
class Active:
    member: Member
    run_id: str
    slot: int | None  # None once its trainer has exited (the supervisor may still be archiving)
    follower: LogFollower
    started: float
    stopper: Any = None  # a GroupStopper, only for a trainer whose supervisor died


@dataclass
class Gate:
    """A shared cache folder: 'ready' once built (or nothing to build); until then one member builds it."""
    folder: Any  # kohya_runner.cache.CacheFolder
    state: str = "unbuilt"  # unbuilt | building | ready
    builder: str | None = None  # run id of the member building it
    checked: float = 0.0


def queue_order(members: list) -> list:
    """Longest first (LPT list scheduling): a long member cannot end up last, alone on one slot, while the
    others idle. Each member goes to the first slot that frees."""
    return sorted(members, key=lambda m: (-m.cost, m.index))


class Scheduler:
    def __init__(self, home: Path, record: Record, members: list[Member], slots: list[list[int]],
                 say: Callable[[str], None], poll: float = POLL):
        from ..ledger import open_ledger

        self.home, self.record, self.slots, self.say, self.poll = home, record, slots, say, poll
        self.ledger = open_ledger(home)
        self.pending = queue_order(members)
        self.active: list[Active] = []
        self.free = list(range(len(slots)))
        self.gates: dict[str, Gate] = {}
        self.stop_requests = 0
        self._stops_sent = 0
        self._status_at = time.monotonic()
        self.varying = record.data.get("varying")
        self.done: list[tuple[float, float]] = []  # (member cost, seconds) of members that finished here
        self.total = len(members)

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> bool:
        """Until every member has run (True) or a stop request ended the sweep (False)."""
        while self.active or (self.pending and not self.stop_requests):
            self._send_stops()
            for active in list(self.active):
                self._poll_member(active)
            if not self.stop_requests:
                self._fill_slots()
            self._status_line()
            time.sleep(self.poll)
        return not self.stop_requests

    def request_stop(self) -> None:
        self.stop_requests += 1  # from a signal handler: the loop does the work

    def adopt(self, member: Member, row) -> None:
        """A member still running under its own supervisor (resume after kr died): follow it to the end."""
        slot = None
        if self.free:
            slot = self.free.pop(0)
        self.active.append(Active(member, row.run_id, slot, _follower(row.run_dir, member), time.monotonic()))
        self.pending = [m for m in self.pending if m is not member]
        self.total += 1

    # -- slots -------------------------------------------------------------------------------

    def _fill_slots(self) -> None:
        while self.free and self.pending:
            member = self._next_member()
            if member is None:
                return
            self.pending.remove(member)
            slot = self.free.pop(0)
            if not self._start(member, slot):
                self.free.insert(0, slot)

    def _next_member(self) -> Member | None:
        for member in self.pending:
            gate = self._gate(member)
            if gate is None or gate.state in ("ready", "unbuilt"):
                return member  # unbuilt: it builds the cache; the others sharing it wait until it has
        return None

    def _gate(self, member: Member) -> Gate | None:
        from .. import cache

        if member.cache is None or not cache.writes_to_disk(member.spec):
            return None
        gate = self.gates.get(member.cache.key)
        if gate is None:
            folder = member.cache
            gate = self.gates[folder.key] = Gate(folder, "ready" if folder.complete() else "unbuilt")
        if gate.state == "building" and gate.builder is not None:
            builder = next((a for a in self.active if a.run_id == gate.builder), None)
            if builder is not None and builder.follower.progress.phase not in ("starting", "caching"):
                gate.state = "ready"  # its trainer has left the caching phase: the cache is there
            elif builder is None:
                gate.state, gate.builder = ("ready" if gate.folder.complete() else "unbuilt"), None
        if gate.state != "ready" and time.monotonic() - gate.checked > 2.0:
            gate.checked = time.monotonic()
            if gate.folder.complete():
                gate.state = "ready"
        return gate

    def _start(self, member: Member, slot: int) -> bool:
        from .. import run as run_mod
        from ..run import RunOptions
        from ..supervisor import spawn_detached_supervisor

        gpus = self.slots[slot]
        retry = member.retry
        options = RunOptions(preset=self.record.data["preset"], backend=self.record.data["options"].get("backend"),
                             gpus=gpus, sweep_id=self.record.sweep_id,
                             image_dir=member.cache.path if member.cache is not None else None,
                             retry_of=retry.first if retry else None, retry_change=retry.rung.text if retry else None)
        try:
            row = run_mod.prepare(self.home, member.spec, options)
        except KrError as error:
            member.error = error.message
            self.record.save()
            self.say(f"[{member.label}] could not start: {error.message}")
            return False
        member.runs.append(row.run_id)
        member.error = None
        self.record.save()
        spawn_detached_supervisor(self.home, row.run_id)
        gate = self._gate(member)
        if gate is not None and gate.state == "unbuilt":
            gate.state, gate.builder = "building", row.run_id
            self.say(f"[{member.label}] builds the shared cache first ({gate.folder.path.name}); "
                     "members sharing it start once it has")
        self.active.append(Active(member, row.run_id, slot, _follower(row.run_dir, member), time.monotonic()))
        self.say(f"[{member.label}] started {row.run_id} on {slot_label(gpus)}: {member.describe(self.varying)}")
        return True

    def _poll_member(self, active: Active) -> None:
        from ..process import group_alive, same_process
        from ..run import settle_from_files

        active.follower.poll()
        row = self.ledger.get(active.run_id)
        supervised = same_process(row.supervisor_pid, row.supervisor_start)
        trainer = bool(row.pid) and (same_process(row.pid, row.pid_start) or group_alive(row.pgid))
        if active.slot is not None and row.pid and not trainer:
            self.free.append(active.slot)  # the trainer is gone: the slot (GPU) is free while the run is archived
            self.free.sort()
            active.slot = None
        if supervised or trainer:
            if not supervised and self.stop_requests and row.pgid:
                from ..process import GroupStopper

                active.stopper = active.stopper or GroupStopper(row.pgid, (5.0, 5.0))
                active.stopper.step()
            return
        if row.active:  # the supervisor died without settling the run
            row = settle_from_files(self.home, row)
        if active.slot is not None:
            self.free.append(active.slot)
            self.free.sort()
        self.active.remove(active)
        if row.status == "succeeded":
            self.done.append((active.member.cost, time.monotonic() - active.started))
        self.say(f"[{active.member.label}] {finished_text(row)}")
        self._retry_after_oom(active.member, row)

    def _retry_after_oom(self, member: Member, row) -> None:
        """A member that ran out of GPU memory goes back to the front of the queue with the next memory
        setting (kohya_runner.memory), as a new run linked to its first."""
        if self.stop_requests:
            return
        from ..memory import next_attempt

        attempt = next_attempt(self.home, row)
        if attempt is None:
            return
        member.spec, member.retry = attempt.spec, attempt
        self.pending.insert(0, member)
        self.say(f"[{member.label}] ran out of GPU memory: attempt {attempt.number} with {attempt.rung.name} "
                 f"({attempt.rung.text})")

    def _send_stops(self) -> None:
        if self.stop_requests <= self._stops_sent:
            return
        self._stops_sent = self.stop_requests
        from ..process import same_process

        hard = self.stop_requests > 1
        self.say(("stopping harder (SIGTERM/SIGKILL)…" if hard else
                  f"stopping the sweep: {len(self.active)} running member(s) stop, {len(self.pending)} queued "
                  "member(s) do not start (Ctrl-C again to force)…"))
        for active in self.active:
            row = self.ledger.get(active.run_id)
            if not row.active:
                continue
            self.ledger.update(active.run_id, stop_requested=1)  # a supervisor still starting sees this in time
            if row.pid and same_process(row.supervisor_pid, row.supervisor_start):  # launched: its handlers are set
                try:
                    os.kill(row.supervisor_pid, signal.SIGTERM)  # its handler: request_stop (again: harder)
                except ProcessLookupError:
                    pass

    def _status_line(self) -> None:
        """One line per active member and the overall line: to the sweep view on every loop (it redraws or
        throttles), else through `say` every 30 s."""
        update = getattr(self.say, "update", None)
        now = time.monotonic()
        if update is None and (now - self._status_at < 30.0 or not self.active):
            return
        self._status_at = now
        lines, overall = self.status_block(now)
        if update is not None:
            update(lines, overall)
            return
        for line in lines:
            self.say(f"  {line}")
        self.say(f"  {overall}")

    def status_block(self, now: float | None = None) -> tuple[list[str], str]:
        from ..cli.live import eta_text, sample_text

        now = time.monotonic() if now is None else now
        lines = []
        for active in self.active:
            p = active.follower.progress
            parts = [f"[{active.member.label}] {active.run_id}", p.phase]
            parts += [x for x in (sample_text(p),) if x]
            if p.steps_total:
                parts.append(f"step {p.steps_done}/{p.steps_total}")
            if p.avr_loss is not None:
                parts.append(f"loss {p.avr_loss:.4g}")
            eta = eta_seconds(p, now)
            if eta:
                parts.append(f"eta {eta_text(*eta)}")
            lines.append("  ".join(parts))
        finished = self.total - len(self.active) - len(self.pending)
        overall = (f"sweep: {finished}/{self.total} done, {len(self.active)} running, {len(self.pending)} queued")
        left = self.overall_eta(now)
        return lines, overall + (f", eta {eta_text(left)}" if left is not None else ", eta ?")

    def overall_eta(self, now: float) -> float | None:
        """Seconds until the last member ends: the active members' own ETAs, then the queued ones placed
        longest first on the slot that frees first, each estimated from its cost × the seconds per cost unit
        of the members timed so far (finished here, or active with an ETA)."""
        rates = [seconds / cost for cost, seconds in self.done if cost > 0]
        slot_ends, unknown = [], False
        for active in self.active:
            eta = eta_seconds(active.follower.progress, now)
            if eta is None:
                unknown = True
                continue
            if active.member.cost > 0 and not eta[1]:
                rates.append((now - active.started + eta[0]) / active.member.cost)
            if active.slot is not None:
                slot_ends.append(eta[0])
        if unknown and not rates:
            return None
        rate = sum(rates) / len(rates) if rates else None
        if self.pending and rate is None:
            return None
        slot_ends += [0.0] * max(0, len(self.slots) - len(slot_ends))
        for member in self.pending:  # already longest first
            slot_ends.sort()
            slot_ends[0] += member.cost * rate
        return max(slot_ends) if slot_ends else 0.0


def _follower(run_dir, member: Member) -> LogFollower:
    follower = LogFollower(runfolder.of(run_dir).log)
    plan = sample_plan(Path(run_dir), member.spec) if member.spec is not None else None
    if plan is not None:
        follower.progress.plan_samples(*plan)
    return follower


def finished_text(row) -> str:
    parts = [f"{row.run_id} {row.status}"]
    if row.loss is not None:
        parts.append(f"loss {row.loss:.4g}" + (f" (min {row.min_loss:.4g})" if row.min_loss is not None else ""))
    if row.duration is not None:
        parts.append(duration_text(row.duration))
    if row.status not in ("succeeded",) and row.hint:
        parts.append(f"— {row.hint[:200]}")
    return "  ".join(parts)


def execute(home: Path, record: Record, members: list[Member], options: Options, say: Callable[[str], None],
            adopt: list[tuple[Member, Any]] | None = None) -> bool:
    """Run `members` (and follow adopted ones) to the end, or until Ctrl-C / SIGTERM; True if not stopped."""
    from ..ledger import open_ledger
    from ..process import start_time

    record.data["owner"] = {"pid": os.getpid(), "start": start_time(os.getpid())}
    record.save()
    ledger = open_ledger(home)
    ledger.update_sweep(record.sweep_id, status="running", finished_at=None)
    if options.ray:  # every member a task on the Ray cluster (kohya_runner.sweep.remote)
        from .remote import RayScheduler, connect

        ray = connect(options.ray)
        scheduler = RayScheduler(home, record, members, options, say, ray)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        say(f"{record.sweep_id}: {len(members)} member(s) on the Ray cluster at {options.ray} ({len(nodes)} node(s)); "
            "Ctrl-C stops them all")
    else:
        slots = slots_for(options)
        scheduler = Scheduler(home, record, members, slots, say)
        for member, row in adopt or []:
            scheduler.adopt(member, row)
        say(f"{record.sweep_id}: {len(members)} member(s) to run on {len(slots)} slot(s) "
            f"({', '.join(slot_label(s) for s in slots)}); Ctrl-C stops them all")
    previous = {sig: signal.signal(sig, lambda *_: scheduler.request_stop()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        if options.ray:  # Ray prints its own news (a node died, …) to stdout: keep stdout for kr's output
            with contextlib.redirect_stdout(sys.stderr):
                completed = scheduler.run()
                ray.shutdown()
        else:
            completed = scheduler.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if hasattr(say, "close"):
            say.close()  # a sweep view ends its block: what follows starts on its own line
    ledger.update_sweep(record.sweep_id, status="finished" if completed else "stopped", finished_at=time.time())
    return completed
