"""`key.path=value` overrides typed by the spec (like torchtune / OneTrainer), and the spec's key paths."""

from __future__ import annotations

import difflib
import types
from dataclasses import dataclass
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

from ..errors import BadInput
from .model import Spec, is_group


@dataclass(frozen=True)
class Override:
    path: tuple[str, ...]
    value: Any
    text: str


def parse_override(text: str) -> Override:
    """`optimizer.lr=2e-4` as a typed Override. Raises BadInput for a malformed text or an unknown key."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise BadInput(f"override {text!r} is not of the form key.path=value, e.g. optimizer.lr=1e-4")
    path = tuple(key.split("."))
    if any(not part for part in path):
        raise BadInput(f"override {text!r}: the key {key!r} has an empty part")
    return Override(path, coerce_value(path, raw), text)


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
    hint = f"did you mean '{'.'.join(path[:depth] + (close[0],))}'?" if close else f"keys in {where}: {', '.join(known)}"
    raise BadInput(f"unknown key '{'.'.join(path)}': {where} has no '{path[depth]}'. Fix: {hint} "
                   "(`kr presets explain NAME` lists every key)")


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
