"""Evaluation sheets: same-seed sample grids with a base-model column, trigger ablation, run and sweep reports.

A run report (`kr report RUN`) is a folder holding one self-contained offline HTML page (inline CSS, no
scripts, no fonts, no requests; a Content-Security-Policy forbids any), the sample images beside it
(relative links), a PNG contact sheet and the loss plot. Rows are the sample prompts, grouped by
subject: with the trigger, without it, then the reworded variants; columns are the base model (the
`sample_at_first` images, e000000) and every sampled epoch or step. Sample files are mapped to rows by
their prompt index and `spec.sample_prompts()` of the run's spec.json (contract §4.1).

A comparison (`kr compare`, and a sweep's report) puts the final samples of every run on the same
prompts and seeds in one grid, with a base row, each row headed by the settings in which the runs
differ, and overlays their loss curves.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import archive, atomic, demo, runfolder
from .checkpoints import Checkpoint, Losses, best, list_checkpoints, run_totals
from .errors import BadInput, KrError
from .ledger import duration_text
from .monitor import last_bar
from .sdscripts import outputs
from .sheet import SHEET_MIN, cell_size, change, compose_sheet, display_size, image_size, place, thumbnails
from .spec import ABSENT, diff, flatten, show_value

REPORT_DIR = runfolder.REPORT_DIR  # in a run folder, and likewise in a sweep folder
PAGE = "index.html"
SHEET = "sheet.png"
LOSS_PLOT = "loss.png"
DATA = "report.json"
IMAGES = "images"
OWNED = (PAGE, SHEET, LOSS_PLOT, DATA, IMAGES)  # what a report folder holds; nothing else is touched
# No request of any kind may leave the page: images only from its own folder, no scripts, fonts or fetches.
CSP = "default-src 'none'; img-src 'self' file: data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
KIND_LABELS = {"trigger": "with trigger", "no-trigger": "without trigger"}
SCORE_HOW = ("100 × effect × selectivity, where effect is how far samples with the trigger move toward the training "
             "images' look and how much the denoising loss on them drops, and selectivity how much of the change "
             "needs the trigger")
NOISE_KEYS = {"name", "saving.output_name"}  # differ between sweep members without saying anything


# ----------------------------------------------------------------------------------------------
# Finding a run's samples, columns and rows.


@dataclass
class Sample:
    path: Path
    name: outputs.SampleName
    mtime: float
    seconds: float | None = None  # post-hoc: its generation time


@dataclass
class Column:
    key: str  # "e000000" (base), "e000004", "s000032"
    kind: str  # "base" | "epoch" | "step"
    number: int
    label: str
    checkpoint: str | None = None
    loss: float | None = None
    best: bool = False
    seconds: float | None = None  # ≈ time this sampling round took
    strength: float | None = 1.0  # the LoRA strength (None: the base column)
    posthoc: bool = False  # made after training by `kr sample`
    seconds_per_image: float | None = None  # post-hoc generation time per image (inference time)

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("key", "kind", "number", "label", "checkpoint", "loss", "best", "seconds",
                                               "strength", "posthoc", "seconds_per_image")}


@dataclass
class Row:
    index: int  # the prompt's line in the prompts file (ii)
    subject_index: int
    subject: str
    kind: str  # "trigger" | "no-trigger" | "variant-N" | "unknown"
    text: str
    seed: int | None

    @property
    def kind_label(self) -> str:
        return KIND_LABELS.get(self.kind, self.kind.replace("-", " "))

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "subject_index": self.subject_index, "subject": self.subject, "kind": self.kind,
                "text": self.text, "seed": self.seed}


def column_key(kind: str, number: int) -> str:
    return f"e{number:06d}" if kind == "epoch" else f"s{number:06d}"


def scan_samples(run_dir: Path, output_name: str) -> dict[tuple[str, int], Sample]:
    """(column key, prompt index) → the newest sample file for it."""
    folder = runfolder.of(run_dir).samples
    found: dict[tuple[str, int], Sample] = {}
    if not folder.is_dir():
        return found
    with os.scandir(folder) as entries:
        for entry in entries:
            name = outputs.parse_sample_name(output_name, entry.name) or outputs.parse_sample_name(None, entry.name)
            if name is None or not entry.is_file():
                continue
            key = (column_key(name.kind, name.number), name.index)
            sample = Sample(Path(entry.path), name, entry.stat().st_mtime)
            if key not in found or (name.stamp, sample.mtime) > (found[key].name.stamp, found[key].mtime):
                found[key] = sample
    return found


def rows_for(spec, indices: set[int]) -> list[Row]:
    """The run's prompts grouped by subject (trigger, no trigger, variants side by side); prompt indices
    with no prompt in the spec (an edited prompts file) are kept as rows of their own."""
    from .spec import sample_prompts

    prompts = sample_prompts(spec)
    rows = [Row(p.index, p.subject_index, p.subject, p.kind, p.text, p.seed) for p in prompts]
    known = {p.index for p in prompts}
    rows += [Row(i, 10_000 + i, f"prompt {i}", "unknown", f"prompt line {i} (not in the run's spec)", None)
             for i in sorted(indices - known)]
    order = {kind: n for n, kind in enumerate(dict.fromkeys(p.kind for p in prompts))}
    rows.sort(key=lambda r: (r.subject_index, order.get(r.kind, 99), r.index))
    return rows


def make_column(kind: str, number: int, strength: float | None = 1.0) -> Column:
    """The column of a sampled epoch or step (epoch 0: the base model) at a LoRA strength; a strength
    other than 1 gets a column of its own, keyed `e000008@0.5`."""
    if kind == "epoch" and number == 0:
        return Column(column_key(kind, number), "base", 0, "base model", strength=None)
    own = strength in (None, 1.0)
    return Column(column_key(kind, number) + ("" if own else f"@{strength:g}"), kind, number,
                  f"{kind} {number}" + ("" if own else f" · strength {strength:g}"), strength=strength)


def column_order(column: Column) -> tuple:
    """Base first, then epochs, then steps, each by number, and the strengths of one checkpoint ascending."""
    return (column.kind != "base", column.kind == "step", column.number,
            -math.inf if column.strength is None else column.strength)


def columns_for(samples: dict[tuple[str, int], Sample]) -> list[Column]:
    found = {(s.name.kind, s.name.number) for s in samples.values()}
    return sorted((make_column(kind, number) for kind, number in found), key=column_order)


def round_seconds(samples: list[Sample]) -> float | None:
    """≈ how long one sampling round took: the spread of its files' times, plus one image's share."""
    if not samples:
        return None
    times = sorted(s.mtime for s in samples)
    if len(times) < 2 or times[-1] - times[0] <= 0:
        stamps = sorted(time.mktime(time.strptime(s.name.stamp, "%Y%m%d%H%M%S")) for s in samples)
        times = stamps if stamps[-1] > stamps[0] else times
    spread = times[-1] - times[0]
    if len(times) < 2 or spread <= 0:
        return None
    return spread * len(times) / (len(times) - 1)


# ----------------------------------------------------------------------------------------------
# A run, loaded once for the reports.


@dataclass
class RunData:
    row: Any  # ledger.RunRow
    run_dir: Path
    spec: Any
    manifest: dict | None
    losses: Losses
    samples: dict[tuple[str, int], Sample]
    columns: list[Column]
    rows: list[Row]
    checkpoints: list[Checkpoint]
    criterion: str
    best: Checkpoint | None
    top_score: dict | None = None  # its highest-scoring checkpoint's parts (comparisons rank by it)

    @property
    def run_id(self) -> str:
        return self.row.run_id


def add_posthoc(samples: dict[tuple[str, int], Sample], columns: list[Column], rows: list[Row],
                images: list[dict[str, Any]], epochs_total: int | None) -> None:
    """Post-hoc images (kohya_runner.sample) into the grid: the base into the base column, strength 1 into
    the checkpoint's own column (over the in-training image of that cell), other strengths into columns of
    their own beside it; prompts the spec does not list (extra subjects or seeds) become rows of their own."""
    by_key = {c.key: c for c in columns}
    row_of = {(r.kind, r.text, r.seed): r.index for r in rows}
    times: dict[str, list[float]] = {}
    for image in images:
        if image["column_key"] == "base":
            kind, number = "epoch", 0
        else:
            kind = "step" if image["column_key"].startswith("s") else "epoch"
            number = int(image["column_key"][1:]) if image["column_key"][1:].isdigit() else (epochs_total or 0)
        column = make_column(kind, number, image["strength"])
        key = column.key
        if key not in by_key:
            by_key[key] = column
            columns.append(column)
        by_key[key].posthoc = True
        identity = (image["kind"], image["text"], image["seed"])
        if identity not in row_of:
            index = 10_000 + len(row_of)
            row_of[identity] = index
            rows.append(Row(index, 20_000 + index, image["subject"] or image["text"], image["kind"], image["text"],
                            image["seed"]))
        path = Path(image["path"])
        mtime = path.stat().st_mtime
        name = outputs.SampleName(kind, number, row_of[identity], time.strftime("%Y%m%d%H%M%S", time.localtime(mtime)),
                                  image["seed"])
        samples[(key, row_of[identity])] = Sample(path, name, mtime, image["seconds"])
        if image["seconds"] is not None:
            times.setdefault(key, []).append(image["seconds"])
    for key, values in times.items():
        by_key[key].seconds_per_image = sum(values) / len(values)
    columns.sort(key=column_order)
    subjects = {}
    for r in rows:
        subjects.setdefault(r.subject, r.subject_index)
    order = {kind: n for n, kind in enumerate(dict.fromkeys(r.kind for r in rows))}
    rows.sort(key=lambda r: (subjects[r.subject], order.get(r.kind, 99), r.seed or 0, r.index))


def load_run(row, ledger=None) -> RunData:
    """A run's grid data: its in-training samples, and with the workspace's `ledger` its post-hoc ones."""
    from .run import load_spec
    from .sample import images

    run_dir = Path(row.run_dir)
    if not runfolder.of(run_dir).spec.is_file():
        raise BadInput(f"run {row.run_id} has no spec.json in {run_dir}: it failed before it was set up "
                       f"({row.status}: {row.hint or 'no detail'}). Fix: report on another run")
    spec = load_spec(run_dir)
    losses = Losses.of_run(run_dir)
    epochs_total, steps_total = run_totals(run_dir, row)
    checkpoints, criterion = list_checkpoints(run_dir, spec.output_name, epochs_total=epochs_total,
                                              steps_total=steps_total, losses=losses)
    samples = scan_samples(run_dir, spec.output_name)
    columns = columns_for(samples)
    rows = rows_for(spec, {index for _, index in samples})
    posthoc = images(ledger, row.run_id) if ledger is not None else []
    if posthoc:
        add_posthoc(samples, columns, rows, posthoc, epochs_total)
    chosen = best(checkpoints)
    by_epoch = {c.epoch: c for c in checkpoints if c.kind != "step" and c.epoch is not None}
    by_step = {c.step: c for c in checkpoints if c.step is not None}
    for column in columns:
        checkpoint = by_epoch.get(column.number) if column.kind == "epoch" else by_step.get(column.number) \
            if column.kind == "step" else None
        if checkpoint is not None:
            column.checkpoint, column.loss = checkpoint.file.name, checkpoint.loss
            if checkpoint.kind == "final" and "(final)" not in column.label:
                column.label = column.label.replace(f"epoch {column.number}", f"epoch {column.number} (final)", 1)
            column.best = chosen is not None and checkpoint.file == chosen.file
        elif column.kind == "epoch":
            column.loss = losses.epoch.get(column.number)
        elif column.kind == "step":
            column.loss = losses.step.get(column.number)
        if not column.posthoc:
            column.seconds = round_seconds([s for (key, _), s in samples.items() if key == column.key])
    return RunData(row, run_dir, spec, archive.read_manifest(run_dir), losses, samples, columns, rows,
                   checkpoints, criterion, chosen)


# ----------------------------------------------------------------------------------------------
# Timings, the loss plot, and the config's difference from its preset.


def run_timings(data: RunData) -> dict[str, Any]:
    run = (data.manifest or {}).get("run") or {}
    started = run.get("started_at") or data.row.started_at
    finished = run.get("finished_at") or data.row.finished_at
    out: dict[str, Any] = {"total_seconds": (finished - started) if started and finished else data.row.duration}
    bar = last_bar(runfolder.of(data.run_dir).log)
    if bar:
        out["it_per_s"] = bar.it_per_s
        out["training_loop_seconds"] = bar.elapsed_seconds
        out["steps"] = bar.steps_done
    elif data.row.it_per_s:
        out["it_per_s"] = data.row.it_per_s
    current = data.losses.series.get("loss/current") or data.losses.series.get("loss/average") or []
    if current and started:
        out["setup_seconds"] = max(0.0, min(p.wall_time for p in current) - started)
    timed = {c.key: c.seconds for c in data.columns if c.seconds is not None}
    out["sample_rounds"] = {c.label: c.seconds for c in data.columns if c.seconds is not None}
    out["seconds_per_sample_round"] = sum(timed.values()) / len(timed) if timed else None
    images = sum(1 for key, _ in data.samples if key in timed)
    out["seconds_per_sample_image"] = sum(timed.values()) / images if images else None
    # post-hoc generation time per image: the base model, and each checkpoint at each strength
    out["inference_seconds_per_image"] = {c.label: round(c.seconds_per_image, 4) for c in data.columns
                                          if c.seconds_per_image is not None}
    return out


def timing_rows(t: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("total time (launch to archive)", _duration(t.get("total_seconds"))),
            ("setup (loading, caching) until the first step", _duration(t.get("setup_seconds"))),
            ("training loop (tqdm elapsed, incl. sampling and saving)", _duration(t.get("training_loop_seconds"))),
            ("speed (tqdm, last reading)", f"{t['it_per_s']:.2f} it/s" if t.get("it_per_s") else "–"),
            ("time per sample round (≈, from the sample files' times)", _duration(t.get("seconds_per_sample_round"))),
            ("time per sample image (≈)", _duration(t.get("seconds_per_sample_image")))]
    rows += [(f"sample round: {label}", _duration(seconds)) for label, seconds in (t.get("sample_rounds") or {}).items()]
    rows += [(f"inference per image (post hoc): {label}", f"{seconds:.2f} s")
             for label, seconds in (t.get("inference_seconds_per_image") or {}).items()]
    return rows


def _duration(seconds: float | None) -> str:
    """Under a minute with a tenth of a second (setup and sample rounds are short); else H:MM:SS."""
    if seconds is not None and seconds < 60:
        return f"{seconds:.1f} s"
    return duration_text(seconds)


def loss_plot(data: RunData, out: Path) -> Path | None:
    """The archive's loss.png, or a fresh plot of the logged losses (a live or never-archived run)."""
    archived = runfolder.of(data.run_dir).loss_png
    if archived.is_file() and not data.row.active:
        shutil.copyfile(archived, out)
        return out
    if not data.losses.series:
        return None
    from .metrics import plot_losses

    return plot_losses(data.losses.series, out, data.run_id)


