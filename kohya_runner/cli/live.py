"""The live view of a run (and of a sweep): a block redrawn in place on a terminal, plain lines otherwise.

A view gets every notable event of the trainer's log in order (`event`: an epoch line, a saved
checkpoint, a sampling round; from monitor.LogFollower's on_segment) and the state now and then
(`update`). Event lines are printed exactly once; the status is redrawn (terminal) or repeated every
few seconds (plain). `close()` ends the block with a newline, so what follows starts on its own line.
"""

from __future__ import annotations

import sys
import time

import click

MEMORY = "mem (PSS)"  # usage.MEMORY_LABEL, short


def _gb(value: int | None) -> str:
    return f"{value / 2**30:.2f} GB" if value else "–"


def _loss(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def eta_text(seconds: float | None, lower_bound: bool = False) -> str | None:
    if seconds is None:
        return None
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    text = f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"
    return f"≥ {text} + sampling" if lower_bound else text  # no sample image timed yet


def progress_eta(progress) -> str | None:
    from ..monitor import eta_seconds

    value = eta_seconds(progress)
    return eta_text(*value) if value else None


def sample_text(progress) -> str | None:
    """"sample i/N (round r/R)" while sampling."""
    p = progress
    if p.phase != "sampling":
        return None
    per_round = p.sample_prompts or "?"
    rounds = f" (round {p.sample_rounds}/{p.sample_rounds_total})" if p.sample_rounds_total else ""
    return f"sample {max(p.sample_index, 1)}/{per_round}{rounds}"


def status_line(run_id: str, progress, resources) -> str:
    p = progress
    parts = [f"[{run_id}]", p.phase]
    sampling = sample_text(p)
    if sampling:
        parts.append(sampling)
    if p.steps_total:
        parts.append(f"step {p.steps_done}/{p.steps_total}")
    if p.epoch and p.epochs_total:
        parts.append(f"(epoch {p.epoch}/{p.epochs_total})")
    parts.append(f"avr_loss {_loss(p.avr_loss)}")
    if p.it_per_s:
        parts.append(f"{p.it_per_s:.2f} it/s")
    eta = progress_eta(p)
    if eta:
        parts.append(f"eta {eta}")
    if resources is not None:
        parts.append(f"{MEMORY} {_gb(resources.rss)}")
        if resources.gpu_used is not None:
            parts.append(f"gpu {_gb(resources.gpu_used)}")
    return "  ".join(parts)


def event_line(segment: str, event: str | None, progress) -> str | None:
    """The line a view prints once for an event of the log, or None."""
    p = progress
    if event == "epoch":
        return f"  epoch {p.epoch}/{p.epochs_total}"
    if event == "checkpoint" and p.checkpoints:
        return f"  saved {p.checkpoints[-1]}"
    if event == "sampling":
        of = f"/{p.sample_rounds_total}" if p.sample_rounds_total else ""
        images = f", {p.sample_prompts} image(s)" if p.sample_prompts else ""
        return f"  sampling round {p.sample_rounds}{of}{images}"
    return None


class PlainView:
    """Not a terminal (CI, a pipe): each event on its own line, once; the status every `every` seconds."""

    def __init__(self, run_id: str, every: float = 10.0):
        self.run_id, self.every = run_id, every
        self._last = time.monotonic()
        self._phase = None

    def event(self, segment: str, event: str | None, progress) -> None:
        line = event_line(segment, event, progress)
        if line:
            click.echo(line)

    def update(self, progress, resources) -> None:
        now = time.monotonic()
        if progress.phase != self._phase or now - self._last >= self.every:
            self._last, self._phase = now, progress.phase
            click.echo(status_line(self.run_id, progress, resources))

    def close(self) -> None:
        sys.stdout.flush()


class RichView:
    """A terminal: event lines printed above a progress block that is redrawn in place."""

    def __init__(self, run_id: str):
        from rich.console import Console
        from rich.live import Live

        self.run_id = run_id
        self.console = Console(stderr=False)
        self.live = Live(console=self.console, refresh_per_second=4, transient=False)
        self.live.start()
        self._closed = False

    def event(self, segment: str, event: str | None, progress) -> None:
        line = event_line(segment, event, progress)
        if line:
            self.console.print(line, markup=False, highlight=False)

    def update(self, progress, resources) -> None:
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        grid = Table.grid(padding=(0, 2))
        total = progress.steps_total or 0
        grid.add_row(Text(self.run_id, style="bold"), ProgressBar(total=max(total, 1), completed=progress.steps_done,
                                                                    width=40),
                     f"{progress.steps_done}/{total or '?'}", progress.phase)
        grid.add_row("", Text(status_line(self.run_id, progress, resources).split("  ", 2)[-1]), "", "")
        self.live.update(grid)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.live.stop()  # the last redraw, then a newline: a summary printed next is on its own line


def make_view(run_id: str):
    return RichView(run_id) if sys.stdout.isatty() else PlainView(run_id)


# ----------------------------------------------------------------------------------------------
# A sweep: one line per active member and an overall line.


class SweepPlainView:
    """Not a terminal: messages as they come; every `every` seconds a block of one line per active member
    and the overall line (each member line starts with its label, so a log can be grepped). Callable:
    view(text) is view.message(text), so it serves as the sweep's `say`."""

    def __init__(self, every: float = 30.0, err: bool = False):
        self.every, self.err = every, err
        self._last = time.monotonic()

    def message(self, text: str) -> None:
        click.echo(text, err=self.err)

    __call__ = message

    def update(self, lines: list[str], overall: str, force: bool = False) -> None:
        now = time.monotonic()
        if not lines or (not force and now - self._last < self.every):
            return
        self._last = now
        for line in [*lines, overall]:
            click.echo(f"  {line}", err=self.err)

    def close(self) -> None:
        (sys.stderr if self.err else sys.stdout).flush()


class SweepRichView:
    """A terminal: messages printed above a block (a line per active member, then the overall line)
    redrawn in place."""

    def __init__(self):
        from rich.console import Console
        from rich.live import Live

        self.console = Console()
        self.live = Live(console=self.console, refresh_per_second=4, transient=False)
        self._started = self._closed = False

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False)

    __call__ = message

    def update(self, lines: list[str], overall: str, force: bool = False) -> None:
        from rich.text import Text

        if self._closed:
            return
        if not self._started:  # only once members run: an error before that leaves the terminal as it was
            self._started = True
            self.live.start()
        self.live.update(Text("\n".join([*lines, overall])))

    def close(self) -> None:
        if self._started and not self._closed:
            self.live.update("")
            self.live.stop()
        self._closed = True


def make_sweep_view(err: bool = False):
    """The rich block on a terminal; plain lines when stdout is not one, or on stderr (--json)."""
    if sys.stdout.isatty() and not err:
        return SweepRichView()
    import os

    # KR_SWEEP_STATUS_EVERY: seconds between plain status blocks (CI logs may want them rarer or more often)
    return SweepPlainView(every=float(os.environ.get("KR_SWEEP_STATUS_EVERY", "30")), err=err)
