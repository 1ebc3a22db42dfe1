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


def _set_home(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        root = ctx.find_root()
        if not isinstance(root.obj, dict):
            root.obj = {}
        root.obj["home"] = value  # the one place home() reads, whichever command level it was typed at


def home_option() -> click.Option:
    """--home after the command (`kr runs show X --home DIR`), as well as before it; no envvar here, so
    KR_HOME never overrides a --home typed before the command."""
    return click.Option(["--home"], type=click.Path(file_okay=False), expose_value=False, callback=_set_home,
                        help="Workspace folder (env KR_HOME); also accepted before the command.")


def accept_home_everywhere(command: click.Command) -> click.Command:
    """Give `command`, and every subcommand of a group, a --home option (once; commands are module singletons)."""
    if not getattr(command, "_kr_home_option", False):
        if not any(param.name == "home" for param in command.params):
            command.params.append(home_option())
        command._kr_home_option = True  # type: ignore[attr-defined]
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            accept_home_everywhere(sub)
    return command


def print_json(data: Any, schema: str | None = None) -> None:
    """Print data as indented JSON; with `schema` ("vendor-status"), a dict gains "schema": "kr.vendor-status/1"
    first, the versioned shape every `--json` output carries (a schema the data names itself is kept)."""
    if schema is not None and isinstance(data, dict) and "schema" not in data:
        data = {"schema": f"kr.{schema}/1", **data}
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def open_ledger(root: Path):
    """The workspace's ledger, dead runs settled first (workspace.settled_ledger)."""
    from .. import workspace

    return workspace.settled_ledger(root)


def recorded_ledger(ctx: click.Context):
    """(workspace, its ledger) for a command that reads what kr recorded: no workspace is created for it (a
    mistyped --home must not become a new, empty one), and dead runs are settled first. Raises BadInput when
    nothing is recorded there."""
    from .. import workspace

    root = workspace.require_recorded(home(ctx))
    return root, open_ledger(root)


def listed_ledger(ctx: click.Context):
    """(workspace, its ledger or None) for a listing: with nothing recorded the listing is empty, stderr says
    where kr looked, and nothing is created. Raises nothing of its own."""
    from .. import workspace

    root = home(ctx)
    if workspace.recorded(root):
        return root, open_ledger(root)
    click.echo(f"(no kr workspace at {root} yet)", err=True)
    return root, None


def err(message: str) -> None:
    click.echo(message, err=True)


def is_tty() -> bool:
    return sys.stdout.isatty()
