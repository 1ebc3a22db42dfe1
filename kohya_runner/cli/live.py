"""The live view of a run: a rich progress display on a terminal, plain periodic lines otherwise."""

from __future__ import annotations

import sys
import time

import click


def _gb(value: int | None) -> str:
    return f"{value / 2**30:.2f} GB" if value else "–"


def _loss(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def status_line(run_id: str, progress, resources) -> str:
    p = progress
    parts = [f"[{run_id}]", p.phase]
    if p.steps_total:
        parts.append(f"step {p.steps_done}/{p.steps_total}")
    if p.epoch and p.epochs_total:
        parts.append(f"epoch {p.epoch}/{p.epochs_total}")
    parts.append(f"avr_loss {_loss(p.avr_loss)}")
    if p.it_per_s:
        parts.append(f"{p.it_per_s:.2f} it/s")
    if p.eta:
        parts.append(f"eta {p.eta}")
    parts.append(f"rss {_gb(resources.rss)}")
    if resources.gpu_used is not None:
        parts.append(f"gpu {_gb(resources.gpu_used)}")
    return "  ".join(parts)


class PlainView:
    """Not a terminal (CI, a log file): one line when something happens, else every `every` seconds."""

    def __init__(self, run_id: str, every: float = 10.0):
        self.run_id, self.every = run_id, every
        self._last = 0.0
        self._last_key = None

    def update(self, progress, resources) -> None:
        key = (progress.phase, progress.epoch, len(progress.checkpoints), progress.sample_rounds)
        now = time.monotonic()
        if key != self._last_key or now - self._last >= self.every:
            self._last, self._last_key = now, key
            click.echo(status_line(self.run_id, progress, resources))

    def close(self) -> None:
        pass


class RichView:
    def __init__(self, run_id: str):
        from rich.console import Console
        from rich.live import Live

        self.run_id = run_id
        self.console = Console(stderr=False)
        self.live = Live(console=self.console, refresh_per_second=4, transient=False)
        self.live.start()
        self._seen_checkpoints = 0
        self._seen_epoch = None

    def update(self, progress, resources) -> None:
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        for path in progress.checkpoints[self._seen_checkpoints:]:
            self.console.print(f"  saved {path}")
        self._seen_checkpoints = len(progress.checkpoints)
        if progress.epoch != self._seen_epoch and progress.epoch:
            self.console.print(f"  epoch {progress.epoch}/{progress.epochs_total}")
            self._seen_epoch = progress.epoch
        grid = Table.grid(padding=(0, 2))
        total = progress.steps_total or 0
        grid.add_row(f"[bold]{self.run_id}[/]", ProgressBar(total=max(total, 1), completed=progress.steps_done, width=40),
                     f"{progress.steps_done}/{total or '?'}", progress.phase)
        grid.add_row("", status_line(self.run_id, progress, resources).split("  ", 2)[-1], "", "")
        self.live.update(grid)

    def close(self) -> None:
        self.live.stop()


def make_view(run_id: str):
    return RichView(run_id) if sys.stdout.isatty() else PlainView(run_id)
