"""The review board's library: the workspace as its pages show it, and the actions they offer.

Every page and action of `kr review` is one public method of Board (the web app only parses the request
and maps errors). Images are served by what the ledger and run folders know: a page lists a run's cells as
(column key, prompt index), and `image()` finds the file through the run's loaded grid, never through
a path taken from the request.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..workspace import caches_dir as workspace_caches
from ._thumbs import Thumbnails

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
COLUMN_KEY = re.compile(r"[es]\d{6}(@\d+(\.\d+)?)?")
CURVE_WIDTH, CURVE_HEIGHT, CURVE_POINTS = 640, 200, 400
POLICIES = ("keep", "minimal", "scrub")


def checked_id(value: str, what: str = "run") -> str:
    if not isinstance(value, str) or not RUN_ID.fullmatch(value):
        raise BadInput(f"{value!r} is not a {what} id. Fix: pick one from the board")
    return value


@dataclass
class Pick:
    """One column of a lineup: a run, and one of its grid columns (None: its newest checkpoint at strength 1)."""
    run_id: str
    column: str | None = None

    @classmethod
    def parse(cls, text: str) -> "Pick":
        run_id, _, column = (text or "").partition(":")
        if column and not COLUMN_KEY.fullmatch(column):
            raise BadInput(f"{column!r} is not a column of a run's grid. Fix: pick columns on the run's page")
        return cls(checked_id(run_id), column or None)


class Board:
    """The workspace `home` as the board shows it. Safe to share between the server's threads: each
    thread gets its own ledger connection, and the image catalogue and thumbnails sit behind a lock."""

    def __init__(self, home: Path, releases: Path, read_only: bool = False):
        self.home = Path(home)
        self.releases = Path(releases)
        self.read_only = read_only
        self._local = threading.local()
        self._lock = threading.Lock()
        self._catalog: dict[str, dict[tuple[str, int], Path]] = {}
        self._thumbs = Thumbnails(workspace_caches(self.home) / "review-thumbnails")

    # -- reading -----------------------------------------------------------------------------------

    def ledger(self):
        """This thread's ledger connection (sqlite3 connections stay in the thread that made them)."""
        ledger = getattr(self._local, "ledger", None)
        if ledger is None:
            from ..ledger import open_ledger

            ledger = self._local.ledger = open_ledger(self.home)
        return ledger

    def overview(self) -> dict[str, Any]:
        """The board's front page: every sweep and run, newest first, with progress, scores and ratings."""
        from .. import workspace
        from ..ledger import ACTIVE

        ledger = self.ledger()
        if ledger.runs(status=list(ACTIVE)):
            workspace.settled_ledger(self.home)  # a run whose kr died is shown as such, not as running
        runs = [self._run_item(ledger, row) for row in ledger.runs()]
        by_sweep: dict[str, list[dict]] = {}
        for item in runs:
            if item["sweep_id"]:
                by_sweep.setdefault(item["sweep_id"], []).append(item)
        sweeps = [{"sweep_id": s.sweep_id, "name": s.name, "preset": s.preset, "status": s.status,
                   "members": s.members, "ran": len(by_sweep.get(s.sweep_id, [])),
                   "best": max((m for m in by_sweep.get(s.sweep_id, []) if m["score"] is not None),
                               key=lambda m: m["score"], default=None),
                   "created": _when(s.created_at)} for s in ledger.sweeps()]
        return {"runs": runs, "sweeps": sweeps, "home": str(self.home)}

    def _run_item(self, ledger, row) -> dict[str, Any]:
        from ..score import top

        best = top(ledger.scores(row.run_id))
        stars = [r["stars"] for r in ledger.ratings(row.run_id) if r["checkpoint"]]
        return {**progress_of(row), "name": row.name, "preset": row.preset, "sweep_id": row.sweep_id,
                "score": None if best is None else round(best["score"], 1),
                "score_label": None if best is None else best.get("label"),
                "rating": round(sum(stars) / len(stars), 1) if stars else None, "ratings": len(stars),
                "started": _when(row.started_at or row.created_at)}

    def progress(self, run_ids: list[str]) -> dict[str, Any]:
        """The live state of these runs (the pages poll it), and the post-hoc jobs of each."""
        ledger = self.ledger()
        out = {}
        for run_id in run_ids[:200]:
            try:
                row = ledger.get(checked_id(run_id))
            except BadInput:
                continue
            out[row.run_id] = {**progress_of(row), "jobs": [_job_item(j) for j in ledger.sample_jobs(row.run_id)]}
        return {"runs": out, "at": time.time()}

    def run(self, run_id: str) -> dict[str, Any]:
        """A run's page: summary, progress, loss curve, checkpoints with scores and ratings, the grid."""
        from ..report import load_run, run_summary
        from .ratings import summary

        ledger = self.ledger()
        row = ledger.get(checked_id(run_id))
        data = load_run(row, ledger)
        self._remember(data)
        self._thumbs.warm([data.samples[(c.key, p.index)].path for p in data.rows for c in data.columns
                           if (c.key, p.index) in data.samples])  # in the page's order: the first rows first
        scores = {s["checkpoint"]: s for s in ledger.scores(row.run_id)}
        rated = summary(self.home, row.run_id)
        checkpoints = [{"file": c.file.name, "label": c.label, "kind": c.kind, "loss": c.loss,
                        "best_loss": data.best is not None and c.file == data.best.file,
                        "score": scores.get(c.file.name), "rating": rated.get(c.file.name),
                        "pick": _pick_token(c)} for c in data.checkpoints]
        columns = [{"key": c.key, "label": c.label, "checkpoint": c.checkpoint, "loss": c.loss, "kind": c.kind,
                    "strength": c.strength, "posthoc": c.posthoc, "seconds_per_image": c.seconds_per_image,
                    "score": (scores.get(c.checkpoint) or {}).get("score") if c.checkpoint else None}
                   for c in data.columns]
        groups: list[dict[str, Any]] = []
        for prompt in data.rows if data.columns else []:
            if not groups or groups[-1]["subject"] != prompt.subject:
                groups.append({"subject": prompt.subject, "rows": []})
            cells = [self._cell(row.run_id, data, column, prompt) for column in data.columns]
            groups[-1]["rows"].append({"kind_label": prompt.kind_label, "text": prompt.text, "seed": prompt.seed,
                                       "cells": cells})
        return {"run": {**progress_of(row), "name": row.name, "preset": row.preset, "sweep_id": row.sweep_id},
                "summary": run_summary(data), "checkpoints": checkpoints, "columns": columns, "groups": groups,
                "curve": loss_curve(data.losses.series), "ratings": ledger.ratings(row.run_id),
                "jobs": [_job_item(j) for j in ledger.sample_jobs(row.run_id)],
                "policy": data.spec.privacy.metadata, "output_name": data.spec.output_name,
                "trigger": data.spec.dataset.trigger, "prompts": len(data.rows),
                "releases": str(self.releases), **dict(zip(("cell_w", "cell_h"), cell_size_of(data)))}

    def _cell(self, run_id: str, data, column, prompt) -> dict[str, Any] | None:
        sample = data.samples.get((column.key, prompt.index))
        if sample is None:
            return None
        url = f"/img/{run_id}/{column.key}/{prompt.index}"
        return {"url": url, "thumb": url + "?thumb=1", "file": sample.path.name, "column": column.label, "run_id": run_id,
                "checkpoint": column.checkpoint, "alt": f"{prompt.kind_label}: {prompt.text} — {column.label}",
                "seed": sample.name.seed if sample.name.seed is not None else prompt.seed}

    def sweep(self, sweep_id: str) -> dict[str, Any]:
        """A sweep's page: its members ranked by score, and their newest checkpoints side by side."""
        ledger = self.ledger()
        sweep = ledger.get_sweep(checked_id(sweep_id, "sweep"))
        members = [self._run_item(ledger, row) for row in sorted(ledger.runs(sweep_id=sweep.sweep_id), key=lambda r: r.id)]
        members.sort(key=lambda m: (m["score"] is None, -(m["score"] or 0)))
        picks = [Pick(m["run_id"]) for m in members if m["status"] not in ("queued",)]
        view = self.lineup(picks, title=f"sweep {sweep.sweep_id}") if picks else None
        return {"sweep": sweep.to_json(), "members": members, "lineup": view}

    def lineup(self, picks: list[Pick], title: str | None = None) -> dict[str, Any]:
        """Runs' or checkpoints' images side by side at the same prompts and seeds, the base model first."""
        from ..report import load_run

        if not picks:
            raise BadInput("nothing to compare. Fix: pick two checkpoints or runs")
        ledger = self.ledger()
        loaded: dict[str, Any] = {}
        columns = []
        for pick in picks:
            if pick.run_id not in loaded:
                try:
                    loaded[pick.run_id] = load_run(ledger.get(pick.run_id), ledger)
                except BadInput:
                    if len(picks) <= 2:
                        raise
                    continue  # a sweep member that never started
                self._remember(loaded[pick.run_id])
            data = loaded[pick.run_id]
            column = _column(data, pick.column)
            columns.append({"run_id": pick.run_id, "data": data, "column": column,
                            "label": f"{pick.run_id} · {column.label}" if column else f"{pick.run_id} · no samples"})
        base_owner = next((c for c in columns if any(col.kind == "base" for col in c["data"].columns)), None)
        prompts: dict[tuple, Any] = {}
        for entry in columns:
            for prompt in entry["data"].rows:
                prompts.setdefault((prompt.kind, prompt.text, prompt.seed), prompt)
        lines = []
        for identity, prompt in prompts.items():
            cells = []
            if base_owner is not None:
                cells.append(self._lineup_cell(base_owner["data"], "e000000", identity))
            for entry in columns:
                cells.append(self._lineup_cell(entry["data"], entry["column"].key if entry["column"] else None, identity))
            if any(cells):  # a prompt only some other column sampled (e.g. extra seeds) has nothing to line up
                lines.append({"kind_label": prompt.kind_label, "text": prompt.text, "seed": prompt.seed, "cells": cells})
        settings = _differences([e["data"] for e in columns])
        heads = ([{"label": "base model", "run_id": base_owner["run_id"], "key": "e000000", "settings": []}]
                 if base_owner else []) + \
            [{"label": e["label"], "run_id": e["run_id"], "key": e["column"].key if e["column"] else None,
              "checkpoint": e["column"].checkpoint if e["column"] else None, "settings": settings.get(e["run_id"], [])}
             for e in columns]
        width, height = cell_size_of(columns[0]["data"])
        return {"title": title or " vs ".join(h["label"] for h in heads[1 if base_owner else 0:]), "heads": heads,
                "lines": lines, "cell_w": width, "cell_h": height}

    def _lineup_cell(self, data, key: str | None, identity: tuple) -> dict[str, Any] | None:
        if key is None:
            return None
        prompt = next((p for p in data.rows if (p.kind, p.text, p.seed) == identity), None)
        column = next((c for c in data.columns if c.key == key), None)
        return None if prompt is None or column is None else self._cell(data.run_id, data, column, prompt)

    def _remember(self, data) -> None:
        with self._lock:
            self._catalog[data.run_id] = {key: sample.path for key, sample in data.samples.items()}

    def image(self, run_id: str, key: str, index: int, thumb: bool = False) -> tuple[Path | bytes, str]:
        """(file or bytes, media type) of the image at a run's grid cell; BadInput when the run has none."""
        from ..report import load_run

        checked_id(run_id)
        if not COLUMN_KEY.fullmatch(key):
            raise BadInput(f"{key!r} is not a grid column")
        with self._lock:
            path = self._catalog.get(run_id, {}).get((key, index))
        if path is None or not path.is_file():  # not shown yet, or made since: load the run's grid again
            ledger = self.ledger()
            self._remember(load_run(ledger.get(run_id), ledger))
            with self._lock:
                path = self._catalog[run_id].get((key, index))
        if path is None:
            raise BadInput(f"run {run_id} has no image at {key}/{index}")
        if not thumb:
            return path, "image/png"
        made = self._thumbs.get(path)
        return made, "image/png" if made == path else "image/jpeg"

    # -- acting (refused in read-only mode) ------------------------------------------------------------

    def _writable(self) -> None:
        if self.read_only:
            raise BadInput("this board is read-only (kr review --read-only). Fix: start kr review without it")

    def rate(self, run_id: str, reviewer: str | None, stars: Any, note: str | None = None,
             checkpoint: str | None = None, sample: str | None = None) -> dict[str, Any]:
        from .ratings import rate

        self._writable()
        if not reviewer:
            raise BadInput("the board does not know who is rating. Fix: give your name first")
        return rate(self.home, checked_id(run_id), reviewer=reviewer, stars=stars, note=note,
                    checkpoint=_text_or_none(checkpoint, "checkpoint"), sample=_text_or_none(sample, "sample"))

    def release(self, run_id: str, checkpoint: str, name: str | None = None, policy: str | None = None) -> dict[str, Any]:
        """`kr release RUN --checkpoint FILE -o <releases folder>`: the same checks, policy and model card,
        never overwriting; the folder is the one kr review was started with, never one from the page."""
        from ..checkpoints import release

        self._writable()
        if policy is not None and policy not in POLICIES:
            raise BadInput(f"{policy!r} is not a metadata policy. Fix: keep, minimal or scrub")
        return release(self.home, checked_id(run_id), self.releases, checkpoint=_text_or_none(checkpoint, "checkpoint"),
                       name=name or None, policy=policy or None, force=False)

    def sample(self, run_id: str, checkpoints: list[str], strengths: str, kinds: list[str],
               prompts: list[str] | None = None) -> dict[str, Any]:
        """Check a `kr sample` request as the CLI does, then start it as its own `kr sample` process (queued
        on the device like any other job; it keeps running if the board stops)."""
        from .. import sample

        self._writable()
        run_id = checked_id(run_id)
        if not isinstance(checkpoints, list) or not checkpoints or not all(isinstance(c, str) for c in checkpoints):
            raise BadInput("no checkpoint chosen. Fix: tick at least one checkpoint")
        if not isinstance(kinds, list) or not kinds:
            raise BadInput("no prompt form chosen. Fix: tick trigger, no-trigger and/or variants")
        prompts = [p for p in (prompts or []) if isinstance(p, str) and p.strip()]
        which = ",".join(checkpoints)
        request = sample.Request(checkpoints=which, strengths=sample.parse_strengths(str(strengths)),
                                 kinds=[str(k) for k in kinds], extra_prompts=prompts)
        sample.check_prompts(prompts)
        job = sample.prepare(self.home, run_id, request)  # everything checked, nothing written
        argv = [sys.executable, "-m", "kohya_runner", "--home", str(self.home), "sample", job.run.run_id,
                f"--checkpoints={which}", f"--strength={','.join(f'{s:g}' for s in request.strengths)}",
                f"--kinds={','.join(request.kinds)}"] + [f"--prompt={p}" for p in prompts]
        logs = self.home / "review" / "jobs"
        logs.mkdir(parents=True, exist_ok=True)
        log = logs / f"{job.run.run_id}-{time.strftime('%Y%m%d-%H%M%S')}-{time.monotonic_ns() % 10**6}.log"
        with open(log, "w", encoding="utf-8") as out:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                       start_new_session=True, close_fds=True)
        return {"run_id": job.run.run_id, "pid": process.pid, "images": sum(len(p.cells) for p in job.passes),
                "log": str(log)}


