"""`kr release RUN`: copy a chosen checkpoint out under a clean name, its header per a metadata policy."""

from __future__ import annotations

import click

from .common import print_json, recorded_ledger

EPILOG = """\b
Examples:
  kr release marker-0003 -o ~/deliveries/              the run's result (its final LoRA)
  kr release marker-0003 --best --name marker-v1       the checkpoint with the highest score (kr score)
  kr release marker-0003 --best --by loss              the checkpoint with the lowest loss
  kr release marker-0003 --epoch 8 --policy scrub      epoch 8, header scrubbed of names and captions
  kr release marker-0003 --checkpoint marker-000008.safetensors    a checkpoint by its file name
  kr runs best marker-0003                             lists the checkpoints and their losses first

--policy keep | minimal | scrub rewrites the LoRA header (and its sshs hashes) as `privacy.metadata`
does; the default is the run's own privacy.metadata. Beside the LoRA: NAME.card.md, NAME.card.json and
NAME.preview.png (base, trigger, recommended strength, scores, preview grid, training summary, sha256),
under the same policy. kr never overwrites a file unless --force."""


@click.command(epilog=EPILOG)
@click.argument("ref", metavar="RUN")
@click.option("--epoch", type=click.IntRange(min=0), help="The checkpoint saved at this epoch.")
@click.option("--step", type=click.IntRange(min=0), help="The checkpoint saved at this step.")
@click.option("--checkpoint", help="The checkpoint with this file name (as `kr runs best` lists it).")
@click.option("--best", "best_loss", is_flag=True, help="The best checkpoint (see --by).")
@click.option("--by", type=click.Choice(["score", "loss", "rating"]), default="score", show_default=True,
              help="What --best goes by: the score (scoring the run first if needed), the lowest loss, or the "
                   "reviewers' ratings.")
@click.option("-o", "--out", type=click.Path(file_okay=False), default=".", show_default=True, help="Folder to write to.")
@click.option("--policy", type=click.Choice(["keep", "minimal", "scrub"]), help="Metadata policy (default: the run's).")
@click.option("--name", help="File name without .safetensors (default: the run's output name).")
@click.option("--force", is_flag=True, help="Replace an existing file of that name.")
@click.option("--json", "as_json", is_flag=True, help="Print what was released as JSON.")
@click.pass_context
def release(ctx, ref, epoch, step, checkpoint, best_loss, by, out, policy, name, force, as_json):
    """Release a run's checkpoint: its result, --best, --epoch N, --step N or --checkpoint FILE, under a clean name."""
    from pathlib import Path

    from ..checkpoints import release as do_release
    from ..errors import BadInput

    if sum([epoch is not None, step is not None, checkpoint is not None, best_loss]) > 1:
        raise BadInput("give only one of --epoch, --step, --checkpoint and --best. Fix: drop the others")
    root, _ = recorded_ledger(ctx)
    say = (lambda _: None) if as_json else (lambda line: click.echo(line, err=True))
    result = do_release(root, ref, Path(out).expanduser(), epoch=epoch, step=step, best_loss=best_loss, policy=policy,
                        name=name, force=force, by=by, say=say, checkpoint=checkpoint)
    if as_json:
        print_json(result, schema="release")
        return
    chosen = result["checkpoint"]
    loss = f", {result['criterion']} {chosen['loss']:.4f}" if chosen.get("loss") is not None else ""
    click.echo(f"released {result['run_id']} {chosen['label']} ({Path(result['source']).name}{loss})")
    click.echo(f"  → {result['file']}")
    click.echo(f"  metadata policy {result['policy']}, {len(result['metadata_keys'])} header keys, sha256 {result['sha256']}")
    if result.get("by"):
        click.echo(f"  best by {result['by']}: {result['reason']}")
    card = result["card"]
    click.echo(f"  model card {card['markdown']}" + (f" (+ {Path(card['preview']).name})" if card.get("preview") else ""))
