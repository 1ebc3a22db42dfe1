"""A run's saved checkpoints with their losses: listing them, picking one (the user's choice or the lowest
loss), and releasing it under a clean name with a metadata policy.

The loss of a checkpoint is the one sd-scripts logged when it was saved (contract §5.2): for an epoch
file `loss/epoch_average` at that epoch, for a step file `loss/average` at that step (the same moving
average, so the two compare), or their validation counterparts when every checkpoint has one.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import archive, metrics, runfolder
from .sdscripts import outputs
from .errors import BadInput, Failed

POLICIES = ("keep", "minimal", "scrub")


@dataclass
class Checkpoint:
    file: Path
    kind: str  # "epoch" | "step" | "final"
    epoch: int | None
    step: int | None
    loss: float | None = None

    @property
    def label(self) -> str:
        if self.kind == "step":
            return f"step {self.step}"
        if self.epoch is not None:
            return f"epoch {self.epoch}" + (" (final)" if self.kind == "final" else "")
        return "final"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["file"] = str(self.file)
        data["label"] = self.label
        return data


@dataclass
class Losses:
    """Per-epoch and per-step losses of a run, from its archive (loss.csv) or its TensorBoard logs."""
    epoch: dict[int, float]
    step: dict[int, float]
    epoch_validation: dict[int, float]
    step_validation: dict[int, float]
    series: dict[str, list]  # tag → points, for plots

    @classmethod
    def of_run(cls, run_dir: Path) -> "Losses":
        return cls.from_points(load_points(run_dir))

    @classmethod
    def from_points(cls, points: list) -> "Losses":
        series = metrics.by_tag(points)

        def table(tag: str) -> dict[int, float]:
            return {p.step: p.value for p in metrics.last_per_step(series.get(tag, []))}

        return cls(table("loss/epoch_average"), table("loss/average"), table("loss/validation/epoch_average"),
                   table("loss/validation/step_average"), series)


def load_points(run_dir: Path) -> list:
    csv_path = runfolder.of(run_dir).loss_csv
    if csv_path.is_file():
        try:
            return metrics.read_csv(csv_path)
        except (OSError, ValueError, KeyError):
            pass
    return metrics.read_folder(runfolder.of(run_dir).logs)  # a live run, or an archive that was never written


def run_totals(run_dir: Path, row=None) -> tuple[int | None, int | None]:
    """(epochs_total, steps_total) of a run, from its archive manifest or its ledger row."""
    manifest = archive.read_manifest(run_dir) or {}
    run = manifest.get("run") or {}
    epochs = run.get("epochs_total") or (row.epochs_total if row is not None else None)
    steps = run.get("steps_total") or (row.steps_total if row is not None else None)
    return epochs, steps


def list_checkpoints(run_dir: Path, output_name: str, *, epochs_total: int | None = None,
                     steps_total: int | None = None, losses: Losses | None = None) -> tuple[list[Checkpoint], str]:
    """Every saved LoRA of the run, oldest first, each with its loss; and the loss tag used."""
    output_dir = runfolder.of(run_dir).output
    losses = losses or Losses.of_run(run_dir)
    steps_per_epoch = steps_total // epochs_total if epochs_total and steps_total and steps_total % epochs_total == 0 else None
    found: list[Checkpoint] = []
    for path in archive.lora_files(output_dir):
        order = outputs.checkpoint_order(output_name, path.name)
        if order is not None:
            kind, number = order
            if kind == 0:
                found.append(Checkpoint(path, "epoch", number, number * steps_per_epoch if steps_per_epoch else None))
            else:
                found.append(Checkpoint(path, "step", None, number))
        elif path.name == outputs.final_lora_name(output_name):
            found.append(Checkpoint(path, "final", epochs_total, steps_total))
    validation = all(_loss_of(c, losses, validation=True) is not None for c in found) and bool(found)
    for checkpoint in found:
        checkpoint.loss = _loss_of(checkpoint, losses, validation=validation)
    found.sort(key=lambda c: (c.kind == "final", c.step if c.step is not None else math.inf,
                              c.epoch if c.epoch is not None else math.inf))
    by_epoch = any(c.epoch is not None and c.epoch in (losses.epoch_validation if validation else losses.epoch)
                   for c in found if c.kind != "step")
    if by_epoch or not found:
        tag = "loss/validation/epoch_average" if validation else "loss/epoch_average"
    else:
        tag = "loss/validation/step_average" if validation else "loss/average"
    return found, tag


def _loss_of(checkpoint: Checkpoint, losses: Losses, *, validation: bool) -> float | None:
    by_epoch = losses.epoch_validation if validation else losses.epoch
    by_step = losses.step_validation if validation else losses.step
    value = None
    if checkpoint.kind in ("epoch", "final") and checkpoint.epoch is not None:
        value = by_epoch.get(checkpoint.epoch)
    if value is None and checkpoint.step is not None:
        value = by_step.get(checkpoint.step)
    if value is None and checkpoint.kind == "final" and by_step:
        value = by_step[max(by_step)]  # a stopped-short run: the last logged average
    return value if value is not None and math.isfinite(value) else None


def best(checkpoints: list[Checkpoint]) -> Checkpoint | None:
    """The lowest loss; a tie goes to the earlier checkpoint (less training, same loss)."""
    scored = [c for c in checkpoints if c.loss is not None]
    return min(scored, key=lambda c: c.loss) if scored else None


@dataclass
class Choice:
    run_id: str
    checkpoint: Checkpoint
    how: str  # "best" | "epoch" | "step" | "checkpoint" | "result"
    criterion: str
    checkpoints: list[Checkpoint]
    by: str = "loss"  # what "best" went by: "score" | "loss"
    reason: str = ""
    scores: dict[str, dict] | None = None  # checkpoint file name → its score parts

    def to_json(self) -> dict[str, Any]:
        scores = self.scores or {}
        return {"run_id": self.run_id, "how": self.how, "by": self.by, "reason": self.reason,
                "criterion": self.criterion, "chosen": self.checkpoint.to_json(),
                "checkpoints": [dict(c.to_json(), score=scores.get(c.file.name)) for c in self.checkpoints]}


BY = ("score", "loss", "rating")


@dataclass
class SavedRun:
    """A run that started, with its spec and the checkpoints it saved (oldest first)."""
    row: Any  # ledger.RunRow
    spec: Any
    checkpoints: list[Checkpoint]
    criterion: str  # the loss tag of Checkpoint.loss
    epochs_total: int | None


def saved_checkpoints(home: Path, ref: str, *, allow_none: bool = False) -> SavedRun:
    """The run `ref` names and its saved checkpoints. Raises BadInput when it never started, or (unless
    allow_none) saved no LoRA yet."""
    from .ledger import open_ledger
    from .run import load_spec

    row = open_ledger(home).find(ref)
    run_dir = Path(row.run_dir)
    if not runfolder.of(run_dir).spec.is_file():
        raise BadInput(f"run {row.run_id} never started ({row.status}: no spec.json in {run_dir}). "
                       "Fix: pick another run (`kr runs ls`)")
    spec = load_spec(run_dir)
    epochs_total, steps_total = run_totals(run_dir, row)
    found, tag = list_checkpoints(run_dir, spec.output_name, epochs_total=epochs_total, steps_total=steps_total)
    if not found and not allow_none:
        raise BadInput(f"run {row.run_id} saved no LoRA file in {runfolder.of(run_dir).output} yet ({row.status}). "
                       "Fix: pick a run that saved checkpoints (`kr runs ls --status succeeded`)")
    return SavedRun(row, spec, found, tag, epochs_total)


def choose(home: Path, ref: str, *, epoch: int | None = None, step: int | None = None,
           best_loss: bool = False, by: str = "loss", say=None, checkpoint: str | None = None) -> Choice:
    """The checkpoint the user names (--epoch/--step, or its file name), the best one (--best: by score,
    scoring the run first if it has none, or by the lowest loss), or the run's result."""
    if sum([epoch is not None, step is not None, bool(best_loss), checkpoint is not None]) > 1:
        raise BadInput("give only one of --epoch, --step, --checkpoint and --best. Fix: drop the others")
    run = saved_checkpoints(home, ref)
    row, found, tag = run.row, run.checkpoints, run.criterion
    saved = ", ".join(c.label for c in found)
    if checkpoint is not None:
        match = [c for c in found if c.file.name == checkpoint]
        if not match:
            raise BadInput(f"run {row.run_id} saved no checkpoint named {checkpoint!r}. "
                           f"Fix: one of {', '.join(c.file.name for c in found)}")
        return Choice(row.run_id, match[0], "checkpoint", tag, found)
    if epoch is not None:
        match = [c for c in found if c.epoch == epoch and c.kind in ("epoch", "final")]
        if not match:
            raise BadInput(f"run {row.run_id} saved no checkpoint at epoch {epoch}. Fix: pick one it saved: {saved}")
        return Choice(row.run_id, match[0], "epoch", tag, found)
    if step is not None:
        match = [c for c in found if c.step == step]
        if not match:
            raise BadInput(f"run {row.run_id} saved no checkpoint at step {step}. Fix: pick one it saved: {saved}")
        return Choice(row.run_id, match[0], "step", tag, found)
    if best_loss and by == "score":
        return _best_by_score(home, row, found, tag, say)
    if best_loss and by == "rating":
        return _best_by_rating(home, row, found, tag)
    if best_loss:
        chosen = best(found)
        if chosen is None:
            raise BadInput(f"run {row.run_id} has no logged loss for its checkpoints ({tag}), so none is best. "
                           "Fix: choose one with --epoch N or --step N")
        return Choice(row.run_id, chosen, "best", tag, found, "loss",
                      f"lowest {tag} at saving (a training loss says little about a style LoRA; --by score weighs "
                      "style, fit and trigger selectivity)")
    scores = _recorded_scores(home, row.run_id)
    result = Path(row.result_path) if row.result_path else None
    chosen = next((c for c in found if result is not None and c.file == result), None)
    if chosen is None:
        chosen = next((c for c in found if c.kind == "final"), found[-1])
    return Choice(row.run_id, chosen, "result", tag, found, scores=scores or None)


