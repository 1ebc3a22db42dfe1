"""Planning a sweep: every member resolved into a Spec and validated (rendered in a scratch folder),
with its total steps; invalid members carry their problem instead of a spec.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..errors import BadInput
from ..sdscripts.buckets import bucket_table_for
from .grid import Assignment, Definition, axis_label, expand, override_text, show_value

@dataclass
class Member:
    index: int
    assignments: list[Assignment]
    spec: Any = None  # kohya_runner.spec.Spec, or None when invalid
    problem: str | None = None
    steps: int | None = None
    runs: list[str] = field(default_factory=list)
    error: str | None = None  # a failure before its run could start (kept with the member)
    cache: Any = None  # its kohya_runner.cache.CacheFolder, once prepared
    retry: Any = None  # after CUDA out of memory: its next attempt (kohya_runner.memory.Attempt)

    @property
    def label(self) -> str:
        return f"m{self.index:02d}"

    @property
    def valid(self) -> bool:
        return self.spec is not None

    @property
    def cost(self) -> float:
        """Relative work, for longest-first ordering: steps × images per step × pixels."""
        if self.spec is None:
            return 0.0
        d = self.spec.dataset
        return float(self.steps or 1) * d.batch_size * d.resolution[0] * d.resolution[1]

    def describe(self, keys: list[str] | None = None) -> str:
        return " ".join(override_text(k, v) for k, v in self.assignments if keys is None or k in keys) or "(preset)"

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.label, "assignments": [[k, v] for k, v in self.assignments],
                "spec": self.spec.model_dump(mode="json") if self.spec is not None else None, "problem": self.problem,
                "steps": self.steps, "runs": self.runs, "error": self.error}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Member":
        from ..spec import Spec

        spec = Spec.model_validate(data["spec"]) if data.get("spec") else None
        return cls(data["index"], [tuple(a) for a in data["assignments"]], spec, data.get("problem"), data.get("steps"),
                   list(data.get("runs", [])), data.get("error"))


@dataclass
class Plan:
    preset: str
    name: str
    members: list[Member]
    fixed: list[str]  # the override texts every member shares (command line and [set])
    given: dict[str, Any]
    source: str | None = None
    base_spec: Any = None

    @property
    def valid(self) -> list[Member]:
        return [m for m in self.members if m.valid]

    @property
    def invalid(self) -> list[Member]:
        return [m for m in self.members if not m.valid]

    def varying_keys(self) -> list[str]:
        """Keys whose value differs between members: the columns of the results table."""
        values: dict[str, set[str]] = {}
        order: list[str] = []
        for member in self.members:
            for key, value in member.assignments:
                if key not in values:
                    values[key] = set()
                    order.append(key)
                values[key].add(show_value(value))
        present = {k for k in order if any(k not in dict(m.assignments) for m in self.members)}
        return [k for k in order if len(values[k]) > 1 or k in present] or order

    def total_steps(self) -> int:
        return sum(m.steps or 0 for m in self.valid)


def plan(home: Path, preset_name: str | None, definition: Definition, *, overrides: list[str] = (),
         dataset: str | None = None, base: str | None = None, name: str | None = None) -> Plan:
    """Resolve and check every member; invalid ones carry their problem instead of a spec."""
    from .. import preset as preset_mod

    preset_name = preset_name or definition.preset
    if not preset_name:
        raise BadInput("no preset given. Fix: `kr sweep PRESET …`, or `preset = \"NAME\"` under [sweep] in the sweep file")
    chain = preset_mod.load_chain(preset_name, home)  # an unknown preset is one error, not one per member
    if dataset is not None and not Path(dataset).expanduser().is_dir():
        raise BadInput(f"dataset folder not found: {dataset}. Fix: pass --dataset with the folder that holds the "
                       "images and their caption files")
    fixed = [override_text(k, v) for k, v in definition.fixed] + list(overrides)
    fixed_keys = {o.partition("=")[0].strip() for o in overrides}
    for axis in definition.axes:
        clash = fixed_keys & axis.keys()
        if clash:
            raise BadInput(f"{', '.join(sorted(clash))} is both a command-line override and swept by {axis_label(axis)}. "
                           "Fix: set each key in one place")
    given = {"dataset.dir": str(Path(dataset).expanduser().resolve()) if dataset else None, "model.base": base}
    members = [Member(i + 1, assignments) for i, assignments in enumerate(expand(definition))]
    base_spec = None
    try:
        base_spec = preset_mod.resolve(preset_name, home, fixed, given).spec
    except BadInput:
        pass  # e.g. the preset's optimizer only becomes valid with each member's own values
    base_problems: dict[tuple, BadInput | None] = {}  # each distinct base and family is checked once
    for member in members:
        _validate(home, preset_name, member, fixed, given, base_problems)
    label = chain[-1].name
    result = Plan(label, name or definition.name or label, members, fixed, given, definition.source, base_spec)
    if result.valid:
        _count_steps(result)
    problems = {m.problem for m in members}
    if not result.valid and len(problems) == 1:
        raise BadInput(f"every member of the sweep fails the same way: {problems.pop()}")
    return result


def _validate(home: Path, preset_name: str, member: Member, fixed: list[str], given: dict[str, Any],
              base_problems: dict[tuple, BadInput | None]) -> None:
    """Resolve the member's spec, render it in a scratch folder and check its base (kohya_runner.run.check_base,
    memoised in base_problems); a refusal becomes the member's problem."""
    import tempfile

    from .. import preset as preset_mod, render, run as run_mod

    member_given = dict(given)
    member_overrides = list(fixed)
    for key, value in member.assignments:
        if value is None:
            member_overrides.append(f"{key}=none")
        else:
            member_given[key] = value
    try:
        spec = preset_mod.resolve(preset_name, home, member_overrides, member_given).spec
        if spec.model.base == "tiny":  # built on first use, as `kr run --base tiny` does
            from ..trainers.tiny import ensure_base

            ensure_base(home, spec.model.family)
        with tempfile.TemporaryDirectory(prefix="kr-sweep-check-") as scratch:
            paths = render.render_paths(spec, Path(scratch), home, image_dir=Path(scratch), run_id="check")
            render.render_texts(spec, paths)
        key = (spec.model.base, spec.model.family)
        if key not in base_problems:
            try:
                run_mod.check_base(home, spec)
                base_problems[key] = None
            except BadInput as error:
                base_problems[key] = error
        if base_problems[key] is not None:
            raise base_problems[key]
    except BadInput as error:
        member.problem = _problem_text(error.message)
        return
    member.spec = spec


