"""`kr sweep PRESET …`, `kr sweep resume | ls | show | stop`: many runs over the GPUs, one table."""

from __future__ import annotations

import re

import click

from .common import home, listed_ledger, print_json, recorded_ledger
from .display import MISSING, duration, number, text_table

EPILOG = """\b
Examples:
  kr sweep marker --dataset ./imgs --base sdxl.safetensors \\
      --grid optimizer.type=AdamW8bit,Prodigy --grid optimizer.lr=1e-4,3e-4 --dry-run
  kr sweep marker --dataset ./imgs --base sdxl.safetensors -f optimizers.toml --gpus 0,1
  kr sweep tiny-demo --dataset ./imgs --base tiny --seeds 1,2 --grid optimizer.lr=1e-2,3e-2 --max-parallel 2
  kr sweep resume sweep-marker-0001
  kr sweep ls
  kr sweep show sweep-marker-0001 --json

\b
A sweep file (-f) holds the same in TOML:
  [sweep]
  preset = "marker"          # optional: the PRESET argument
  seeds = [1, 2]             # every member once per seed
  [set]                      # fixed for every member
  training.epochs = 8
  [grid]                     # the product of these value lists
  network.dim = [16, 32]
  [[paired]]                 # alternatives whose keys change together;
  optimizer.type = "AdamW8bit"               # a list inside one is a ladder
  optimizer.lr = [1e-4, 2e-4, 3e-4, 5e-4]
  [[paired]]
  optimizer.type = "Prodigy"
  optimizer.lr = 1.0
  optimizer.args = { d_coef = 1.0, weight_decay = 0.01, safeguard_warmup = true }
  [[paired]]
  optimizer.type = "Adafactor"
  optimizer.lr = [1e-4, 2e-4]
  optimizer.args = { relative_step = false, scale_parameter = false, warmup_init = false }
(several independent paired sets: [[paired.optimizer]], [[paired.schedule]], …)"""


