"""Ratings: a reviewer's 1–5 stars and short note on a checkpoint, or on one sample image of a run.

The run folder's ratings.json is the truth (rewritten atomically, read back by a ledger rebuild); the
ledger's `ratings` table serves the board, `kr runs show --json`, `kr runs best --by rating` and the
model card. Every string is checked before anything is written: a reviewer name and a note are one
line of printable text; a checkpoint must be one the run saved; a sample must be an image the run
made (named by its file name, never a path).
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

from .. import atomic, runfolder
from ..errors import BadInput

MAX_REVIEWER = 60
MAX_NOTE = 500
SCHEMA = "kr.ratings/1"


def _text(value: str | None, what: str, limit: int, required: bool) -> str | None:
    text = " ".join((value or "").split())
    if not text:
        if required:
            raise BadInput(f"{what} is empty. Fix: give a {what}")
        return None
    if len(text) > limit:
        raise BadInput(f"{what} is {len(text)} characters long. Fix: at most {limit}")
    if any(not ch.isprintable() for ch in text):
        raise BadInput(f"{what} holds a control character. Fix: plain text only")
    return text


def check_reviewer(name: str | None) -> str:
    """A reviewer's name as it is stored: one line of printable text, at most MAX_REVIEWER characters."""
    return _text(name, "reviewer name", MAX_REVIEWER, required=True)


def rate(home: Path, ref: str, *, reviewer: str, stars: int, note: str | None = None,
         checkpoint: str | None = None, sample: str | None = None) -> dict[str, Any]:
    """Record one rating; returns it. Raises BadInput, writing nothing, for any bad value."""
    from ..checkpoints import saved_checkpoints
    from ..ledger import open_ledger

    name = check_reviewer(reviewer)
    text = _text(note, "note", MAX_NOTE, required=False)
    if isinstance(stars, bool) or not isinstance(stars, int) or not 1 <= stars <= 5:
        raise BadInput(f"stars {stars!r} is not a whole number from 1 to 5. Fix: rate 1 to 5")
    if (checkpoint is None) == (sample is None):
        raise BadInput("rate either a checkpoint or a sample image. Fix: give exactly one of them")
    run = saved_checkpoints(home, ref)
    if checkpoint is not None and checkpoint not in {c.file.name for c in run.checkpoints}:
        saved = ", ".join(c.file.name for c in run.checkpoints)
        raise BadInput(f"{run.row.run_id} saved no checkpoint named {checkpoint!r}. Fix: one of {saved}")
    if sample is not None and sample not in _sample_names(home, run.row):
        raise BadInput(f"{run.row.run_id} made no sample image named {sample!r}. Fix: rate an image of its report")
    entry = {"rating_id": uuid.uuid4().hex, "run_id": run.row.run_id, "checkpoint": checkpoint, "sample": sample,
             "reviewer": name, "stars": stars, "note": text, "created_at": time.time()}
    folder = runfolder.of(run.row.run_dir)
    kept = _read(folder.ratings)
    atomic.write_text(folder.ratings, json.dumps({"schema": SCHEMA, "run_id": run.row.run_id,
                                                  "ratings": kept + [entry]}, indent=2, ensure_ascii=False) + "\n")
    open_ledger(home).add_rating(entry)
    return entry


def _sample_names(home: Path, row) -> set[str]:
    """File names of the run's images: in-training samples and post-hoc ones."""
    from ..ledger import open_ledger

    names = {p.name for p in runfolder.of(row.run_dir).samples.glob("*.png")}
    return names | {Path(r["path"]).name for r in open_ledger(home).samples(row.run_id)}


def _read(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    return [r for r in data.get("ratings") or [] if isinstance(r, dict)] if isinstance(data, dict) else []


def ratings(home: Path, run_id: str) -> list[dict[str, Any]]:
    from ..ledger import open_ledger

    return open_ledger(home).ratings(run_id)


def summary(home: Path, run_id: str) -> dict[str, dict[str, Any]]:
    """Per rated checkpoint: mean stars, number of ratings, reviewers (a sample's rating counts for the
    checkpoint it shows only when rated as a checkpoint)."""
    out: dict[str, dict[str, Any]] = {}
    for entry in ratings(home, run_id):
        if entry["checkpoint"]:
            item = out.setdefault(entry["checkpoint"], {"stars": [], "reviewers": set()})
            item["stars"].append(entry["stars"])
            item["reviewers"].add(entry["reviewer"])
    return {name: {"mean": round(sum(v["stars"]) / len(v["stars"]), 2), "count": len(v["stars"]),
                   "reviewers": sorted(v["reviewers"])} for name, v in out.items()}
