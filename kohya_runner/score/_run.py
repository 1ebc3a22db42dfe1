"""Scoring a run's checkpoints: samples where missing, the probe in the trainer's environment, the style
distance of the samples, combined (see _combine), written to <run>/scores.json and the ledger."""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from .. import atomic, runfolder
from ..errors import BadInput, Failed
from ._combine import REASON, combine

SCHEMA = "kr.scores/1"
TIMESTEPS = [100, 300, 500, 700, 900]
PROBE_IMAGES = 8  # dataset images the probe noises (× 5 timesteps × (1 + checkpoints) U-Net passes)
STYLE_IMAGES = 24  # training images the style distance compares samples with
PAIRS = 4  # prompts with / without the trigger for selectivity


def score_run(home: Path, ref: str, *, max_images: int | None = None, gpus: list[int] | None = None,
              say: Callable[[str], None] = print) -> dict[str, Any]:
    """Score every saved checkpoint of a run; returns what scores.json holds."""
    from ..checkpoints import saved_checkpoints
    from ..ledger import open_ledger

    run = saved_checkpoints(home, ref)
    row, spec, checkpoints, epochs_total = run.row, run.spec, run.checkpoints, run.epochs_total
    ledger = open_ledger(home)
    if spec.dataset.dir is None or not Path(spec.dataset.dir).is_dir():
        raise BadInput(f"the dataset folder of {row.run_id} ({spec.dataset.dir}) is gone; the scores compare with its "
                       "images. Fix: put the folder back where it was")
    images = dataset_images(spec)
    if not images:
        raise BadInput(f"{spec.dataset.dir} has no captioned image to score against. Fix: check the folder")
    backend = row.backend or ("tiny" if spec.model.base == "tiny" else "sd-scripts")
    if backend == "sd-scripts" and not gpus:
        say("note: scoring a real model on the CPU is slow (SDXL: minutes per checkpoint, ~20 GB RAM); "
            "--max-images N makes it lighter")
    started = time.perf_counter()
    samples = _ensure_samples(home, row, spec, checkpoints, max_images, gpus, say)
    say(f"probing {len(checkpoints)} checkpoint(s) against the base ({backend})")
    probe = _probe(home, row, spec, checkpoints, images, backend, gpus, max_images)
    style = _style_parts(spec, samples, images, checkpoints, epochs_total, max_images)
    has_trigger = bool(spec.dataset.trigger)
    entries = []
    for checkpoint in checkpoints:
        key = _key(checkpoint, epochs_total)
        measured = probe["networks"].get(key, {})
        parts = {"checkpoint": checkpoint.file.name, "label": checkpoint.label, "column": key,
                 "epoch": checkpoint.epoch, "step": checkpoint.step, "loss": checkpoint.loss,
                 "train_loss": measured.get("train_loss"), "held_out_loss": measured.get("held_out_loss"),
                 "base_train_loss": probe["base"].get("train_loss"),
                 "base_held_out_loss": probe["base"].get("held_out_loss"),
                 "change_with": measured.get("change_with"), "change_without": measured.get("change_without"),
                 "probe_seconds": measured.get("seconds"), **style.get(key, {})}
        entries.append(combine(parts, has_trigger))
    result = {"schema": SCHEMA, "run_id": row.run_id, "created_at": time.time(), "backend": backend,
              "seconds": round(time.perf_counter() - started, 2), "probe_seconds": probe.get("seconds"),
              "probe_images": min(len(images), max_images or PROBE_IMAGES, PROBE_IMAGES), "timesteps": TIMESTEPS,
              "how": REASON, "checkpoints": entries}
    atomic.write_text(runfolder.of(row.run_dir).scores, json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    ledger.record_scores(row.run_id, entries, result["created_at"])
    return result


def timing(run_dir: Path) -> dict[str, Any] | None:
    """How long the run's last scoring took (from its scores.json): in all, and in the probe."""
    try:
        data = json.loads(runfolder.of(run_dir).scores.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return {"seconds": data.get("seconds"), "probe_seconds": data.get("probe_seconds")} if isinstance(data, dict) else None


def _key(checkpoint, epochs_total) -> str:
    from ..sample import column_key

    return column_key(checkpoint, epochs_total)


def dataset_images(spec) -> list[tuple[Path, str]]:
    """(image, caption as trained) of the dataset, those with the trigger first (the style's own pictures)."""
    from ..dataset import scan, settings_from_spec
    from ..sdscripts.captions import read_caption

    found = scan(settings_from_spec(spec))
    pairs = []
    for image in found.images:
        caption = read_caption(image.caption_path).caption or ""
        caption = f"{spec.dataset.caption_prefix or ''}{caption}{spec.dataset.caption_suffix or ''}"
        pairs.append((image.path, caption))
    trigger = spec.dataset.trigger
    return sorted(pairs, key=lambda p: (not (trigger and trigger in p[1]), str(p[0])))


# ----------------------------------------------------------------------------------------------
# Samples: every checkpoint and the base need samples with and without the trigger at strength 1.


def _ensure_samples(home, row, spec, checkpoints, max_images, gpus, say) -> dict:
    from ..report import load_run
    from ..ledger import open_ledger
    from ..sample import Request, prepare, run

    data = load_run(row, open_ledger(home))
    kinds = {r.index: r.kind for r in data.rows}
    have = {(key, kinds.get(index)) for key, index in data.samples}
    epochs_total = data.row.epochs_total

    def complete(key: str) -> bool:  # samples with and without the trigger (a sanity sample has only the first)
        return (key, "trigger") in have and ((key, "no-trigger") in have or not (spec.dataset.trigger and spec.sampling.without_trigger))

    missing = [c for c in checkpoints if not complete(_key(c, epochs_total))]
    base_missing = not complete("e000000")
    if (missing or base_missing) and spec.sampling.prompts:
        names = ",".join(f"s{c.step}" if c.kind == "step" else f"e{c.epoch or epochs_total}" for c in missing)
        request = Request(checkpoints=names or "none", kinds=["trigger", "no-trigger"], base=base_missing,
                          max_images=max_images)
        say(f"sampling what the style score needs: {names or 'no checkpoint'}" + (" and the base" if base_missing else ""))
        run(prepare(home, row.run_id, request, gpus), say=say)
        data = load_run(row, open_ledger(home))
    return {"data": data}


def _style_parts(spec, samples: dict, images, checkpoints, epochs_total, max_images) -> dict[str, dict]:
    """Per checkpoint column: style and style_without (see _combine), from the samples at strength 1."""
    from PIL import Image

    from ..imagestats import style_distance

    data = samples["data"]
    kinds = {r.index: r.kind for r in data.rows}

    def group(column: str, kind: str) -> list:
        paths = [s.path for (key, index), s in sorted(data.samples.items(), key=lambda kv: kv[0][1])
                 if key == column and kinds.get(index) == kind]
        return [Image.open(p).convert("RGB") for p in paths[: max_images or None]]

    base_with, base_without = group("e000000", "trigger"), group("e000000", "no-trigger")
    if not base_with:
        return {}
    size = base_with[0].size
    train = style_references(spec, images, size, min(STYLE_IMAGES, max_images or STYLE_IMAGES))
    d_base_with = style_distance(base_with, train)
    d_base_without = style_distance(base_without, train) if base_without else None
    out = {}
    for checkpoint in checkpoints:
        column = _key(checkpoint, epochs_total)
        with_, without = group(column, "trigger"), group(column, "no-trigger")
        parts: dict[str, Any] = {}
        if with_ and d_base_with > 0:
            parts["style_distance"] = style_distance(with_, train)
            parts["style"] = (d_base_with - parts["style_distance"]) / d_base_with
        if without and d_base_without:
            parts["style_without"] = (d_base_without - style_distance(without, train)) / d_base_without
        out[column] = parts
    return out


def style_references(spec, images: list[tuple[Path, str]], size: tuple[int, int], limit: int = STYLE_IMAGES) -> list:
    """The style's training pictures (see style_pictures) at the samples' size, for style_distance: resized
    on the shorter side and centre-cropped, as the probe prepares the images it noises."""
    from PIL import Image

    from ..sdscripts.score_probe import resize_and_crop

    return [resize_and_crop(Image.open(p).convert("RGB"), *size) for p in style_pictures(spec, images)[:limit]]


def style_pictures(spec, images: list[tuple[Path, str]]) -> list[Path]:
    """The pictures that show the style: those captioned with the trigger (plain contrast pictures are
    not), or all of them when no caption has it."""
    trigger = spec.dataset.trigger
    styled = [p for p, caption in images if trigger and trigger in caption]
    return styled or [p for p, _ in images]


# ----------------------------------------------------------------------------------------------
# The probe: U-Net passes in the trainer's environment (kohya_runner.tiny.score / sdscripts/score_probe.py).


def _probe(home, row, spec, checkpoints, images, backend, gpus, max_images) -> dict:
    from .. import trainers
    from ..run import load_options

    config = load_options(Path(row.run_dir))
    held = _held_out(spec, [p for p, _ in images])
    chosen = images[: min(PROBE_IMAGES, max_images or PROBE_IMAGES)]
    held_chosen = [(p, c) for p, c in images if p in held][:PROBE_IMAGES // 2]
    trained = [(p, c) for p, c in chosen if p not in held]
    epochs_total = row.epochs_total
    job = {"schema": "kr.score-job/1", "family": spec.model.family, "base": str(config["pretrained_model_name_or_path"]),
           "v_parameterization": bool(config.get("v_parameterization")), "clip_skip": config.get("clip_skip"),
           "vae": config.get("vae"),
           "tokenizer_cache_dir": None if backend == "tiny" else config.get("tokenizer_cache_dir"),
           "resolution": list(spec.dataset.resolution), "seed": 0, "timesteps": TIMESTEPS,
           "images": [{"path": str(p), "caption": c, "held_out": False} for p, c in trained]
           + [{"path": str(p), "caption": c, "held_out": True} for p, c in held_chosen],
           "pairs": _pairs(spec, images), "networks": [{"id": _key(c, epochs_total), "file": str(c.file)} for c in checkpoints],
           "device": "cuda" if gpus else "cpu"}
    launch = trainers.scorer_for(backend, home, gpus)
    with tempfile.TemporaryDirectory(prefix="kr-score-") as scratch:
        job_file, out_file = Path(scratch) / "job.json", Path(scratch) / "result.json"
        job_file.write_text(json.dumps(job), encoding="utf-8")
        cwd = launch.cwd if launch.cwd != Path(".") else Path(scratch)
        done = subprocess.run(launch.argv + [str(job_file), str(out_file)], cwd=cwd, env=trainers.full_env(launch),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True,
                              errors="replace")
        if done.returncode != 0 or not out_file.is_file():
            tail = " | ".join(done.stdout.strip().splitlines()[-3:])
            raise Failed(f"the score probe for {row.run_id} exited with {done.returncode}: {tail}")
        return json.loads(out_file.read_text(encoding="utf-8"))


def _held_out(spec, paths: list[Path]) -> set[Path]:
    split = getattr(spec.dataset, "validation_split", 0.0) or 0.0
    if split <= 0:
        return set()
    from ..sdscripts.validation import held_out

    seed = spec.dataset.validation_seed if spec.dataset.validation_seed is not None else spec.training.seed
    return {Path(p) for p in held_out(Path(spec.dataset.dir), split, seed)}


def _pairs(spec, images) -> list[dict[str, str]]:
    """Prompts with and without the trigger: the sample subjects, else the dataset's own captions."""
    from ..spec import render_prompt

    trigger = spec.dataset.trigger
    if not trigger:
        return [{"with": c, "without": c} for _, c in images[:PAIRS]]
    if spec.sampling.prompts:
        return [{"with": render_prompt(spec, subject), "without": render_prompt(spec, subject, spec.sampling.untriggered_template)}
                for subject in spec.sampling.prompts[:PAIRS]]
    return [{"with": c, "without": " ".join(c.replace(trigger, " ").split())} for _, c in images[:PAIRS] if trigger in c]
