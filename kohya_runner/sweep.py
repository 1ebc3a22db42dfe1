"""Sweeps: many runs from one preset, a queue over GPU (or CPU) slots sharing one cache, one table.

A sweep is a grid (the product of value lists), paired sets whose keys change together (e.g. one
learning-rate ladder per optimizer, each with its own args) and a seed list, on top of a preset and
fixed `key.path=value` overrides. Every member is resolved and validated before anything starts.

Members run as ordinary runs (each under its own detached supervisor, linked by runs.sweep_id): one
per slot, pinned with CUDA_VISIBLE_DEVICES, longest first, the next one as soon as a slot's trainer
has exited. Members sharing a cache folder wait until the first of them has left its caching phase
(kohya_runner.cache), so the VAE encodes every image once. `sweep.json` in the sweep folder records
the plan and the runs, so `kr sweep resume` can skip finished members. At the end: results.csv,
results.md and loss_overlay.png in the sweep folder.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Union, get_args, get_origin

from . import atomic
from .errors import BadInput, Failed, KrError

SWEEP_FILE = "sweep.json"
RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"
OVERLAY_PNG = "loss_overlay.png"
MAX_MEMBERS = 1000
DONE = ("succeeded", "diverged")  # a member with one of these is not run again by `kr sweep resume`
POLL = 0.1


def sweeps_dir(home: Path) -> Path:
    return home / "sweeps"


# ----------------------------------------------------------------------------------------------
# Defining: axes of alternatives, each alternative a list of (key path, value) assignments.

Assignment = tuple[str, Any]


@dataclass
class Axis:
    name: str  # the key for a grid axis; "paired" / "paired.NAME" for a paired set; "seed"
    choices: list[list[Assignment]]

    def keys(self) -> set[str]:
        return {key for choice in self.choices for key, _ in choice}


@dataclass
class Definition:
    axes: list[Axis] = field(default_factory=list)
    fixed: list[Assignment] = field(default_factory=list)  # every member (a sweep file's [set])
    preset: Optional[str] = None
    name: Optional[str] = None
    source: Optional[str] = None  # the sweep file, if any


def split_values(text: str) -> list[str]:
    """`a,b,[1,2],{x = 1, y = 2},"c,d"`: commas inside brackets, braces or quotes do not split."""
    parts, depth, quote, current = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    parts.append("".join(current).strip())
    return parts


def grid_axis(text: str) -> Axis:
    """`--grid optimizer.lr=1e-4,3e-4`: one axis, each value typed by the spec like an override."""
    from .spec import parse_override

    key, sep, raw = text.partition("=")
    if not sep or not key.strip() or not raw.strip():
        raise BadInput(f"--grid {text!r} is not of the form key.path=value1,value2, e.g. --grid optimizer.lr=1e-4,3e-4")
    values = split_values(raw)
    if any(v == "" for v in values):
        raise BadInput(f"--grid {text!r} has an empty value. Fix: remove the stray comma")
    key = key.strip()
    choices = []
    for value in values:
        override = parse_override(f"{key}={value}")
        choices.append([(".".join(override.path), override.value)])
    return Axis(key, choices)


def seed_axis(seeds: list[int]) -> Axis:
    return Axis("seed", [[("training.seed", int(s))] for s in seeds])


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(part) for part in split_values(text) if part]
    except ValueError:
        raise BadInput(f"--seeds {text!r}: give whole numbers such as 1,2,3") from None
    if not seeds:
        raise BadInput("--seeds needs at least one seed, e.g. --seeds 1,2,3")
    return seeds


SWEEP_HEADER_KEYS = {"name", "preset", "description", "seeds"}
SWEEP_TABLES = {"sweep", "set", "grid", "paired"}


def load_file(path: Path) -> Definition:
    """A sweep TOML: [sweep] name/preset/seeds, [set] fixed values, [grid] value lists, [[paired]] sets."""
    from ._toml import TOMLDecodeError, load_file as load_toml

    try:
        data = load_toml(path)
    except TOMLDecodeError as e:
        raise BadInput(f"sweep file {path} is not valid TOML: {e}. Fix: correct the line it names") from None
    except OSError as e:
        raise BadInput(f"cannot read sweep file {path}: {e.strerror}. Fix: check the path") from None
    unknown = set(data) - SWEEP_TABLES
    if unknown:
        raise BadInput(f"sweep file {path}: unknown table(s) {', '.join(sorted(unknown))}. "
                       f"Fix: use [sweep], [set], [grid] and [[paired]] (see `kr sweep --help`)")
    header = data.get("sweep", {})
    bad = set(header) - SWEEP_HEADER_KEYS
    if bad:
        raise BadInput(f"sweep file {path}: unknown key(s) {', '.join(sorted(bad))} in [sweep]. "
                       f"Fix: use {', '.join(sorted(SWEEP_HEADER_KEYS))}")
    where = f"sweep file {path}"
    definition = Definition(preset=header.get("preset"), name=header.get("name"), source=str(path))
    definition.fixed = _assignments(data.get("set", {}), where + " [set]", ladders=False)
    for key, value in _flatten(data.get("grid", {})):
        values = value if _is_ladder(key, value) else [value]
        if not values:
            raise BadInput(f"{where} [grid]: {key} has no values. Fix: give a list such as [1e-4, 3e-4]")
        definition.axes.append(Axis(key, [[(key, _typed(key, v, where))] for v in values]))
    paired = data.get("paired")
    groups = {} if paired is None else {"paired": paired} if isinstance(paired, list) else \
        {f"paired.{k}": v for k, v in paired.items()} if isinstance(paired, dict) else {"paired": paired}
    for name, entries in groups.items():
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries) or not entries:
            raise BadInput(f"{where}: {name} must be an array of tables ([[{name}]]), one per alternative")
        choices = []
        for entry in entries:
            choices.extend(_alternatives(_assignments(entry, f"{where} [[{name}]]", ladders=True)))
        definition.axes.append(Axis(name, choices))
    seeds = header.get("seeds")
    if seeds is not None:
        if not isinstance(seeds, list) or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds) or not seeds:
            raise BadInput(f"{where}: [sweep] seeds must be a list of whole numbers, e.g. seeds = [1, 2, 3]")
        definition.axes.append(seed_axis(seeds))
    return definition


def _flatten(table: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, Any]]:
    """Nested TOML tables (or quoted dotted keys) down to spec keys; a dict-valued field stays whole."""
    from .spec import leaf_paths

    leaves = {p for p in leaf_paths() if p != ("sd_scripts",)}
    out = []
    for key, value in table.items():
        path = prefix + tuple(key.split("."))
        if isinstance(value, dict) and path not in leaves and len(path) < 3:
            out.extend(_flatten(value, path))
        else:
            out.append((".".join(path), value))
    return out


def _annotation(key: str):
    from .spec import annotation_at

    return annotation_at(tuple(key.split(".")))  # unknown keys: BadInput with a suggestion


def _is_sequence_field(annotation) -> bool:
    args = [a for a in get_args(annotation) if a is not type(None)] if get_origin(annotation) is Union else [annotation]
    return any(get_origin(a) in (list, tuple) or a in (list, tuple) for a in args)


def _is_ladder(key: str, value: Any) -> bool:
    """A list is a set of alternatives, except for list-valued fields, where a list of lists is."""
    if not isinstance(value, list):
        return False
    if _is_sequence_field(_annotation(key)):
        return bool(value) and all(isinstance(v, list) for v in value)
    return True


def _typed(key: str, value: Any, where: str) -> Any:
    _annotation(key)
    if isinstance(value, float) and not math.isfinite(value):
        raise BadInput(f"{where}: {key} = {value} is not a finite number")
    return value


def _assignments(table: dict, where: str, ladders: bool) -> list[Assignment]:
    if not isinstance(table, dict):
        raise BadInput(f"{where} must be a table of key = value")
    out = []
    for key, value in _flatten(table):
        if not ladders and _is_ladder(key, value):
            raise BadInput(f"{where}: {key} is a list of values; a fixed value cannot be one. "
                           "Fix: move it to [grid] or [[paired]]")
        out.append((key, value if ladders and _is_ladder(key, value) else _typed(key, value, where)))
    return out


def _alternatives(assignments: list[Assignment]) -> list[list[Assignment]]:
    """One paired entry: fixed keys, plus a product over any ladders it holds (e.g. its lr ladder)."""
    fixed = [(k, v) for k, v in assignments if not _is_ladder(k, v)]
    ladders = [[(k, item) for item in v] for k, v in assignments if _is_ladder(k, v)]
    return [fixed + list(combo) for combo in itertools.product(*ladders)] if ladders else [fixed]


def expand(definition: Definition) -> list[list[Assignment]]:
    """Every member's assignments: the product of all axes, in order (the first axis varies slowest)."""
    seen: dict[str, str] = {key: "fixed values" for key, _ in definition.fixed}
    for axis in definition.axes:
        for key in sorted(axis.keys()):
            if key in seen:
                raise BadInput(f"{key} is set both by {seen[key]} and by {_axis_label(axis)}. "
                               "Fix: set each key in one place")
            seen[key] = _axis_label(axis)
    count = math.prod(len(axis.choices) for axis in definition.axes) if definition.axes else 1
    if count > MAX_MEMBERS:
        raise BadInput(f"the sweep has {count} members (more than {MAX_MEMBERS}). Fix: use fewer values")
    if not definition.axes:
        raise BadInput("the sweep varies nothing. Fix: add --grid key=v1,v2, --seeds 1,2 or a sweep file with "
                       "[grid] or [[paired]]")
    return [[a for choice in combo for a in choice] for combo in itertools.product(*(a.choices for a in definition.axes))]


