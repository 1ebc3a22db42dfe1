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
    """--gpu 0 | 0,1 | cpu; default: the first GPU kr may use (kohya_runner.gpus), else the CPU.
    Raises BadInput for a GPU this machine does not have."""
    if value is None:
        from .. import gpus

        return gpus.default_for_run()
    return gpu_list(value, "--gpu")


def gpu_list(value: str, option: str = "--gpus") -> list[int]:
    """`0`, `0,1` or `cpu` (= []), as `kr run --gpu` and `kr sweep --gpus` take it; every GPU named must be
    one kr may use (kohya_runner.gpus.visible), else the trainer would silently train on the CPU.
    Raises BadInput."""
    from ..errors import BadInput

    if value.strip().lower() == "cpu":
        return []
    try:
        wanted = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise BadInput(f"{option} {value!r}: give GPU numbers such as 0 or 0,1, or cpu") from None
    if not wanted:
        raise BadInput(f"{option} {value!r} names no GPU. Fix: {option} 0 (or 0,1), or {option} cpu")
    from .. import gpus

    gpus.check_requested(wanted, option=option)
    return wanted


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
@click.option("--name", "run_name", type=str,
              help="Run name (spec `name`): the run id and the LoRA files are named after it; default: the preset's.")
@click.option("--no-retry", is_flag=True, help="After CUDA out of memory, do not relaunch with the next memory "
              "setting (guard.oom_retries=0).")
@click.option("--fit", "fit_memory", is_flag=True, help="Pick the fastest memory setting whose estimated peak fits "
              "the GPU's free memory, and say what it chose.")
@click.option("--dry-run", is_flag=True, help="Check everything and print the plan and the memory estimate; "
              "launch nothing, write nothing.")
@click.pass_context
def run(ctx, preset_name, overrides, dataset_dir, base, gpu, trainer, detach, skip_check, as_json, run_name, no_retry,
        fit_memory, dry_run):
    """Train a LoRA: render the preset, launch the trainer, follow it, archive the result.

    OVERRIDES are key.path=value pairs typed by the spec, e.g. network.dim=32. After CUDA out of memory kr
    relaunches the run (a new run, linked to the first) with the next memory setting, up to
    guard.oom_retries times.
    """
    from .. import preset
    from ..run import RunOptions

    root = home(ctx)
    overrides = list(overrides) + (["guard.oom_retries=0"] if no_retry else [])
    resolved = preset.resolve(preset_name, root, overrides, {"dataset.dir": dataset_dir, "model.base": base,
                                                             "name": run_name})
    options = RunOptions(preset=resolved.preset.name, backend=trainer, gpus=gpu_option(gpu))
    spec = fitted_to_gpu(root, resolved.spec, options, as_json) if fit_memory else resolved.spec
    execute(root, spec, options, detach=detach, as_json=as_json, skip_check=skip_check, dry_run=dry_run)


def fitted_to_gpu(root, spec, options, as_json: bool):
    """`--fit`: the spec with the fastest memory setting that fits the run's GPU (kohya_runner.memory.fit)."""
    from .. import memory
    from ..doctor import gpu_inventory
    from ..run import backend_for

    say = (lambda line: click.echo(line, err=True))
    if backend_for(spec, options) == "tiny" or not options.gpus:
        say("fit: no GPU to fit (this run trains on the CPU); the spec stays as it is")
        return spec
    gpu = next((g for g in gpu_inventory() if g.index == options.gpus[0]), None)
    if gpu is None:
        say(f"fit: NVML cannot read GPU {options.gpus[0]}'s free memory; the spec stays as it is")
        return spec
    chosen = memory.fit(spec, gpu.free, memory.measured(root, "gpu"))
    say(chosen.text())
    return chosen.spec


