"""Reading post-hoc images back: from the ledger (the reports), or from the run folder (a rebuild)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import runfolder


def images(ledger, run_id: str) -> list[dict[str, Any]]:
    """Every post-hoc image of a run whose file is still there, oldest job first (a newer image of the
    same cell wins when the caller keys them)."""
    return [row for row in ledger.samples(run_id) if Path(row["path"]).is_file()]


def ledger_rows(data: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A job.json's content as ledger rows: (the sample_jobs row, the samples rows of its finished images).
    The job's key is `<run id>/<job id>`; an image's path is its file inside the job's folder."""
    key = f"{data['run_id']}/{data['job_id']}"
    job = {"job_id": key, "run_id": data["run_id"], "status": data["status"], "device": data.get("device"),
           "planned": data.get("planned", 0), "images": data.get("images", 0), "created_at": data.get("created_at") or 0.0,
           "finished_at": data.get("finished_at"), "job_dir": data["folder"], "message": data.get("message")}
    samples = [{"job_id": key, "run_id": data["run_id"], "file": c["file"], "column_key": c["column"],
                "checkpoint": c.get("checkpoint"), "strength": c.get("strength"), "kind": c["kind"],
                "subject": c.get("subject"), "text": c["text"], "seed": c["seed"], "prompt_index": c.get("prompt_index"),
                "seconds": c.get("seconds"), "path": str(Path(data["folder"]) / c["file"])}
               for c in data.get("cells") or [] if c.get("done")]
    return job, samples


def rebuild_rows(run_dir: Path) -> list[dict[str, Any]]:
    """The job.json files of a run folder, oldest first, for ledger.rebuild."""
    jobs = []
    root = runfolder.of(run_dir).posthoc
    for path in sorted(root.glob(f"sample-*/{runfolder.JOB_FILE}")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and data.get("schema", "").startswith("kr.sample-job/"):
            data["folder"] = str(path.parent)  # the folder may have moved with the workspace
            jobs.append(data)
    return jobs


def summary(ledger, run_id: str) -> dict[str, Any]:
    """A run's post-hoc sampling for `kr runs show --json`: its jobs, image count, and the generation time
    per image of the base and of each checkpoint at each strength (the inference time)."""
    jobs = ledger.sample_jobs(run_id)
    rows = ledger.samples(run_id)
    times: dict[str, list[float]] = {}
    for row in rows:
        if row["seconds"] is not None:
            key = "base" if row["column_key"] == "base" else f"{row['column_key']} × {row['strength']:g}"
            times.setdefault(key, []).append(row["seconds"])
    seconds = [j["finished_at"] - j["created_at"] for j in jobs if j["finished_at"] and j["created_at"]]
    return {"jobs": [{k: j[k] for k in ("job_id", "status", "device", "planned", "images", "job_dir", "message")}
                     for j in jobs],
            "images": len(rows), "seconds": round(sum(seconds), 2) if seconds else None,
            "inference_seconds_per_image": {k: round(sum(v) / len(v), 4) for k, v in times.items()}}