def _axis_label(axis: Axis) -> str:
    return {"seed": "the seed list"}.get(axis.name, f"[[{axis.name}]]" if axis.name.startswith("paired") else f"the grid ({axis.name})")


def show_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")) if value is not None else "none"


def override_text(key: str, value: Any) -> str:
    return f"{key}={show_value(value)}"


# ----------------------------------------------------------------------------------------------
# Planning: every member resolved and validated, with its total steps.


@dataclass
class Member:
    index: int
    assignments: list[Assignment]
    spec: Any = None  # kohya_runner.spec.Spec, or None when invalid
    problem: Optional[str] = None
    steps: Optional[int] = None
    runs: list[str] = field(default_factory=list)
    error: Optional[str] = None  # a failure before its run could start (kept with the member)
    cache: Any = None  # its kohya_runner.cache.CacheFolder, once prepared

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

    def describe(self, keys: Optional[list[str]] = None) -> str:
        return " ".join(override_text(k, v) for k, v in self.assignments if keys is None or k in keys) or "(preset)"

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "label": self.label, "assignments": [[k, v] for k, v in self.assignments],
                "spec": self.spec.model_dump(mode="json") if self.spec is not None else None, "problem": self.problem,
                "steps": self.steps, "runs": self.runs, "error": self.error}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Member":
        from .spec import Spec

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
    source: Optional[str] = None
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


