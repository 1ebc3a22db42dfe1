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


def print_json(data: Any, schema: str | None = None) -> None:
    """Print data as indented JSON; with `schema` ("vendor-status"), a dict gains "schema": "kr.vendor-status/1"
    first, the versioned shape every `--json` output carries (a schema the data names itself is kept)."""
    if schema is not None and isinstance(data, dict) and "schema" not in data:
        data = {"schema": f"kr.{schema}/1", **data}
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def open_ledger(root: Path, *, settle: bool = True):
    """The workspace's ledger (rebuilt from the run folders if its file is missing; read-only on a full or
    read-only disk, where nothing is settled); with settle, runs whose kr process died are settled first
    (run.reconcile), so no command reads a dead run as running. Raises BadInput for a damaged ledger
    (naming `kr runs rebuild`), Failed when it cannot be created."""
    from ..ledger import ACTIVE, open_ledger as open_workspace_ledger

    ledger = open_workspace_ledger(root)
    if settle and not ledger.read_only and ledger.runs(status=list(ACTIVE)):  # only then is the (heavier) run module needed
        from ..run import reconcile

        reconcile(root)
    return ledger


def err(message: str) -> None:
    click.echo(message, err=True)


def is_tty() -> bool:
    return sys.stdout.isatty()