class SweepGroup(click.Group):
    """`kr sweep PRESET …` starts a sweep; `kr sweep ls|show|resume|stop` manage them."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["start", *args]
        return super().parse_args(ctx, args)


@click.group(cls=SweepGroup, epilog=EPILOG, invoke_without_command=False, no_args_is_help=True)
def sweep() -> None:
    """Sweep optimizers, learning rates, anything: a run per GPU, one shared cache.

    \b
    kr sweep PRESET [KEY=VALUE…] --dataset D --base M --grid KEY=V1,V2 …   start one (= kr sweep start …)
    kr sweep ls | show ID | resume ID | stop ID
    """


def _gpus(value):
    """--gpus 0,1 | cpu; None (not given): the sweep's default (kohya_runner.gpus). Raises BadInput for a GPU
    this machine does not have."""
    from .run import gpu_list

    return None if value is None else gpu_list(value, "--gpus")


def _max_parallel(value: int | None) -> int | None:
    """Refused before anything is planned or written. Raises BadInput."""
    from ..errors import BadInput

    if value is not None and value < 1:
        raise BadInput(f"--max-parallel {value}: a sweep needs at least one slot. Fix: --max-parallel 1 or more "
                       "(or leave it out: one member per GPU, 1 on the CPU)")
    return value


def _say(as_json: bool):
    """Messages and the live block of member lines (kohya_runner.cli.live); on stderr with --json."""
    from .live import make_sweep_view

    return make_sweep_view(err=as_json)


@sweep.command("start", epilog=EPILOG, short_help="Start a sweep (also: kr sweep PRESET …).")
@click.argument("args", nargs=-1)
@click.option("--dataset", "dataset_dir", type=click.Path(), help="Folder of images and captions (dataset.dir).")
@click.option("--base", type=str, help="Base model file or Diffusers folder; 'tiny' for the built-in tiny trainer.")
@click.option("--grid", "grids", multiple=True, metavar="KEY=V1,V2", help="Values to sweep (repeatable; the product is taken).")
@click.option("--seeds", type=str, metavar="S1,S2", help="Run every member once per seed (training.seed).")
@click.option("-f", "--file", "sweep_file", type=click.Path(), help="A sweep TOML: [sweep], [set], [grid], [[paired]].")
@click.option("--name", type=str, help="Sweep name (default: the preset's).")
@click.option("--gpus", type=str, help="GPUs to use, e.g. 0,1; 'cpu' for none. Default: every GPU NVML sees.")
@click.option("--max-parallel", type=int, help="At most N members at once (default: one per GPU; 1 on the CPU).")
@click.option("--trainer", type=click.Choice(["sd-scripts", "tiny"]), help="Trainer backend (default: tiny for --base tiny).")
@click.option("--dry-run", is_flag=True, help="List the members, what they change and their steps; start nothing.")
@click.option("--skip-invalid", is_flag=True, help="Run the valid members even if some are invalid.")
@click.option("--skip-check", is_flag=True, help="Launch even if `kr dataset check` finds errors.")
@click.option("--ray", "ray_address", metavar="ADDRESS", help="Run the members as tasks on the Ray cluster at "
              "ADDRESS (e.g. 10.0.0.5:6379), each on a worker's own kr and sd-scripts.")
@click.option("--ray-resource", metavar="NAME", help="What a member needs on a Ray node: GPU (default) or a custom "
              "resource the nodes were started with (ray start --resources).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def start(ctx, args, dataset_dir, base, grids, seeds, sweep_file, name, gpus, max_parallel, trainer, dry_run,
          skip_invalid, skip_check, ray_address, ray_resource, as_json):
    """Run PRESET once per combination of the swept values, one member per GPU (or CPU slot).

    ARGS: PRESET (optional with a sweep file that names one), then key.path=value overrides shared by
    every member. Members that fail do not stop the others; Ctrl-C stops them all cleanly.
    """
    from pathlib import Path

    from .. import sweep as sweep_mod
    from ..errors import BadInput

    root = home(ctx)
    gpus, max_parallel = _gpus(gpus), _max_parallel(max_parallel)
    preset_name, overrides = None, []
    for i, arg in enumerate(args):
        if "=" in arg:
            overrides.append(arg)
        elif i == 0:
            preset_name = arg
        else:
            raise BadInput(f"{arg!r} is not a key.path=value override. Fix: give the preset first, then overrides "
                           "such as training.epochs=4")
    definition = sweep_mod.load_file(Path(sweep_file)) if sweep_file else sweep_mod.Definition()
    definition.axes += [sweep_mod.grid_axis(g) for g in grids]
    if seeds:
        definition.axes.append(sweep_mod.seed_axis(sweep_mod.parse_seeds(seeds)))
    plan = sweep_mod.plan(root, preset_name, definition, overrides=overrides, dataset=dataset_dir, base=base, name=name)
    if dry_run:
        _dry_run(plan, as_json)
        if plan.invalid and not skip_invalid:
            sweep_mod.refuse_invalid(plan)
        return
    if ray_resource and not ray_address:
        raise BadInput("--ray-resource needs --ray ADDRESS. Fix: add --ray, or drop --ray-resource")
    if ray_address and not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+:\d+|auto", ray_address):
        raise BadInput(f"--ray {ray_address!r} is not a Ray address. Fix: HOST:PORT of the head (ray start --head), "
                       "e.g. 10.0.0.5:6379")
    if ray_resource and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", ray_resource):
        raise BadInput(f"--ray-resource {ray_resource!r} is not a resource name. Fix: GPU, or a name such as kr_slot")
    options = sweep_mod.Options(gpus=gpus, max_parallel=max_parallel, backend=trainer, skip_check=skip_check,
                                skip_invalid=skip_invalid, ray=ray_address, ray_resource=ray_resource)
    record = sweep_mod.start(root, plan, options, _say(as_json))
    _finish(root, record, as_json)


def _dry_run(plan, as_json: bool) -> None:
    from .. import sweep as sweep_mod

    data = sweep_mod.dry_run_json(plan)
    if as_json:
        print_json(data, schema="sweep-plan")
        return
    click.echo(f"sweep {plan.name} (preset {plan.preset}): {len(plan.members)} member(s), {len(plan.valid)} valid, "
               f"{data['total_steps']} steps in total")
    if plan.fixed:
        click.echo(f"every member: {' '.join(plan.fixed)}")
    rows = []
    for m, item in zip(plan.members, data["members"]):
        if not m.valid:
            text = f"{m.describe()}  INVALID: {m.problem}"
        elif item["changes"] is not None:
            text = " ".join(sweep_mod.override_text(k, v[1]) for k, v in item["changes"].items()
                            if k not in ("dataset.dir", "model.base")) or "(none: the preset as it is)"
        else:  # the preset alone is not valid, so there is nothing to compare with: what the member sets
            text = m.describe()
        rows.append((m.label, str(m.steps) if m.steps is not None else MISSING, text))
    click.echo(text_table(rows, ("MEMBER", "STEPS", "CHANGES FROM THE PRESET")))


def _finish(root, record, as_json: bool) -> None:
    from .. import sweep as sweep_mod

    summary = sweep_mod.write_results(root, record)
    if as_json:
        print_json(summary, schema="sweep")
    else:
        click.echo("")
        click.echo(_members_table(summary["members"]))
        click.echo("")
        for label, path in summary["files"].items():
            click.echo(f"{label}: {path}")
    statuses = {m["status"] for m in summary["members"] if m["status"] != "invalid"}
    if summary["status"] != "finished" or not statuses <= {"succeeded", "diverged"}:
        raise SystemExit(1)


@sweep.command("resume", epilog="Example:\n\n  kr sweep resume sweep-marker-0001 --gpus 0,1")
@click.argument("ref")
@click.option("--gpus", type=str, help="GPUs to use now (default: as the sweep was started).")
@click.option("--max-parallel", type=int, help="At most N members at once.")
@click.option("--retry-failed", is_flag=True, help="Also run members that failed again (not only stopped/crashed/unstarted).")
@click.option("--skip-check", is_flag=True, help="Launch even if `kr dataset check` finds errors.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def resume(ctx, ref, gpus, max_parallel, retry_failed, skip_check, as_json):
    """Continue a stopped or interrupted sweep: finished members (succeeded, diverged, failed) are skipped."""
    from .. import sweep as sweep_mod

    root = home(ctx)
    gpus, max_parallel = _gpus(gpus), _max_parallel(max_parallel)
    options = sweep_mod.Options(gpus=gpus, max_parallel=max_parallel, retry_failed=retry_failed, skip_check=skip_check)
    record = sweep_mod.resume(root, ref, options, _say(as_json))
    _finish(root, record, as_json)


@sweep.command("ls", epilog="Example:\n\n  kr sweep ls --json")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def ls(ctx, as_json):
    """List sweeps, newest first, with their best member."""
    import time

    from .. import sweep as sweep_mod

    root, ledger = listed_ledger(ctx)
    rows = sweep_mod.listing(root) if ledger else []
    if as_json:
        print_json({"sweeps": rows}, schema="sweeps")
        return
    table = []
    for r in rows:
        best = f"{r['best']['member']} {r['best']['final_loss']:.4g} ({r['best']['params']})" if r["best"] else MISSING
        done = f"{r['done']}/{r['members']}" if r["done"] is not None else str(r["members"])
        table.append((r["sweep_id"], r["status"], r["preset"] or MISSING, done, best,
                      time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created_at"]))))
    click.echo(text_table(table, ("SWEEP", "STATUS", "PRESET", "DONE", "BEST (final loss)", "CREATED")))


@sweep.command("show", epilog="Example:\n\n  kr sweep show sweep-marker-0001 --json")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def show(ctx, ref, as_json):
    """A sweep's members: what each changes, status, final/min average loss, time, it/s, run."""
    from .. import sweep as sweep_mod

    root, _ = recorded_ledger(ctx)
    record = sweep_mod.Record.load(root, ref)
    summary = sweep_mod.summary_json(root, record)
    if as_json:
        print_json(summary, schema="sweep")
        return
    click.echo(f"{summary['sweep_id']}: {summary['status']}  (preset {summary['preset']}; folder {summary['sweep_dir']})")
    if summary["fixed"]:
        click.echo(f"every member: {' '.join(summary['fixed'])}")
    click.echo(_members_table(summary["members"]))
    for label, path in summary["files"].items():
        click.echo(f"{label}: {path}")


