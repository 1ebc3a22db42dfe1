"""Benchmark the demo run of the built-in tiny trainer: wall time and peak RSS of the process tree.

The run is the `marker` demo scaled down: 16 procedurally drawn images, 64 px buckets, ~100
optimizer steps (batch 2, 12 epochs), 4 sample prompts rendered at the first step and at the end.
"cold" includes building the tiny SDXL base and the demo images (in their own process, as kr does
on first use); "warm" reuses them. Targets: <= 60 s wall and <= 2 GB peak RSS on 2 CPU cores.

    /work/venv/bin/python bench/bench_demo.py [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_WALL_S = 60.0
TARGET_RSS_MB = 2048.0
PROMPTS = ["a cup of coffee", "an hourglass", "a city street", "a man thinking"]


def env() -> dict:
    values = dict(os.environ)
    values.update(PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", WANDB_MODE="disabled")
    values["PYTHONPATH"] = str(REPO) + os.pathsep + values.get("PYTHONPATH", "")
    return values


def measure(command: list[str], cwd: Path) -> tuple[float, float, int]:
    """(wall seconds, peak RSS of the process tree in MiB, return code)."""
    import psutil

    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    peak = 0
    tree = psutil.Process(process.pid)
    stderr_tail: list[bytes] = []
    reader = threading.Thread(target=lambda: stderr_tail.extend(process.stderr), daemon=True)
    reader.start()
    while process.poll() is None:
        try:
            members = [tree] + tree.children(recursive=True)
            peak = max(peak, sum(_rss(p) for p in members))
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.05)
    wall = time.perf_counter() - start
    reader.join(timeout=5)
    if process.returncode != 0:
        sys.stderr.write(b"".join(stderr_tail[-40:]).decode(errors="replace"))
    return wall, peak / 2**20, process.returncode


def _rss(process) -> int:
    try:
        return process.memory_info().rss
    except Exception:
        return 0


def write_run_files(work: Path, base: Path, images: Path, run: str) -> Path:
    prompts = work / "sample_prompts.txt"
    prompts.write_text("".join(f"in the style of TOK, {p} --w 64 --h 64 --d {i} --s 20 --l 5.0\n"
                               for i, p in enumerate(PROMPTS)), encoding="utf-8")
    dataset = work / "dataset.toml"
    dataset.write_text(textwrap.dedent(f"""\
        [general]
        caption_extension = ".txt"
        [[datasets]]
        resolution = 64
        batch_size = 2
        enable_bucket = true
        min_bucket_reso = 32
        max_bucket_reso = 128
        bucket_reso_steps = 32
          [[datasets.subsets]]
          image_dir = "{images}"
          num_repeats = 1
        """), encoding="utf-8")
    config = work / f"{run}.toml"
    config.write_text(textwrap.dedent(f"""\
        [model]
        pretrained_model_name_or_path = "{base}"
        dataset_config = "{dataset}"
        [output]
        output_dir = "{work / run / 'out'}"
        output_name = "marker-demo"
        save_model_as = "safetensors"
        save_precision = "fp16"
        [network]
        network_module = "networks.lora"
        network_dim = 8
        network_alpha = 8.0
        network_train_unet_only = true
        [optimizer]
        optimizer_type = "AdamW"
        learning_rate = 1.0e-2
        lr_scheduler = "constant"
        max_train_epochs = 12
        mixed_precision = "no"
        seed = 1234
        cache_latents = true
        [logging]
        logging_dir = "{work / run / 'tb'}"
        log_prefix = "{run}_"
        console_log_simple = true
        [sample]
        sample_prompts = "{prompts}"
        sample_at_first = true
        sample_every_n_epochs = 12
        """), encoding="utf-8")
    return config


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=None, help="where to build (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir")
    options = parser.parse_args()
    work = options.workdir or Path(tempfile.mkdtemp(prefix="kr-bench-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    base, images = work / "base-sdxl", work / "demo-images"
    for stale in (base, images):
        shutil.rmtree(stale, ignore_errors=True)

    prepare = [sys.executable, "-c",
               "from pathlib import Path; from kohya_runner.tiny.base import build_tiny_base; "
               "from kohya_runner.tiny.demo_data import make_demo_dataset; "
               f"build_tiny_base(Path({str(base)!r}), 'sdxl'); make_demo_dataset(Path({str(images)!r}))"]
    train = [sys.executable, "-m", "kohya_runner.tiny", "--config_file"]

    rows = []
    prep_wall, prep_rss, rc = measure(prepare, work)
    assert rc == 0, "building the base failed"
    cold_wall, cold_rss, rc = measure(train + [str(write_run_files(work, base, images, "cold"))], work)
    assert rc == 0, "cold demo run failed"
    rows.append(("cold (build base + images, then train)", prep_wall + cold_wall, max(prep_rss, cold_rss)))
    rows.append(("  of which: build base + demo images", prep_wall, prep_rss))
    warm_wall, warm_rss, rc = measure(train + [str(write_run_files(work, base, images, "warm"))], work)
    assert rc == 0, "warm demo run failed"
    rows.append(("warm (base and images exist)", warm_wall, warm_rss))

    print(f"{'demo run (96 steps, 64 px, 16 images, 8 samples)':<48} {'wall s':>8} {'peak RSS MiB':>13}")
    for label, wall, rss in rows:
        print(f"{label:<48} {wall:8.1f} {rss:13.0f}")
    ok = all(wall <= TARGET_WALL_S and rss <= TARGET_RSS_MB for label, wall, rss in rows if not label.startswith(" "))
    print(f"targets: <= {TARGET_WALL_S:.0f} s wall, <= {TARGET_RSS_MB:.0f} MiB peak RSS: {'met' if ok else 'MISSED'}")
    results = REPO / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "bench_demo.json").write_text(json.dumps(
        [{"run": label.strip(), "wall_s": round(wall, 2), "peak_rss_mib": round(rss)} for label, wall, rss in rows],
        indent=2) + "\n", encoding="utf-8")
    if not options.keep and options.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
