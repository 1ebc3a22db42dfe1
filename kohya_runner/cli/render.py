"""`kr render`: preset → validated spec → sd-scripts files and the launch command."""

from __future__ import annotations

import click

from .common import home, print_json

EPILOG = """\b
Examples:
  kr render marker --dataset ./marker-images --base ~/models/sdxl_base_1.0.safetensors -o ./marker-run
  kr render sd15-lora --dataset ./imgs --base sd15.safetensors network.dim=16 optimizer.lr=2e-4
  kr render ./my-preset.toml --dataset ./imgs --base model.safetensors --json"""


@click.command(epilog=EPILOG)
@click.argument("preset_name", metavar="PRESET")
@click.argument("overrides", nargs=-1)
@click.option("--dataset", "dataset_dir", type=click.Path(), help="Folder of images and captions (dataset.dir).")
@click.option("--base", type=str, help="Base model file or Diffusers folder (model.base); 'tiny' for the built-in one.")
@click.option("-o", "--out", "out_dir", type=click.Path(file_okay=False), help="Output folder (default ./kr-render-PRESET).")
@click.option("--force", is_flag=True, help="Replace files kr rendered there before.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--name", "run_name", type=str,
              help="Run name (spec `name`): the run id and the LoRA files are named after it; default: the preset's.")
@click.pass_context
def render(ctx, preset_name, overrides, dataset_dir, base, out_dir, force, as_json, run_name):
    """Write config.toml, dataset.toml and sample_prompts.txt for sd-scripts, and print the launch command.

    OVERRIDES are key.path=value pairs typed by the spec, e.g. optimizer.lr=2e-4.
    """
    from pathlib import Path

    from .. import preset, render as render_mod

    root = home(ctx)
    resolved = preset.resolve(preset_name, root, list(overrides), {"dataset.dir": dataset_dir, "model.base": base,
                                                                    "name": run_name})
    target = Path(out_dir) if out_dir else Path(f"kr-render-{resolved.preset.name}")
    rendered = render_mod.render(resolved.spec, target, root, force=force, log_prefix=f"{resolved.spec.output_name}_")
    if as_json:
        print_json({**rendered.to_json(), "preset": resolved.preset.name, "spec_hash": resolved.spec.hash()},
                   schema="render")
        return
    for path in rendered.files:
        click.echo(f"wrote {path}")
    click.echo("\nlaunch (single GPU):")
    click.echo(f"  {rendered.command_line()}")
    if rendered.command[1].startswith("<sd-scripts>"):
        click.echo("\nsd-scripts is not installed here; `kr vendor install --from PATH` puts a checkout in place.")
