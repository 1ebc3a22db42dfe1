"""`kr dataset check | caption | stats`: catch dataset mistakes before a GPU hour is spent."""

from __future__ import annotations

import click

from .common import home, print_json

EPILOG = """\b
Examples:
  kr dataset check ./marker-images --preset marker
  kr dataset check ./imgs --preset sd15-lora dataset.caption_extension=.caption --json
  kr dataset caption ./imgs --prefix "in the style of TOK, " --dry-run
  kr dataset stats ./imgs"""


@click.group(epilog=EPILOG)
def dataset() -> None:
    """Check a dataset against a preset, write captions, show statistics."""


def _spec_for(ctx, folder: str, preset_name: str, overrides):
    from .. import preset

    return preset.resolve(preset_name, home(ctx), list(overrides), {"dataset.dir": folder}).spec


@dataset.command("check", epilog="Example:\n\n  kr dataset check ./marker-images --preset marker")
@click.argument("folder", type=click.Path())
@click.argument("overrides", nargs=-1)
@click.option("--preset", "preset_name", default="sdxl-lora", show_default=True, help="Preset whose settings apply.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def check(ctx, folder, overrides, preset_name, as_json):
    """Errors and warnings (each with the file and the fix), buckets and step arithmetic. Exit 1 on errors."""
    from ..run import check_dataset

    spec = _spec_for(ctx, folder, preset_name, overrides)
    report = check_dataset(home(ctx), spec)
    if as_json:
        print_json(report.to_dict())
    else:
        _print_report(report)
    if not report.ok:
        raise SystemExit(1)


def _print_report(report) -> None:
    click.echo(f"{report.dir}: {report.images} images, {report.captions} captions")
    for title, findings, colour in (("errors", report.errors, "red"), ("warnings", report.warnings, "yellow")):
        if findings:
            click.secho(f"\n{len(findings)} {title}:", fg=colour, bold=True)
            for f in findings:
                click.echo(f"  [{f.code}] {f.file or '(dataset)'}: {f.message}")
                click.echo(f"      fix: {f.fix}")
    if report.buckets is not None:
        click.echo("\nbuckets (with repeats):")
        for bucket in report.buckets.buckets:
            width, height = bucket.resolution
            click.echo(f"  {width:>5} x {height:<5} {bucket.images:>4} images  {bucket.items:>5} items  "
                       f"{bucket.batches:>4} batches" + ("  (last one partial)" if bucket.last_batch < report.buckets.batch_size else ""))
    if report.steps is not None:
        s = report.steps
        click.echo(f"\nsteps: {s.items_per_epoch} items / epoch → {s.batches_per_epoch} batches → {s.steps_per_epoch} steps "
                   f"per epoch × {s.epochs} epochs = {s.total_steps} steps")
        click.echo(f"saves: {len(s.files_written)} LoRA files written, {len(s.files_kept)} kept; "
                   f"samples: {s.sample_rounds} rounds, {s.sample_images} images; disk ≈ {s.disk_bytes / 2**20:.1f} MB")
    click.secho("\nok" if report.ok else "\nnot ready: fix the errors above", fg="green" if report.ok else "red", bold=True)


@dataset.command("caption", epilog='Example:\n\n  kr dataset caption ./imgs --prefix "in the style of TOK, " --dry-run')
@click.argument("folder", type=click.Path(exists=True, file_okay=False))
@click.option("--prefix", help="Put this in front of every caption (never twice).")
@click.option("--replace", nargs=2, metavar="OLD NEW", help="Replace text in every caption.")
@click.option("--from-filename", is_flag=True, help="Caption from the file name: a_man_thinking-01.png → 'a man thinking'.")
@click.option("--caption-extension", default=".txt", show_default=True)
@click.option("--dry-run", is_flag=True, help="Show the diff, write nothing.")
@click.option("--yes", is_flag=True, help="Write without asking.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def caption(folder, prefix, replace, from_filename, caption_extension, dry_run, yes, as_json):
    """Write caption files (images are never touched); shows a diff first and keeps a backup of changed files."""
    from pathlib import Path

    from .. import dataset as dataset_mod
    from ..errors import BadInput

    if not (prefix or replace or from_filename):
        raise BadInput("nothing to do. Fix: give --prefix, --replace OLD NEW or --from-filename")
    plan = dataset_mod.caption(Path(folder), prefix=prefix, replace=tuple(replace) if replace else None,
                               from_filename=from_filename, caption_extension=caption_extension, dry_run=True)
    if not as_json:
        click.echo(plan.diff or "(no caption changes)")
        for file, reason in plan.skipped:
            click.echo(f"skipped {file}: {reason}")
    if plan.changes and not dry_run:
        if not yes and not as_json:
            click.confirm(f"write {len(plan.changes)} caption files?", abort=True)
        plan.apply()
        if not as_json:
            click.echo(f"wrote {len(plan.changes)} captions; backup of the old ones in {plan.backup_dir}")
    if as_json:
        print_json(plan.to_dict())


@dataset.command("stats", epilog="Example:\n\n  kr dataset stats ./imgs --preset marker --json")
@click.argument("folder", type=click.Path())
@click.argument("overrides", nargs=-1)
@click.option("--preset", "preset_name", default="sdxl-lora", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def stats(ctx, folder, overrides, preset_name, as_json):
    """Counts, resolutions, buckets, caption lengths and the most frequent words (local output only)."""
    from pathlib import Path

    from .. import dataset as dataset_mod, render
    from ..tokenizers import existing_folder_for

    spec = _spec_for(ctx, folder, preset_name, overrides)
    render.resolve_dataset_dir(spec)
    result = dataset_mod.stats(Path(folder), dataset_mod.settings_from_spec(spec),
                               tokenizer_dir=existing_folder_for(home(ctx), spec))
    data = result.to_dict()
    if as_json:
        print_json(data)
        return
    counts = data["counts"]
    click.echo(f"{folder}: {counts['images']} images ({counts['image_bytes'] / 2**20:.1f} MB), {counts['captions']} captions, "
               f"{counts['missing_captions']} missing")
    for title in ("formats", "resolutions", "orientations"):
        click.echo(f"{title}: " + ", ".join(f"{k} × {v}" for k, v in list(data[title].items())[:12]))
    click.echo("caption words: " + ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}"
                                              for k, v in data["caption_words"].items()))
    click.echo("most frequent words: " + ", ".join(f"{w} ({n})" for w, n in result.top_words))
