"""`kr runs ls | show | tail | stop | rm | diff | export | resume | rebuild`: the run ledger."""

from __future__ import annotations

import time

import click

from ..ledger import duration_text
from .common import home, listed_ledger, open_ledger, print_json, recorded_ledger
from .display import MISSING, text_table, value

EPILOG = """\b
Examples:
  kr runs ls --status running
  kr runs show marker-0003
  kr runs tail 3                  (a run's number, its id, or a unique prefix)
  kr runs stop marker-0003
  kr runs diff marker-0003 marker-0004
  kr runs export marker-0003 -o ~/deliveries/
  kr runs resume marker-0003
  kr runs rebuild                 (re-create the ledger from the run folders)"""


@click.group(epilog=EPILOG)
def runs() -> None:
    """List, inspect, follow, stop, compare, export and resume runs; rebuild the ledger."""


def _steps(row) -> str:
    if row.steps_done is None:
        return "–"
    done = row.steps_cumulative
    total = (row.steps_total + row.step_offset) if row.steps_total else None
    return f"{done}/{total}" if total else str(done)


@runs.command("ls", epilog="Example:\n\n  kr runs ls --status failed --json")
@click.option("--status", "statuses", multiple=True, help="Only runs with this status (repeatable).")
@click.option("--sweep", "sweep_id", help="Only the members of this sweep.")
@click.option("--limit", type=int, help="At most N runs, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def ls(ctx, statuses, sweep_id, limit, as_json):
    """List runs, newest first."""
    from ..errors import BadInput
    from ..ledger import STATUSES

    unknown = [s for s in statuses if s not in STATUSES]
    if unknown:
        raise BadInput(f"--status {unknown[0]!r} is not a run status. Fix: one of {', '.join(STATUSES)}")
    _, ledger = listed_ledger(ctx)
    rows = ledger.runs(status=list(statuses) or None, sweep_id=sweep_id, limit=limit) if ledger else []
    if as_json:
        print_json({"runs": [r.to_json() for r in rows]}, schema="runs")
        return
    header = ("RUN", "STATUS", "PRESET", "STEPS", "LOSS", "TIME", "STARTED")
    click.echo(text_table([(r.run_id, r.status, r.preset or MISSING, _steps(r), MISSING if r.loss is None else f"{r.loss:.4f}",
                            duration_text(r.duration), time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_at)))
                           for r in rows], header))


@runs.command("show", epilog="Example:\n\n  kr runs show marker-0003 --json")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (ledger row and archive manifest).")
@click.pass_context
def show(ctx, ref, as_json):
    """Everything about one run: status, reason, progress, files, archive."""
    from pathlib import Path

    from .. import archive

    _, ledger = recorded_ledger(ctx)
    row = ledger.find(ref)
    manifest = archive.read_manifest(Path(row.run_dir))
    from ..sample import summary

    posthoc = summary(ledger, row.run_id)
    scores = ledger.scores(row.run_id)
    ratings = ledger.ratings(row.run_id)
    if as_json:
        from ..score import timing

        posthoc["scores"] = timing(Path(row.run_dir))
        print_json({"run": row.to_json(), "manifest": manifest, "posthoc": posthoc, "scores": scores,
                    "ratings": ratings}, schema="run")
        return
    fields = [("run", row.run_id), ("status", row.status), ("reason", row.reason), ("detail", row.hint),
              ("preset", row.preset), ("backend", row.backend), ("sweep", row.sweep_id), ("spec", row.spec_hash),
              ("steps", _steps(row)), ("epoch", f"{row.epoch}/{row.epochs_total}" if row.epoch else None),
              ("final avr_loss", row.loss), ("min avr_loss", row.min_loss),
              ("it/s", f"{row.it_per_s:.3f}" if row.it_per_s else None), ("time", duration_text(row.duration)),
              ("peak memory", f"{row.peak_rss / 2**30:.2f} GB (PSS)" if row.peak_rss else None),
              ("peak VRAM", f"{row.peak_vram / 2**30:.2f} GB" if row.peak_vram else None), ("exit code", row.exit_code),
              ("result", row.result_path), ("resumed from", row.resumed_from), ("folder", row.run_dir)]
    for name, shown in fields:
        if shown not in (None, ""):
            click.echo(f"{name + ':':<16}{shown}")
    if manifest:
        for lora in manifest["loras"]:
            state = "ok" if lora["ok"] else f"BAD: {lora['problem']}"
            click.echo(f"{'lora:':<16}{lora['file']}  rank {lora['rank']} alpha {lora['alpha']}  "
                       f"{lora['size'] / 2**20:.1f} MB  sha256 {lora['sha256'][:12]}  {state}")
        if manifest.get("samples"):
            click.echo(f"{'samples:':<16}{len(manifest['samples'])} images in output/sample/")
    if posthoc["images"]:
        click.echo(f"{'post hoc:':<16}{posthoc['images']} images in {len(posthoc['jobs'])} sample job(s) (posthoc/)")
        for column, seconds in posthoc["inference_seconds_per_image"].items():
            click.echo(f"{'':<16}{column}: {seconds:.2f} s per image")
    from ..score import top as top_score

    top = top_score(scores)
    if top:
        click.echo(f"{'best score:':<16}{top['score']:.1f} ({top['label']}); all: kr runs best {row.run_id}")