def _recorded_scores(home: Path, run_id: str) -> dict[str, dict]:
    from .score import recorded

    return {s["checkpoint"]: s for s in recorded(home, run_id)}


def _best_by_rating(home: Path, row, found: list[Checkpoint], tag: str) -> Choice:
    """The highest mean stars of the reviewers (kohya_runner.review); more ratings break a tie."""
    from .review import summary

    rated = summary(home, row.run_id)
    candidates = [c for c in found if c.file.name in rated]
    if not candidates:
        raise BadInput(f"no checkpoint of {row.run_id} is rated yet. Fix: rate them (`kr runs rate {row.run_id} "
                       "--checkpoint FILE --stars N --reviewer NAME`), or --by score")
    chosen = max(candidates, key=lambda c: (rated[c.file.name]["mean"], rated[c.file.name]["count"], c.step or 0))
    scores = {name: {"rating": value["mean"], "ratings": value["count"]} for name, value in rated.items()}
    return Choice(row.run_id, chosen, "best", tag, found, "rating",
                  "the highest mean of the reviewers' stars (ties: more ratings)", scores)


def _best_by_score(home: Path, row, found: list[Checkpoint], tag: str, say) -> Choice:
    """The highest score, scoring the run first when it has none recorded for these checkpoints."""
    from .score import REASON, best_of, score_run

    scores = _recorded_scores(home, row.run_id)
    if not all(c.file.name in scores for c in found):
        if row.active:
            raise BadInput(f"{row.run_id} is still {row.status}; scores compare its finished checkpoints. "
                           "Fix: wait for it, or --by loss")
        if say:
            say(f"scoring {row.run_id}'s {len(found)} checkpoint(s) first (kr score {row.run_id})")
        score_run(home, row.run_id, say=say or (lambda _: None))
        scores = _recorded_scores(home, row.run_id)
    chosen = best_of(found, scores)
    if chosen is None:
        raise BadInput(f"none of {row.run_id}'s checkpoints could be scored (no samples or probe results). "
                       f"Fix: --by loss, or `kr score {row.run_id}` to see why")
    return Choice(row.run_id, chosen, "best", tag, found, "score", REASON, scores)