def plan(home: Path, preset_name: Optional[str], definition: Definition, *, overrides: list[str] = (),
         dataset: Optional[str] = None, base: Optional[str] = None, name: Optional[str] = None) -> Plan:
    """Resolve and check every member; invalid ones carry their problem instead of a spec."""
    from . import preset as preset_mod

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
            raise BadInput(f"{', '.join(sorted(clash))} is both a command-line override and swept by {_axis_label(axis)}. "
                           "Fix: set each key in one place")
    given = {"dataset.dir": str(Path(dataset).expanduser().resolve()) if dataset else None, "model.base": base}
    members = [Member(i + 1, assignments) for i, assignments in enumerate(expand(definition))]
    base_spec = None
    try:
        base_spec = preset_mod.resolve(preset_name, home, fixed, given).spec
    except BadInput:
        pass  # e.g. the preset's optimizer only becomes valid with each member's own values
    for member in members:
        _validate(home, preset_name, member, fixed, given)
    label = chain[-1].name
    result = Plan(label, name or definition.name or label, members, fixed, given, definition.source, base_spec)
    if result.valid:
        _count_steps(result)
    problems = {m.problem for m in members}
    if not result.valid and len(problems) == 1:
        raise BadInput(f"every member of the sweep fails the same way: {problems.pop()}")
    return result


def _validate(home: Path, preset_name: str, member: Member, fixed: list[str], given: dict[str, Any]) -> None:
    import tempfile

    from . import preset as preset_mod, render

    member_given = dict(given)
    member_overrides = list(fixed)
    for key, value in member.assignments:
        if value is None:
            member_overrides.append(f"{key}=none")
        else:
            member_given[key] = value
    try:
        spec = preset_mod.resolve(preset_name, home, member_overrides, member_given).spec
        with tempfile.TemporaryDirectory(prefix="kr-sweep-check-") as scratch:
            paths = render.render_paths(spec, Path(scratch), home, image_dir=Path(scratch), run_id="check")
            render.render_texts(spec, paths)
    except BadInput as error:
        member.problem = _problem_text(error.message)
        return
    member.spec = spec


def _problem_text(message: str) -> str:
    lines = [line.strip().removeprefix("- ") for line in message.splitlines()]
    return "; ".join(lines[1:]) if len(lines) > 1 and lines[0].endswith(":") else " ".join(lines)


