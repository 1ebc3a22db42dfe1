"""Time `kr report` on a synthetic finished run: 10 saved epochs × 8 prompts (+ the base-model column).

The run folder (ledger row, spec.json, 88 sample PNGs named as sd-scripts names them, checkpoints,
archive/loss.csv and loss.png, manifest, trainer log) is built without training, into a temp workspace.
Each sample is a smooth random field with light noise at the given size (1024 = SDXL's sample size).

    python bench/bench_report.py                 # 1024 px samples, 3 repeats
    python bench/bench_report.py --size 512 --repeat 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

TARGET_SECONDS = 5.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="sample image side in pixels (default 1024)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--subjects", type=int, default=4, help="subjects; each is sampled with and without the trigger")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from synthetic_run import make_run

    from kohya_runner import runfolder
    from kohya_runner.report import run_report

    with tempfile.TemporaryDirectory(prefix="kr-bench-report-") as tmp:
        home = Path(tmp) / "home"
        start = time.perf_counter()
        row = make_run(home, subjects=args.subjects, epochs=args.epochs, size=args.size)
        built = time.perf_counter() - start
        samples = len(list(runfolder.of(row.run_dir).samples.glob("*.png")))
        print(f"built {row.run_id}: {samples} samples of {args.size}x{args.size} in {built:.1f} s")
        times = []
        for i in range(args.repeat):
            start = time.perf_counter()
            result = run_report(home, row.run_id)  # the first run includes matplotlib's and PIL's imports
            times.append(time.perf_counter() - start)
            layout = result["sheet_layout"]
            print(f"  report {i + 1}: {times[-1]:.2f} s  ({layout['rows']} rows x {layout['columns']} columns, "
                  f"sheet {layout['width']}x{layout['height']})")
        worst = max(times)
        print(f"report: first {times[0]:.2f} s, median {statistics.median(times):.2f} s, worst {worst:.2f} s "
              f"(target < {TARGET_SECONDS:.0f} s)")
        return 0 if worst < TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
