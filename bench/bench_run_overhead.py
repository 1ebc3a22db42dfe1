"""Wall-time overhead of `kr run` over launching the same trainer with the same files by hand.

    python bench/bench_run_overhead.py [--epochs 12] [--repeat 3]

Both sides train the built-in tiny trainer on the demo images with the tiny-demo preset: `kr run`
(validation, dataset check, render, supervision, live view, ledger, archive with LoRA verification,
loss.csv/png and the manifest) against `python -m kohya_runner.tiny --config_file` on files rendered
by `kr render`. Each side is warmed once (latent caches exist for both), then timed alternately.
Target (issue 4): ≤ 2 %.
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

from kohya_runner.sdscripts.environment import OFFLINE_ENV


def kr(*args: str, env: dict) -> list[str]:
    return [sys.executable, "-m", "kohya_runner", *args]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="kr-bench-overhead-"))
    env = {**os.environ, "KR_HOME": str(home)}
    try:
        from kohya_runner.tiny import build_tiny_base, make_demo_dataset

        build_tiny_base(home / "bases" / "tiny-sdxl", "sdxl")
        images = make_demo_dataset(home / "images")
        overrides = [f"training.epochs={args.epochs}"]
        run_cmd = kr("run", "tiny-demo", "--dataset", str(images), "--base", "tiny", *overrides, "--json", env=env)

        def by_hand(index: int) -> list[str]:
            out = home / f"by-hand-{index}"
            subprocess.run(kr("render", "tiny-demo", "--dataset", str(images), "--base", "tiny", *overrides,
                              "-o", str(out), env=env), env=env, check=True, capture_output=True)
            return [sys.executable, "-m", "kohya_runner.tiny", "--config_file", str(out / "config.toml")]

        hand_env = {**env, **OFFLINE_ENV}
        timings: dict[str, list[float]] = {"kr run": [], "by hand": []}
        for index in range(args.repeat + 1):  # the first round warms caches and is not counted
            for label in ("kr run", "by hand"):
                command = run_cmd if label == "kr run" else by_hand(index)
                start = time.perf_counter()
                subprocess.run(command, env=env if label == "kr run" else hand_env, check=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=home)
                if index:
                    timings[label].append(time.perf_counter() - start)
        print(f"tiny-demo, {args.epochs} epochs ({args.epochs * 8} steps), {args.repeat} timed runs each")
        print(f"{'launch':<10}{'median s':>9}{'best s':>9}  runs")
        for label, values in timings.items():
            print(f"{label:<10}{statistics.median(values):>9.2f}{min(values):>9.2f}  " + " ".join(f"{v:.2f}" for v in values))
        for name, pick in (("median", statistics.median), ("best", min)):
            kr_s, hand_s = pick(timings["kr run"]), pick(timings["by hand"])
            print(f"overhead ({name}): {kr_s - hand_s:+.2f} s = {100 * (kr_s - hand_s) / hand_s:+.1f} % (target ≤ 2 %)")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