def _count_steps(result: Plan) -> None:
    """Total steps per member from the image sizes and each member's bucket and batch settings (§7.4)."""
    from . import dataset as ds

    sizes_by_dir: dict[str, list[tuple[int, int]]] = {}
    tables: dict[tuple, Any] = {}
    for member in result.valid:
        spec = member.spec
        if not spec.dataset.dir or not Path(spec.dataset.dir).is_dir():
            continue
        settings = ds.settings_from_spec(spec)
        if spec.dataset.dir not in sizes_by_dir:
            found = ds.scan(settings)
            sizes_by_dir[spec.dataset.dir] = [s for s in (ds._image_header(img.path)[1] for img in found.images) if s]
        d = spec.dataset
        key = (spec.dataset.dir, tuple(d.resolution), d.enable_bucket, d.min_bucket_reso, d.max_bucket_reso,
               d.bucket_reso_steps, d.bucket_no_upscale, d.repeats)
        if key not in tables:
            try:
                tables[key] = ds.bucket_table(sizes_by_dir[spec.dataset.dir], resolution=tuple(d.resolution),
                                              enable_bucket=d.enable_bucket, min_bucket_reso=d.min_bucket_reso,
                                              max_bucket_reso=d.max_bucket_reso, bucket_reso_steps=d.bucket_reso_steps,
                                              bucket_no_upscale=d.bucket_no_upscale, num_repeats=d.repeats, batch_size=1)
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


def changes(base_spec, spec) -> Optional[dict[str, list]]:
    """{key: [preset value, member value]} for every spec key the member changes (a dict-valued key such as
    optimizer.args as a whole; sd_scripts option by option)."""
    if base_spec is None or spec is None:
        return None
    from .spec import leaf_paths

    def values(data: dict) -> dict[str, Any]:
        out = {}
        for path in leaf_paths():
            value: Any = data
            for part in path:
                value = value[part]
            if path == ("sd_scripts",):
                out.update({f"sd_scripts.{k}": v for k, v in value.items()})
            else:
                out[".".join(path)] = value
        return out

    a, b = values(base_spec.model_dump(mode="json")), values(spec.model_dump(mode="json"))
    return {k: [a.get(k), b.get(k)] for k in b if a.get(k) != b.get(k)} | \
        {k: [a[k], None] for k in a if k not in b}


# ----------------------------------------------------------------------------------------------
# The sweep's record: ledger row + sweep.json.


@dataclass
class Options:
    gpus: Optional[list[int]] = None  # None: every GPU NVML sees (or CUDA_VISIBLE_DEVICES); []: the CPU
    max_parallel: Optional[int] = None
    backend: Optional[str] = None
    skip_check: bool = False
    skip_invalid: bool = False
    retry_failed: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"gpus": self.gpus, "max_parallel": self.max_parallel, "backend": self.backend,
                "skip_check": self.skip_check, "skip_invalid": self.skip_invalid}


def detect_gpus() -> list[int]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        try:
            return [int(part) for part in visible.split(",") if part.strip()]
        except ValueError:
            return []
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return list(range(pynvml.nvmlDeviceGetCount()))
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return []


def slots_for(options: Options) -> list[list[int]]:
    """One slot per GPU (CUDA_VISIBLE_DEVICES=<gpu>); without GPUs, max_parallel CPU slots (default 1)."""
    gpus = detect_gpus() if options.gpus is None else options.gpus
    if options.max_parallel is not None and options.max_parallel < 1:
        raise BadInput("--max-parallel must be at least 1")
    if gpus:
        return [[g] for g in gpus][: options.max_parallel or len(gpus)]
    return [[] for _ in range(options.max_parallel or 1)]


def slot_label(gpus: list[int]) -> str:
    return f"gpu {gpus[0]}" if gpus else "cpu"


