"""The archive of a run (also of failed and stopped runs): verified LoRAs, losses, config and a manifest.

Every LoRA file is verified (safetensors header, tensor count, rank and alpha, a NaN/inf scan of every
tensor), hashed, and its metadata recorded; the losses come from the TensorBoard events with every
point; the config snapshot, dataset manifest and trainer versions complete `manifest.json`.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from . import __version__, atomic, lorafile, metrics, runfolder
from .sdscripts import options, outputs
from .hashing import sha256_file

ARCHIVE_DIR = runfolder.ARCHIVE_DIR
MANIFEST = runfolder.MANIFEST_FILE
SNAPSHOT = (runfolder.CONFIG_FILE, runfolder.DATASET_FILE, runfolder.PROMPTS_FILE, runfolder.SPEC_FILE,
            runfolder.COMMAND_FILE, runfolder.ENVIRONMENT_FILE)


@dataclass
class LoraCheck:
    file: str
    size: int
    sha256: str
    ok: bool
    tensors: int = 0
    modules: int = 0
    rank: int | None = None
    alpha: float | None = None
    dtype: str | None = None
    nonfinite_tensors: list[str] = field(default_factory=list)
    problem: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)


_NUMPY_DTYPES = {"F16": "<f2", "F32": "<f4", "F64": "<f8"}


# Checks of files verified while the trainer ran (kr verifies each checkpoint as it appears), keyed by
# (path, size, mtime_ns): an unchanged file is not read again when the run is archived.
_verified: dict[tuple[str, int, int], LoraCheck] = {}
_verified_lock = threading.Lock()


def verify_lora(path: Path) -> LoraCheck:
    """Header, structure, rank/alpha and a finite-values scan, without torch; remembered for the file as
    it is (size and modification time), so a file verified during training is not read again."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _verified_lock:
        known = _verified.get(key)
    if known is not None:
        return replace(known, nonfinite_tensors=list(known.nonfinite_tensors), metadata=dict(known.metadata))
    check = _verify(path, stat.st_size)
    if path.stat().st_mtime_ns == stat.st_mtime_ns:  # not rewritten while it was read
        with _verified_lock:
            _verified[key] = check
    return check


class CheckpointVerifier:
    """Verifies and hashes each checkpoint while the trainer runs, in a background thread, so archiving
    at the end only reads files it has not seen. sd-scripts logs `saving checkpoint: F` before writing F:
    a file counts as complete once the next checkpoint is announced or `model saved.` appears."""

    def __init__(self, run_dir: Path | None = None, title: str = "") -> None:
        import queue

        self._run_dir, self._title = run_dir, title
        self._announced: list[Path] = []
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="kr-verify", daemon=True)
        self._thread.start()

    def on_event(self, event: str | None, progress) -> None:
        """Feed it the follower's events (monitor.parse_segment kinds)."""
        if event == "checkpoint" and progress.checkpoints:
            self._submit(self._announced)
            self._announced = [Path(progress.checkpoints[-1])]
        elif event == "saved":
            self._submit(self._announced)
            self._announced = []
            if self._run_dir is not None:
                # sd-scripts closed its trackers before the final save: the event file is complete, and the
                # trainer still takes a while to exit. Draw loss.png now; archiving reuses it if unchanged.
                self._queue.put(None)

    def _submit(self, paths: list[Path]) -> None:
        for path in paths:
            self._queue.put(path)

    def _work(self) -> None:
        while True:
            path = self._queue.get()
            try:
                if path is None:
                    self._plot()
                elif path.suffix == ".safetensors" and path.is_file():
                    verify_lora(path)
            except Exception:
                pass  # done again, and reported, when the run is archived

    def _plot(self) -> None:
        folder = runfolder.of(self._run_dir)
        points = loss_points(folder.logs)
        if points:
            folder.archive.mkdir(exist_ok=True)
            plot_once(points, folder.archive / runfolder.LOSS_PNG, self._title)


