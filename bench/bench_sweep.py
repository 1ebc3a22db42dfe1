"""Benchmark `kr sweep`: slot scheduling (makespan vs. ideal, idle slots) and the shared cache (encodes).

1. simulation: the scheduler's policy (longest first, next member as soon as a slot frees) on random
   sets of uneven members over 2 slots, against first-come-first-served; makespan / ideal where
   ideal = total member time / slots (a lower bound), and / max(ideal, longest member).
2. real, stand-in trainer: `kr sweep` over 2 CPU slots with 8 members of uneven length (the
   fault-injecting stand-in sd-scripts trainer of the tests, KR_FAULT=slow with different epochs).
   Member time = its trainer's wall time (ledger started_at → last write of its trainer.log);
   makespan = first start → last trainer end. Targets: makespan <= 1.05 x ideal, and no slot idle
   while a member waits (gap between a trainer ending and the next member starting, max < 1 s).
3. real, tiny trainer: a 4-member sweep (2 learning rates x 2 seeds) in a fresh workspace; the cache
   folder is watched every 20 ms and every (file, inode) counted: the tiny trainer writes each cache
   file through a temp file and a rename, so each inode is one VAE (or text-encoder) encode.
   Target: 16 latent encodes for 16 images, not 4 x 16.

    /work/venv/bin/python bench/bench_sweep.py [--workdir DIR] [--keep] [--skip-tiny]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_RATIO = 1.05
TARGET_GAP_S = 1.0
EPOCHS = [12, 10, 8, 6, 5, 4, 3, 2]  # 4 steps an epoch in the stand-in
STEP_DELAY = "0.3"


def env(home: Path, **extra: str) -> dict:
    values = dict(os.environ)
    values.update(KR_HOME=str(home), PYTHONPATH=str(REPO) + os.pathsep + values.get("PYTHONPATH", ""), **extra)
    values.pop("CUDA_VISIBLE_DEVICES", None)
    return values


def kr(home: Path, *args: str, timeout: float = 900, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kohya_runner", *map(str, args)], capture_output=True, text=True,
                          env=env(home, **extra), timeout=timeout)


# ----------------------------------------------------------------------------------------------
# 1. simulation


def list_schedule(durations: list[float], slots: int, gate: float = 0.0) -> float:
    """Makespan of list scheduling in the given order; the first member runs alone for `gate` seconds
    (its caching phase) before the other slots fill."""
    free = [0.0] + [gate] * (slots - 1)
    for d in durations:
        i = min(range(slots), key=lambda k: free[k])
        free[i] += d
    return max(free)


def simulate(trials: int = 2000, slots: int = 2, seed: int = 7) -> dict:
    rng = random.Random(seed)
    rows = {"lpt": [], "fifo": [], "lpt_lb": []}
    for _ in range(trials):
        n = rng.randint(4, 16)
        durations = [rng.uniform(2.0, 20.0) for _ in range(n)]
        ideal = sum(durations) / slots
        bound = max(ideal, max(durations))
        lpt = list_schedule(sorted(durations, reverse=True), slots)
        rows["lpt"].append(lpt / ideal)
        rows["lpt_lb"].append(lpt / bound)
        rows["fifo"].append(list_schedule(durations, slots) / ideal)

    def stats(values: list[float]) -> dict:
        values = sorted(values)
        return {"median": round(values[len(values) // 2], 4), "p95": round(values[int(len(values) * 0.95)], 4),
                "max": round(values[-1], 4), "share_within_1.05": round(sum(v <= 1.05 for v in values) / len(values), 3)}

    bench_set = [e * 4 * float(STEP_DELAY) + 1.5 for e in EPOCHS]  # the real run's members, 1.5 s start-up each
    ideal = sum(bench_set) / slots
    return {
        "trials": trials, "slots": slots, "members": "4-16, each 2-20 s (uniform)",
        "lpt_vs_ideal": stats(rows["lpt"]), "lpt_vs_lower_bound": stats(rows["lpt_lb"]), "fifo_vs_ideal": stats(rows["fifo"]),
        "bench_set": {"durations": [round(d, 2) for d in bench_set], "ideal": round(ideal, 2),
                      "lpt": round(list_schedule(sorted(bench_set, reverse=True), slots) / ideal, 4),
                      "fifo_shortest_first": round(list_schedule(sorted(bench_set), slots) / ideal, 4),
                      "lpt_with_5pct_cache_gate": round(list_schedule(sorted(bench_set, reverse=True), slots,
                                                                       gate=0.05 * bench_set[0]) / ideal, 4)},
    }


# ----------------------------------------------------------------------------------------------
# 2. real sweep over the stand-in trainer


STANDIN = '''import runpy, sys
sys.argv[0] = __file__
runpy.run_path({script!r}, run_name="__main__")
'''


def standin_workspace(root: Path) -> tuple[Path, Path, Path, Path]:
    from PIL import Image

    home = root / "home-standin"
    checkout = root / "standin-sd-scripts"
    checkout.mkdir(parents=True)
    for script in ("sdxl_train_network.py", "train_network.py"):
        (checkout / script).write_text(STANDIN.format(script=str(REPO / "tests" / "fault_trainer.py")))
    images = root / "style"
    images.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 64), (40 * i, 90, 200)).save(images / f"img{i}.png")
        (images / f"img{i}.txt").write_text(f"in the style of TOK, a shape {i}")
    base = root / "base.safetensors"
    base.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    return home, checkout, images, base


def bench_standin(root: Path) -> dict:
    sys.path.insert(0, str(REPO))  # this checkout's kohya_runner, as the kr subprocesses use it
    from kohya_runner import runfolder

    home, checkout, images, base = standin_workspace(root)
    started = time.time()
    result = kr(home, "sweep", "marker", "--dataset", images, "--base", base, "--grid",
                "training.epochs=" + ",".join(map(str, EPOCHS)), "--max-parallel", "2", "--json",
                KR_SD_SCRIPTS=str(checkout), KR_SD_PYTHON=sys.executable, KR_FAULT="slow", KR_FAULT_DELAY=STEP_DELAY)
    wall = time.time() - started
    if result.returncode != 0:
        raise SystemExit(f"stand-in sweep failed:\n{result.stdout}\n{result.stderr}")
    summary = json.loads(result.stdout)
    runs = json.loads(kr(home, "runs", "ls", "--sweep", summary["sweep_id"], "--json").stdout)["runs"]
    spans, launch_delays = [], []
    for run in runs:
        end = runfolder.of(run["run_dir"]).log.stat().st_mtime
        # created_at: the scheduler made the run (then spawned its supervisor); started_at: the trainer started
        spans.append((run["created_at"], end, run["epochs_total"]))
        launch_delays.append(run["started_at"] - run["created_at"])
    spans.sort()
    first = spans[0][0]
    makespan = max(end for _, end, _ in spans) - first
    total = sum(end - start for start, end, _ in spans)
    ideal = total / 2
    # every start after the first two follows the end that freed its slot: the gap is idle slot time
    ends = sorted(end for _, end, _ in spans)
    gaps = []
    for start, _, _ in spans[2:]:
        freed = max(e for e in ends if e <= start) if any(e <= start for e in ends) else start
        gaps.append(start - freed)
    return {"members": len(spans), "epochs_in_start_order": [e for _, _, e in spans],
            "member_seconds": [round(end - start, 2) for start, end, _ in spans], "total_member_seconds": round(total, 2),
            "ideal_seconds": round(ideal, 2), "makespan_seconds": round(makespan, 2),
            "makespan_over_ideal": round(makespan / ideal, 4), "idle_gaps_seconds": [round(g, 2) for g in gaps],
            "max_idle_gap_seconds": round(max(gaps), 2) if gaps else 0.0, "kr_sweep_wall_seconds": round(wall, 2),
            "supervisor_start_to_trainer_seconds": [round(d, 2) for d in launch_delays],
            "statuses": sorted({m["status"] for m in summary["members"]})}


# ----------------------------------------------------------------------------------------------
# 3. real tiny sweep: encodes counted


def bench_tiny(root: Path) -> dict:
    from kohya_runner.tiny import build_tiny_base, write_style_dataset

    home = root / "home-tiny"
    build_tiny_base(home / "bases" / "tiny-sdxl", "sdxl")
    images = write_style_dataset(root / "demo-images", count=16, size=64)
    seen: set[tuple[str, int]] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            caches = home / "caches"
            for folder in caches.iterdir() if caches.is_dir() else []:
                if folder.is_dir() and not folder.name.startswith("."):
                    for entry in os.scandir(folder):
                        if entry.name.endswith(".npz") and ".tmp" not in entry.name:
                            try:
                                seen.add((entry.name, entry.inode()))
                            except OSError:
                                pass
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.time()
    result = kr(home, "sweep", "tiny-demo", "--dataset", images, "--base", "tiny", "--grid", "optimizer.lr=1e-2,3e-2",
                "--seeds", "1,2", "training.epochs=1", "sampling.at_first=false", "sampling.every_n_epochs=100",
                "saving.every_n_epochs=100", "saving.state=false", "--max-parallel", "2", "--json")
    wall = time.time() - started
    stop.set()
    watcher.join()
    if result.returncode != 0:
        raise SystemExit(f"tiny sweep failed:\n{result.stdout}\n{result.stderr}")
    summary = json.loads(result.stdout)
    runs = sorted(json.loads(kr(home, "runs", "ls", "--sweep", summary["sweep_id"], "--json").stdout)["runs"],
                  key=lambda r: r["started_at"])
    latents = [name for name, _ in seen if name.endswith("_sdxl.npz")]
    te = [name for name, _ in seen if name.endswith("_te_outputs.npz")]
    folder = next(p for p in (home / "caches").iterdir() if p.is_dir() and not p.name.startswith("."))
    written = max(p.stat().st_mtime for p in folder.glob("*.npz"))
    return {"members": len(runs), "images": 16, "latent_encodes": len(latents), "te_encodes": len(te),
            "latent_encodes_without_sharing": 16 * len(runs),
            "distinct_latent_files": len(set(latents)), "cache_written_before_2nd_member_started": written < runs[1]["started_at"],
            "first_to_second_start_seconds": round(runs[1]["started_at"] - runs[0]["started_at"], 2),
            "member_seconds": [round(r["duration"], 2) for r in runs], "kr_sweep_wall_seconds": round(wall, 2),
            "files_in_dataset_folder": sorted(p.name for p in images.iterdir() if p.suffix == ".npz")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--skip-tiny", action="store_true")
    args = parser.parse_args()
    root = args.workdir or Path(tempfile.mkdtemp(prefix="kr-bench-sweep-"))
    root.mkdir(parents=True, exist_ok=True)
    report: dict = {"cpus": os.cpu_count(), "load_average_at_start": [round(v, 2) for v in os.getloadavg()]}
    try:
        report["simulation"] = simulate()
        report["standin"] = bench_standin(root)
        if not args.skip_tiny:
            report["tiny"] = bench_tiny(root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(report, indent=2))
    ok = report["standin"]["makespan_over_ideal"] <= TARGET_RATIO and report["standin"]["max_idle_gap_seconds"] < TARGET_GAP_S
    if "tiny" in report:
        ok = ok and report["tiny"]["latent_encodes"] == 16 and not report["tiny"]["files_in_dataset_folder"]
    print(f"\nmakespan / ideal = {report['standin']['makespan_over_ideal']} (target <= {TARGET_RATIO}); "
          f"max idle slot gap {report['standin']['max_idle_gap_seconds']} s (target < {TARGET_GAP_S} s)"
          + (f"; latent encodes {report['tiny']['latent_encodes']} for 16 images x {report['tiny']['members']} members"
             if "tiny" in report else "") + f" → {'OK' if ok else 'MISSED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
