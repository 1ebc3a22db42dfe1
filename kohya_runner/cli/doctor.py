"""`kr doctor [PRESET] [--base FILE] [--dataset DIR] [--smoke]`: is this machine ready to train?"""

from __future__ import annotations

import click

from .common import home, print_json

EPILOG = """\b
Examples:
  kr doctor                                          the trainer environment, GPUs, sd-scripts, tokenizers, …
  kr doctor marker --base ~/models/sdxl.safetensors --dataset ./imgs
  kr doctor --smoke                                  + 4 real sd-scripts steps at 64 px on a random SD1.5 base
  kr doctor marker --smoke --base ~/models/sdxl.safetensors
  kr doctor --json

Exit 1 when any check fails; each failed line says how to fix it."""

SYMBOL = {"ok": "✓", "warn": "!", "fail": "✗"}


@click.command(epilog=EPILOG)
@click.argument("preset_name", metavar="[PRESET]", required=False)
@click.argument("overrides", nargs=-1)
@click.option("--base", help="Base model file or Diffusers folder to check (and to smoke-train on).")
@click.option("--dataset", "dataset_dir", type=click.Path(), help="Dataset folder to check.")
@click.option("--smoke", is_flag=True, help="Also train 4 real steps at 64 px through `kr run` (a random base unless --base).")
@click.option("--gpu", "gpu", type=str, help="GPU for the checks and the smoke run, e.g. 0; 'cpu' for none.")
@click.option("--timeout", type=float, default=1800.0, show_default=True, help="Seconds before the smoke run is stopped.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def doctor(ctx, preset_name, overrides, base, dataset_dir, smoke, gpu, timeout, as_json):
    """Check the trainer environment, GPUs, sd-scripts, tokenizers, base, dataset, disk and offline set-up.

    PRESET (optional) with key.path=value OVERRIDES is the run you plan: its family, VRAM and outputs.
    """
    from .. import doctor as lib
    from ..errors import Failed
    from .run import gpu_option

    root = home(ctx)
    gpus = gpu_option(gpu) if gpu is not None else None
    plan, preset_check = lib.resolve_plan(root, preset_name, list(overrides), base, dataset_dir,
                                          gpu=(gpus[0] if gpus else 0))
    report = lib.run_checks(root, plan, preset_check=preset_check, smoke=smoke)
    if not as_json:
        _show(report.checks)
    if smoke:
        say = (lambda line: None) if as_json else (lambda line: click.echo(line, err=True))
        check = lib.smoke_if_ready(root, plan, report, gpus=gpus, timeout=timeout, progress=say)
        if not as_json:
            _show([check])
    if as_json:
        print_json(report.to_dict(), schema="doctor")
        if not report.ok:
            raise SystemExit(1)
        return
    if not report.ok:
        names = ", ".join(c.name for c in report.failed)
        raise Failed(f"{len(report.failed)} check(s) failed: {names}. Each ✗ line above says how to fix it.")
    warned = sum(1 for c in report.checks if c.status == "warn")
    click.echo(f"all checks passed{f' ({warned} warning(s))' if warned else ''}")


def _show(checks) -> None:
    width = max([19, *(len(c.name) + 2 for c in checks)])
    for check in checks:
        click.echo(f"{SYMBOL[check.status]} {check.name:<{width}}{check.detail}")
        if check.fix and check.status != "ok":
            click.echo(f"  {'':<{width}}fix: {check.fix}")
