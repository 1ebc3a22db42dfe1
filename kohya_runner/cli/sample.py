"""`kr sample RUN …`: post-hoc images of chosen checkpoints at chosen strengths, with the base column."""

from __future__ import annotations

import click

from .common import print_json, recorded_ledger

EPILOG = """\b
Examples:
  kr sample marker-0003                                  final checkpoint + base, every prompt form
  kr sample marker-0003 --checkpoints all --strength 0.5,0.75,1.0
  kr sample marker-0003 --checkpoints e4,e8 --kinds trigger --prompt "a lighthouse at night"
  kr sample marker-0003 marker-0004 --seeds 1,2,3 --max-images 40
  kr sample sweep-marker-0002 --checkpoints best

The generator is the trainer's own (sd-scripts' gen_img.py; the tiny one for --base tiny), one job per
GPU at a time; seeds are the run's sample seeds, so the cells line up with the in-training samples.
Images go to <run folder>/posthoc/sample-NNNN/ and into the ledger; `kr report RUN` shows them.
Ctrl-C stops the generator and keeps the images made so far."""


@click.command(epilog=EPILOG)
@click.argument("refs", nargs=-1, required=True, metavar="RUN|SWEEP …")
@click.option("--checkpoints", default="final", show_default=True, help="all | final | best | e4,e8 | s100.")
@click.option("--best-by", type=click.Choice(["loss", "score"]), default="loss", show_default=True,
              help="How --checkpoints best picks.")
@click.option("--strength", "strengths", default="1.0", show_default=True, help="LoRA strengths, e.g. 0.5,0.75,1.0.")
@click.option("--kinds", default="trigger,no-trigger,variants", show_default=True,
              help="Prompt forms: trigger, no-trigger, variants.")
@click.option("--prompt", "extra", multiple=True, help="Another subject, sampled in every form (repeatable).")
@click.option("--seeds", help="Seeds for every prompt, e.g. 1,2,3 (default: each subject's own seed).")
@click.option("--no-base", is_flag=True, help="Leave out the base model column.")
@click.option("--max-images", type=click.IntRange(min=1), help="At most this many images per run (slow CPUs).")
@click.option("--batch-size", type=click.IntRange(1, 64), default=4, show_default=True, help="Images per batch.")
@click.option("--gpu", "gpu", type=str, help="GPU index, or cpu. Default: GPU 0 if present.")
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON.")
@click.pass_context
def sample(ctx, refs, checkpoints, best_by, strengths, kinds, extra, seeds, no_base, max_images, batch_size, gpu,
           as_json):
    """Sample checkpoints after training: checkpoint × strength × prompt form, with the base model column."""
    from .. import sample as sample_mod
    from ..report import run_ids
    from ..errors import BadInput
    from .run import gpu_option

    root, _ = recorded_ledger(ctx)
    try:
        seed_list = [int(s) for s in seeds.split(",")] if seeds else None
    except ValueError:
        raise BadInput(f"--seeds {seeds!r}: give whole numbers such as 1,2,3") from None
    if seed_list and not all(0 <= s < 2**32 for s in seed_list):
        raise BadInput(f"--seeds {seeds!r}: seeds are whole numbers from 0 to {2**32 - 1}")
    request = sample_mod.Request(checkpoints=checkpoints, strengths=sample_mod.parse_strengths(strengths),
                                 kinds=[k.strip() for k in kinds.split(",") if k.strip()], extra_prompts=list(extra),
                                 seeds=seed_list, base=not no_base, max_images=max_images, batch_size=batch_size,
                                 best_by=best_by)
    gpus = gpu_option(gpu)
    sample_mod.check_prompts(extra)
    jobs = [sample_mod.prepare(root, run_id, request, gpus) for run_id in run_ids(root, refs)]  # all checked first
    say = (lambda _: None) if as_json else click.echo
    results = []
    for job in jobs:
        say(f"sampling {job.run.run_id}: {sum(len(p.cells) for p in job.passes)} image(s) in {len(job.passes)} pass(es)")
        results.append(sample_mod.run(job, say))
        done = results[-1]
        say(f"  {done['status']}: {done['images']}/{done['planned']} images in {done['folder']}")
        if done["status"] == "stopped":
            break
    if as_json:
        print_json({"jobs": results}, schema="sample")
    else:
        say("see them: kr report " + " ".join(r["run_id"] for r in results))
    if any(r["status"] == "stopped" for r in results):
        raise SystemExit(1)

