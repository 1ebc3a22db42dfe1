"""What a post-hoc sample job makes: checkpoints × strengths × prompts (× seeds), plus the base column.

Each image is one `Cell`; cells are grouped into `Pass`es, one generator process per network (the base
alone, then each checkpoint), the cells of a pass ordered by strength so gen_img batches them.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInput

KINDS = ("trigger", "no-trigger", "variants")
BASE = "base"


@dataclass
class Request:
    """What the user asked for; validated by `plan` before anything is written."""
    checkpoints: str = "final"  # all | final | best | e4,e8,s100
    strengths: list[float] = field(default_factory=lambda: [1.0])
    kinds: list[str] = field(default_factory=lambda: list(KINDS))
    extra_prompts: list[str] = field(default_factory=list)  # more subjects, in every requested form
    seeds: list[int] | None = None  # default: each subject's own seed, as in training
    base: bool = True
    max_images: int | None = None
    batch_size: int = 4
    best_by: str = "loss"  # how `best` picks (score needs a scored run)


@dataclass
class Cell:
    """One image to make."""
    file: str  # its name inside the job folder
    column: str  # "base" or the checkpoint's column key (e000004, s000100)
    checkpoint: str | None  # the LoRA file name; None for the base
    strength: float | None  # None for the base
    kind: str  # trigger | no-trigger | variant-N
    subject: str
    text: str
    seed: int
    prompt_index: int | None  # the line of the run's own sample prompts, None for an extra subject
    seconds: float | None = None  # generation time of this image (its batch's share)
    done: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Pass:
    network: Path | None
    column: str
    cells: list[Cell]


def column_key(checkpoint, epochs_total: int | None) -> str:
    """The report's column of a checkpoint: e000004 / s000100, the final file at its epoch."""
    if checkpoint.kind == "step":
        return f"s{checkpoint.step:06d}"
    epoch = checkpoint.epoch if checkpoint.epoch is not None else epochs_total
    return f"e{epoch:06d}" if epoch is not None else "final"


def parse_strengths(text: str) -> list[float]:
    values = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise BadInput(f"--strength {text!r}: {part.strip()!r} is not a number. Fix: e.g. --strength 0.5,0.75,1.0") from None
        if not math.isfinite(value) or not -4.0 <= value <= 4.0:
            raise BadInput(f"--strength {part.strip()} is outside -4..4. Fix: LoRA strengths are usually 0.3–1.2")
        values.append(value)
    return list(dict.fromkeys(values))


def pick_checkpoints(found: list, which: str, best=None) -> list:
    """`all`, `final`, `best` or a list of e4 / s100 / 4 (an epoch) among the run's checkpoints."""
    saved = ", ".join(c.label for c in found)
    which = which.strip().lower()
    if which == "all":
        return list(found)
    if which == "final":
        return [next((c for c in found if c.kind == "final"), found[-1])]
    if which == "best":
        if best is None:
            raise BadInput("no checkpoint of this run is best by loss (no logged loss). Fix: --checkpoints final or e4,e8")
        return [best]
    chosen = []
    for part in which.split(","):
        match = re.fullmatch(r"\s*([es]?)(\d+)\s*", part)
        if not match:
            raise BadInput(f"--checkpoints {which!r}: {part.strip()!r} is not all, final, best, eN or sN. "
                           "Fix: e.g. --checkpoints e4,e8")
        kind, number = match.group(1) or "e", int(match.group(2))
        hit = [c for c in found if (c.step == number if kind == "s" else c.epoch == number and c.kind != "step")]
        if not hit:
            raise BadInput(f"the run saved no checkpoint at {'step' if kind == 's' else 'epoch'} {number}. "
                           f"Fix: pick one it saved: {saved}")
        chosen.append(hit[-1])
    return list({id(c): c for c in chosen}.values())


def prompts_for(spec, request: Request) -> list[tuple[str, str, str, int, int | None]]:
    """(kind, subject, text, seed, prompt index) of every prompt the job samples."""
    from ..spec import render_prompt, sample_prompts

    kinds = set(request.kinds)
    wanted = lambda kind: kind in kinds or (kind.startswith("variant-") and "variants" in kinds)  # noqa: E731
    own = [(p.kind, p.subject, p.text, p.seed, p.index) for p in sample_prompts(spec) if wanted(p.kind)]
    extra = []
    s = spec.sampling
    forms = [("trigger", s.template)]
    if s.without_trigger and spec.dataset.trigger:
        forms.append(("no-trigger", s.untriggered_template))
    forms += [(f"variant-{i + 1}", t) for i, t in enumerate(s.variants)]
    for kind, template in forms:
        if wanted(kind):
            for i, subject in enumerate(request.extra_prompts):
                extra.append((kind, subject, render_prompt(spec, subject, template), s.seed + len(s.prompts) + i, None))
    prompts = own + extra
    if request.seeds:
        prompts = [(k, sub, text, seed, index) for k, sub, text, _, index in prompts for seed in request.seeds]
    return prompts


def build(spec, checkpoints: list, request: Request, epochs_total: int | None) -> list[Pass]:
    """The passes of a job; raises BadInput when there is nothing to make or too much for --max-images."""
    prompts = prompts_for(spec, request)
    if not prompts:
        raise BadInput("no prompt to sample: the run's spec has no sampling.prompts for these forms. "
                       "Fix: --prompt 'a subject' (repeatable), or --kinds trigger,no-trigger")
    passes = []
    if request.base:
        passes.append(Pass(None, BASE, [_cell(BASE, None, None, p) for p in prompts]))
    for checkpoint in checkpoints:
        column = column_key(checkpoint, epochs_total)
        cells = [_cell(column, checkpoint.file.name, strength, p) for strength in request.strengths for p in prompts]
        passes.append(Pass(checkpoint.file, column, cells))
    total = sum(len(p.cells) for p in passes)
    if request.max_images is not None and total > request.max_images:
        passes = _trim(passes, request.max_images)
    return passes


def _trim(passes: list[Pass], limit: int) -> list[Pass]:
    """Keep the first prompts (of every pass alike) so the grid stays a grid within the limit."""
    per_prompt = sum(len(p.cells) for p in passes) // max(1, len({(c.kind, c.text, c.seed) for c in passes[0].cells}))
    keep = max(1, limit // max(1, per_prompt))
    if keep * per_prompt > limit:
        raise BadInput(f"--max-images {limit} is fewer than one prompt across every column ({per_prompt} images). "
                       "Fix: raise --max-images, or fewer --checkpoints / --strength values")
    prompts = list(dict.fromkeys((c.kind, c.text, c.seed) for c in passes[0].cells))[:keep]
    allowed = set(prompts)
    return [Pass(p.network, p.column, [c for c in p.cells if (c.kind, c.text, c.seed) in allowed]) for p in passes]


def _cell(column: str, checkpoint: str | None, strength: float | None, prompt) -> Cell:
    kind, subject, text, seed, index = prompt
    tag = "" if strength is None else f"_m{strength:g}".replace("-", "n")
    line = f"p{index:02d}" if index is not None else "x" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return Cell(f"{column}{tag}_{line}_{kind}_{seed}.png", column, checkpoint, strength, kind, subject, text, seed, index)


def check_prompts(extra) -> None:
    """An extra subject becomes a prompt line: one line, no option marker (sd-scripts would misread it)."""
    from ..spec import build_spec

    if not extra:
        return
    try:
        build_spec({"sampling": {"prompts": list(extra)}}, source="--prompt")
    except BadInput as error:
        raise BadInput(f"--prompt: {error.message}") from None
