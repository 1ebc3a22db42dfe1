"""Loss extraction from a 100,000-step TensorBoard event file: kr's reader vs EventAccumulator (all points).

    python bench/bench_metrics.py [--steps 100000] [--repeat 3]

Target (issue 4): kr's reader ≥ 5× faster than EventAccumulator configured to keep every point
(size_guidance 0), reading the same tags.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

TAGS = ("loss/current", "loss/average", "lr/unet")


def write_file(folder: Path, steps: int) -> Path:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(folder))
    for step in range(1, steps + 1):  # one event per tag per step, as accelerate's tracker writes them
        for tag, value in zip(TAGS, (1.0 / step, 2.0 / step, 1e-4)):
            summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])
            writer.add_event(event_pb2.Event(wall_time=1e9 + step, step=step, summary=summary))
        if step % 1000 == 0:
            summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="loss/epoch_average", simple_value=0.1)])
            writer.add_event(event_pb2.Event(wall_time=1e9 + step, step=step // 1000, summary=summary))
    writer.close()
    return next(folder.glob("events.out.tfevents.*"))


def kr_reader(path: Path) -> int:
    from kohya_runner import metrics

    return len(metrics.read_scalars(path))


def accumulator(folder: Path) -> int:
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(folder), size_guidance={ea.SCALARS: 0})
    acc.Reload()
    return sum(len(acc.Scalars(tag)) for tag in acc.Tags()["scalars"])


def timed(fn, arg, repeat: int) -> tuple[float, int]:
    times, count = [], 0
    for _ in range(repeat):
        start = time.perf_counter()
        count = fn(arg)
        times.append(time.perf_counter() - start)
    return statistics.median(times), count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = write_file(folder, args.steps)
        kr_reader(path), accumulator(folder)  # warm imports
        kr_s, kr_points = timed(kr_reader, path, args.repeat)
        acc_s, acc_points = timed(accumulator, folder, args.repeat)
    print(f"event file: {args.steps:,} steps, {kr_points:,} scalar points")
    print(f"{'reader':<34}{'median s':>10}{'points':>10}")
    print(f"{'kr metrics.read_scalars':<34}{kr_s:>10.3f}{kr_points:>10,}")
    print(f"{'EventAccumulator (size_guidance 0)':<34}{acc_s:>10.3f}{acc_points:>10,}")
    print(f"speed-up: {acc_s / kr_s:.1f}x (target ≥ 5x); same points: {kr_points == acc_points}")


if __name__ == "__main__":
    main()
