"""kr's fixed cost per run: wall time of `kr run` minus launching the same trainer on the same rendered files
by hand, median of alternating pairs.

    python bench/bench_run_overhead.py --trainer standin [--pairs 5]      # tests/fault_trainer.py (≈ 3 s runs)
    python bench/bench_run_overhead.py --trainer tiny [--pairs 3]         # kr's built-in tiny trainer
    python bench/bench_run_overhead.py --trainer sd-scripts --pairs 1     # real sd-scripts SD1.5 at 64 px, 6 steps
                                                                          # (. /work/real/env.sh first; ≈ 3 min a run)

`kr run` does everything it does for a user: validation, the dataset check (reused when its inputs have not
changed), render, cache folder, supervision with the live view, ledger, checkpoints verified as they appear,
archive, loss.png. "By hand" renders with `kr render` (not timed) and runs the trainer's command line with
kr's offline environment. Both sides are warmed once (latent caches, dataset check memo), then timed in
alternating pairs; the figure is the median of the per-pair differences. Target (issue 12): ≤ 1.0 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def kr(*args: str) -> list[str]:
    return [sys.executable, "-m", "kohya_runner", *map(str, args)]


def standin(home: Path) -> tuple[list[str], list[str], dict, callable]:
    """The fault stand-in behind a stand-in sd-scripts checkout, the marker preset, 3 images."""
    sys.path.insert(0, str(REPO / "tests"))
    import conftest
    from PIL import Image

    checkout = conftest.make_standin_checkout(home / "standin", "fault")
    images = home / "images"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 64), (40 * i, 90, 200)).save(images / f"img{i}.png")
        (images / f"img{i}.txt").write_text(f"in the style of TOK, a shape {i}")
    base = conftest._header_base(home / "base.safetensors", conftest.SDXL_KEYS)
    env = {"KR_SD_SCRIPTS": str(checkout), "KR_SD_PYTHON": sys.executable, "KR_VENDOR_DIR": str(home / "vendor"),
           "KR_FAULT": "slow", "KR_FAULT_DELAY": "0.2"}
    args = ["marker", "--dataset", images, "--base", base, "training.epochs=3"]
    return args, [], env, lambda out: [sys.executable, str(checkout / "sdxl_train_network.py"), "--config_file",
                                       str(out / "config.toml")]


def tiny(home: Path):
    from kohya_runner.tiny import build_tiny_base, write_style_dataset

    build_tiny_base(home / "bases" / "tiny-sdxl", "sdxl")
    images = write_style_dataset(home / "images")
    args = ["tiny-demo", "--dataset", images, "--base", "tiny", "training.epochs=6"]
    return args, [], {}, lambda out: [sys.executable, "-m", "kohya_runner.tiny", "--config_file", str(out / "config.toml")]


def sd_scripts(home: Path):
    """Recipe A of /work/real/RECIPE.md (the environment from /work/real/env.sh)."""
    base = Path(os.environ["KR_HOME"]) / "bases" / "kr-random-sd15-seed0.safetensors"
    tokenizers = Path(os.environ["KR_HOME"]) / "tokenizers"
    (home / "tokenizers").symlink_to(tokenizers)
    args = ["sd15-lora", "--dataset", "/work/real/data", "--base", base, "dataset.resolution=64",
            "dataset.min_bucket_reso=64", "dataset.max_bucket_reso=128", "training.steps=6", "training.epochs=none",
            "sampling.prompts=[]"]
    python, script = os.environ["KR_SD_PYTHON"], Path(os.environ["KR_SD_SCRIPTS"]) / "train_network.py"
    return args, ["--gpu", "cpu"], {}, lambda out: [python, str(script), "--config_file", str(out / "config.toml")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trainer", choices=["standin", "tiny", "sd-scripts"], default="standin")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--no-warm", action="store_true", help="count the first pair too (no warm-up round)")
    args = parser.parse_args()
    from kohya_runner.sdscripts.environment import OFFLINE_ENV

    home = Path(tempfile.mkdtemp(prefix="kr-bench-overhead-"))
    try:
        setup = {"standin": standin, "tiny": tiny, "sd-scripts": sd_scripts}[args.trainer]
        run_args, run_only, extra_env, hand_argv = setup(home)
        env = {**os.environ, **extra_env, "KR_HOME": str(home), "PYTHONPYCACHEPREFIX": str(home / "pycache")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: byte code cached (written in the warm-up round)
        hand_env = {**env, **OFFLINE_ENV}
        if args.trainer == "sd-scripts":
            hand_env["CUDA_VISIBLE_DEVICES"] = ""

        def by_hand(index: int) -> tuple[list[str], Path]:
            out = home / f"by-hand-{index}"
            subprocess.run(kr("render", *run_args, "-o", out), env=env, check=True, capture_output=True)
            return hand_argv(out), out

        rounds = args.pairs + (0 if args.no_warm else 1)
        pairs: list[tuple[float, float]] = []
        for index in range(rounds):
            times = {}
            for label in (("kr run", "by hand") if index % 2 == 0 else ("by hand", "kr run")):
                if label == "kr run":
                    command, cwd, run_env = kr("run", *run_args, *run_only, "--json"), home, env
                else:
                    command, cwd = by_hand(index)
                    run_env = hand_env
                start = time.perf_counter()
                subprocess.run(command, env=run_env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               cwd=cwd)
                times[label] = time.perf_counter() - start
            counted = index >= rounds - args.pairs
            print(f"pair {index}{'' if counted else ' (warm-up)'}: kr run {times['kr run']:.2f} s, by hand "
                  f"{times['by hand']:.2f} s, difference {times['kr run'] - times['by hand']:+.2f} s", flush=True)
            if counted:
                pairs.append((times["kr run"], times["by hand"]))
        differences = [k - h for k, h in pairs]
        kr_median, hand_median = statistics.median(k for k, _ in pairs), statistics.median(h for _, h in pairs)
        print(f"{args.trainer}: {len(pairs)} alternating pair(s); median kr run {kr_median:.2f} s, by hand "
              f"{hand_median:.2f} s; fixed cost (median of pair differences) {statistics.median(differences):+.2f} s "
              f"= {100 * statistics.median(differences) / hand_median:+.1f} % (target ≤ 1.0 s)")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