def execute(root, spec, options, *, detach: bool, as_json: bool, skip_check: bool = False,
            dry_run: bool = False) -> None:
    """Shared by `kr run`, `kr demo` and `kr runs resume`."""
    from .. import run as run_mod
    from ..trainers.notes import fit

    # the spec fitted to the backend (the tiny model's scale), then every check, writing nothing; then the
    # cache folder, the ledger (settling dead runs) and the row
    spec, notes = fit(root, spec, run_mod.backend_for(spec, options), num_processes=max(1, len(options.gpus or [])))
    for line in notes:
        click.echo(line if line.startswith("warning:") else f"note: {line}", err=as_json)
    if dry_run:
        run_mod.check_before_launch(root, spec, options, skip_check=skip_check)
        return dry_run_plan(root, spec, options, as_json)
    options = run_mod.pre_launch(root, spec, options, skip_check=skip_check)
    open_ledger(root)
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
    while not final.stop_requested:  # CUDA out of memory: the next memory setting, as a new run
        retry = run_mod.prepare_retry(root, final, say=lambda line: click.echo(line, err=True))
        if retry is None:
            break
        final = follow_foreground(root, retry.run_id, quiet=as_json)
    if as_json:
        print_json(final.to_json(), schema="run-row")
    else:
        summary(final)
        attempts_summary(root, final)
    if final.status != "succeeded":
        raise SystemExit(1)


def attempts_summary(root, row) -> None:
    """After out-of-memory retries: each attempt, what it changed and how it ended."""
    from ..errors import KrError
    from ..memory import chain_summary

    if not row.retry_of:
        return
    try:
        lines = chain_summary(root, row.run_id)
    except KrError:  # the ledger went bad meanwhile: the run's own summary above stands
        return
    if len(lines) > 1:
        click.echo("attempts (CUDA out of memory, then the next memory setting):")
        for line in lines:
            click.echo(f"  {line}")


def dry_run_plan(root, spec, options, as_json: bool) -> None:
    """`--dry-run`: every check passed; what would run, and how much memory it would take."""
    from .. import memory
    from ..run import backend_for

    estimate = memory.for_run(root, spec)
    device = "cpu" if not options.gpus else ",".join(map(str, options.gpus))
    if as_json:
        print_json({"spec_hash": spec.hash(), "name": spec.name, "backend": backend_for(spec, options), "device": device,
                    "memory": estimate.to_json()}, schema="run-plan")
        return
    click.echo("dry run: every check passed; nothing launched, nothing written")
    click.echo(f"  {spec.name}: {spec.model.family} on {backend_for(spec, options)}, device {device}, spec {spec.hash()}")
    click.echo(f"  peak memory: {estimate.text()}")


def follow_foreground(root, run_id: str, quiet: bool = False):
    import signal

    from .. import run as run_mod
    from ..supervisor import Supervisor
    from .live import PlainView, make_view

    supervisor: Supervisor | None = None
    early_stop = False  # Ctrl-C before the trainer is followed: stopped as soon as it is (never orphaned)

    def on_interrupt(signum, frame):
        nonlocal early_stop
        if supervisor is not None and supervisor.stop_requested:
            click.echo("\nstopping harder (SIGTERM/SIGKILL)…", err=True)
        else:
            click.echo("\nstopping the run (Ctrl-C again to force)…", err=True)
        if supervisor is None:
            early_stop = True
        else:
            supervisor.request_stop()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    previous_term = signal.signal(signal.SIGTERM, on_interrupt)
    view = None
    try:
        process = run_mod.launch(root, run_id, cancelled=lambda: early_stop)
        view = PlainView(run_id, every=30.0) if quiet else make_view(run_id)
        supervisor = Supervisor(root, run_id, process, on_update=None if quiet else view.update,
                                on_event=None if quiet else view.event)
        if early_stop:
            supervisor.request_stop()
        return supervisor.run()
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)
        if view is not None:
            view.close()


def summary(row) -> None:
    colour = {"succeeded": "green", "stopped": "yellow"}.get(row.status, "red")
    click.secho(f"{row.run_id}: {row.status}", fg=colour, bold=True)
    if row.hint:
        click.echo(f"  {row.hint}")
    if row.result_path:
        click.echo(f"  result: {row.result_path}")
    click.echo(f"  run folder: {row.run_dir}")
    if row.status == "succeeded":
        next_steps(row.run_id)


def next_steps(run_id: str) -> None:
    """What to do with a finished run (after `kr run` and `kr demo`)."""
    steps = [(f"kr report {run_id}", "evaluation sheet: samples side by side, loss, config"),
             ("kr review", "the review board in your browser: compare, rate, release"),
             (f"kr release {run_id} --best -o DIR", "deliver the highest-scoring checkpoint (with its model card)"),
             (f"kr runs show {run_id}", "everything the ledger knows about it")]
    width = max(len(command) for command, _ in steps)
    click.echo("next:")
    for command, what in steps:
        click.echo(f"  {command:<{width}}   # {what}")