# -- small pure helpers ------------------------------------------------------------------------------


def progress_of(row) -> dict[str, Any]:
    """How far a run is, for a progress bar: fraction, steps, epoch, loss, speed and time left."""
    done, total = row.steps_done, row.steps_total
    fraction = min(1.0, done / total) if done is not None and total else (1.0 if row.status == "succeeded" else 0.0)
    left = (total - done) / row.it_per_s if row.active and done is not None and total and row.it_per_s else None
    return {"run_id": row.run_id, "status": row.status, "reason": row.reason, "hint": row.hint, "active": row.active,
            "fraction": round(fraction, 4), "steps_done": done, "steps_total": total, "epoch": row.epoch,
            "epochs_total": row.epochs_total, "loss": row.loss, "it_per_s": row.it_per_s,
            "eta_seconds": None if left is None else round(left), "duration": row.duration}


def loss_curve(series: dict[str, list]) -> dict[str, Any] | None:
    """The loss curves as SVG paths in a CURVE_WIDTH × CURVE_HEIGHT box (no plotting library, no image)."""
    from ..metrics import last_per_step

    tags = [t for t in ("loss/average", "loss/current", "loss/validation/step_average") if series.get(t)]
    if "loss/average" in tags and "loss/current" in tags:
        tags.remove("loss/current")
    lines = {t: [p for p in last_per_step(series[t]) if p.value == p.value and abs(p.value) != float("inf")] for t in tags}
    lines = {t: points for t, points in lines.items() if points}
    if not lines:
        return None
    steps = [p.step for points in lines.values() for p in points]
    values = [p.value for points in lines.values() for p in points]
    low, high = min(values), max(values)
    first, last = min(steps), max(steps)
    span_x, span_y = max(last - first, 1), max(high - low, 1e-9)

    def path(points) -> str:
        stride = max(1, len(points) // CURVE_POINTS)
        kept = points[::stride] + ([points[-1]] if (len(points) - 1) % stride else [])
        return " ".join(f"{'M' if i == 0 else 'L'}{(p.step - first) / span_x * CURVE_WIDTH:.1f},"
                        f"{CURVE_HEIGHT - (p.value - low) / span_y * CURVE_HEIGHT:.1f}" for i, p in enumerate(kept))

    return {"width": CURVE_WIDTH, "height": CURVE_HEIGHT, "low": low, "high": high, "first": first, "last": last,
            "lines": [{"tag": t, "d": path(points), "last": points[-1].value} for t, points in lines.items()]}


def cell_size_of(data) -> tuple[int, int]:
    """The size a grid shows a run's images at (its samples all have one size; small ones shown larger)."""
    from ..sheet import display_size, image_size

    first = next(iter(data.samples.values()), None)
    return display_size(*image_size(first.path)) if first is not None else (96, 96)


def _differences(runs: list) -> dict[str, list[str]]:
    """run id → "key = value" for each setting in which the runs differ (nothing for one run)."""
    from ..report import varying_settings
    from ..spec import ABSENT, show_value

    distinct = list({data.run_id: data for data in runs}.values())
    if len(distinct) < 2:
        return {}
    varying, flats = varying_settings([data.spec for data in distinct])
    return {data.run_id: [f"{key} = {show_value(flat.get(key, ABSENT))}" for key in varying[:6]]
            for data, flat in zip(distinct, flats)}


def _column(data, key: str | None):
    if key is not None:
        column = next((c for c in data.columns if c.key == key), None)
        if column is None:
            raise BadInput(f"run {data.run_id} has no grid column {key}. Fix: pick one on its page")
        return column
    from ..report import final_column

    return final_column(data)


def _pick_token(checkpoint) -> str:
    """How `kr sample --checkpoints` names a checkpoint."""
    if checkpoint.kind == "final":
        return "final"
    return f"s{checkpoint.step}" if checkpoint.kind == "step" else f"e{checkpoint.epoch}"


def _job_item(job: dict[str, Any]) -> dict[str, Any]:
    return {k: job[k] for k in ("job_id", "status", "planned", "images", "message")} | {"created": _when(job["created_at"])}


def _text_or_none(value: Any, what: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadInput(f"{what} must be a name. Fix: pick one on the page")
    return value


def _when(stamp: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else "–"


__all__ = ["Board", "Pick", "checked_id", "loss_curve", "progress_of"]