def _problem_text(message: str) -> str:
    lines = [line.strip().removeprefix("- ") for line in message.splitlines()]
    return "; ".join(lines[1:]) if len(lines) > 1 and lines[0].endswith(":") else " ".join(lines)


def _count_steps(result: Plan) -> None:
    """Total steps per member from the image sizes and each member's bucket and batch settings (§7.4)."""
    from .. import dataset as ds

    sizes_by_dir: dict[str, list[tuple[int, int]]] = {}
    tables: dict[tuple, Any] = {}
    for member in result.valid:
        spec = member.spec
        if not spec.dataset.dir or not Path(spec.dataset.dir).is_dir():
            continue
        settings = ds.settings_from_spec(spec)
        if spec.dataset.dir not in sizes_by_dir:
            found = ds.scan(settings)
            sizes_by_dir[spec.dataset.dir] = [s for s in (ds.image_header(img.path)[1] for img in found.images) if s]
        d = spec.dataset
        key = (spec.dataset.dir, tuple(d.resolution), d.enable_bucket, d.min_bucket_reso, d.max_bucket_reso,
               d.bucket_reso_steps, d.bucket_no_upscale, d.repeats)
        if key not in tables:
            try:
                # batch 1 here: bucket sizes only; each member's batch size enters the step arithmetic below
                tables[key] = bucket_table_for(sizes_by_dir[spec.dataset.dir], replace(settings, batch_size=1))
            except BadInput:
                tables[key] = None
        table = tables[key]
        if table is not None and table.items:
            try:
                member.steps = ds.step_math(table.bucket_items, d.batch_size, ds.plan_from_spec(spec)).total_steps
            except BadInput:
                member.steps = None


def refuse_invalid(result: Plan) -> None:
    if not result.invalid:
        return
    lines = "\n".join(f"  - {m.label} ({m.describe()}): {m.problem}" for m in result.invalid[:20])
    more = f"\n  … and {len(result.invalid) - 20} more" if len(result.invalid) > 20 else ""
    raise BadInput(f"{len(result.invalid)} of {len(result.members)} sweep members are invalid; nothing was launched:\n"
                   f"{lines}{more}\nFix: change those values, or pass --skip-invalid to run only the valid members")


def dry_run_json(result: Plan) -> dict[str, Any]:
    keys = result.varying_keys()
    return {
        "preset": result.preset, "name": result.name, "source": result.source, "fixed": result.fixed,
        "varying": keys, "total_steps": result.total_steps(),
        "members": [{"label": m.label, "index": m.index, "assignments": {k: v for k, v in m.assignments},
                     "changes": changes(result.base_spec, m.spec) if m.valid else None,
                     "valid": m.valid, "problem": m.problem, "steps": m.steps} for m in result.members],
    }


def changes(base_spec, spec) -> dict[str, list] | None:
    """{key: [preset value, member value]} for every setting the member changes (spec.diff: dotted keys,
    optimizer.args.weight_decay one by one; a side without the key is None)."""
    if base_spec is None or spec is None:
        return None
    from ..spec import diff

    return {d["key"]: [d["before"], d["after"]] for d in (c.to_dict() for c in diff(base_spec, spec))}
