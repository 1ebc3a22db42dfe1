"""`kr base tiny | random | info`: base model files."""

from __future__ import annotations

import click

from .common import home, print_json

EPILOG = """\b
Examples:
  kr base tiny                       build kr's tiny SDXL base (the demo's and CI's model)
  kr base random sdxl --seed 1 -o ~/models/random-sdxl.safetensors
  kr base info ~/models/sdxl_base_1.0.safetensors"""


@click.group(epilog=EPILOG)
def base() -> None:
    """Build the built-in tiny base, write random full-size bases, inspect a base file."""


@base.command("tiny", epilog="Example:\n\n  kr base tiny --family sd15")
@click.option("--family", type=click.Choice(["sdxl", "sd15"]), default="sdxl", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def tiny(ctx, family, as_json):
    """Build (once) the tiny model the built-in trainer uses, from its committed pretrained weights."""
    from .. import workspace
    from ..tiny import build_tiny_base

    path = build_tiny_base(workspace.tiny_base_dir(home(ctx), family), family)
    print_json({"family": family, "path": str(path)}, schema="base-tiny") if as_json else click.echo(f"tiny {family} base: {path}")


@base.command("random", epilog="Example:\n\n  kr base random sd15 --seed 7 -o ./random-sd15.safetensors")
@click.argument("family", type=click.Choice(["sd15", "sdxl"]))
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("-o", "--out", "out", type=click.Path(), help="File or folder (default: the workspace's bases/).")
@click.option("--dtype", type=click.Choice(["fp16", "bf16", "fp32"]), default="fp16", show_default=True)
@click.pass_context
def random_base(ctx, family, seed, out, dtype):
    """Write a seeded random full-size checkpoint in the single-file layout sd-scripts loads (for smoke tests).

    Needs torch, diffusers and transformers: kr's own, else those of the trainer environment (`kr vendor env`)."""
    from pathlib import Path

    from .. import workspace
    from ..base_writer import write_random_base

    root = home(ctx)
    dest = Path(out).expanduser() if out else workspace.bases_dir(root)
    if not out:
        dest.mkdir(parents=True, exist_ok=True)
    path = write_random_base(family, dest, home=root, seed=seed, dtype=dtype,
                             progress=lambda line: click.echo(f"  {line}"))
    click.echo(f"wrote {path}")


@base.command("info", epilog="Example:\n\n  kr base info model.safetensors --json")
@click.argument("path", type=click.Path())
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(path, as_json):
    """Which architecture a base file or folder is, read from its tensor names (no weights loaded)."""
    from ..bases import detect_architecture

    found = detect_architecture(path)
    if as_json:
        print_json(found.to_dict(), schema="base-info")
        return
    click.echo(f"{path}: {found.family} ({found.format}) — {found.reason}")
