"""A sweep's results: the table (terminal, results.csv, results.md), the loss overlay, the summary
JSON and the list of sweeps."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import atomic, runfolder
from ..errors import BadInput, KrError
from ..ledger import duration_text
from .grid import show_value
from .plan import Member
from .record import Record

RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"
OVERLAY_PNG = "loss_overlay.png"


@dataclass
class ResultRow:
    member: Member
    run: Any  # RunRow or None
    scores: list = field(default_factory=list)  # its run's checkpoint scores (kohya_runner.score)

    @property
    def status(self) -> str:
        if not self.member.valid:
            return "invalid"
        if self.run is None:
            return "not started" if self.member.error else "pending"
        return self.run.status

    @property
    def reason(self) -> str | None:
        if not self.member.valid:
            return self.member.problem
        if self.run is None:
            return self.member.error
        return self.run.hint if self.run.status != "succeeded" else None


def result_rows(home: Path, record: Record) -> list[ResultRow]:
    from ..ledger import open_ledger

    ledger = open_ledger(home)
    rows = []
    for member in record.members:
        run_row = None
        if member.runs:
            try:
                run_row = ledger.get(member.runs[-1])
            except BadInput:
                run_row = None
        rows.append(ResultRow(member, run_row, ledger.scores(run_row.run_id) if run_row is not None else []))
    return rows


def table(rows: list[ResultRow], varying: list[str]) -> list[dict[str, Any]]:
    """One dict per member; ranked by score (best first) when any member is scored, else in member order."""
    from ..score import top as top_score

    out = []
    for r in rows:
        run = r.run
        top = top_score(r.scores)
        out.append({
            "member": r.member.label,
            "params": r.member.describe(varying),
            "values": {k: v for k, v in r.member.assignments if k in varying},
            "status": r.status,
            "final_loss": run.loss if run else None,
            "min_loss": run.min_loss if run else None,
            "seconds": run.duration if run and run.started_at else None,
            "it_per_s": run.it_per_s if run else None,
            "steps": f"{run.steps_done}/{run.steps_total}" if run and run.steps_total else (r.member.steps or None),
            "run_id": run.run_id if run else None,
            "reason": r.reason,
            "score": top["score"] if top else None,
            "score_parts": {k: top.get(k) for k in ("label", "style", "fit", "selectivity", "leakage")} if top else None,
        })
    if any(r["score"] is not None for r in out):
        out.sort(key=lambda r: (r["score"] is None, -(r["score"] or 0.0)))
    return out


def _num(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def csv_text(rows: list[dict[str, Any]], varying: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["member", *varying, "status", "score", "best_checkpoint", "style", "fit", "selectivity",
                     "final_avg_loss", "min_avg_loss", "seconds", "it_per_s", "steps", "run_id", "reason"])
    for r in rows:
        parts = r.get("score_parts") or {}
        writer.writerow([r["member"], *(show_value(r["values"][k]) if k in r["values"] else "" for k in varying),
                         r["status"], _csv(r.get("score")), parts.get("label") or "", _csv(parts.get("style")),
                         _csv(parts.get("fit")), _csv(parts.get("selectivity")), _csv(r["final_loss"]), _csv(r["min_loss"]),
                         "" if r["seconds"] is None else f"{r['seconds']:.1f}", _csv(r["it_per_s"]),
                         r["steps"] or "", r["run_id"] or "", (r["reason"] or "").replace("\n", " ")])
    return out.getvalue()


def _csv(value: float | None) -> str:
    return "" if value is None else repr(value)


def markdown(record: Record, rows: list[dict[str, Any]]) -> str:
    def cell(text: Any) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    data = record.data
    lines = [f"# {record.sweep_id}", "",
             f"- preset: `{data['preset']}`" + (f" (sweep file `{data['source']}`)" if data.get("source") else ""),
             f"- fixed for every member: {', '.join(f'`{o}`' for o in data.get('fixed', [])) or 'nothing'}",
             f"- members: {len(rows)}", "",
             "| member | params | status | score | best checkpoint | style | fit | selectivity | final loss | min loss "
             "| time | it/s | run |",
             "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        parts = r.get("score_parts") or {}
        lines.append(f"| {r['member']} | {cell(r['params'])} | {r['status']} | {_num(r.get('score'), 3)} | "
                     f"{cell(parts.get('label') or '–')} | {_num(parts.get('style'), 2)} | {_num(parts.get('fit'), 2)} | "
                     f"{_num(parts.get('selectivity'), 2)} | {_num(r['final_loss'])} | "
                     f"{_num(r['min_loss'])} | {duration_text(r['seconds'])} | {_num(r['it_per_s'], 3)} | "
                     f"{r['run_id'] or '–'} |")
    notes = [r for r in rows if r["reason"] and r["status"] != "succeeded"]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {r['member']} ({r['status']}): {cell(r['reason'])}" for r in notes]
    if (record.sweep_dir / OVERLAY_PNG).is_file():
        lines += ["", f"![average loss of every member]({OVERLAY_PNG})"]
    return "\n".join(lines) + "\n"


def member_losses(run_dir: Path) -> list[tuple[int, float]]:
    """The moving-average loss (loss/average) of a run: from its archive, else its TensorBoard events."""
    from .. import metrics

    folder = runfolder.of(run_dir)
    archived = folder.loss_csv
    try:
        points = metrics.read_csv(archived) if archived.is_file() else metrics.read_folder(folder.logs, ["loss/average"])
    except Exception:
        return []
    series = metrics.last_per_step([p for p in points if p.tag == "loss/average"])
    return [(p.step, p.value) for p in series]


def overlay(record: Record, rows: list[ResultRow], varying: list[str]) -> Path | None:
    """One PNG with every member's average-loss curve; diverged members dashed and marked where they ended."""
    curves = []
    for r in rows:
        if r.run is not None:
            points = member_losses(Path(r.run.run_dir))
            if points:
                curves.append((r, points))
    if not curves:
        return None
    from ..metrics import Curve, plot_overlay

    lines = []
    for r, points in curves:
        status = "" if r.run.status == "succeeded" else f" [{r.run.status}]"
        lines.append(Curve(f"{r.member.label} {r.member.describe(varying)}"[:70] + status, [s for s, _ in points],
                           [v for _, v in points], ended_badly=r.run.status != "succeeded"))
    return plot_overlay(lines, record.sweep_dir / OVERLAY_PNG, record.sweep_id)


