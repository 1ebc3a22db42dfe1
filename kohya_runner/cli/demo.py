"""`kr demo`: the whole pipeline on any machine, with the built-in tiny trainer."""

from __future__ import annotations

import click

from ..tiny.styles import STYLES
from .common import home

EPILOG = """\b
Examples:
  kr demo                                  a marker-style LoRA over the tiny base (kr run tiny-style)
  kr demo --style zine                     the zine style (also: editorial-cartoon)
  kr demo --write-dataset ./marker-data    write the demo's images and captions, train nothing
  kr demo training.epochs=4 --detach"""


@click.command(epilog=EPILOG)
@click.argument("overrides", nargs=-1)
@click.option("--style", type=click.Choice(STYLES), default=STYLES[0], show_default=True,
              help="The style the demo LoRA learns.")
@click.option("--write-dataset", "write_to", type=click.Path(file_okay=False),
              help="Write the style's demo dataset (images + captions) into this new folder and stop.")
@click.option("--detach", is_flag=True, help="Run in the background; follow with `kr runs tail ID`.")
@click.option("--json", "as_json", is_flag=True, help="Print the final ledger row as JSON.")
@click.option("--name", "run_name", type=str,
              help="Run name (spec `name`): the run id and the LoRA files are named after it; default: the preset's.")
@click.pass_context
def demo(ctx, overrides, style, write_to, detach, as_json, run_name):
    """Train a small style LoRA on the CPU: no GPU, no sd-scripts, no network (about a minute)."""
    from .. import demo as demo_mod
    from .. import preset
    from ..errors import BadInput
    from ..run import RunOptions
    from .common import print_json
    from .run import execute

    root = home(ctx)
    if write_to and overrides:
        fix = (f"write the dataset first (kr demo --write-dataset {write_to} --style {style}), then train on it: "
               f"kr run {demo_mod.PRESET} --dataset {write_to} --base tiny {' '.join(overrides)}")
        raise BadInput(f"kr demo --write-dataset trains nothing, so it takes no overrides (got {overrides[0]!r}). "
                       f"Fix: {fix}", fix=fix)
    if write_to:
        folder = demo_mod.write_dataset(write_to, style)
        if as_json:
            print_json({"style": style, "path": str(folder)}, schema="demo-dataset")
        else:
            click.echo(f"wrote the {style} demo dataset to {folder}\n"
                       f"train on it: kr run {demo_mod.PRESET} --dataset {folder} --base tiny")
        return
    # the spec is validated before anything is built or written
    resolved = preset.resolve(demo_mod.PRESET, root, list(overrides), {"dataset.dir": str(demo_mod.dataset_dir(root, style)),
                                                                   "name": run_name or demo_mod.run_name(style)})
    if not as_json:
        click.echo(f"preparing the tiny SDXL base and the {style} demo images (once)…")
    demo_mod.prepare(root, style)
    if not as_json:
        click.echo(demo_mod.explanation(style))
    execute(root, resolved.spec, RunOptions(preset=demo_mod.PRESET, backend="tiny", gpus=[]), detach=detach,
            as_json=as_json)