class Record:
    """sweep.json: the plan (every member's resolved spec), the options, the owner and each member's runs."""

    def __init__(self, home: Path, sweep_id: str, sweep_dir: Path, data: dict[str, Any], members: list[Member]):
        self.home, self.sweep_id, self.sweep_dir, self.data, self.members = home, sweep_id, sweep_dir, data, members

    @property
    def path(self) -> Path:
        return self.sweep_dir / SWEEP_FILE

    def save(self) -> None:
        self.data["members"] = [m.to_json() for m in self.members]
        atomic.write_text(self.path, json.dumps(self.data, indent=1, ensure_ascii=False, default=str) + "\n")

    @classmethod
    def create(cls, home: Path, result: Plan, options: Options) -> "Record":
        from .ledger import open_ledger

        row = open_ledger(home).create_sweep(result.name, sweeps_dir(home), preset=result.preset,
                                             members=len(result.members))
        data = {"schema": "kr.sweep/1", "sweep_id": row.sweep_id, "name": result.name, "preset": result.preset,
                "created": time.time(), "source": result.source, "fixed": result.fixed, "given": result.given,
                "varying": result.varying_keys(), "options": options.to_json(), "owner": None}
        record = cls(home, row.sweep_id, Path(row.sweep_dir), data, result.members)
        record.save()
        return record

    @classmethod
    def load(cls, home: Path, ref: str) -> "Record":
        from .ledger import open_ledger

        row = open_ledger(home).find_sweep(ref)
        path = Path(row.sweep_dir) / SWEEP_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise Failed(f"cannot read {path}: {e}. The sweep folder is damaged; its runs are still in `kr runs ls "
                         f"--sweep {row.sweep_id}`") from None
        return cls(home, row.sweep_id, Path(row.sweep_dir), data, [Member.from_json(m) for m in data["members"]])

    def owner_alive(self) -> bool:
        from .run import same_process

        owner = self.data.get("owner") or {}
        return same_process(owner.get("pid"), owner.get("start"))


# ----------------------------------------------------------------------------------------------
# Running: the slot scheduler.


class LogFollower:
    """Reads a member's trainer.log as it grows: its phase (for the cache gate) and progress (for display)."""

    def __init__(self, path: Path):
        from .monitor import Progress, SegmentSplitter

        self.path, self.offset = path, 0
        self.splitter, self.progress = SegmentSplitter(), Progress()

    def poll(self) -> None:
        from .monitor import parse_segment

        try:
            with open(self.path, "rb") as log:
                log.seek(self.offset)
                data = log.read()
        except FileNotFoundError:
            return
        self.offset += len(data)
        for segment in self.splitter.feed(data):
            parse_segment(self.progress, segment)


@dataclass
class Active:
    member: Member
    run_id: str
    slot: Optional[int]  # None once its trainer has exited (the supervisor may still be archiving)
    follower: LogFollower
    started: float
    stopper: Any = None  # a GroupStopper, only for a trainer whose supervisor died


@dataclass
class Gate:
    """A shared cache folder: 'ready' once built (or nothing to build); until then one member builds it."""
    folder: Any  # kohya_runner.cache.CacheFolder
    state: str = "unbuilt"  # unbuilt | building | ready
    builder: Optional[str] = None  # run id of the member building it
    checked: float = 0.0


def queue_order(members: list) -> list:
    """Longest first (LPT list scheduling): a long member cannot end up last, alone on one slot, while the
    others idle. Each member goes to the first slot that frees."""
    return sorted(members, key=lambda m: (-m.cost, m.index))