def write_results(home: Path, record: Record) -> dict[str, Any]:
    """results.csv, results.md and loss_overlay.png in the sweep folder; returns the table as data."""
    varying = record.data.get("varying") or []
    rows = result_rows(home, record)
    data = table(rows, varying)
    atomic.write_text(record.sweep_dir / RESULTS_CSV, csv_text(data, varying))
    try:
        overlay(record, rows, varying)
    except Exception as error:  # the numbers matter more than the picture
        (record.sweep_dir / OVERLAY_PNG).unlink(missing_ok=True)
        record.data["overlay_error"] = str(error)
    atomic.write_text(record.sweep_dir / RESULTS_MD, markdown(record, data))
    return summary_json(home, record, data)


def summary_json(home: Path, record: Record, data: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    from ..ledger import open_ledger

    row = open_ledger(home).get_sweep(record.sweep_id)
    status = row.status
    if status == "running" and not record.owner_alive():
        status = "interrupted"
    if data is None:
        data = table(result_rows(home, record), record.data.get("varying") or [])
    files = {name: str(record.sweep_dir / name) for name in (RESULTS_CSV, RESULTS_MD, OVERLAY_PNG)
             if (record.sweep_dir / name).is_file()}
    return {"sweep_id": record.sweep_id, "name": record.data["name"], "preset": record.data["preset"], "status": status,
            "created_at": row.created_at, "finished_at": row.finished_at, "sweep_dir": str(record.sweep_dir),
            "fixed": record.data.get("fixed", []), "varying": record.data.get("varying", []), "members": data,
            "files": files}


def listing(home: Path) -> list[dict[str, Any]]:
    from ..ledger import open_ledger

    out = []
    for row in open_ledger(home).sweeps():
        try:
            record = Record.load(home, row.sweep_id)
        except KrError:
            out.append({"sweep_id": row.sweep_id, "name": row.name, "preset": row.preset, "status": row.status,
                        "created_at": row.created_at, "members": row.members, "done": None, "best": None})
            continue
        summary = summary_json(home, record)
        finished = [m for m in summary["members"] if m["status"] in ("succeeded", "diverged", "failed", "crashed", "stopped")]
        scored = [m for m in summary["members"] if m["status"] == "succeeded" and m["final_loss"] is not None]
        best = min(scored, key=lambda m: m["final_loss"]) if scored else None
        out.append({"sweep_id": row.sweep_id, "name": row.name, "preset": row.preset, "status": summary["status"],
                    "created_at": row.created_at, "members": len(summary["members"]), "done": len(finished),
                    "best": {"member": best["member"], "params": best["params"], "final_loss": best["final_loss"]} if best else None})
    return out