# ----------------------------------------------------------------------------------------------
# Releasing: a copy under a clean name with the chosen metadata policy.


def clean_name(name: str) -> str:
    from .spec import file_name_problem  # the one rule for names that become file names

    stem = name[: -len(".safetensors")] if name.endswith(".safetensors") else name
    problem = file_name_problem(stem)
    if problem:
        raise BadInput(f"--name {name!r} is not a plain file name: it {problem}. Fix: give a plain name such as "
                       "marker-v1 (no folders)")
    return stem


def release(home: Path, ref: str, out: Path, *, epoch: int | None = None, step: int | None = None,
            best_loss: bool = False, policy: str | None = None, name: str | None = None,
            force: bool = False, by: str = "score", say=None, checkpoint: str | None = None) -> dict[str, Any]:
    """Copy the chosen checkpoint to `out/NAME.safetensors`, its header rewritten per `policy`."""
    from .ledger import open_ledger
    from .run import load_spec

    if policy is not None and policy not in POLICIES:
        raise BadInput(f"--policy {policy!r} is not a metadata policy. Fix: use one of {', '.join(POLICIES)}")
    if name is not None:
        clean_name(name)  # checked before a choice by score, which may sample and probe first
    choice = choose(home, ref, epoch=epoch, step=step, best_loss=best_loss, by=by, say=say, checkpoint=checkpoint)
    row = open_ledger(home).get(choice.run_id)
    if row.active and choice.checkpoint.kind == "final":
        raise BadInput(f"{row.run_id} is still {row.status}. Fix: wait for it to finish, or name a saved epoch")
    spec = load_spec(Path(row.run_dir))
    policy = policy or spec.privacy.metadata
    if policy not in POLICIES:
        raise BadInput(f"--policy {policy!r} is not a metadata policy. Fix: use one of {', '.join(POLICIES)}")
    stem = clean_name(name or spec.output_name)
    check = archive.verify_lora(choice.checkpoint.file)
    if not check.ok:
        raise Failed(f"{choice.checkpoint.file} is damaged: {check.problem}. Fix: release another checkpoint "
                     f"(`kr runs best {row.run_id}` lists them)")
    out.mkdir(parents=True, exist_ok=True)
    dest = out / f"{stem}.safetensors"
    if dest.exists() and dest.resolve() == choice.checkpoint.file.resolve():
        raise BadInput(f"{dest} is the run's own checkpoint; kr never rewrites a run's files. Fix: another -o or --name")
    from .card import card_paths

    taken = [p for p in [dest, *card_paths(out, stem)] if p.exists()]
    if taken and not force:
        raise BadInput(f"{taken[0]} already exists; kr does not overwrite. Fix: --name another name, another -o, or --force")
    tmp = out / f".{dest.name}.kr-release-{os.getpid()}.tmp"
    try:
        applied = _apply_policy(choice.checkpoint.file, tmp, policy, title=stem)
        written = archive.verify_lora(tmp)
        if not written.ok:
            raise Failed(f"the released copy of {choice.checkpoint.file.name} failed verification: {written.problem}. "
                         "Fix: check the free space of the folder and try again")
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # a delivery, not a private temp file
        result = {"run_id": row.run_id, "source": str(choice.checkpoint.file), "checkpoint": choice.checkpoint.to_json(),
                  "how": choice.how, "by": choice.by if choice.how == "best" else None, "reason": choice.reason or None,
                  "criterion": choice.criterion, "file": str(dest), "policy": policy, "sha256": written.sha256,
                  "size": written.size, "metadata_keys": sorted(written.metadata), "policy_result": applied}
        from . import card

        # the card first: a release without its card is not delivered
        result["card"] = card.write(home, row, spec, choice, result, policy, out, stem)
        if force:
            os.replace(tmp, dest)
        else:
            os.link(tmp, dest)  # fails if the name appeared meanwhile: never overwrite
    except FileExistsError:
        raise BadInput(f"{dest} already exists; kr does not overwrite. Fix: --name another name or --force") from None
    finally:
        tmp.unlink(missing_ok=True)
    return result


def _apply_policy(src: Path, dest: Path, policy: str, *, title: str) -> dict:
    from .privacy import apply_policy

    return apply_policy(src, dest, policy, title=title) or {}
