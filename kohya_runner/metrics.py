"""Reading TensorBoard event files fast, with every point; loss CSV and plots.

tensorboard's EventAccumulator keeps only 10,000 scalars per tag by default (reservoir sampling) and
does a lot of Python work per event. kr reads the TFRecord framing itself and decodes each record with
the protobuf Event message, keeping every point.
"""

from __future__ import annotations

import csv
import io
import math
import struct
import threading
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

_HEADER = struct.Struct("<QI")  # record length, masked CRC of the length


class Point(NamedTuple):  # a tuple: hundreds of thousands are made per file
    tag: str
    step: int
    wall_time: float
    value: float


def _records(data: bytes) -> Iterator[bytes]:
    """TFRecord framing: u64 length, u32 crc, payload, u32 crc. A truncated tail (a live file) is skipped."""
    offset, size, unpack = 0, len(data), _HEADER.unpack_from
    while offset + 12 <= size:
        length = unpack(data, offset)[0]
        start = offset + 12
        end = start + length
        if end + 4 > size:
            return
        yield data[start:end]
        offset = end + 4


def read_scalars(path: Path, tags: Iterable[str] | None = None) -> list[Point]:
    """Every scalar point in one event file (optionally only `tags`), in file order."""
    from tensorboard.compat.proto import event_pb2

    wanted = set(tags) if tags is not None else None
    needles = [t.encode() for t in wanted] if wanted else None
    points: list[Point] = []
    append, parse = points.append, event_pb2.Event.FromString
    for raw in _records(path.read_bytes()):
        if needles is not None and not any(n in raw for n in needles):
            continue  # cheap pre-filter before the protobuf decode
        event = parse(raw)
        for value in event.summary.value:
            if wanted is not None and value.tag not in wanted:
                continue
            if value.WhichOneof("value") == "simple_value":  # what accelerate's TensorBoard tracker writes
                append(Point(value.tag, event.step, event.wall_time, value.simple_value))
            else:
                scalar = _scalar(value)
                if scalar is not None:
                    append(Point(value.tag, event.step, event.wall_time, scalar))
    return points


def _scalar(value) -> float | None:
    kind = value.WhichOneof("value")
    if kind == "simple_value":
        return float(value.simple_value)
    if kind == "tensor":  # new-style summaries: a 0-d float tensor
        tensor = value.tensor
        if tensor.float_val:
            return float(tensor.float_val[0])
        if tensor.double_val:
            return float(tensor.double_val[0])
        if tensor.tensor_content and tensor.dtype == 1:
            return struct.unpack("<f", tensor.tensor_content[:4])[0]
    return None


def event_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("events.out.tfevents.*")) if folder.is_dir() else []


def read_folder(folder: Path, tags: Iterable[str] | None = None) -> list[Point]:
    points: list[Point] = []
    for path in event_files(folder):
        points.extend(read_scalars(path, tags))
    return points


def by_tag(points: Iterable[Point]) -> dict[str, list[Point]]:
    grouped: dict[str, list[Point]] = {}
    for point in points:
        grouped.setdefault(point.tag, []).append(point)
    return grouped


def last_per_step(points: list[Point]) -> list[Point]:
    """With gradient accumulation several micro-batch points share a step (§5.2); keep the last of each."""
    latest: dict[int, Point] = {}
    for point in points:
        latest[point.step] = point
    return [latest[step] for step in sorted(latest)]


def csv_text(points: Iterable[Point]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["tag", "step", "wall_time", "value"])
    for p in points:
        writer.writerow([p.tag, p.step, f"{p.wall_time:.3f}", repr(p.value)])
    return out.getvalue()


def read_csv(path: Path) -> list[Point]:
    with open(path, newline="", encoding="utf-8") as f:
        return [Point(r["tag"], int(r["step"]), float(r["wall_time"]), float(r["value"])) for r in csv.DictReader(f)]


def plot_losses(series: dict[str, list[Point]], out: Path, title: str = "") -> Path:
    """One PNG: step loss (faint) and its moving average, the learning rate beneath."""
    wait_for_warm_up()
    with PLOT_LOCK:
        return _plot_losses(series, out, title)


def wait_for_warm_up() -> None:
    """Call before taking PLOT_LOCK (the warm-up takes it too)."""
    if _warm is not None and _warm is not threading.current_thread():
        _warm.join()