class Scheduler:
    def __init__(self, home: Path, record: Record, members: list[Member], slots: list[list[int]],
                 say: Callable[[str], None], poll: float = POLL):
        from .ledger import open_ledger

        self.home, self.record, self.slots, self.say, self.poll = home, record, slots, say, poll
        self.ledger = open_ledger(home)
        self.pending = queue_order(members)
        self.active: list[Active] = []
        self.free = list(range(len(slots)))
        self.gates: dict[str, Gate] = {}
        self.stop_requests = 0
        self._stops_sent = 0
        self._status_at = time.monotonic()
        self.varying = record.data.get("varying")

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> bool:
        """Until every member has run (True) or a stop request ended the sweep (False)."""
        while self.active or (self.pending and not self.stop_requests):
            self._send_stops()
            for active in list(self.active):
                self._poll_member(active)
            if not self.stop_requests:
                self._fill_slots()
            self._status_line()
            time.sleep(self.poll)
        return not self.stop_requests

    def request_stop(self) -> None:
        self.stop_requests += 1  # from a signal handler: the loop does the work

    def adopt(self, member: Member, row) -> None:
        """A member still running under its own supervisor (resume after kr died): follow it to the end."""
        from .run import LOG_FILE

        slot = None
        if self.free:
            slot = self.free.pop(0)
        self.active.append(Active(member, row.run_id, slot, LogFollower(Path(row.run_dir) / LOG_FILE), time.monotonic()))
        self.pending = [m for m in self.pending if m is not member]

    # -- slots -------------------------------------------------------------------------------

    def _fill_slots(self) -> None:
        while self.free and self.pending:
            member = self._next_member()
            if member is None:
                return
            self.pending.remove(member)
            slot = self.free.pop(0)
            if not self._start(member, slot):
                self.free.insert(0, slot)

    def _next_member(self) -> Optional[Member]:
        for member in self.pending:
            gate = self._gate(member)
            if gate is None or gate.state in ("ready", "unbuilt"):
                return member  # unbuilt: it builds the cache; the others sharing it wait until it has
        return None

    def _gate(self, member: Member) -> Optional[Gate]:
        from . import cache

        if member.cache is None or not cache.writes_to_disk(member.spec):
            return None
        gate = self.gates.get(member.cache.key)
        if gate is None:
            folder = member.cache
            gate = self.gates[folder.key] = Gate(folder, "ready" if folder.complete() else "unbuilt")
        if gate.state == "building" and gate.builder is not None:
            builder = next((a for a in self.active if a.run_id == gate.builder), None)
            if builder is not None and builder.follower.progress.phase not in ("starting", "caching"):
                gate.state = "ready"  # its trainer has left the caching phase: the cache is there
            elif builder is None:
                gate.state, gate.builder = ("ready" if gate.folder.complete() else "unbuilt"), None
        if gate.state != "ready" and time.monotonic() - gate.checked > 2.0:
            gate.checked = time.monotonic()
            if gate.folder.complete():
                gate.state = "ready"
        return gate

    def _start(self, member: Member, slot: int) -> bool:
        from . import run as run_mod
        from .run import LOG_FILE, RunOptions

        gpus = self.slots[slot]
        options = RunOptions(preset=self.record.data["preset"], backend=self.record.data["options"].get("backend"),
                             gpus=gpus, sweep_id=self.record.sweep_id,
                             image_dir=member.cache.path if member.cache is not None else None)
        try:
            row = run_mod.prepare(self.home, member.spec, options)
        except KrError as error:
            member.error = error.message
            self.record.save()
            self.say(f"[{member.label}] could not start: {error.message}")
            return False
        member.runs.append(row.run_id)
        member.error = None
        self.record.save()
        run_mod.spawn_detached_supervisor(self.home, row.run_id)
        gate = self._gate(member)
        if gate is not None and gate.state == "unbuilt":
            gate.state, gate.builder = "building", row.run_id
            self.say(f"[{member.label}] builds the shared cache first ({gate.folder.path.name}); "
                     "members sharing it start once it has")
        self.active.append(Active(member, row.run_id, slot, LogFollower(Path(row.run_dir) / LOG_FILE), time.monotonic()))
        self.say(f"[{member.label}] started {row.run_id} on {slot_label(gpus)}: {member.describe(self.varying)}")
        return True

    def _poll_member(self, active: Active) -> None:
        from .run import group_alive, same_process, settle_from_files

        active.follower.poll()
        row = self.ledger.get(active.run_id)
        supervised = same_process(row.supervisor_pid, row.supervisor_start)
        trainer = bool(row.pid) and (same_process(row.pid, row.pid_start) or group_alive(row.pgid))
        if active.slot is not None and row.pid and not trainer:
            self.free.append(active.slot)  # the trainer is gone: the slot (GPU) is free while the run is archived
            self.free.sort()
            active.slot = None
        if supervised or trainer:
            if not supervised and self.stop_requests and row.pgid:
                from .run import GroupStopper

                active.stopper = active.stopper or GroupStopper(row.pgid, (5.0, 5.0))
                active.stopper.step()
            return
        if row.active:  # the supervisor died without settling the run
            row = settle_from_files(self.home, row)
        if active.slot is not None:
            self.free.append(active.slot)
            self.free.sort()
        self.active.remove(active)
        self.say(f"[{active.member.label}] {finished_text(row)}")

    def _send_stops(self) -> None:
        if self.stop_requests <= self._stops_sent:
            return
        self._stops_sent = self.stop_requests
        from .run import same_process

        hard = self.stop_requests > 1
        self.say(("stopping harder (SIGTERM/SIGKILL)…" if hard else
                  f"stopping the sweep: {len(self.active)} running member(s) stop, {len(self.pending)} queued "
                  "member(s) do not start (Ctrl-C again to force)…"))
        for active in self.active:
            row = self.ledger.get(active.run_id)
            if not row.active:
                continue
            self.ledger.update(active.run_id, stop_requested=1)  # a supervisor still starting sees this in time
            if row.pid and same_process(row.supervisor_pid, row.supervisor_start):  # launched: its handlers are set
                try:
                    os.kill(row.supervisor_pid, signal.SIGTERM)  # its handler: request_stop (again: harder)
                except ProcessLookupError:
                    pass

    def _status_line(self) -> None:
        now = time.monotonic()
        if now - self._status_at < 30.0 or not self.active:
            return
        self._status_at = now
        parts = []
        for active in self.active:
            p = active.follower.progress
            steps = f" {p.steps_done}/{p.steps_total}" if p.steps_total else ""
            loss = f" loss {p.avr_loss:.4g}" if p.avr_loss is not None else ""
            parts.append(f"{active.member.label} {p.phase}{steps}{loss}")
        self.say(f"… {'; '.join(parts)}; {len(self.pending)} queued")