def plot_overlay(series: dict[str, list], out: Path, title: str = "") -> Path:
    """Several runs' loss/average curves on one set of axes; the labels make the legend."""
    from .metrics import Curve, last_per_step, plot_overlay as plot

    curves = []
    for label, points in series.items():
        points = last_per_step(points)
        if points:
            curves.append(Curve(label, [p.step for p in points], [p.value for p in points]))
    return plot(curves, out, title)




def preset_diff(home: Path, preset_name: str | None, spec) -> dict[str, Any]:
    """The run's resolved spec against its preset's own (today's file, no dataset, base or overrides)."""
    if not preset_name:
        return {"preset": None, "error": "the run records no preset", "rows": []}
    from . import preset

    try:
        resolved = preset.resolve(preset_name, home)
    except KrError as error:
        return {"preset": preset_name, "error": f"preset {preset_name} cannot be resolved now: {error.message}",
                "rows": []}
    rows = [{"key": c.path, "preset": show_value(c.before), "run": show_value(c.after)} for c in diff(resolved.spec, spec)]
    return {"preset": preset_name, "source": resolved.preset.label, "error": None, "rows": rows}


# ----------------------------------------------------------------------------------------------
# Writing a report folder: staged beside it, then swapped in, so a reader never sees half a report.


class Staging:
    def __init__(self, out: Path):
        if out.exists() and not out.is_dir():
            raise BadInput(f"{out} is a file. Fix: give a folder for the report (-o DIR)")
        self.out = out
        out.parent.mkdir(parents=True, exist_ok=True)
        self.dir = out.parent / f".{out.name}.kr-report-{os.getpid()}-{time.monotonic_ns()}"
        self.dir.mkdir()
        (self.dir / IMAGES).mkdir()

    def commit(self) -> None:
        for name in (PAGE, SHEET, LOSS_PLOT, DATA):
            if (self.dir / name).is_file():
                os.chmod(self.dir / name, 0o644)  # a report is for sharing (atomic writes start private)
        self.out.mkdir(parents=True, exist_ok=True)
        old = self.out / f".{IMAGES}.old-{os.getpid()}"
        if (self.out / IMAGES).exists():
            os.replace(self.out / IMAGES, old)
        for name in OWNED:
            source = self.dir / name
            if source.exists():
                os.replace(source, self.out / name)
            elif name != IMAGES and (self.out / name).exists():
                (self.out / name).unlink()  # e.g. no sheet this time: drop the stale one
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _staged(out: Path, started: float, build) -> dict:
    """Build a report in a staging folder and swap it in; readers never see half a report."""
    stage = Staging(out)
    try:
        result = build(stage)
        stage.commit()
    except BaseException:
        stage.abort()
        raise
    result.update(out=str(out), html=str(out / PAGE), sheet=str(out / SHEET) if result["sheet_layout"] else None,
                  seconds=round(time.perf_counter() - started, 3))
    return result


