"""Time `kohya_runner.dataset.check` on 1,000 synthetic 512x512 PNGs with captions.

The images are built once (in parallel) into a temp folder, or into --dir, which is kept and reused
on the next run. Each image is a smooth random field plus light noise, so PNG sizes (~0.5 MB) and
decode costs resemble real pictures rather than flat colour.

    python bench/bench_dataset_check.py            # build in a temp dir, time 3 checks
    python bench/bench_dataset_check.py --dir /tmp/kr-bench --repeat 5 --workers 1
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kohya_runner.dataset import DatasetSettings, TrainingPlan, check  # noqa: E402

TARGET_SECONDS = 10.0


def make_one(args: tuple[str, int, int]) -> None:
    import numpy as np
    from PIL import Image

    folder, index, size = args
    rng = np.random.default_rng(index)
    coarse = Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
    pixels = np.asarray(coarse, dtype=np.int16) + rng.integers(-6, 7, (size, size, 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(Path(folder) / f"img{index:04d}.png")
    (Path(folder) / f"img{index:04d}.txt").write_text(f"in the style of TOK, a synthetic picture number {index}")


def build(folder: Path, count: int, size: int) -> float:
    existing = len(list(folder.glob("img*.png")))
    if existing >= count:
        return 0.0
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(make_one, [(str(folder), i, size) for i in range(count)], chunksize=16))
    return time.perf_counter() - start


def cpu_seconds() -> float:
    """CPU time of this process and its reaped children: what the check costs whatever else runs."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="dataset folder to build into and keep (default: a temp dir)")
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="decode processes (default: check's own choice)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="kr-bench-") as tmp:
        folder = args.dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        built = build(folder, args.count, args.size)
        if built:
            print(f"built {args.count} images of {args.size}x{args.size} in {built:.1f} s")
        settings = DatasetSettings(dir=folder, family="sd15", trigger="TOK", resolution=args.size, batch_size=2, num_repeats=2)
        plan = TrainingPlan(max_train_epochs=10, family="sd15", save_every_n_epochs=2, sample_every_n_epochs=2, sample_prompts=4)
        times, cpu = [], []
        for _ in range(args.repeat):
            start, start_cpu = time.perf_counter(), cpu_seconds()
            report = check(settings, plan, workers=args.workers)
            times.append(time.perf_counter() - start)
            cpu.append(cpu_seconds() - start_cpu)
        best, median = min(times), statistics.median(times)
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(
            f"check of {report.images} images: best {best:.2f} s, median {median:.2f} s wall over {len(times)} runs; "
            f"{statistics.median(cpu):.2f} CPU-s per run ({os.cpu_count()} CPUs, load {load:.1f} before the last run; "
            f"{len(report.errors)} errors, {len(report.warnings)} warnings; target < {TARGET_SECONDS:.0f} s)"
        )
        return 0 if median < TARGET_SECONDS else 1


if __name__ == "__main__":
    raise SystemExit(main())
