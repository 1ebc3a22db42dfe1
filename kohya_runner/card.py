"""The model card a release writes beside the LoRA: NAME.card.md, NAME.card.json and NAME.preview.png.

What a card says follows the release's metadata policy, like the LoRA header:

- keep:    everything below, plus the base model's file name, the run id and the dataset folder's name.
- minimal: base family, trigger, recommended strength, scores, training summary, preview with prompts, sha256.
- scrub:   as minimal without anything from the dataset: no trigger word, no prompt text in the preview
           (rows are "prompt 1 · with trigger"), no folder, file or caption word; the trigger is handed over
           by the studio itself.

The preview is a small grid of the released checkpoint beside the base model (same seeds), with and
without the trigger, at every strength sampled post hoc (`kr sample --strength`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import atomic

SCHEMA = "kr.model-card/1"
PREVIEW_SUBJECTS = 4
CARD_SUFFIXES = (".card.md", ".card.json", ".preview.png")


def card_paths(out: Path, stem: str) -> list[Path]:
    return [out / f"{stem}{suffix}" for suffix in CARD_SUFFIXES]


def build(home: Path, row, spec, choice, release: dict[str, Any], policy: str, grid=None) -> dict[str, Any]:
    """The card's data (the JSON file's content) for a release; `grid` is load_grid()'s, if already loaded."""
    scores = (choice.scores or {}).get(choice.checkpoint.file.name) or _recorded(home, row.run_id, choice)
    strength, basis = recommended_strength(spec, grid or load_grid(home, row, choice))
    card: dict[str, Any] = {
        "schema": SCHEMA, "name": Path(release["file"]).stem, "file": Path(release["file"]).name,
        "sha256": release["sha256"], "size": release["size"], "policy": policy,
        "base": {"family": spec.model.family, "model": Path(spec.model.base).name if policy == "keep" and spec.model.base
                 else "base-model"},
        "trigger": None if policy == "scrub" else spec.dataset.trigger,
        "recommended_strength": strength, "strength_basis": basis,
        "checkpoint": {"label": choice.checkpoint.label, "epoch": choice.checkpoint.epoch, "step": choice.checkpoint.step},
        "chosen": {"how": choice.how, "by": choice.by if choice.how == "best" else None, "reason": choice.reason or None},
        "scores": _public_scores(scores),
        "ratings": _ratings(home, row.run_id, choice, policy),
        "training": {"steps": row.steps_done, "epochs": row.epoch, "rank": spec.network.dim,
                     "alpha": spec.network.alpha, "optimizer": spec.optimizer.type, "learning_rate": spec.optimizer.lr,
                     "resolution": list(spec.dataset.resolution), "batch_size": spec.dataset.batch_size,
                     "final_loss": round(row.loss, 4) if row.loss is not None else None},
        "preview": None,
    }
    if policy == "keep":
        card["run_id"] = row.run_id
        card["dataset_folder"] = Path(spec.dataset.dir).name if spec.dataset.dir else None
    return card


def write(home: Path, row, spec, choice, release: dict[str, Any], policy: str, out: Path, stem: str) -> dict[str, str]:
    """Write the preview, the JSON and the Markdown card; returns their paths."""
    md, js, png = card_paths(out, stem)
    grid = load_grid(home, row, choice)  # the run's samples, read once for the strength and the preview
    card = build(home, row, spec, choice, release, policy, grid)
    if preview(grid, choice, policy, png):
        card["preview"] = png.name
    atomic.write_text(js, json.dumps(card, indent=2, ensure_ascii=False) + "\n")
    atomic.write_text(md, markdown(card))
    for path in (md, js, png):
        if path.exists():
            path.chmod(0o644)
    return {"markdown": str(md), "json": str(js), "preview": str(png) if card["preview"] else None}


def markdown(card: dict[str, Any]) -> str:
    import jinja2

    from .resources import data_dir

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(data_dir("templates"))), autoescape=False,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["md"] = _markdown_text
    return env.get_template("model_card.md.j2").render(card=card)


def _markdown_text(value: Any) -> str:
    """A value as inline Markdown text: one line, Markdown's active characters escaped."""
    text = " ".join(str(value).split())
    for char in "\\`*_[]<>|":
        text = text.replace(char, "\\" + char)
    return text