@runs.command("tail", epilog="Example:\n\n  kr runs tail marker-0003")
@click.argument("ref")
@click.option("--raw", is_flag=True, help="Print the trainer's console output instead of the progress view.")
@click.pass_context
def tail(ctx, ref, raw):
    """Re-attach to a run: follow its progress until it ends (Ctrl-C detaches, the run goes on)."""
    from ..supervisor import follow
    from .live import make_view
    from .run import summary

    root, ledger = recorded_ledger(ctx)
    row = ledger.find(ref)
    view = None if raw else make_view(row.run_id)
    try:
        final = follow(root, row.run_id, on_update=view.update if view else None,
                       on_event=view.event if view else None, on_text=click.echo if raw else None)
    except KeyboardInterrupt:
        if view:
            view.close()
        click.echo(f"\ndetached; {row.run_id} keeps running", err=True)
        return
    if view:
        view.close()  # ends the progress block with a newline: the summary starts on its own line
    summary(final)


@runs.command("stop", epilog="Example:\n\n  kr runs stop marker-0003")
@click.argument("ref")
@click.option("--timeout", type=float, default=20.0, show_default=True, help="Seconds between SIGINT, SIGTERM and SIGKILL.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def stop(ctx, ref, timeout, as_json):
    """Stop a run: SIGINT to its whole process group, then SIGTERM, then SIGKILL, until nothing is left."""
    from .. import run as run_mod
    from .run import summary

    root, ledger = recorded_ledger(ctx)
    row = ledger.find(ref)
    if not row.active:
        click.echo(f"{row.run_id} is not running ({row.status})")
        return
    final = run_mod.stop(root, row.run_id, timeouts=(timeout, timeout))
    print_json(final.to_json(), schema="run-row") if as_json else summary(final)


@runs.command("rm", epilog="Example:\n\n  kr runs rm marker-0003 --yes")
@click.argument("refs", nargs=-1, required=True)
@click.option("--yes", is_flag=True, help="Do not ask.")
@click.pass_context
def rm(ctx, refs, yes):
    """Delete finished runs: their folders and ledger rows."""
    from .. import run as run_mod

    root, _ = recorded_ledger(ctx)

    def confirm(rows) -> bool:
        return yes or click.confirm(f"delete {', '.join(r.run_id for r in rows)} and their files?", abort=True)

    for row in run_mod.remove(root, list(refs), confirm=confirm):
        click.echo(f"deleted {row.run_id}")


@runs.command("diff", epilog="Example:\n\n  kr runs diff marker-0003 marker-0004")
@click.argument("a")
@click.argument("b")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def diff(ctx, a, b, as_json):
    """The settings in which two runs differ (their resolved specs), and their results."""
    from .. import run as run_mod

    root, _ = recorded_ledger(ctx)
    result = run_mod.diff(root, a, b)
    if as_json:
        print_json(result.to_json(), schema="runs-diff")
        return
    click.echo(text_table([(k, _cell(x), _cell(y)) for k, x, y in result.settings + result.results],
                          ("", result.a.run_id, result.b.run_id)))
    if not result.settings:
        click.echo("(same settings)")


def _cell(data) -> str:
    return MISSING if data is None else value(data)


@runs.command("export", epilog="""\b
Examples:
  kr runs export marker-0003 -o ~/deliveries/
  kr runs export marker-0003 --metadata scrub     LoRA headers without captions, folder and file names""")
@click.argument("ref")
@click.option("-o", "--out", "out", type=click.Path(), default=".", show_default=True, help="File or folder.")
@click.option("--metadata", "policy", type=click.Choice(["keep", "minimal", "scrub"]),
              help="Metadata policy for the LoRA copies (default: the run's privacy.metadata).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def export(ctx, ref, out, policy, as_json):
    """A portable tarball of a run: archive (manifest, losses, config), LoRAs and samples."""
    from pathlib import Path

    from .. import archive

    _, ledger = recorded_ledger(ctx)
    row = ledger.find(ref)
    if row.active:
        from ..errors import BadInput

        raise BadInput(f"{row.run_id} is still running. Fix: wait for it to finish")
    policy = policy or archive.run_policy(Path(row.run_dir))
    path = archive.export(Path(row.run_dir), Path(out).expanduser(), row.run_id, policy=policy)
    if as_json:
        print_json({"run_id": row.run_id, "file": str(path), "metadata_policy": policy}, schema="runs-export")
        return
    click.echo(f"wrote {path} (LoRA metadata: {policy})")
    if policy != "keep":
        click.echo("  note: the config snapshot and manifest in it still name the dataset folder and its files")


@runs.command("resume", epilog="Example:\n\n  kr runs resume marker-0003 --detach")
@click.argument("ref")
@click.option("--detach", is_flag=True, help="Run in the background.")
@click.option("--json", "as_json", is_flag=True, help="Print the final ledger row as JSON.")
@click.pass_context
def resume(ctx, ref, detach, as_json):
    """Continue a stopped or crashed run from its newest state folder, as a new linked run."""
    from .. import run as run_mod
    from .run import execute

    root, _ = recorded_ledger(ctx)
    spec, options, previous = run_mod.resume_options(root, ref)
    if not as_json:
        click.echo(f"resuming {previous.run_id} from {options.resume_state.name} (step offset {options.step_offset})")
    execute(root, spec, options, detach=detach, as_json=as_json, skip_check=True)


@runs.command("best", epilog="\b\nExamples:\n  kr runs best marker-0003              by score (scores the run first if needed)\n"
              "  kr runs best marker-0003 --by loss\n  kr runs best marker-0003 --epoch 8 --json\n"
              "  kr release marker-0003 --best -o ~/deliveries     (then copy it out)")
@click.argument("ref")
@click.option("--by", type=click.Choice(["score", "loss", "rating"]), default="score", show_default=True,
              help="score: style, fit and trigger selectivity (kr score); loss: the lowest loss at saving; "
                   "rating: the reviewers' mean stars (kr runs rate).")
@click.option("--epoch", type=click.IntRange(min=0), help="Show this epoch's checkpoint instead of the best one.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def best(ctx, ref, by, epoch, as_json):
    """A run's saved checkpoints with their scores and losses; the best by score (default) or by loss."""
    from ..checkpoints import choose

    root, _ = recorded_ledger(ctx)
    say = (lambda _: None) if as_json else (lambda line: click.echo(line, err=True))
    choice = choose(root, ref, epoch=epoch, best_loss=epoch is None, by=by, say=say)
    if as_json:
        print_json(choice.to_json(), schema="runs-best")
        return
    count = len(choice.checkpoints)
    click.echo(f"{choice.run_id}: {count} checkpoint{'s' if count != 1 else ''}, loss = {choice.criterion} at saving")
    mark = "← best" if choice.how == "best" else "← chosen"
    scores = choice.scores or {}

    def part(c, key, fmt):
        value = (scores.get(c.file.name) or {}).get(key)
        return MISSING if value is None else fmt.format(value)

    from ..review import summary as rating_summary

    rated = rating_summary(root, choice.run_id)

    def stars(c) -> str:
        found = rated.get(c.file.name)
        return f"{found['mean']:.1f} ({found['count']})" if found else MISSING

    click.echo(text_table([(c.label, MISSING if c.step is None else str(c.step), part(c, "score", "{:.1f}"),
                            part(c, "style", "{:.2f}"), part(c, "fit", "{:.2f}"), part(c, "selectivity", "{:.2f}"),
                            stars(c), MISSING if c.loss is None else f"{c.loss:.4f}", c.file.name,
                            mark if c.file == choice.checkpoint.file else "") for c in choice.checkpoints],
                          ("CHECKPOINT", "STEP", "SCORE", "STYLE", "FIT", "SELECT", "STARS", "LOSS", "FILE", "")))
    if choice.how == "best":
        click.echo(f"best by {choice.by}: {choice.reason}")
    copying = [c.label for c in choice.checkpoints if (scores.get(c.file.name) or {}).get("copying")]
    if copying:
        click.echo(f"warning: {', '.join(copying)} fit the training images much better than held-out ones (copying)")
    flag = f"--best --by {choice.by}" if choice.how == "best" else f"--epoch {epoch}"
    click.echo(f"release it: kr release {choice.run_id} {flag} -o DIR")


@runs.command("rate", epilog="\b\nExamples:\n  kr runs rate marker-0003 --checkpoint marker-000008.safetensors --stars 4 "
              "--reviewer Ana --note 'clean lines'\n  kr runs rate marker-0003 --sample e000008_m1_p00_trigger_1234.png "
              "--stars 2 --reviewer Ben\n  kr runs best marker-0003 --by rating")
@click.argument("ref")
@click.option("--checkpoint", help="A LoRA file name the run saved (kr runs best lists them).")
@click.option("--sample", help="A sample image's file name (as in the run's report).")
@click.option("--stars", type=click.IntRange(1, 5), required=True, help="1 (poor) to 5 (great).")
@click.option("--reviewer", required=True, help="Who rates (a name).")
@click.option("--note", help="A short note, one line.")
@click.option("--json", "as_json", is_flag=True, help="Print the rating as JSON.")
@click.pass_context
def rate(ctx, ref, checkpoint, sample, stars, reviewer, note, as_json):
    """Rate a checkpoint or a sample image of a run: 1-5 stars and a note, kept with reviewer and time."""
    from ..review import rate as do_rate

    root, _ = recorded_ledger(ctx)
    entry = do_rate(root, ref, reviewer=reviewer, stars=stars, note=note, checkpoint=checkpoint, sample=sample)
    if as_json:
        print_json(entry, schema="rating")
        return
    click.echo(f"rated {entry['checkpoint'] or entry['sample']} of {entry['run_id']}: {entry['stars']}/5 by {entry['reviewer']}")


@runs.command("rebuild", epilog="Example:\n\n  kr runs rebuild      (after `kr runs ls` reports a damaged ledger)")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def rebuild(ctx, as_json):
    """Re-create the ledger from the run folders (runs/*/run.json, archive manifests, sweeps/*/sweep.json);
    the previous ledger file is kept beside it as ledger.sqlite.corrupt-<time> (or .previous-<time> if it was readable)."""
    from ..ledger import rebuild as rebuild_ledger

    root = home(ctx)
    if not root.is_dir():
        from ..errors import BadInput

        raise BadInput(f"no workspace at {root}. Fix: give the workspace with --home or KR_HOME")
    done = rebuild_ledger(root, keep_previous=True)
    open_ledger(root)  # settles runs whose kr process is gone, as every command does
    if as_json:
        print_json({"runs": done.runs, "sweeps": done.sweeps, "kept": str(done.kept) if done.kept else None},
                   schema="runs-rebuild")
        return
    click.echo(f"rebuilt {root / 'ledger.sqlite'} from {done.runs} run folder(s) and {done.sweeps} sweep folder(s)")
    if done.kept:
        click.echo(f"  the previous file is kept as {done.kept}")
