"""Benchmark the sampling share of a training run, before and after lean in-training sampling (issue 14).

The marker preset, on kr's tiny model (its dataset from `kr demo --write-dataset`), run twice in one go:

- before: every prompt in every form (6 subjects × trigger / no trigger / 1 variant = 18 images) every 2
  epochs and before training, no post-hoc grid (the presets until issue 14);
- after:  the shipped preset: a sanity sample of 2 subjects with the trigger every 4 epochs, then the
  full grid post hoc (base + final checkpoint × strengths 0.75 and 1, in batches) and the scores.

For each: the in-training sampling share (sum of the sampling rounds / tqdm's training-loop time, from
`kr report --json`), the post-hoc grid's and the scores' time, and images × denoising steps computed for
the real preset (SDXL, 16 epochs, 28 steps). Target: sampling ≤ 10 % of the training loop.

    python bench/bench_sampling_share.py [--epochs 16] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "before": ["sampling.during_training=all", "sampling.every_n_epochs=2", "evaluation.after_training=off"],
    "after": [],  # the preset as shipped
}


def kr(args: list[str], env: dict) -> str:
    done = subprocess.run([sys.executable, "-m", "kohya_runner", *args], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"kr {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def images_times_steps(home: Path, overrides: list[str], env: dict) -> dict:
    """In-training and post-hoc sample images × steps of the real marker preset (no tiny fitting)."""
    sys.path.insert(0, str(REPO))
    from kohya_runner import preset
    from kohya_runner.sdscripts import steps
    from kohya_runner.spec import sample_prompts, training_prompts

    spec = preset.resolve("marker", home, overrides).spec
    plan = steps.plan_from_spec(spec)
    step_math = steps.step_math(50 * spec.dataset.repeats, spec.dataset.batch_size, plan)  # the preset's 50 pictures
    rounds = step_math.sample_rounds
    during = len(training_prompts(spec)) * rounds
    posthoc = 0
    if spec.evaluation.after_training == "grid":
        posthoc = len(sample_prompts(spec)) * (1 + len(spec.evaluation.strengths))
    return {"rounds": rounds, "images_during": during, "steps_during": during * spec.sampling.steps,
            "images_posthoc": posthoc, "steps_posthoc": posthoc * spec.sampling.steps,
            "training_steps": step_math.total_steps}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    options = parser.parse_args()
    work = options.workdir or Path(tempfile.mkdtemp(prefix="kr-bench-share-"))
    home = work / "home"
    env = {**os.environ, "KR_HOME": str(home), "PYTHONPATH": str(REPO)}
    data = work / "marker-data"
    if not data.exists():
        kr(["demo", "--write-dataset", str(data)], env)
    results = {}
    for name, overrides in VARIANTS.items():
        started = time.perf_counter()
        out = json.loads(kr(["run", "marker", "--dataset", str(data), "--base", "tiny", f"training.epochs={options.epochs}",
                             *overrides, "--json"], env))
        wall = time.perf_counter() - started
        run_id = out["run_id"]
        report = json.loads(kr(["report", run_id, "--json"], env))
        timings = report["timings"]
        rounds = timings.get("sample_rounds") or {}
        loop = timings.get("training_loop_seconds") or 0.0
        sampling = sum(v for v in rounds.values() if v)
        jobs = json.loads(kr(["runs", "show", run_id, "--json"], env)).get("posthoc") or {}
        results[name] = {
            "run_id": run_id, "wall_seconds": round(wall, 1), "training_loop_seconds": round(loop, 1),
            "sampling_seconds_in_loop": round(sampling, 1),
            "sampling_share_of_loop": round(sampling / loop, 3) if loop else None,
            "posthoc_images": jobs.get("images"), "posthoc_seconds": jobs.get("seconds"),
            "score_seconds": (jobs.get("scores") or {}).get("seconds"),
            "real_preset": images_times_steps(home, overrides, env),
        }
        print(json.dumps({name: results[name]}, indent=2), flush=True)
    if "before" in results and "after" in results:
        before, after = results["before"], results["after"]
        print(f"sampling share of the training loop: {before['sampling_share_of_loop']:.1%} before, "
              f"{after['sampling_share_of_loop']:.1%} after (target <= 10 %); real preset: "
              f"{before['real_preset']['steps_during']} -> {after['real_preset']['steps_during']} denoising steps "
              f"in the loop, {after['real_preset']['steps_posthoc']} post hoc")
    out_file = REPO / "bench" / "results" / "bench_sampling_share.json"
    out_file.write_text(json.dumps({"epochs": options.epochs, "results": results}, indent=2) + "\n")
    if not options.keep and options.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
