"""Small helpers shared by the command modules (output, workspace, JSON)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click


def home(ctx: click.Context) -> Path:
    from .. import workspace

    return workspace.home((ctx.find_root().obj or {}).get("home"))


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def console():
    from rich.console import Console

    # Not a terminal (a pipe, a log file): wide enough that tables do not wrap every cell.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 160)


def err(message: str) -> None:
    click.echo(message, err=True)


def is_tty() -> bool:
    return sys.stdout.isatty()
