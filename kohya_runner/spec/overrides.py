"""`key.path=value` overrides typed by the spec (like torchtune / OneTrainer), and the spec's key paths."""

from __future__ import annotations

import difflib
import types
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

from ..errors import BadInput
from .model import Spec, is_group


@dataclass(frozen=True)
class Override:
    path: tuple[str, ...]
    value: Any
    text: str
    note: str | None = None  # e.g. an sd-scripts option name taken as the spec field it maps to


def parse_override(text: str) -> Override:
    """`optimizer.lr=2e-4` as a typed Override; an sd-scripts option name the spec owns with a value of the
    same shape (`learning_rate=1e-4`) is taken as its spec field, with a note saying so. Raises BadInput for a
    malformed text, an unknown key, or an sd-scripts name whose value has another shape in the spec."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise BadInput(f"override {text!r} is not of the form key.path=value, e.g. optimizer.lr=1e-4")
    path = tuple(key.split("."))
    if any(not part for part in path):
        raise BadInput(f"override {text!r}: the key {key!r} has an empty part")
    note = None
    if len(path) == 1 and path[0] not in Spec.model_fields and path[0] in sd_scripts_names():
        target = _spec_path_for(path[0])
        # Accepted, not refused: people paste sd-scripts names from guides, and the value means the same here;
        # the note teaches kr's name, and the spec (hence the run record) holds only kr's.
        note = f"note: {key} is sd-scripts' name; kr calls it {'.'.join(target)}"
        path = target
    return Override(path, coerce_value(path, raw), text, note)


@lru_cache(maxsize=1)
def sd_scripts_names() -> dict[str, str]:
    """sd-scripts option → spec path ("kr" where kr sets it itself), from the training-args builder."""
    from ..sdscripts.training_args import option_fields

    return option_fields(Spec())


def _spec_path_for(option: str) -> tuple[str, ...]:
    """The spec path an sd-scripts option maps to. Raises BadInput for an option kr sets itself or one whose
    value has another shape in the spec, with the exact fix."""
    from ..sdscripts.training_args import RESHAPED

    target = sd_scripts_names()[option]
    if target == "kr":
        raise BadInput(f"{option} is an sd-scripts option kr sets itself (run folders, logs, the launch). "
                       "Fix: remove it", field=option)
    if option in RESHAPED:
        raise BadInput(f"{option} is sd-scripts' name; kr calls it {target}, whose value has another form "
                       f"({describe(tuple(target.split('.')))}). Fix: set {target}=… instead "
                       f"(`kr presets explain NAME` shows its current value)", field=target)
    return tuple(target.split("."))


def sd_scripts_hint(key: str) -> str | None:
    """'did you mean optimizer.lr? (learning_rate is sd-scripts' name)' for an sd-scripts option the spec owns."""
    names = sd_scripts_names()
    if key not in names:  # a misspelled sd-scripts name ("lerning_rate") still finds its field
        close = difflib.get_close_matches(key, list(names), n=1, cutoff=0.85)
        if not close:
            return None
        key = close[0]
    target = names[key]
    if target == "kr":
        return f"remove it: {key} is an sd-scripts option kr sets itself"
    return f"did you mean {target}? ({key} is sd-scripts' name for it)"


def coerce_value(path: tuple[str, ...], raw: str) -> Any:
    """Turn the text after '=' into the type the spec expects at `path`. Raises BadInput for an unknown key."""
    annotation = annotation_at(path)
    if raw.strip().lower() in ("none", "null") and _accepts_none(annotation):
        return None
    if _is_plain_str(annotation):
        return raw
    return _parse_literal(raw)


def _parse_literal(raw: str) -> Any:
    """A TOML literal (number, bool, array, inline table) when it parses as one, else the text itself."""
    from .._toml import loads_strict

    try:
        return loads_strict(f"v = {raw}")["v"]
    except Exception:
        return raw


def annotation_at(path: tuple[str, ...]) -> Any:
    """The type annotation the spec declares at `path`. Raises BadInput (with a suggestion) for a path the
    spec does not have, a group named as a whole, or sub-keys under a plain value."""
    model: Any = Spec
    for depth, part in enumerate(path):
        fields = model.model_fields
        if part not in fields:
            _raise_unknown_path(path, depth, list(fields))
        annotation = fields[part].annotation
        if is_group(annotation):
            model = annotation
            continue
        if depth == len(path) - 1:
            return annotation
        if get_origin(annotation) is dict:
            if part == "sd_scripts" and depth == len(path) - 2:
                return Any
            if depth == len(path) - 2:
                return get_args(annotation)[1]
        raise BadInput(f"override key {'.'.join(path)!r}: {'.'.join(path[:depth + 1])} has no sub-keys")
    raise BadInput(f"override key {'.'.join(path)!r} names a whole group; give one of its keys, e.g. "
                   f"{'.'.join(path)}.{next(iter(model.model_fields))}=…")


def _raise_unknown_path(path: tuple[str, ...], depth: int, known: list[str]) -> None:
    close = difflib.get_close_matches(path[depth], known, n=1, cutoff=0.5)
    where = ".".join(path[:depth]) or "the spec"
    hint = sd_scripts_hint(path[depth]) or (f"did you mean '{'.'.join(path[:depth] + (close[0],))}'?" if close
                                            else f"keys in {where}: {', '.join(known)}")
    raise BadInput(f"unknown key '{'.'.join(path)}': {where} has no '{path[depth]}'. Fix: {hint} "
                   "(`kr presets explain NAME` lists every key)", field=".".join(path), fix=hint)


def _accepts_none(annotation: Any) -> bool:
    return annotation is Any or type(None) in get_args(annotation)


def _is_plain_str(annotation: Any) -> bool:
    """str or `str | None`: the override text is taken as it is, never parsed as a TOML literal."""
    if annotation is str:
        return True
    args = [a for a in get_args(annotation) if a is not type(None)]
    return get_origin(annotation) in (Union, types.UnionType) and args == [str]


def leaf_paths(model: type[BaseModel] = Spec, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every settable key of the spec, e.g. ('optimizer', 'lr'); a dict-valued field is one leaf."""
    paths = []
    for name, field in model.model_fields.items():
        if is_group(field.annotation):
            paths.extend(leaf_paths(field.annotation, prefix + (name,)))
        else:
            paths.append(prefix + (name,))
    return paths


def describe(path: tuple[str, ...]) -> str:
    """The one-line description of a leaf path, e.g. ('network', 'dim') → 'LoRA rank: …'."""
    model: Any = Spec
    for part in path[:-1]:
        model = model.model_fields[part].annotation
    return model.model_fields[path[-1]].description or ""