def _template(name: str):
    import jinja2

    from .resources import data_dir

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(data_dir("templates"))),
                             autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["loss"] = lambda v: "–" if v is None else f"{v:.4f}"
    env.filters["pct"] = lambda v: "" if v is None else f"{v * 100:.1f}%"
    env.filters["num"] = lambda v, digits=2: "–" if v is None else f"{v:.{digits}f}"
    return env.get_template(name)


def _write_page(stage: Staging, context: dict[str, Any]) -> None:
    html = _template("report.html.j2").render(csp=CSP, generated=time.strftime("%Y-%m-%d %H:%M:%S"), **context)
    atomic.write_text(stage.dir / PAGE, html)


def _write_data(stage: Staging, data: dict[str, Any]) -> None:
    atomic.write_text(stage.dir / DATA, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def _image_cell(sample: Sample, stage: Staging, name: str, native: tuple[int, int]) -> dict[str, Any]:
    place(sample.path, stage.dir / IMAGES / name)
    width, height = display_size(*native)
    return {"src": f"{IMAGES}/{name}", "width": width, "height": height, "file": sample.path.name,
            "seed": sample.name.seed, "upscaled": width > native[0]}


# ----------------------------------------------------------------------------------------------
# The run report.


def run_report(home: Path, ref: str, out: Path | None = None) -> dict[str, Any]:
    from .ledger import open_ledger

    started = time.perf_counter()
    ledger = open_ledger(home)
    row = ledger.find(ref)
    data = load_run(row, ledger)
    out = Path(out) if out is not None else runfolder.of(data.run_dir).report
    scores = ledger.scores(row.run_id)
    return _staged(out, started, lambda stage: _run_report(home, data, stage, scores))


def _run_report(home: Path, data: RunData, stage: Staging, ledger_scores: list[dict] | None = None) -> dict[str, Any]:
    rows, columns = data.rows, data.columns
    first = next(iter(data.samples.values()), None)
    cell = cell_size(first.path) if first else (SHEET_MIN, SHEET_MIN)
    # Every line of a run's prompts file has the same --w/--h, so one size serves all its samples.
    native = image_size(first.path) if first else cell
    grid = [[data.samples.get((c.key, r.index)) for c in columns] for r in rows]
    thumbs_flat = thumbnails([s.path if s else None for line in grid for s in line], cell)
    thumbs = [thumbs_flat[i * len(columns):(i + 1) * len(columns)] for i in range(len(rows))]
    base_at = next((i for i, c in enumerate(columns) if c.kind == "base"), None)
    changes = [[change(t, line[base_at]) if base_at is not None and i != base_at else None for i, t in enumerate(line)]
               for line in thumbs]

    groups: list[dict[str, Any]] = []
    for r, prompt in enumerate(rows):
        if not groups or groups[-1]["subject_index"] != prompt.subject_index:
            groups.append({"subject_index": prompt.subject_index, "subject": prompt.subject, "rows": []})
        cells = []
        for c, column in enumerate(columns):
            sample = grid[r][c]
            if sample is None:
                cells.append(None)
                continue
            cell_data = _image_cell(sample, stage, f"{column.key}_{prompt.index:02d}.png", native)
            cell_data["change"] = changes[r][c]
            cell_data["alt"] = f"{prompt.kind_label}: {prompt.text} — {column.label}"
            cells.append(cell_data)
        groups[-1]["rows"].append({"kind": prompt.kind, "kind_label": prompt.kind_label, "text": prompt.text,
                                   "seed": prompt.seed, "index": prompt.index, "cells": cells})

    ablation = _ablation(rows, columns, changes)
    layout = None
    if columns and rows:
        column_labels = [[c.label, f"loss {c.loss:.4f}" if c.loss is not None else "",
                          "best (lowest loss)" if c.best else ""] for c in columns]
        row_labels = [[f"{p.subject}", f"{p.kind_label} · seed {p.seed}", p.text] for p in rows]
        layout = compose_sheet(f"{data.run_id} · {data.spec.name} · {data.row.status}", column_labels, row_labels,
                               thumbs, cell, stage.dir / SHEET)

    has_loss = loss_plot(data, stage.dir / LOSS_PLOT) is not None
    timings = run_timings(data)
    scores = {s["checkpoint"]: s for s in (ledger_scores or [])}
    from .score import top as top_score

    top = top_score(list(scores.values()))
    diff = preset_diff(home, data.row.preset, data.spec)
    notes = _run_notes(data)
    summary = run_summary(data)
    context = {
        "kind": "run", "run_id": data.run_id, "title": f"{data.run_id} — evaluation sheet", "summary": summary,
        "notes": notes, "about": demo.explanation_for_dataset(data.spec.dataset.dir),
        "columns": [c.to_json() for c in columns], "groups": groups, "ablation": ablation,
        "loss_image": LOSS_PLOT if has_loss else None, "sheet_image": SHEET if layout else None,
        "checkpoints": [dict(c.to_json(), name=c.file.name, best=bool(data.best and c.file == data.best.file),
                             scores=scores.get(c.file.name), top=bool(top and top["checkpoint"] == c.file.name))
                        for c in data.checkpoints],
        "scored": bool(scores), "score_how": SCORE_HOW,
        "criterion": data.criterion, "diff": diff,
        "config": [{"key": k, "value": show_value(v)} for k, v in sorted(flatten(data.spec).items())],
        "timings": timing_rows(timings),
    }
    _write_page(stage, context)
    result = {
        "kind": "run", "run_id": data.run_id, "status": data.row.status, "rows": [r.to_json() for r in rows],
        "columns": [c.to_json() for c in columns], "images": sum(1 for line in grid for s in line if s),
        "missing": sum(1 for line in grid for s in line if s is None),
        "sheet_layout": layout.to_json() if layout else None, "ablation": ablation, "timings": timings,
        "checkpoints": [c.to_json() for c in data.checkpoints], "criterion": data.criterion,
        "best": data.best.to_json() if data.best else None, "preset_diff": diff, "notes": notes,
        "scores": list(scores.values()), "best_by_score": top,
    }
    _write_data(stage, result)
    return result


def _ablation(rows: list[Row], columns: list[Column], changes: list[list[float | None]]) -> list[dict[str, Any]]:
    """Per column: the mean change from the base image, with the trigger, without it, per variant.
    With a style LoRA the trigger rows should move far from the base, the no-trigger rows much less."""
    out = []
    for c, column in enumerate(columns):
        if column.kind == "base":
            continue
        by_kind: dict[str, list[float]] = {}
        for r, prompt in enumerate(rows):
            value = changes[r][c]
            if value is not None:
                by_kind.setdefault(prompt.kind, []).append(value)
        if by_kind:
            out.append({"column": column.label, "by_kind": {KIND_LABELS.get(k, k.replace("-", " ")): sum(v) / len(v)
                                                            for k, v in by_kind.items()}})
    return out


def run_summary(data: RunData) -> list[tuple[str, str]]:
    row, spec = data.row, data.spec
    outcome = (data.manifest or {}).get("outcome") or {}
    items = [("run", row.run_id), ("status", row.status + (f" ({row.reason})" if row.reason else "")),
             ("outcome", outcome.get("message") or row.hint or "–"), ("preset", row.preset or "–"),
             ("base model", spec.model.base or "–"), ("trigger", spec.dataset.trigger or "–"),
             ("steps", f"{row.steps_done}/{row.steps_total}" if row.steps_done is not None else "–"),
             ("epochs", f"{row.epoch}/{row.epochs_total}" if row.epoch else "–"),
             ("final loss/average", "–" if row.loss is None else f"{row.loss:.4f}"),
             ("best checkpoint", f"{data.best.file.name} ({data.best.label}, {data.criterion} {data.best.loss:.4f})"
              if data.best else "–"),
             ("sampling", f"{spec.sampling.sampler}, {spec.sampling.steps} steps, CFG {spec.sampling.cfg_scale:g}, "
                          f"{spec.sample_size[0]}×{spec.sample_size[1]}"),
             ("negative prompt", spec.sampling.negative_prompt or "–")]
    return items


def _run_notes(data: RunData) -> list[str]:
    notes = []
    if data.row.active:
        notes.append(f"{data.run_id} is still {data.row.status}: this report shows what it has produced so far.")
    if not data.samples:
        notes.append("This run saved no sample images (sampling.prompts is empty, or it stopped before the first "
                     "sampling round).")
    elif not any(c.kind == "base" for c in data.columns):
        notes.append("No base-model column: the run did not sample before training (sampling.at_first = false).")
    if any(r.kind == "unknown" for r in data.rows):
        notes.append("Some sample files have prompt indices the run's spec does not list; they are shown as "
                     "'prompt N' rows.")
    return notes


# ----------------------------------------------------------------------------------------------
# Comparisons and sweeps: the final samples of every run on the same prompts and seeds.


def varying_settings(specs: list) -> tuple[list[str], list[dict[str, Any]]]:
    """The keys whose values differ between the runs, and each run's flat spec."""
    flats = [flatten(s) for s in specs]
    keys = sorted({k for f in flats for k in f})
    varying = [k for k in keys if k not in NOISE_KEYS and len({json.dumps(f.get(k, None), sort_keys=True) for f in flats}) > 1]
    return varying, flats


def compare_report(home: Path, refs: list[str], out: Path | None = None, *, title: str | None = None,
                   sweep=None) -> dict[str, Any]:
    from . import workspace
    from .ledger import open_ledger

    started = time.perf_counter()
    ledger = open_ledger(home)
    rows, seen = [], set()
    for ref in refs:
        row = ledger.find(ref)
        if row.run_id not in seen:
            seen.add(row.run_id)
            rows.append(row)
    if sweep is None and len(rows) < 2:
        raise BadInput("kr compare needs at least two different runs. Fix: `kr compare RUN RUN …` "
                       "(for one run: `kr report RUN`)")
    runs = []
    for row in rows:
        try:
            runs.append(load_run(row, ledger))
        except BadInput:
            if sweep is None:
                raise
    if not runs:
        raise BadInput(f"none of the runs of {sweep.sweep_id if sweep else 'this comparison'} got far enough to "
                       "report on. Fix: `kr runs ls --sweep ID` shows why")
    from .score import top as top_score

    for data in runs:
        data.top_score = top_score(ledger.scores(data.run_id))
    if any(d.top_score for d in runs):  # scored (kr score): best first
        runs.sort(key=lambda d: (d.top_score is None, -(d.top_score or {}).get("score", 0.0)))
    if out is None:
        digest = hashlib.sha1(" ".join(r.run_id for r in runs).encode()).hexdigest()[:8]
        out = workspace.home(home) / "reports" / f"compare-{runs[0].run_id}-{len(runs)}runs-{digest}"
    out = Path(out)
    return _staged(out, started, lambda stage: _compare_report(runs, stage, title or f"comparison of {len(runs)} runs", sweep))


def sweep_report(home: Path, sweep_id: str, out: Path | None = None) -> dict[str, Any]:
    """The report of a sweep's members (runs whose runs.sweep_id is the sweep); default folder: the sweep's."""
    from .ledger import open_ledger

    ledger = open_ledger(home)
    sweep = ledger.find_sweep(sweep_id)
    members = sorted(ledger.runs(sweep_id=sweep.sweep_id), key=lambda r: r.id)
    if not members:
        raise BadInput(f"sweep {sweep.sweep_id} has no runs yet. Fix: wait for its first member, or "
                       f"`kr runs ls --sweep {sweep.sweep_id}`")
    out = Path(out) if out is not None else Path(sweep.sweep_dir) / REPORT_DIR
    return compare_report(home, [r.run_id for r in members], out, title=f"sweep {sweep.sweep_id} ({sweep.status})",
                          sweep=sweep)


def final_column(data: RunData) -> Column | None:
    """The newest checkpoint's column at full strength (post hoc or from training)."""
    trained = [c for c in data.columns if c.kind != "base" and c.strength == 1.0]
    return max(trained, key=lambda c: (c.kind == "epoch", c.number)) if trained else None


def _compare_report(runs: list[RunData], stage: Staging, title: str, sweep) -> dict[str, Any]:
    varying, flats = varying_settings([r.spec for r in runs])
    # Columns: every (form, prompt text, seed) in the order the runs list them.
    prompt_keys: dict[tuple, dict[str, Any]] = {}
    per_run: list[dict[tuple, int]] = []
    for data in runs:
        mapping = {}
        for row in data.rows:
            key = (row.kind, row.text, row.seed)
            prompt_keys.setdefault(key, {"kind": row.kind, "kind_label": row.kind_label, "subject": row.subject,
                                         "text": row.text, "seed": row.seed, "subject_index": row.subject_index})
            mapping[key] = row.index
        per_run.append(mapping)
    first_seen = {key: n for n, key in enumerate(prompt_keys)}
    order = sorted(prompt_keys, key=lambda k: (prompt_keys[k]["subject_index"], first_seen[k]))
    columns = [prompt_keys[k] for k in order]

    # Base rows: one per distinct base model, from the first run that sampled it before training.
    lines: list[dict[str, Any]] = []
    bases: dict[str, list[int]] = {}
    for i, data in enumerate(runs):
        bases.setdefault(data.spec.model.base or "?", []).append(i)
    for base, members in bases.items():
        samples = []
        for key in order:
            found = None
            for i in members:
                index = per_run[i].get(key)
                found = runs[i].samples.get(("e000000", index)) if index is not None else None
                if found:
                    break
            samples.append(found)
        if any(samples):
            label = "base model" + (f" ({Path(base).name})" if len(bases) > 1 else "")
            lines.append({"kind": "base", "title": label, "sub": ["before training (sample_at_first)"],
                          "samples": samples, "run": None})
    for i, data in enumerate(runs):
        final = final_column(data)
        samples = [data.samples.get((final.key, per_run[i][key])) if final and key in per_run[i] else None
                   for key in order]
        diffs = [f"{k} = {show_value(flats[i].get(k, ABSENT))}" for k in varying]
        sub = diffs + [f"final: {final.label.replace(' (final)', '')}" if final else "no samples after the base",
                       f"loss/average {data.row.loss:.4f}" if data.row.loss is not None else "loss –"]
        if data.top_score:
            sub.append(f"score {data.top_score['score']:.1f} ({data.top_score.get('label')})")
        lines.append({"kind": "run", "title": f"{data.run_id} ({data.row.status})", "sub": sub, "samples": samples,
                      "run": data})

    first = next((s for line in lines for s in line["samples"] if s), None)
    cell = cell_size(first.path) if first else (SHEET_MIN, SHEET_MIN)
    thumbs_flat = thumbnails([s.path if s else None for line in lines for s in line["samples"]], cell)
    thumbs = [thumbs_flat[i * len(order):(i + 1) * len(order)] for i in range(len(lines))]
    base_thumbs = thumbs[0] if lines and lines[0]["kind"] == "base" else None

    page_rows = []
    for r, line in enumerate(lines):
        cells = []
        for c, sample in enumerate(line["samples"]):
            if sample is None:
                cells.append(None)
                continue
            owner = line["run"].run_id if line["run"] else f"base{r}"
            cell_data = _image_cell(sample, stage, f"{owner}_{c:03d}.png", image_size(sample.path))
            cell_data["change"] = change(thumbs[r][c], base_thumbs[c]) if base_thumbs and line["kind"] == "run" else None
            cell_data["alt"] = f"{line['title']}: {columns[c]['text']}"
            cells.append(cell_data)
        page_rows.append({"kind": line["kind"], "title": line["title"], "sub": line["sub"], "cells": cells})

    layout = None
    if order and lines:
        column_labels = [[col["subject"], f"{col['kind_label']} · seed {col['seed']}"] for col in columns]
        row_labels = [[line["title"]] + line["sub"] for line in lines]
        layout = compose_sheet(title, column_labels, row_labels, thumbs, cell, stage.dir / SHEET)

    series = {}
    for data in runs:
        points = data.losses.series.get("loss/average") or []
        if points:
            label = data.run_id + (": " + ", ".join(f"{k}={show_value(flatten(data.spec).get(k, ABSENT))}"
                                                      for k in varying[:3]) if varying else "")
            series[label] = points
    has_loss = bool(series)
    if has_loss:
        plot_overlay(series, stage.dir / LOSS_PLOT, title)

    summary_rows = []
    for i, data in enumerate(runs):
        summary_rows.append({
            "run_id": data.run_id, "status": data.row.status,
            "settings": [{"key": k, "value": show_value(flats[i].get(k, ABSENT))} for k in varying],
            "loss": data.row.loss, "min_loss": data.row.min_loss,
            "best": f"{data.best.label} ({data.best.loss:.4f})" if data.best else "–",
            "score": f"{data.top_score['score']:.1f} ({data.top_score.get('label')})" if data.top_score else "–",
            "time": _duration(data.row.duration), "it_per_s": f"{data.row.it_per_s:.2f}" if data.row.it_per_s else "–"})
    notes = []
    if any(len(m) != len(per_run[0]) or set(m) != set(per_run[0]) for m in per_run):
        notes.append("The runs do not all sample the same prompts and seeds: a blank cell means that run has no "
                     "such prompt.")
    active = [d.run_id for d in runs if d.row.active]
    if active:
        notes.append(f"Still running: {', '.join(active)}; their rows show the newest samples so far.")
    if sweep is not None and len(runs) < sweep.members:
        notes.append(f"{len(runs)} of the sweep's {sweep.members} members have run so far.")
    context = {
        "about": None,
        "kind": "compare", "title": title, "summary": [("runs", str(len(runs))),
                                                       ("settings that differ", ", ".join(varying) or "none")],
        "notes": notes, "prompts": columns, "lines": page_rows, "runs": summary_rows, "varying": varying,
        "loss_image": LOSS_PLOT if has_loss else None, "sheet_image": SHEET if layout else None,
    }
    _write_page(stage, context)
    result = {
        "kind": "sweep" if sweep is not None else "compare", "sweep_id": sweep.sweep_id if sweep is not None else None,
        "runs": [d.run_id for d in runs], "varying": varying,
        "prompts": [{k: v for k, v in col.items() if k != "subject_index"} for col in columns],
        "rows": [{"kind": line["kind"], "title": line["title"], "sub": line["sub"]} for line in lines],
        "images": sum(1 for line in lines for s in line["samples"] if s),
        "sheet_layout": layout.to_json() if layout else None, "notes": notes,
    }
    _write_data(stage, result)
    return result


# ----------------------------------------------------------------------------------------------
# `kr report REF`: a run or a sweep.


def resolve(home: Path, ref: str) -> tuple[str, Any]:
    """("run", RunRow) or ("sweep", SweepRow). Ids starting with 'sweep-' are tried as sweeps first."""
    from .ledger import open_ledger

    ledger = open_ledger(home)
    attempts = (("sweep", ledger.find_sweep), ("run", ledger.find)) if ref.startswith("sweep-") \
        else (("run", ledger.find), ("sweep", ledger.find_sweep))
    errors = []
    for kind, find in attempts:
        try:
            return kind, find(ref)
        except BadInput as error:
            errors.append(error)
    ambiguous = next((e for e in errors if not e.message.startswith("no ")), None)
    if ambiguous is not None:
        raise ambiguous
    raise BadInput(f"no run or sweep matches {ref!r}. Fix: `kr runs ls` lists the runs; a sweep's id starts "
                   "with sweep-")


def run_ids(home: Path, refs: list[str] | tuple[str, ...]) -> list[str]:
    """The runs the refs name: a run directly, a sweep by its members (in order); each run once."""
    from .ledger import open_ledger

    ledger = open_ledger(home)
    found: list[str] = []
    for ref in refs:
        kind, row = resolve(home, ref)
        members = [r.run_id for r in sorted(ledger.runs(sweep_id=row.sweep_id), key=lambda r: r.id)] \
            if kind == "sweep" else [row.run_id]
        found += [m for m in members if m not in found]
    return found


def report(home: Path, ref: str, out: Path | None = None) -> dict[str, Any]:
    kind, found = resolve(home, ref)
    if kind == "sweep":
        return sweep_report(home, found.sweep_id, out)
    return run_report(home, found.run_id, out)
