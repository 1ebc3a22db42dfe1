"""Defining a sweep: axes of alternatives (a grid, paired sets, seeds), each alternative a list of
(key path, value) assignments, from `--grid`/`--seeds` or a sweep TOML; and their expansion into members.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from ..errors import BadInput

MAX_MEMBERS = 1000

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
    preset: str | None = None
    name: str | None = None
    source: str | None = None  # the sweep file, if any


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
    from ..spec import parse_override

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
    from .._toml import TOMLDecodeError, load_file as load_toml

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
    from ..spec import leaf_paths

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
    from ..spec import annotation_at

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
                raise BadInput(f"{key} is set both by {seen[key]} and by {axis_label(axis)}. "
                               "Fix: set each key in one place")
            seen[key] = axis_label(axis)
    count = math.prod(len(axis.choices) for axis in definition.axes) if definition.axes else 1
    if count > MAX_MEMBERS:
        raise BadInput(f"the sweep has {count} members (more than {MAX_MEMBERS}). Fix: use fewer values")
    if not definition.axes:
        raise BadInput("the sweep varies nothing. Fix: add --grid key=v1,v2, --seeds 1,2 or a sweep file with "
                       "[grid] or [[paired]]")
    return [[a for choice in combo for a in choice] for combo in itertools.product(*(a.choices for a in definition.axes))]


def axis_label(axis: Axis) -> str:
    return {"seed": "the seed list"}.get(axis.name, f"[[{axis.name}]]" if axis.name.startswith("paired") else f"the grid ({axis.name})")


def show_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:g}"
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")) if value is not None else "none"


def override_text(key: str, value: Any) -> str:
    return f"{key}={show_value(value)}"
