"""Spec errors: one readable line per problem, naming the field path, the bad value and the fix."""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from ..errors import BadInput
from .model import Spec, is_group


@dataclass(frozen=True)
class Problem:
    path: str
    value: Any
    message: str
    fix: str = ""

    def render(self) -> str:
        shown = _show(self.value)
        text = f"{self.path} = {shown}: {self.message}" if shown is not None else f"{self.path}: {self.message}"
        return f"{text}. Fix: {self.fix}" if self.fix else text


class SpecError(BadInput):
    """Every problem of a spec at once; a BadInput, so the CLI exits 2 with the list."""

    def __init__(self, problems: list[Problem], source: str = "the run spec", file: str | None = None):
        self.problems = problems
        lines = "\n".join(f"  - {p.render()}" for p in problems)
        super().__init__(f"{source} has {len(problems)} problem{'s' if len(problems) > 1 else ''}:\n{lines}",
                         field=problems[0].path if problems else None, file=file,
                         fix=problems[0].fix or None if problems else None)


_MISSING = object()  # a problem about a key, not a value: render() shows no "= value"


def _show(value: Any) -> str | None:
    if value is _MISSING:
        return None
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def problems_from_validation(error: ValidationError) -> list[Problem]:
    """pydantic's errors in kr's words: path, value, message and an example fix."""
    problems = []
    for item in error.errors():
        loc = [str(part) for part in item["loc"]]
        path = ".".join(loc)
        message = item["msg"].removeprefix("Value error, ")
        value = item.get("input", _MISSING)
        fix = ""
        if item["type"] == "extra_forbidden":
            value = _MISSING
            message, fix = _unknown_key_message(loc)
        elif item["type"] == "missing":
            value = _MISSING
        elif item["type"] == "literal_error":
            fix = f"use one of the listed values, e.g. {path}={_first_literal(item)}"
        else:
            fix = (item.get("ctx") or {}).get("fix") or _example_fix(loc)
        problems.append(Problem(path, value, message, fix))
    return problems


def _first_literal(item: dict) -> str:
    expected = (item.get("ctx") or {}).get("expected", "")
    match = re.search(r"'([^']*)'", expected)
    return match.group(1) if match else "…"


def _example_fix(loc: list[str]) -> str:
    """'e.g. network.dim=16': the field's built-in default as a value of the right type."""
    model: Any = Spec
    for part in loc[:-1]:
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None or not is_group(field.annotation):
            return ""
        model = field.annotation
    field = model.model_fields.get(loc[-1]) if hasattr(model, "model_fields") else None
    if field is None or field.default is None or not isinstance(field.default, (bool, int, float, str, tuple)):
        return ""
    default = field.default
    shown = ",".join(map(str, default)) if isinstance(default, tuple) else str(default).lower() if isinstance(default, bool) else default
    return f"give a value like the default, e.g. {'.'.join(loc)}={shown}"


def _unknown_key_message(loc: list[str]) -> tuple[str, str]:
    known = _field_names(loc[:-1])
    close = difflib.get_close_matches(loc[-1], known, n=1, cutoff=0.6)
    message = "unknown key (sd-scripts would ignore it silently; kr refuses it)"
    from .overrides import sd_scripts_hint

    # In a file the key is refused with the exact spec field, not taken: a kept, shared preset should use
    # one name per setting, so `presets explain` and run diffs read the same everywhere.
    hint = sd_scripts_hint(loc[-1])
    if hint:
        return message, hint
    if close:
        return message, f"did you mean '{'.'.join(loc[:-1] + [close[0]])}'?"
    return message, f"known keys here: {', '.join(known)}" if known else "remove it"


def _field_names(loc: list[str]) -> list[str]:
    model: Any = Spec
    for part in loc:
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None or not is_group(field.annotation):
            return []
        model = field.annotation
    return list(model.model_fields)
