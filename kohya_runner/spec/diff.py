"""How two specs differ: the one flat form of a spec and the one diff over it.

Every place that compares settings (`kr runs diff`, a sweep's changes from its preset, report and compare
sheets) uses these, so `optimizer.args` reads the same everywhere: one dotted key per argument,
`optimizer.args.weight_decay`, and each value shown by `show_value`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel


class _Absent:
    """A key one side does not have (an optimizer argument only one spec sets), unlike a value of none."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


def flatten(data: BaseModel | dict, prefix: str = "") -> dict[str, Any]:
    """A spec (or any nested dict) as {dotted path: value}, e.g. {"optimizer": {"lr": 1e-4, "args":
    {"weight_decay": 0.01}}} → {"optimizer.lr": 1e-4, "optimizer.args.weight_decay": 0.01}. Groups and
    dict-valued fields expand one key per entry; an empty dict stays one `{}` value, so every field shows."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    flat: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, path + "."))
        else:
            flat[path] = value
    return flat


@dataclass(frozen=True)
class Change:
    path: str  # dotted, e.g. "optimizer.args.weight_decay"
    before: Any  # the value in `a`, or ABSENT
    after: Any  # the value in `b`, or ABSENT

    def to_dict(self) -> dict[str, Any]:
        """The JSON form; a missing side is null."""
        return {"key": self.path, "before": _json(self.before), "after": _json(self.after)}


def diff(a: BaseModel | dict, b: BaseModel | dict) -> list[Change]:
    """Every setting in which `b` differs from `a`, sorted by path. Values compare as their JSON text, so
    1, 1.0 and true differ (they reach sd-scripts differently)."""
    flat_a, flat_b = flatten(a), flatten(b)
    changes = []
    for path in sorted(flat_a.keys() | flat_b.keys()):
        before, after = flat_a.get(path, ABSENT), flat_b.get(path, ABSENT)
        if _same(before, after) or _emptied(before, after):
            continue
        changes.append(Change(path, before, after))
    return changes


def _same(x: Any, y: Any) -> bool:
    if x is ABSENT or y is ABSENT:
        return x is y
    return json.dumps(x, sort_keys=True) == json.dumps(y, sort_keys=True)


def _emptied(before: Any, after: Any) -> bool:
    # optimizer.args = {} on one side, entries on the other: the entries are the changes, not the `{}`.
    return {_kind(before), _kind(after)} == {"empty", "absent"}


def _kind(value: Any) -> str:
    return "absent" if value is ABSENT else "empty" if value == {} else "value"


def _json(value: Any) -> Any:
    return None if value is ABSENT else value


def show_value(value: Any) -> str:
    """A setting's value as people read it: text as is, none, (not set), else compact JSON."""
    if value is ABSENT:
        return "(not set)"
    if value is None:
        return "none"
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)
