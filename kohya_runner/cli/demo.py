"""`kr demo`: the whole pipeline on any machine, with the built-in tiny trainer."""

from __future__ import annotations

import click

from .common import home

EPILOG = """\b
Examples:
  kr demo                  build the tiny base and demo images if missing, then `kr run tiny-demo`
  kr demo training.epochs=4 --detach"""


@click.command(epilog=EPILOG)
@click.argument("overrides", nargs=-1)
@click.option("--detach", is_flag=True, help="Run in the background; follow with `kr runs tail ID`.")
@click.option("--json", "as_json", is_flag=True, help="Print the final ledger row as JSON.")
@click.option("--name", "run_name", type=str,
              help="Run name (spec `name`): the run id and the LoRA files are named after it; default: the preset's.")
@click.pass_context
def demo(ctx, overrides, detach, as_json, run_name):
    """Train a small marker-style LoRA on the CPU: no GPU, no sd-scripts, no network (about a minute)."""
    from .. import preset, workspace
    from ..run import RunOptions
    from ..tiny import build_tiny_base, make_demo_dataset
    from .run import execute

    root = home(ctx)
    if not as_json:
        click.echo("preparing the tiny SDXL base and 16 demo images (once)…")
    build_tiny_base(workspace.tiny_base_dir(root, "sdxl"), "sdxl")
    images = make_demo_dataset(root / "demo" / "marker-images")
    resolved = preset.resolve("tiny-demo", root, list(overrides), {"dataset.dir": str(images), "name": run_name})
    execute(root, resolved.spec, RunOptions(preset="tiny-demo", backend="tiny", gpus=[]), detach=detach,
            as_json=as_json)