def _plot_losses(series: dict[str, list[Point]], out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_lr) = plt.subplots(2, 1, figsize=(8, 5.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    current = last_per_step(series.get("loss/current", []))
    average = last_per_step(series.get("loss/average", []))
    if current:
        ax_loss.plot([p.step for p in current], [p.value for p in current], color="#9bb7d4", lw=0.8, label="loss/current")
    if average:
        ax_loss.plot([p.step for p in average], [p.value for p in average], color="#1f4e79", lw=1.8, label="loss/average")
    _limit_to_finite(ax_loss, [p.value for p in current + average])
    ax_loss.set_ylabel("loss")
    ax_loss.legend(loc="upper right", frameon=False)
    ax_loss.grid(alpha=0.3)
    for tag, points in sorted(series.items()):
        if tag.startswith("lr/") and not tag.startswith("lr/group"):
            points = last_per_step(points)
            ax_lr.plot([p.step for p in points], [p.value for p in points], lw=1.2, label=tag)
    ax_lr.set_ylabel("lr")
    ax_lr.set_xlabel("step")
    ax_lr.grid(alpha=0.3)
    if ax_lr.lines:
        ax_lr.legend(loc="upper right", frameon=False, fontsize=8)
    if title:
        ax_loss.set_title(title)
    return _save(fig, out)


_warm: threading.Thread | None = None
# pyplot is not thread-safe: one figure at a time (warm-up, the early loss plot, the archive's plot)
PLOT_LOCK = threading.RLock()


def warm_up_in_background() -> None:
    """warm_up() in a daemon thread, once per process; plotting waits for it instead of racing it."""
    global _warm
    if _warm is None:
        _warm = threading.Thread(target=_warm_up_quietly, name="kr-plot-warm-up", daemon=True)
        _warm.start()


def _warm_up_quietly() -> None:
    try:
        warm_up()
    except Exception:
        pass  # the real plot reports its own problems


def warm_up() -> None:
    """Import matplotlib and draw a throw-away figure (font cache, Agg renderer), so the real loss plot at
    the end of a run costs only its own drawing."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with PLOT_LOCK:
        fig, ax = plt.subplots(figsize=(2, 1.5))
        ax.plot([0, 1], [1, 0], label="loss")
        ax.legend()
        ax.set_title("warm")
        fig.tight_layout()
        fig.savefig(io.BytesIO(), dpi=50)
        plt.close(fig)


def _limit_to_finite(ax, values: list[float]) -> None:
    """Y limits from the finite values only: one NaN or inf point must not flatten the curves."""
    finite = [v for v in values if math.isfinite(v)]
    if finite:
        low, high = min(finite), max(finite)
        pad = (high - low) * 0.05 or 0.01
        ax.set_ylim(low - pad, high + pad)


def _save(fig, out: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
    return out


class Curve(NamedTuple):
    label: str
    steps: list[int]
    values: list[float]
    ended_badly: bool = False  # drawn dashed, its last finite point marked


def plot_overlay(curves: list[Curve], out: Path, title: str = "") -> Path:
    """Several runs' loss/average curves on one set of axes (sweeps, comparisons)."""
    wait_for_warm_up()
    with PLOT_LOCK:
        return _plot_overlay(curves, out, title)


def _plot_overlay(curves: list[Curve], out: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    colours = plt.get_cmap("tab20" if len(curves) > 10 else "tab10")
    for i, curve in enumerate(curves):
        colour = colours(i % colours.N)
        values = [v if math.isfinite(v) else float("nan") for v in curve.values]
        ax.plot(curve.steps, values, "--" if curve.ended_badly else "-", lw=1.6, color=colour, label=curve.label[:70])
        last = next(((s, v) for s, v in zip(reversed(curve.steps), reversed(values)) if math.isfinite(v)), None)
        if curve.ended_badly and last:
            ax.plot([last[0]], [last[1]], "x", color=colour, ms=9, mew=2)
    _limit_to_finite(ax, [v for c in curves for v in c.values])
    ax.set_xlabel("step")
    ax.set_ylabel("loss/average")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(loc="upper right", frameon=False, fontsize=7)
    if title:
        ax.set_title(title)
    return _save(fig, out)