@sweep.command("stop", epilog="Example:\n\n  kr sweep stop sweep-marker-0001")
@click.argument("ref")
@click.pass_context
def stop(ctx, ref):
    """Stop a sweep from another terminal: like Ctrl-C in its own (every member stops, none starts)."""
    from .. import sweep as sweep_mod

    result = sweep_mod.stop(home(ctx), ref)
    if result.owner_pid is not None:
        click.echo(f"asked {result.sweep_id} (kr pid {result.owner_pid}) to stop its members")
        return
    for final in result.stopped:
        click.echo(f"{final.run_id}: {final.status}")
    click.echo(f"{result.sweep_id} is not running")


def _members_table(rows: list[dict]) -> str:
    """Ranked by score when the members are scored (`kr score SWEEP`), with its parts."""
    if not any(r.get("score") is not None for r in rows):
        return text_table([(r["member"], r["params"], r["status"], number(r["final_loss"]), number(r["min_loss"]),
                            duration(r["seconds"]), number(r["it_per_s"], 3), r["run_id"] or MISSING) for r in rows],
                          ("MEMBER", "PARAMS", "STATUS", "FINAL LOSS", "MIN LOSS", "TIME", "IT/S", "RUN"))
    parts = [r.get("score_parts") or {} for r in rows]
    return text_table([(r["member"], r["params"], r["status"], number(r.get("score"), 3), p.get("label") or MISSING,
                        number(p.get("style"), 2), number(p.get("fit"), 2), number(p.get("selectivity"), 2),
                        number(r["final_loss"]), duration(r["seconds"]), r["run_id"] or MISSING)
                       for r, p in zip(rows, parts)],
                      ("MEMBER", "PARAMS", "STATUS", "SCORE", "BEST", "STYLE", "FIT", "SELECT", "FINAL LOSS", "TIME", "RUN"))
