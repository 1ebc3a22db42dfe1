"""`kr review`: the local review board, a web page on 127.0.0.1 for looking, comparing, rating and releasing."""

from __future__ import annotations

import click

from .common import err, recorded_ledger

EPILOG = """\b
Examples:
  kr review                          http://127.0.0.1:8765/?token=… (open the printed link)
  kr review --port 0                 any free port
  kr review --read-only              show results to a client: nothing can be rated, released or started
  kr review --host 192.168.1.20      reachable from the studio's network (a warning says who can reach it)

The link carries a token made for this launch; the board refuses requests without it. Runs and sweeps,
live progress, loss curves, scores, the grids (click an image: full size; arrow keys move, Z zooms,
Esc closes), side-by-side comparisons, ratings (your name is asked once), "Release this" (into
--releases, default <workspace>/releases; never overwriting) and new `kr sample` jobs.
Needs the review extra: pip install 'kohya-runner[review]'."""


@click.command(epilog=EPILOG)
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="Port (0: any free one).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on; anything but loopback makes the board reachable from other machines.")
@click.option("--read-only", is_flag=True, help="Show, never change: no ratings, releases or sample jobs.")
@click.option("--releases", type=click.Path(file_okay=False), help="Folder for releases made from the board.")
@click.pass_context
def review(ctx, port, host, read_only, releases):
    """A local review board: look at runs and sweeps, compare, rate and release, in the browser."""
    from ..review import serve

    root, _ = recorded_ledger(ctx)
    serve(root, host=host, port=port, read_only=read_only, releases=releases, say=click.echo, warn=err)