def _verify(path: Path, size: int) -> LoraCheck:
    import numpy as np

    check = LoraCheck(path.name, size, sha256_file(path), ok=False)
    try:
        index, metadata = lorafile.read_header(path)
    except (ValueError, json.JSONDecodeError, UnicodeDecodeError) as e:
        check.problem = f"not a readable safetensors file: {e}"
        return check
    check.metadata = metadata
    check.tensors = len(index)
    with open(path, "rb") as handle:
        header_len = int.from_bytes(handle.read(8), "little")
        data_start = 8 + header_len
        ranks, alphas = set(), set()
        for name, info in index.items():
            start, end = info["data_offsets"]
            if data_start + end > size or start > end:
                check.problem = f"tensor {name} points past the end of the file (truncated?)"
                return check
            handle.seek(data_start + start)
            values = _as_float_array(np, handle.read(end - start), info["dtype"])
            if values is not None and values.size and not np.isfinite(values).all():
                check.nonfinite_tensors.append(name)
            if name.endswith(lorafile.DOWN_SUFFIX):
                ranks.add(int(info["shape"][0]))
                check.dtype = info["dtype"]
            elif name.endswith(lorafile.ALPHA_SUFFIX) and values is not None and values.size:
                alphas.add(round(float(values.reshape(-1)[0]), 6))
    check.modules = sum(1 for name in index if name.endswith(lorafile.DOWN_SUFFIX))
    check.rank = ranks.pop() if len(ranks) == 1 else (max(ranks) if ranks else None)
    check.alpha = alphas.pop() if len(alphas) == 1 else (max(alphas) if alphas else None)
    if check.modules == 0:
        check.problem = "no LoRA modules (no .lora_down.weight tensors)"
    elif check.nonfinite_tensors:
        check.problem = f"{len(check.nonfinite_tensors)} tensors hold NaN or inf values"
    check.ok = check.problem is None
    return check


def _as_float_array(np, raw: bytes, dtype: str):
    if dtype in _NUMPY_DTYPES:
        return np.frombuffer(raw, dtype=_NUMPY_DTYPES[dtype])
    if dtype == "BF16":  # numpy has no bfloat16: widen the 16 bits into a float32's top half
        return (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    return None


# ----------------------------------------------------------------------------------------------


def lora_files(output_dir: Path) -> list[Path]:
    return sorted(output_dir.glob("*.safetensors")) if output_dir.is_dir() else []


def newest_intermediate(output_dir: Path, output_name: str, *, finite_only: bool = False) -> Path | None:
    """The latest epoch or step checkpoint: what a stopped run leaves as its result (§7.1)."""
    candidates = []
    for path in lora_files(output_dir):
        order = outputs.checkpoint_order(output_name, path.name)
        if order is not None:
            candidates.append((path.stat().st_mtime, order, path))
    for _, _, path in sorted(candidates, reverse=True):
        if not finite_only or verify_lora(path).ok:
            return path
    return None


def loss_points(logging_dir: Path) -> list[metrics.Point]:
    return metrics.read_folder(logging_dir)


def write_losses(points: list[metrics.Point], archive_dir: Path, title: str) -> dict[str, Any]:
    atomic.write_text(archive_dir / runfolder.LOSS_CSV, metrics.csv_text(points))
    series = metrics.by_tag(points)
    summary: dict[str, Any] = {"points": len(points), "tags": sorted(series)}
    average = metrics.last_per_step(series.get("loss/average", []))
    if average:
        summary["final_average_loss"] = average[-1].value
        finite = [p.value for p in average if p.value == p.value and abs(p.value) != float("inf")]
        summary["min_average_loss"] = min(finite) if finite else None
    epochs = series.get("loss/epoch_average", [])
    if epochs:
        summary["epoch_average"] = {str(p.step): p.value for p in epochs}
    if points:
        if _plot_later.active:
            # Off the critical path: the ledger and the summary do not wait for it; a non-daemon thread,
            # so the process still finishes the plot before it exits (wait_for_plots() joins it earlier).
            thread = threading.Thread(target=plot_once, args=(points, archive_dir / runfolder.LOSS_PNG, title),
                                      name="kr-loss-plot")
            thread.start()
            _plots.append(thread)
        else:
            plot_once(points, archive_dir / runfolder.LOSS_PNG, title)
    return summary


_plotted: dict[str, int] = {}  # loss.png path → the points it shows (their hash)


def plot_once(points: list[metrics.Point], out: Path, title: str) -> None:
    """Draw loss.png unless it already shows exactly these points (drawn early, when `model saved.` appeared)."""
    signature = hash((title, tuple(points)))
    metrics.wait_for_warm_up()  # before the lock, which the warm-up takes too
    with metrics.PLOT_LOCK:
        if _plotted.get(str(out)) == signature and out.is_file():
            return
        metrics.plot_losses(metrics.by_tag(points), out, title)
        _plotted[str(out)] = signature


class _PlotLater(threading.local):
    active = False


_plot_later = _PlotLater()
_plots: list[threading.Thread] = []


@contextmanager
def plots_in_background():
    """Within it, build() draws loss.png in a background thread (the Supervisor's finalize)."""
    _plot_later.active = True
    try:
        yield
    finally:
        _plot_later.active = False


def wait_for_plots() -> None:
    """Until every loss.png started in the background is written."""
    while _plots:
        _plots.pop().join()


def build(run_dir: Path, *, run: dict[str, Any], spec, outcome: dict[str, Any], result: Path | None,
          dataset_manifest: dict | None = None, trainer_versions: dict | None = None) -> dict[str, Any]:
    """Write `run_dir/archive/` and return the manifest."""
    folder = runfolder.of(run_dir)
    archive_dir = folder.archive
    archive_dir.mkdir(exist_ok=True)
    output_dir = folder.output
    for name in SNAPSHOT:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, archive_dir / name)
    checks = [verify_lora(p) for p in lora_files(output_dir)]
    losses = write_losses(loss_points(folder.logs), archive_dir, title=run.get("run_id", ""))
    samples = sorted(str(p.relative_to(run_dir)) for p in folder.samples.glob("*.png")) \
        if folder.samples.is_dir() else []
    manifest = {
        "kr_version": __version__,
        "archived_at": time.time(),
        "run": run,
        "outcome": outcome,
        "result": str(result.relative_to(run_dir)) if result else None,
        "spec_hash": spec.hash() if spec is not None else None,
        "sd_scripts_commit": options.pinned_commit(),
        "loras": [asdict(c) for c in checks],
        "losses": losses,
        "samples": samples,
        "dataset": dataset_manifest,
        "trainer": trainer_versions or {},
        "files": [name for name in SNAPSHOT if (archive_dir / name).is_file()],
    }
    atomic.write_text(archive_dir / MANIFEST, json.dumps(manifest, indent=2, ensure_ascii=False, default=str) + "\n")
    return manifest