def finished_text(row) -> str:
    parts = [f"{row.run_id} {row.status}"]
    if row.loss is not None:
        parts.append(f"loss {row.loss:.4g}" + (f" (min {row.min_loss:.4g})" if row.min_loss is not None else ""))
    if row.duration is not None:
        parts.append(duration_text(row.duration))
    if row.status not in ("succeeded",) and row.hint:
        parts.append(f"— {row.hint[:200]}")
    return "  ".join(parts)


def duration_text(seconds: Optional[float]) -> str:
    if seconds is None:
        return "–"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def prepare_members(home: Path, members: list[Member], options: Options, say: Callable[[str], None]) -> None:
    """The dataset check once per distinct dataset setting, then each member's cache folder (kr run's pre_launch)."""
    from . import cache, dataset as ds, run as run_mod, workspace

    checked: set = set()
    for member in members:
        spec = member.spec
        if spec.dataset.dir:
            settings = ds.settings_from_spec(spec)
            if settings not in checked and not options.skip_check:
                checked.add(settings)
                run_mod.refuse_dataset_errors(home, spec)
            member.cache = cache.prepare(home, spec)
    keys = {m.cache.key for m in members if m.cache is not None}
    if keys:
        say(f"{len(members)} member(s) share {len(keys)} cache folder(s) under {workspace.caches_dir(home)}")


def execute(home: Path, record: Record, members: list[Member], options: Options, say: Callable[[str], None],
            adopt: Optional[list[tuple[Member, Any]]] = None) -> bool:
    """Run `members` (and follow adopted ones) to the end, or until Ctrl-C / SIGTERM; True if not stopped."""
    from .ledger import open_ledger
    from .run import start_time

    slots = slots_for(options)
    record.data["owner"] = {"pid": os.getpid(), "start": start_time(os.getpid())}
    record.save()
    ledger = open_ledger(home)
    ledger.update_sweep(record.sweep_id, status="running", finished_at=None)
    scheduler = Scheduler(home, record, members, slots, say)
    for member, row in adopt or []:
        scheduler.adopt(member, row)
    say(f"{record.sweep_id}: {len(members)} member(s) to run on {len(slots)} slot(s) "
        f"({', '.join(slot_label(s) for s in slots)}); Ctrl-C stops them all")
    previous = {sig: signal.signal(sig, lambda *_: scheduler.request_stop()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        completed = scheduler.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    ledger.update_sweep(record.sweep_id, status="finished" if completed else "stopped", finished_at=time.time())
    return completed


def start(home: Path, result: Plan, options: Options, say: Callable[[str], None]) -> Record:
    from . import run as run_mod

    run_mod.reconcile(home)
    if result.invalid and not options.skip_invalid:
        refuse_invalid(result)
    runnable = result.valid
    if not runnable:
        raise BadInput("no member of the sweep is valid; nothing to run")
    prepare_members(home, runnable, options, say)
    record = Record.create(home, result, options)
    execute(home, record, runnable, options, say)
    return record


def resume(home: Path, ref: str, options: Options, say: Callable[[str], None]) -> Record:
    """Run the members of a sweep that have not finished (stopped, crashed, never started; failed with
    retry_failed); members still running under their own supervisors are followed."""
    from . import run as run_mod
    from .ledger import open_ledger

    run_mod.reconcile(home)
    record = Record.load(home, ref)
    if record.owner_alive():
        raise BadInput(f"{record.sweep_id} is still running (kr pid {record.data['owner']['pid']}). "
                       "Fix: wait for it, or stop it with Ctrl-C in its terminal")
    stored = record.data.get("options", {})
    merged = Options(gpus=options.gpus if options.gpus is not None else stored.get("gpus"),
                     max_parallel=options.max_parallel or stored.get("max_parallel"),
                     backend=stored.get("backend"), skip_check=options.skip_check or stored.get("skip_check", False),
                     retry_failed=options.retry_failed)
    ledger = open_ledger(home)
    todo, adopt = [], []
    for member in record.members:
        if not member.valid:
            continue
        row = ledger.get(member.runs[-1]) if member.runs else None
        if row is not None and row.active:
            adopt.append((member, row))
        elif row is None or row.status not in DONE + (() if merged.retry_failed else ("failed",)):
            todo.append(member)
    if not todo and not adopt:
        say(f"{record.sweep_id}: every member has finished; nothing to resume")
        return record
    prepare_members(home, todo, merged, say)
    execute(home, record, todo, merged, say, adopt)
    return record


# ----------------------------------------------------------------------------------------------
# Results: the table (terminal, results.csv, results.md) and the loss overlay.


@dataclass
class ResultRow:
    member: Member
    run: Any  # RunRow or None

    @property
    def status(self) -> str:
        if not self.member.valid:
            return "invalid"
        if self.run is None:
            return "not started" if self.member.error else "pending"
        return self.run.status

    @property
    def reason(self) -> Optional[str]:
        if not self.member.valid:
            return self.member.problem
        if self.run is None:
            return self.member.error
        return self.run.hint if self.run.status != "succeeded" else None


def result_rows(home: Path, record: Record) -> list[ResultRow]:
    from .ledger import open_ledger

    ledger = open_ledger(home)
    rows = []
    for member in record.members:
        run_row = None
        if member.runs:
            try:
                run_row = ledger.get(member.runs[-1])
            except BadInput:
                run_row = None
        rows.append(ResultRow(member, run_row))
    return rows


def table(rows: list[ResultRow], varying: list[str]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        run = r.run
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
        })
    return out


def _num(value: Optional[float], digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}g}"