def _ratings(home: Path, run_id: str, choice, policy: str) -> dict | None:
    """The reviewers' stars for the released checkpoint; reviewers' names only under keep."""
    from .review import summary

    found = summary(home, run_id).get(choice.checkpoint.file.name)
    if not found:
        return None
    return {"mean": found["mean"], "count": found["count"],
            **({"reviewers": found["reviewers"]} if policy == "keep" else {})}


def _recorded(home: Path, run_id: str, choice) -> dict | None:
    from .score import recorded

    return next((s for s in recorded(home, run_id) if s["checkpoint"] == choice.checkpoint.file.name), None)


def _public_scores(scores: dict | None) -> dict | None:
    if not scores:
        return None
    keep = ("score", "style", "style_without", "fit", "selectivity", "leakage", "copying")
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in scores.items() if k in keep}


# ----------------------------------------------------------------------------------------------
# Recommended strength and the preview grid, from the run's samples.


def load_grid(home: Path, row, choice):
    """The run's grid data and the chosen checkpoint's columns (strength → column key)."""
    from .ledger import open_ledger
    from .report import load_run
    from .sample import column_key

    data = load_run(row, open_ledger(home))
    key = column_key(choice.checkpoint, row.epochs_total)
    columns = {c.strength: c.key for c in data.columns if c.key == key or c.key.startswith(key + "@")}
    return data, columns


def recommended_strength(spec, grid) -> tuple[float, str]:
    """The lowest sampled strength whose samples with the trigger come within 90 % of the strongest move
    toward the training images' look; 1.0 when only one strength was sampled."""
    data, columns = grid
    strengths = sorted(s for s in columns if s is not None and s > 0)
    if len(strengths) < 2 or spec.dataset.dir is None or not Path(spec.dataset.dir).is_dir():
        return 1.0, "the strength it was trained and scored at (sample more strengths with `kr sample --strength`)"
    from PIL import Image

    from .imagestats import style_distance
    from .score import dataset_images, style_references

    kinds = {r.index: r.kind for r in data.rows}

    def samples(key: str) -> list:
        return [Image.open(s.path).convert("RGB") for (k, i), s in data.samples.items() if k == key and kinds.get(i) == "trigger"]

    base = samples("e000000")
    if not base:
        return 1.0, "the strength it was trained at (no base-model samples to compare with)"
    train = style_references(spec, dataset_images(spec), base[0].size)
    d_base = style_distance(base, train)
    made = {s: samples(columns[s]) for s in strengths}
    gains = {s: (d_base - style_distance(images, train)) / d_base for s, images in made.items() if images}
    if not gains or max(gains.values()) <= 0:
        return 1.0, "no sampled strength moved the samples toward the training images"
    best = max(gains.values())
    chosen = min(s for s, g in gains.items() if g >= 0.9 * best)
    shown = ", ".join(f"{s:g}: {g:.2f}" for s, g in sorted(gains.items()))
    return chosen, f"lowest strength within 90 % of the strongest style gain (gain by strength {shown})"


def preview(grid, choice, policy: str, out: Path) -> bool:
    """A PNG grid: rows = the first subjects with and without the trigger, columns = base, then the chosen
    checkpoint at each sampled strength. False when there are no samples to show."""
    from .sheet import cell_size, compose_sheet, thumbnails

    data, columns = grid
    keys = [("base model", "e000000")] + [(f"strength {s:g}", k) for s, k in sorted(columns.items(), key=lambda kv: kv[0] or 0)
                                          if s is not None]
    rows = [r for r in data.rows if r.kind in ("trigger", "no-trigger") and r.subject_index < PREVIEW_SUBJECTS]
    grid = [[data.samples.get((key, r.index)) for _, key in keys] for r in rows]
    if not any(s for line in grid for s in line):
        return False
    first = next(s for line in grid for s in line if s)
    cell = cell_size(first.path)
    flat = thumbnails([s.path if s else None for line in grid for s in line], cell)
    thumbs = [flat[i * len(keys):(i + 1) * len(keys)] for i in range(len(rows))]
    labels = [[f"prompt {r.subject_index + 1} · {'with' if r.kind == 'trigger' else 'without'} trigger"]
              + ([] if policy == "scrub" else [r.text]) for r in rows]
    title = f"{Path(out).name.removesuffix('.preview.png')} · {choice.checkpoint.label}"
    compose_sheet(title, [[label] for label, _ in keys], labels, thumbs, cell, out)
    return True
