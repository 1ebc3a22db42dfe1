"""`kr run`: preset → validated spec → rendered files → supervised trainer → archive."""

from __future__ import annotations

import click

from .common import home, open_ledger, print_json

EPILOG = """\b
Examples:
  kr run marker --dataset ./marker-images --base ~/models/sdxl_base_1.0.safetensors
  kr run marker-preset --dataset ./imgs --base sdxl.safetensors optimizer.lr=2e-4 --gpu 1
  kr run zine --dataset ./imgs --base sdxl.safetensors --detach     # then: kr runs tail <id>
  kr run tiny-demo --dataset ./imgs --base tiny                     # the built-in CPU trainer"""


def gpu_option(value: str | None) -> list[int] | None:
    """--gpu 0 | 0,1 | cpu; default: the first GPU kr may use (kohya_runner.gpus), else the CPU."""
    if value is None:
        from .. import gpus

        return gpus.default_for_run()
    return gpu_list(value)


def gpu_list(value: str) -> list[int]:
    """`0`, `0,1` or `cpu` (= []), as `kr run --gpu` and `kr sweep --gpus` take it."""
    if value.strip().lower() == "cpu":
        return []
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give GPU numbers such as 0 or 0,1, or cpu") from None


@click.command(epilog=EPILOG)
@click.argument("preset_name", metavar="PRESET")
@click.argument("overrides", nargs=-1)
@click.option("--dataset", "dataset_dir", type=click.Path(), help="Folder of images and captions (dataset.dir).")
@click.option("--base", type=str, help="Base model file or Diffusers folder; 'tiny' for the built-in tiny trainer.")
@click.option("--gpu", "gpu", type=str, help="GPU index(es), e.g. 0 or 0,1; 'cpu' for none. Default: GPU 0 if present.")
@click.option("--trainer", type=click.Choice(["sd-scripts", "tiny"]), help="Trainer backend (default: tiny for --base tiny).")
@click.option("--detach", is_flag=True, help="Keep running without this terminal; re-attach with `kr runs tail ID`.")
@click.option("--skip-check", is_flag=True, help="Launch even if `kr dataset check` finds errors.")
@click.option("--json", "as_json", is_flag=True, help="Print the final ledger row as JSON.")
@click.pass_context
def run(ctx, preset_name, overrides, dataset_dir, base, gpu, trainer, detach, skip_check, as_json):
    """Train a LoRA: render the preset, launch the trainer, follow it, archive the result.

    OVERRIDES are key.path=value pairs typed by the spec, e.g. network.dim=32.
    """
    from .. import preset
    from ..run import RunOptions

    root = home(ctx)
    resolved = preset.resolve(preset_name, root, list(overrides), {"dataset.dir": dataset_dir, "model.base": base})
    options = RunOptions(preset=resolved.preset.name, backend=trainer, gpus=gpu_option(gpu))
    execute(root, resolved.spec, options, detach=detach, as_json=as_json, skip_check=skip_check)


def execute(root, spec, options, *, detach: bool, as_json: bool, skip_check: bool = False) -> None:
    """Shared by `kr run`, `kr demo` and `kr runs resume`."""
    from .. import run as run_mod

    open_ledger(root)
    options = run_mod.pre_launch(root, spec, options, skip_check=skip_check)
    row = run_mod.prepare(root, spec, options)
    if detach:
        from ..supervisor import spawn_detached_supervisor

        spawn_detached_supervisor(root, row.run_id)
        if as_json:
            print_json({"run_id": row.run_id, "run_dir": row.run_dir, "detached": True}, schema="run-started")
        else:
            click.echo(f"started {row.run_id} in the background ({row.run_dir})\nfollow it: kr runs tail {row.run_id}")
        return
    final = follow_foreground(root, row.run_id, quiet=as_json)
    if as_json:
        print_json(final.to_json(), schema="run-row")
    else:
        summary(final)
    if final.status != "succeeded":
        raise SystemExit(1)


def follow_foreground(root, run_id: str, quiet: bool = False):
    import signal

    from .. import run as run_mod
    from ..supervisor import Supervisor
    from .live import PlainView, make_view

    process = run_mod.launch(root, run_id)
    view = PlainView(run_id, every=30.0) if quiet else make_view(run_id)
    supervisor = Supervisor(root, run_id, process, on_update=None if quiet else view.update,
                            on_event=None if quiet else view.event)

    def on_interrupt(signum, frame):
        if supervisor.stop_requested:
            click.echo("\nstopping harder (SIGTERM/SIGKILL)…", err=True)
        else:
            click.echo("\nstopping the run (Ctrl-C again to force)…", err=True)
        supervisor.request_stop()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    previous_term = signal.signal(signal.SIGTERM, on_interrupt)
    try:
        return supervisor.run()
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)
        view.close()


def summary(row) -> None:
    colour = {"succeeded": "green", "stopped": "yellow"}.get(row.status, "red")
    click.secho(f"{row.run_id}: {row.status}", fg=colour, bold=True)
    if row.hint:
        click.echo(f"  {row.hint}")
    if row.result_path:
        click.echo(f"  result: {row.result_path}")
    click.echo(f"  run folder: {row.run_dir}")
