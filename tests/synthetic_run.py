"""A finished run made without training: a ledger row and a run folder with spec.json, sample PNGs named
the way sd-scripts names them (contract §4.1), checkpoint files, archive/loss.csv, loss.png, manifest.json
and a trainer log. For report tests and bench/bench_report.py."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Optional

SUBJECTS = ["a man thinking", "a happy woman drinking coffee", "an hourglass with sand flowing", "a busy city street",
            "a cat sleeping on a windowsill", "a bicycle against a brick wall", "a lighthouse at night", "a bowl of fruit"]


def sample_image(path: Path, size: tuple[int, int], seed: int, shift: float) -> None:
    """A smooth random field with light noise: decodes like a real picture, not like flat colour."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = (rng.random((8, 8, 3)) * 255 * (1 - shift) + 200 * shift).astype(np.uint8)
    field = Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)
    pixels = np.asarray(field, dtype=np.int16) + rng.integers(-5, 6, (size[1], size[0], 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, compress_level=1)


def make_run(home: Path, *, subjects: int = 4, epochs: int = 10, every: int = 1, size: int = 512,
             at_first: bool = True, step_based: bool = False, steps_per_epoch: int = 10, variants: int = 0,
             missing: tuple = (), overrides: tuple = (), status: str = "succeeded", with_loss_png: bool = True,
             sweep_id: Optional[str] = None):
    """A finished run of preset tiny-demo; returns its ledger row. `missing` lists (column key, ii) to leave out."""
    from kohya_runner import atomic, metrics, workspace
    from kohya_runner.ledger import open_ledger
    from kohya_runner.preset import resolve
    from kohya_runner.spec import sample_prompts

    prompts = json.dumps(SUBJECTS[:subjects])
    variant_list = json.dumps([f"a picture of {{subject}}, {{trigger}} look {i}" for i in range(variants)])
    sampling = ["sampling.every_n_epochs=none", f"sampling.every_n_steps={every * steps_per_epoch}"] if step_based \
        else [f"sampling.every_n_epochs={every}"]
    saving = ["saving.every_n_epochs=none", f"saving.every_n_steps={every * steps_per_epoch}"] if step_based \
        else [f"saving.every_n_epochs={every}"]
    resolved = resolve("tiny-demo", home, [f"sampling.prompts={prompts}", f"sampling.variants={variant_list}",
                                           f"training.epochs={epochs}", f"sampling.width={size}",
                                           f"sampling.height={size}", f"sampling.at_first={str(at_first).lower()}",
                                           *sampling, *saving, *overrides], {"dataset.dir": "/data/synthetic"})
    spec = resolved.spec
    ledger = open_ledger(home)
    row = ledger.create_run(spec.name, workspace.runs_dir(home), preset="tiny-demo", spec_hash=spec.hash(),
                            backend="tiny", sweep_id=sweep_id)
    run_dir = Path(row.run_dir)
    atomic.write_text(run_dir / "spec.json", spec.model_dump_json(indent=2))
    name, total_steps = spec.output_name, epochs * steps_per_epoch
    sample_dir = run_dir / "output" / "sample"
    sample_dir.mkdir(parents=True)
    started = time.time() - 600
    points: list = []
    for step in range(1, total_steps + 1):
        wall = started + 30 + step
        value = 0.6 + 0.4 * math.exp(-step / total_steps * 3) + 0.02 * math.sin(step)
        points += [metrics.Point("loss/current", step, wall, value), metrics.Point("loss/average", step, wall, value),
                   metrics.Point("lr/unet", step, wall, 1e-3)]
        if step % steps_per_epoch == 0:
            points.append(metrics.Point("loss/epoch_average", step // steps_per_epoch, wall, value))
    rounds = ([("e", 0)] if at_first else []) + [
        ("s" if step_based else "e", n) for n in range(every, epochs + 1, every)]
    texts = sample_prompts(spec)
    stamp_time = time.localtime(started)
    for kind, n in rounds:
        label = f"e{n:06d}" if kind == "e" else f"{n * steps_per_epoch:06d}"
        key = f"e{n:06d}" if kind == "e" else f"s{n * steps_per_epoch:06d}"
        for prompt in texts:
            if (key, prompt.index) in missing:
                continue
            stamp = time.strftime("%Y%m%d%H%M%S", stamp_time)
            path = sample_dir / f"{name}_{label}_{prompt.index:02d}_{stamp}_{prompt.seed}.png"
            sample_image(path, (size, size), prompt.seed, shift=min(0.8, n / max(1, epochs)) if prompt.kind == "trigger"
                         else 0.1 * n / max(1, epochs))
    output = run_dir / "output"
    empty_lora = b"\x08\x00\x00\x00\x00\x00\x00\x00{}      "
    for n in range(every, epochs + 1, every):
        if n == epochs:
            continue
        file = f"{name}-step{n * steps_per_epoch:08d}.safetensors" if step_based else f"{name}-{n:06d}.safetensors"
        (output / file).write_bytes(empty_lora)
    if status == "succeeded":
        (output / f"{name}.safetensors").write_bytes(empty_lora)
    archive_dir = run_dir / "archive"
    archive_dir.mkdir()
    atomic.write_text(archive_dir / "loss.csv", metrics.csv_text(points))
    if with_loss_png:
        metrics.plot_losses(metrics.by_tag(points), archive_dir / "loss.png", row.run_id)
    finished = started + 60 + total_steps
    manifest = {"run": {"run_id": row.run_id, "started_at": started, "finished_at": finished,
                        "steps_total": total_steps, "epochs_total": epochs, "steps_done": total_steps},
                "outcome": {"status": status, "message": "synthetic"}, "losses": {}, "loras": [], "samples": []}
    atomic.write_text(archive_dir / "manifest.json", json.dumps(manifest))
    (run_dir / "trainer.log").write_text(
        f"running training\nsteps: 100%|##########| {total_steps}/{total_steps} [01:40<00:00,  1.25it/s, avr_loss=0.61]\n")
    ledger.update(row.run_id, started_at=started, steps_done=total_steps, steps_total=total_steps, epoch=epochs,
                  epochs_total=epochs, it_per_s=1.25, loss=value)
    ledger.finish(row.run_id, status, finished_at=finished,
                  result_path=str(output / f"{name}.safetensors") if status == "succeeded" else None)
    return ledger.get(row.run_id)