def text_table(rows: list[dict[str, Any]]) -> str:
    header = ("MEMBER", "PARAMS", "STATUS", "FINAL LOSS", "MIN LOSS", "TIME", "IT/S", "RUN")
    lines = [header] + [(r["member"], r["params"], r["status"], _num(r["final_loss"]), _num(r["min_loss"]),
                         duration_text(r["seconds"]), _num(r["it_per_s"], 3), r["run_id"] or "–") for r in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in lines)


def csv_text(rows: list[dict[str, Any]], varying: list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["member", *varying, "status", "final_avg_loss", "min_avg_loss", "seconds", "it_per_s", "steps",
                     "run_id", "reason"])
    for r in rows:
        writer.writerow([r["member"], *(show_value(r["values"][k]) if k in r["values"] else "" for k in varying),
                         r["status"], _csv(r["final_loss"]), _csv(r["min_loss"]),
                         "" if r["seconds"] is None else f"{r['seconds']:.1f}", _csv(r["it_per_s"]),
                         r["steps"] or "", r["run_id"] or "", (r["reason"] or "").replace("\n", " ")])
    return out.getvalue()


def _csv(value: Optional[float]) -> str:
    return "" if value is None else repr(value)


def markdown(record: Record, rows: list[dict[str, Any]]) -> str:
    def cell(text: Any) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    data = record.data
    lines = [f"# {record.sweep_id}", "",
             f"- preset: `{data['preset']}`" + (f" (sweep file `{data['source']}`)" if data.get("source") else ""),
             f"- fixed for every member: {', '.join(f'`{o}`' for o in data.get('fixed', [])) or 'nothing'}",
             f"- members: {len(rows)}", "",
             "| member | params | status | final loss | min loss | time | it/s | run |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['member']} | {cell(r['params'])} | {r['status']} | {_num(r['final_loss'])} | "
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
    from . import metrics

    archived = run_dir / "archive" / "loss.csv"
    try:
        points = metrics.read_csv(archived) if archived.is_file() else metrics.read_folder(run_dir / "logs", ["loss/average"])
    except Exception:
        return []
    series = metrics.last_per_step([p for p in points if p.tag == "loss/average"])
    return [(p.step, p.value) for p in series]


def overlay(record: Record, rows: list[ResultRow], varying: list[str]) -> Optional[Path]:
    """One PNG with every member's average-loss curve; diverged members dashed and marked where they ended."""
    curves = []
    for r in rows:
        if r.run is not None:
            points = member_losses(Path(r.run.run_dir))
            if points:
                curves.append((r, points))
    if not curves:
        return None
    from .metrics import Curve, plot_overlay

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


def summary_json(home: Path, record: Record, data: Optional[list[dict[str, Any]]] = None) -> dict[str, Any]:
    from .ledger import open_ledger

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
    from .ledger import open_ledger

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
