"""`kr score RUN …`: per-checkpoint scores (style fit, trigger selectivity, style distance), combined."""

from __future__ import annotations

import click

from .common import print_json, recorded_ledger

EPILOG = """\b
Examples:
  kr score marker-0003                   samples what is missing, probes every checkpoint, prints the table
  kr score marker-0003 --max-images 8    fewer images per part (real SDXL on a CPU takes minutes)
  kr score sweep-marker-0002             every member of a sweep
  kr runs best marker-0003               the checkpoint with the highest score

The probe runs in the trainer's own environment with sd-scripts' model loading and network code
(the tiny trainer's for --base tiny): 5 timesteps × up to 8 dataset images × (1 + checkpoints) U-Net
passes, plus 4 prompt pairs. Scores go to <run folder>/scores.json and the ledger."""


@click.command(epilog=EPILOG)
@click.argument("refs", nargs=-1, required=True, metavar="RUN|SWEEP …")
@click.option("--max-images", type=click.IntRange(min=1), help="At most this many images per part.")
@click.option("--gpu", "gpu", type=str, help="GPU index, or cpu. Default: GPU 0 if present.")
@click.option("--json", "as_json", is_flag=True, help="Print the scores as JSON.")
@click.pass_context
def score(ctx, refs, max_images, gpu, as_json):
    """Score every checkpoint of runs: style, fit, trigger selectivity (leakage), combined."""
    from ..score import score_run
    from .display import text_table
    from .run import gpu_option
    from ..report import run_ids

    root, _ = recorded_ledger(ctx)
    gpus = gpu_option(gpu)
    say = (lambda _: None) if as_json else (lambda line: click.echo(line, err=True))
    results = [score_run(root, run_id, max_images=max_images, gpus=gpus, say=say) for run_id in run_ids(root, refs)]
    if as_json:
        print_json({"runs": results}, schema="scores")
        return
    for result in results:
        click.echo(f"{result['run_id']}: {len(result['checkpoints'])} checkpoint(s) scored in {result['seconds']:.1f} s")
        rows = [(e["label"], _num(e.get("score"), "{:.1f}"), _num(e.get("style"), "{:.2f}"),
                 _num(e.get("style_without"), "{:.2f}"), _num(e.get("fit"), "{:.2f}"), _num(e.get("selectivity"), "{:.2f}"),
                 _num(e.get("leakage"), "{:.2f}"), "copying?" if e.get("copying") else "") for e in result["checkpoints"]]
        click.echo(text_table(rows, ("CHECKPOINT", "SCORE", "STYLE", "NO-TRIGGER", "FIT", "SELECT", "LEAK", "")))
    click.echo(f"how: {results[0]['how']}")


def _num(value, fmt: str) -> str:
    from .display import MISSING

    return MISSING if value is None else fmt.format(value)
