"""Process identity and process-group control for trainers (and the kr processes that own them).

A trainer runs in its own session, so its process group holds the launcher, the trainer and its data
loader workers. kr signals the whole group (contract §7.1, §11): signalling only a launcher leaves the
trainer running.
"""

from __future__ import annotations

import os
import signal
import time

STOP_TIMEOUTS = (20.0, 10.0)  # seconds after SIGINT before SIGTERM, after SIGTERM before SIGKILL


def start_time(pid: int) -> float | None:
    """The process's creation time (with its pid, its identity), or None if it is gone."""
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def same_process(pid: int | None, started: float | None) -> bool:
    """True if `pid` is alive and is the process we recorded (pids get reused)."""
    import psutil

    if not pid:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(process.create_time() - started) < 1.0
    except psutil.Error:
        return False


def process_group_members(pgid: int) -> list:
    """The psutil processes whose process group is `pgid`."""
    import psutil

    members = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) == pgid:
                members.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def group_alive(pgid: int | None) -> bool:
    """Any live (non-zombie) process left in the group?"""
    if not pgid:
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    import psutil

    for member in process_group_members(pgid):
        try:
            if member.status() != psutil.STATUS_ZOMBIE:
                return True
        except psutil.Error:
            continue
    return False


def signal_group(pgid: int, signum: int) -> None:
    """Send `signum` to the group; a group that is gone (or not ours) is left alone."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


class GroupStopper:
    """SIGINT, then SIGTERM, then SIGKILL to the whole group, each after a timeout, until it is empty."""

    def __init__(self, pgid: int, timeouts: tuple[float, float] = STOP_TIMEOUTS, first: int = signal.SIGINT):
        self.pgid = pgid
        ladder = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL]
        self.ladder = ladder[ladder.index(first):]
        self.waits = list(timeouts)[-(len(self.ladder) - 1):] if len(self.ladder) > 1 else []
        self.stage = -1
        self.deadline = 0.0

    def step(self) -> bool:
        """Advance if due; True once the group is empty."""
        if not group_alive(self.pgid):
            return True
        now = time.monotonic()
        if self.stage < 0 or (now >= self.deadline and self.stage < len(self.ladder) - 1):
            self.stage += 1
            signal_group(self.pgid, self.ladder[self.stage])
            wait = self.waits[self.stage] if self.stage < len(self.waits) else 5.0
            self.deadline = now + wait
        return False

    def run(self, poll: float = 0.1) -> None:
        while not self.step():
            time.sleep(poll)