def read_manifest(run_dir: Path) -> dict[str, Any] | None:
    path = runfolder.of(run_dir).manifest
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def export(run_dir: Path, destination: Path, run_id: str, *, policy: str | None = None,
           title: str | None = None) -> Path:
    """A portable tarball: the archive, the LoRAs and the samples (not caches, not state folders).

    The LoRAs go in as copies with their header under the metadata `policy` (default: the run's
    privacy.metadata; kohya_runner.privacy), and the manifest in the tarball records those copies
    (their header, size and sha256) and what the policy removed. The run's own files are not changed.
    """
    import tempfile

    from . import privacy

    if destination.is_dir():
        destination = destination / f"{run_id}.tar.gz"
    if destination.exists():
        from .errors import BadInput

        raise BadInput(f"{destination} already exists; kr does not overwrite. Fix: give another path")
    policy = privacy.check_policy(policy or run_policy(run_dir))
    output = runfolder.of(run_dir).output
    loras = set(lora_files(output))
    manifest_path = runfolder.of(run_dir).manifest
    tmp = destination.with_name(f".{destination.name}.tmp")
    try:
        with tempfile.TemporaryDirectory(prefix=".kr-export-", dir=destination.parent) as scratch, \
                tarfile.open(tmp, "w:gz") as tar:
            applied: dict[str, dict] = {}
            for path in sorted(_export_members(run_dir)):
                arcname = f"{run_id}/{path.relative_to(run_dir)}"
                if path in loras:
                    copy = Path(scratch) / path.name
                    applied[path.name] = privacy.apply_policy(path, copy, policy, title=title)
                    tar.add(copy, arcname=arcname, recursive=False)
                elif path != manifest_path:
                    tar.add(path, arcname=arcname, recursive=False)
            if manifest_path.is_file():
                exported = Path(scratch) / MANIFEST
                exported.write_text(json.dumps(_exported_manifest(manifest_path, applied, policy, scratch), indent=2,
                                               ensure_ascii=False, default=str) + "\n", encoding="utf-8")
                tar.add(exported, arcname=f"{run_id}/{ARCHIVE_DIR}/{MANIFEST}", recursive=False)
        os.replace(tmp, destination)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return destination


def run_policy(run_dir: Path) -> str:
    """The run's privacy.metadata (from its spec.json); kr's default, minimal, if that cannot be read."""
    try:
        spec = json.loads(runfolder.of(run_dir).spec.read_text(encoding="utf-8"))
        return spec["privacy"]["metadata"]
    except (OSError, ValueError, KeyError, TypeError):
        return "minimal"


def _exported_manifest(path: Path, applied: dict[str, dict], policy: str, scratch: str) -> dict[str, Any]:
    """The archive manifest as it describes the exported copies (the header kept, their size and sha256)."""
    manifest = json.loads(path.read_text(encoding="utf-8"))
    for entry in manifest.get("loras", []):
        report = applied.get(entry.get("file"))
        if report is None:
            continue
        copy = Path(scratch) / entry["file"]
        entry["source_sha256"] = entry.get("sha256")
        entry["metadata"] = lorafile.read_metadata(copy)
        entry["size"], entry["sha256"] = copy.stat().st_size, sha256_file(copy)
    manifest["privacy"] = {
        "policy": policy,
        "files": {name: {"removed": r["removed"], "neutralised": sorted(r["neutralised"])} for name, r in applied.items()},
    }
    return manifest


def _export_members(run_dir: Path) -> list[Path]:
    folder = runfolder.of(run_dir)
    members = [p for p in folder.archive.rglob("*") if p.is_file()]
    members += lora_files(folder.output)
    if folder.samples.is_dir():
        members += [p for p in folder.samples.iterdir() if p.is_file()]
    return members
