"""Benchmark `kr demo` for each style, as a user runs it: wall time and peak memory of the process tree.

"cold" is a fresh workspace (kr builds the tiny base from its committed weights and writes the style's
demo dataset first); "warm" is a second demo in the same workspace. Peak memory is the tree's PSS
(shared pages counted once, as kr's own runs report it) and, beside it, the sum of RSS.
Targets (issue 13): <= 60 s wall and <= 2 GB on 2 CPU cores, for every style.

    python bench/bench_demo.py [--styles marker,zine,editorial-cartoon] [--workdir DIR] [--keep]
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
TARGET_WALL_S = 60.0
TARGET_MEMORY_MIB = 2048.0
STYLES = ("marker", "zine", "editorial-cartoon")


def measure(command: list[str], env: dict) -> tuple[float, float, float, int]:
    """(wall seconds, peak PSS MiB, peak RSS-sum MiB, return code) of a command's process tree."""
    sys.path.insert(0, str(REPO))
    from kohya_runner.usage import tree_memory, tree_rss

    start = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    peak_pss = peak_rss = 0
    while process.poll() is None:
        peak_pss, peak_rss = max(peak_pss, tree_memory(process.pid)), max(peak_rss, tree_rss(process.pid))
        time.sleep(0.1)
    wall = time.perf_counter() - start
    if process.returncode != 0:
        sys.stderr.write(process.stderr.read().decode(errors="replace")[-3000:])
    return wall, peak_pss / 2**20, peak_rss / 2**20, process.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--styles", default=",".join(STYLES))
    parser.add_argument("--workdir", type=Path, default=None, help="where the workspaces go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the workspaces")
    options = parser.parse_args()
    work = options.workdir or Path(tempfile.mkdtemp(prefix="kr-bench-demo-"))
    rows = []
    for style in options.styles.split(","):
        home = work / style
        shutil.rmtree(home, ignore_errors=True)
        env = {**os.environ, "KR_HOME": str(home), "PYTHONPATH": str(REPO)}
        command = [sys.executable, "-m", "kohya_runner", "demo", "--style", style, "--json"]
        for kind in ("cold", "warm"):
            wall, pss, rss, code = measure(command, env)
            assert code == 0, f"kr demo --style {style} ({kind}) failed"
            rows.append({"style": style, "run": kind, "wall_s": round(wall, 1), "peak_pss_mib": round(pss),
                         "peak_rss_sum_mib": round(rss)})
    print(f"{'kr demo --style':<20} {'run':<5} {'wall s':>7} {'peak PSS MiB':>13} {'RSS sum MiB':>12}")
    for row in rows:
        print(f"{row['style']:<20} {row['run']:<5} {row['wall_s']:7.1f} {row['peak_pss_mib']:13d} "
              f"{row['peak_rss_sum_mib']:12d}")
    ok = all(r["wall_s"] <= TARGET_WALL_S and r["peak_pss_mib"] <= TARGET_MEMORY_MIB for r in rows)
    print(f"targets: <= {TARGET_WALL_S:.0f} s wall, <= {TARGET_MEMORY_MIB:.0f} MiB peak PSS: {'met' if ok else 'MISSED'}"
          f" (load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    results = REPO / "bench" / "results"
    results.mkdir(exist_ok=True)
    (results / "bench_demo.json").write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    if not options.keep and options.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
