"""How fast `kr` starts: `kr --help` and `kr --version`, wall time over repeated runs (median and best).

    python bench/bench_startup.py [--runs 30]

Target (issue 2/4): `kr` start under 150 ms. Also prints the heavy modules `kr --help` imports, which must
be none of torch, tensorboard, matplotlib, PIL, pydantic.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

HEAVY = ("torch", "tensorboard", "matplotlib", "PIL", "pydantic", "numpy", "safetensors", "diffusers", "rich")


def kr_command() -> list[str]:
    exe = shutil.which("kr")
    return [exe] if exe else [sys.executable, "-m", "kohya_runner"]


def time_command(args: list[str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(kr_command() + args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append((time.perf_counter() - start) * 1000)
    return times


def heavy_imports() -> list[str]:
    code = "import sys; from kohya_runner.cli import main\ntry:\n main(['--help'])\nexcept SystemExit: pass\n" \
           "print(' '.join(sorted(m for m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")[-2]
    loaded = set(out.split())
    return [m for m in HEAVY if m in loaded]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    time_command(["--version"], 3)  # warm the page cache
    print(f"{'command':<16}{'median ms':>10}{'best ms':>10}{'runs':>6}")
    for label, argv in (("kr --help", ["--help"]), ("kr --version", ["--version"]),
                        ("kr presets ls", ["presets", "ls"])):
        times = time_command(argv, args.runs)
        print(f"{label:<16}{statistics.median(times):>10.1f}{min(times):>10.1f}{args.runs:>6}")
    print(f"heavy modules loaded by `kr --help`: {', '.join(heavy_imports()) or 'none'}")


if __name__ == "__main__":
    main()
