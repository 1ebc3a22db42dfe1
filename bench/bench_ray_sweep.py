"""Makespan of one 4-member tiny sweep: on this machine alone (`kr sweep`, the CPU's one slot) beside the
same members on a two-node Ray cluster on this machine (`kr sweep --ray`, one slot per node), in one run.
Also the memory estimate beside the measured peak (PSS) of each run on the tiny trainer.

    OMP_NUM_THREADS=1 python bench/bench_ray_sweep.py --workdir /tmp/bray
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

MEMBERS = ["--grid", "optimizer.lr=1e-2,3e-2", "--seeds", "1,2"]
SETTINGS = ["training.epochs=4", "sampling.at_first=false"]


def sweep(home: Path, data: Path, extra: list[str], env: dict) -> tuple[float, dict]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "kohya_runner", "sweep", "tiny-demo", "--dataset", str(data), "--base",
                           "tiny", *SETTINGS, *MEMBERS, *extra, "--json"], env={**os.environ, **env, "KR_HOME": str(home)},
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stdout[-2000:] + done.stderr[-2000:])
    return time.monotonic() - started, json.loads(done.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    from kohya_runner.memory import table_estimate
    from kohya_runner.run import load_spec
    from kohya_runner.tiny.styles import write_style_dataset
    from ray_cluster import RESOURCE, Cluster

    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    data = write_style_dataset(args.workdir / "images", count=8, size=64, seed=0)
    env = {"OMP_NUM_THREADS": "1"}
    alone, local = sweep(args.workdir / "local", data, ["--max-parallel", "1"], env)
    print(f"one machine, one slot:   {alone:6.1f} s for {len(local['members'])} members")
    cluster = Cluster({"head": args.workdir / "node-head", "second": args.workdir / "node-second"})
    try:
        spread, remote = sweep(args.workdir / "ray", data, ["--ray", cluster.address, "--ray-resource", RESOURCE],
                               {**env, **cluster.env})
    finally:
        cluster.stop()
    print(f"Ray, two nodes:          {spread:6.1f} s for {len(remote['members'])} members "
          f"({alone / spread:.2f}× faster)")
    rows = json.loads(subprocess.run([sys.executable, "-m", "kohya_runner", "runs", "ls", "--json"],
                                     env={**os.environ, "KR_HOME": str(args.workdir / "local")},
                                     capture_output=True, text=True).stdout)["runs"]
    for row in rows:
        estimate = table_estimate(load_spec(Path(row["run_dir"]))).total
        print(f"{row['run_id']}: estimated {estimate / 2**30:.2f} GiB, measured peak PSS {row['peak_rss'] / 2**30:.2f} GiB "
              f"(ratio {row['peak_rss'] / estimate:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
