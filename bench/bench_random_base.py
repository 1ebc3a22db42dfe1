"""Build time, peak RSS and file size of kr's random full-size bases.

    python bench/bench_random_base.py                 # sd15 and sdxl, files deleted afterwards
    python bench/bench_random_base.py sd15 --keep --out-dir /data/bases --seed 3

Each family is built in a fresh child process, so its peak RSS (ru_maxrss) is its own.
Needs about 8.5 GB of free disk for both families (2 GiB + 6.5 GiB).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build_in_this_process(family: str, out_dir: Path, seed: int) -> dict:
    sys.path.insert(0, str(REPO))
    from kohya_runner.bases import write_random_base

    start = time.perf_counter()
    path = write_random_base(family, out_dir, seed=seed, overwrite=True)
    seconds = time.perf_counter() - start
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return {"family": family, "seconds": round(seconds, 1), "peak_rss_gib": round(peak_kib / 2**20, 2),
            "size_gib": round(path.stat().st_size / 2**30, 3), "path": str(path)}


def run_child(family: str, out_dir: Path, seed: int) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, __file__, "--child", family, "--out-dir", str(out_dir), "--seed", str(seed)]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        sys.exit(f"{family} build failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def machine() -> str:
    import torch

    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{platform.machine()}, {os.cpu_count()} CPUs, {memory_gib:.0f} GiB RAM, Python "
            f"{platform.python_version()}, torch {torch.__version__}, torch threads {torch.get_num_threads()}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("families", nargs="*", help="sd15 and/or sdxl (default: both)")
    parser.add_argument("--out-dir", type=Path, help="where to write the bases (default: a temp folder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the written bases")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    families = args.families or ["sd15", "sdxl"]
    if set(families) - {"sd15", "sdxl"}:  # argparse's choices= rejects an empty nargs="*" on 3.11
        parser.error(f"families must be sd15 and/or sdxl, not {' '.join(families)}")

    if args.child:
        print(json.dumps(build_in_this_process(args.child, args.out_dir, args.seed)))
        return

    out_dir = args.out_dir or Path(tempfile.mkdtemp(prefix="kr-bench-bases-"))
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}")
    print(f"{'family':<8}{'build s':>9}{'peak RSS GiB':>14}{'file GiB':>10}")
    for family in families:
        row = run_child(family, out_dir, args.seed)
        print(f"{family:<8}{row['seconds']:>9}{row['peak_rss_gib']:>14}{row['size_gib']:>10}", flush=True)
        if not args.keep:
            Path(row["path"]).unlink()
    if not args.keep and not args.out_dir:
        out_dir.rmdir()


if __name__ == "__main__":
    main()
