"""`kr runs ls` over a ledger of 1,000 runs: wall time of the real command (median of N).

    python bench/bench_runs_ls.py [--runs 1000] [--repeat 10]

Target (issue 4): ≤ 300 ms.
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


def fill(home: Path, count: int) -> None:
    from kohya_runner.ledger import open_ledger

    ledger = open_ledger(home)
    statuses = ("succeeded", "failed", "stopped", "diverged", "crashed")
    for i in range(count):
        row = ledger.create_run(("marker", "zine", "editorial-cartoon")[i % 3], home / "runs", preset="marker",
                                spec_hash=f"{i:016x}", backend="sd-scripts")
        ledger.update(row.run_id, started_at=time.time() - 3600, steps_done=1600, steps_total=1600, epoch=16,
                      epochs_total=16, it_per_s=1.4)
        ledger.finish(row.run_id, statuses[i % len(statuses)], loss=0.08 + i * 1e-5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="kr-bench-ls-"))
    try:
        fill(home, args.runs)
        kr = [shutil.which("kr")] if shutil.which("kr") else [sys.executable, "-m", "kohya_runner"]
        env = {**os.environ, "KR_HOME": str(home)}
        results = {}
        for label, extra in (("kr runs ls", []), ("kr runs ls --json", ["--json"])):
            times = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                out = subprocess.run(kr + ["runs", "ls", *extra], env=env, capture_output=True, text=True, check=True)
                times.append((time.perf_counter() - start) * 1000)
            results[label] = (statistics.median(times), min(times), out.stdout.count("\n"))
        print(f"ledger with {args.runs:,} runs")
        print(f"{'command':<22}{'median ms':>10}{'best ms':>10}{'lines':>8}")
        for label, (median, best, lines) in results.items():
            print(f"{label:<22}{median:>10.1f}{best:>10.1f}{lines:>8}")
        print("target: ≤ 300 ms")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
