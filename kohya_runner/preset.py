"""Presets: finding them, loading the `extends` chain, layering, and explaining where values came from.

Layers, lowest first: the spec's built-in defaults → the workspace config ($KR_HOME/config.toml) → the
preset chain (base first) → the preset the user named (a built-in, one of theirs, or any file) →
`key.path=value` overrides on the command line.
A preset file is TOML: a [preset] header, then tables named like the spec's groups.
"""

from __future__ import annotations

import copy
import difflib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import atomic, workspace
from ._toml import TOMLDecodeError, load_file
from .errors import BadInput
from .resources import data_dir
from .spec import (Override, Spec, SpecError, annotation_at, build_spec, describe, is_group, leaf_paths,
                   parse_override)

HEADER = "preset"
HEADER_KEYS = {"description", "intended_use", "dataset_size", "vram", "sd_scripts_commit", "extends"}
DEFAULT_LAYER = "default"
WORKSPACE_LAYER = "workspace"


@dataclass
class PresetFile:
    name: str
    path: Path
    origin: str  # "built-in", "user" or "file"
    header: dict[str, Any]
    body: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{self.origin}:{self.name}" if self.origin != "file" else f"file:{self.path}"


@dataclass
class Resolved:
    spec: Spec
    chain: list[PresetFile]
    sources: dict[str, str] = field(default_factory=dict)  # leaf path → layer label

    @property
    def preset(self) -> PresetFile:
        return self.chain[-1]


# ----------------------------------------------------------------------------------------------
# Finding presets.


def builtin_dir() -> Path:
    return data_dir("presets")


def available(home: Path) -> list[PresetFile]:
    """Built-in and user presets; a user preset with a built-in's name shadows it. Raises BadInput for an
    unreadable preset file."""
    found: dict[str, PresetFile] = {}
    for origin, folder in (("built-in", builtin_dir()), ("user", workspace.presets_dir(home))):
        for path in sorted(folder.glob("*.toml")) if folder.is_dir() else []:
            found[path.stem] = load_file_layer(path, origin)
    return sorted(found.values(), key=lambda p: (p.origin != "built-in", p.name))


def locate(name: str, home: Path, relative_to: Path | None = None) -> tuple[Path, str]:
    """A preset by path or by name (users also type `marker-preset` for `marker`), and its origin.
    Raises BadInput for a missing file or an unknown name (with a suggestion)."""
    as_path = Path(name).expanduser()
    if relative_to is not None and not as_path.is_absolute():
        as_path = relative_to / as_path
    looks_like_path = "/" in name or name.endswith(".toml")
    if looks_like_path:
        if as_path.is_file():
            return as_path.resolve(), "file"
        raise BadInput(f"preset file not found: {as_path}. Fix: check the path, or name a preset from `kr presets ls`",
                       file=str(as_path))
    stem = name.removesuffix(".toml")
    for candidate in (stem, stem.removesuffix("-preset")):
        for origin, folder in (("user", workspace.presets_dir(home)), ("built-in", builtin_dir())):
            path = folder / f"{candidate}.toml"
            if path.is_file():
                return path, origin
    names = sorted({p.name for p in available(home)})
    close = difflib.get_close_matches(stem.removesuffix("-preset"), names, n=1, cutoff=0.5)
    hint = f"Did you mean '{close[0]}'? " if close else ""
    raise BadInput(f"unknown preset '{name}'. {hint}Presets: {', '.join(names)}. "
                   "Fix: `kr presets ls` lists them; a path to a .toml file works too")


def load_file_layer(path: Path, origin: str) -> PresetFile:
    """One preset file as header and body. Raises BadInput for unreadable TOML or unknown header keys."""
    try:
        data = load_file(path)
    except TOMLDecodeError as e:
        raise BadInput(f"preset file {path} is not valid TOML: {e}. Fix: correct the line it names",
                       file=str(path)) from None
    except OSError as e:
        raise BadInput(f"cannot read preset file {path}: {e.strerror}", file=str(path)) from None
    header = data.pop(HEADER, {})
    if not isinstance(header, dict):
        raise BadInput(f"preset file {path}: [preset] must be a table of header keys ({', '.join(sorted(HEADER_KEYS))})",
                       file=str(path))
    unknown = set(header) - HEADER_KEYS
    if unknown:
        raise BadInput(f"preset file {path}: unknown header key(s) {', '.join(sorted(unknown))} in [preset]. "
                       f"Fix: use {', '.join(sorted(HEADER_KEYS))}", file=str(path))
    return PresetFile(path.stem, path, origin, header, data)


def load_chain(name: str, home: Path) -> list[PresetFile]:
    """The preset and everything it extends, base first. Raises BadInput for a loop or a bad `extends`."""
    chain: list[PresetFile] = []
    seen: set[Path] = set()
    path, origin = locate(name, home)
    while True:
        if path in seen:
            cycle = " → ".join(p.name for p in reversed(chain)) + f" → {path.stem}"
            raise BadInput(f"preset {name} extends itself in a loop ({cycle}). Fix: remove one `extends`")
        seen.add(path)
        layer = load_file_layer(path, origin)
        chain.append(layer)
        parent = layer.header.get("extends")
        if not parent:
            return list(reversed(chain))
        if not isinstance(parent, str):
            raise BadInput(f"preset file {path}: extends must be a preset name or path, not {parent!r}", file=str(path))
        path, origin = locate(parent, home, relative_to=path.parent)


# ----------------------------------------------------------------------------------------------
# Layering.


def resolve(name: str, home: Path, overrides: list[str] = (), given: dict[str, Any] | None = None) -> Resolved:
    """The validated spec for preset `name` with command-line values and overrides on top.

    `given` holds values from dedicated options such as --dataset and --base ({"dataset.dir": …}).
    Raises BadInput for a preset or override that cannot be read, SpecError (a BadInput) for an invalid spec.
    """
    chain = load_chain(name, home)
    data: dict[str, Any] = {"name": chain[-1].name}
    sources: dict[str, str] = {"name": chain[-1].label}
    merge_layer(data, sources, workspace_layer(home), WORKSPACE_LAYER)
    for layer in chain:
        merge_layer(data, sources, layer.body, layer.label)
    for key, value in (given or {}).items():
        if value is not None:
            set_path(data, tuple(key.split(".")), value)
            sources[key] = "command line"
    for override in parse_overrides(overrides):
        set_path(data, override.path, override.value)
        sources[_source_key(override.path)] = "override"
        if override.note:
            _note(override.note)
    try:
        spec = build_spec(data, source=f"preset {chain[-1].label}" + (" with overrides" if overrides else ""))
    except SpecError as error:
        error.file = error.file or blamed_file(chain, sources, error.field, home)
        raise
    return Resolved(spec, chain, sources)


def blamed_file(chain: list[PresetFile], sources: dict[str, str], field: str | None, home: Path) -> str | None:
    """The preset file (or workspace config) whose layer set `field`, e.g. 'sampling.prompts[1]' → the file
    that set sampling.prompts; None when the command line or kr's defaults set it. Raises nothing."""
    if not field:
        return None
    parts = field.split("[")[0].split(".")
    label = next((sources[k] for k in (".".join(parts[:n]) for n in range(len(parts), 0, -1)) if k in sources), None)
    if label == WORKSPACE_LAYER:
        return str(workspace.config_file(home))
    return next((str(layer.path) for layer in chain if layer.label == label), None)


_NOTED: set[str] = set()


def _note(text: str) -> None:
    """A one-line note on stderr, once per process (a sweep resolves the same overrides for every member)."""
    if text not in _NOTED:
        _NOTED.add(text)
        print(text, file=sys.stderr, flush=True)


def workspace_layer(home: Path) -> dict[str, Any]:
    """`<home>/config.toml`: spec-group tables (e.g. `[privacy] metadata = "scrub"`) applied to every run of
    this workspace, above kr's defaults and below the presets. Missing file: no layer.
    Raises BadInput for unreadable TOML or a table or key the spec does not have."""
    path = workspace.config_file(home)
    if not path.is_file():
        return {}
    try:
        body = load_file(path)
    except TOMLDecodeError as e:
        raise BadInput(f"the workspace config {path} is not valid TOML: {e}. Fix: correct the line it names",
                       file=str(path)) from None
    except OSError as e:
        raise BadInput(f"cannot read the workspace config {path}: {e.strerror}", file=str(path)) from None
    for group, table in body.items():
        if group not in GROUPS or not isinstance(table, dict):
            close = difflib.get_close_matches(group, sorted(GROUPS), n=1)
            hint = f"did you mean [{close[0]}]? " if close else ""
            raise BadInput(f"the workspace config {path} has [{group}], which is not a spec group. Fix: {hint}use "
                           f"tables named like the spec's groups ({', '.join(sorted(GROUPS))})", file=str(path))
        for key in table:
            try:
                annotation_at((group, key))
            except BadInput as e:
                raise BadInput(f"the workspace config {path}: {e.message}", file=str(path), field=e.field) from None
    return body


def parse_overrides(texts: list[str]) -> list[Override]:
    """All overrides parsed. Raises BadInput naming every bad one at once."""
    parsed, problems = [], []
    for text in texts:
        try:
            parsed.append(parse_override(text))
        except BadInput as e:
            problems.append(e)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise BadInput(f"{len(problems)} overrides are wrong:\n" + "\n".join(f"  - {p.message}" for p in problems),
                       field=problems[0].field)
    return parsed


def _source_key(path: tuple[str, ...]) -> str:
    """Provenance is tracked per spec leaf; a key inside a dict field counts for the field."""
    leaves = {".".join(p) for p in leaf_paths()}
    for depth in range(len(path), 0, -1):
        key = ".".join(path[:depth])
        if key in leaves:
            return key if path[0] != "sd_scripts" else ".".join(path)
    return ".".join(path)


GROUPS = {name for name, f in Spec.model_fields.items() if is_group(f.annotation)}


def merge_layer(data: dict[str, Any], sources: dict[str, str], body: dict[str, Any], label: str) -> None:
    """Groups merge key by key; a value (including a dict such as optimizer.args) replaces the lower one.
    sd_scripts options merge one option at a time."""
    for key, value in body.items():
        if (key in GROUPS or key == "sd_scripts") and isinstance(value, dict):
            target = data.setdefault(key, {})
            if not isinstance(target, dict):
                target = data[key] = {}
            for sub_key, sub_value in value.items():
                target[sub_key] = copy.deepcopy(sub_value)
                sources[f"{key}.{sub_key}"] = label
        else:
            data[key] = copy.deepcopy(value)
            sources[key] = label


def set_path(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    target = data
    for part in path[:-1]:
        nxt = target.get(part)
        if not isinstance(nxt, dict):
            nxt = target[part] = {}
        target = nxt
    target[path[-1]] = value


# ----------------------------------------------------------------------------------------------
# Explaining.


@dataclass
class ExplainRow:
    key: str
    value: Any
    source: str
    description: str


def explain(resolved: Resolved) -> list[ExplainRow]:
    """Every leaf of the resolved spec with its value, the layer that set it and its description (a dict field
    such as optimizer.args as one row, since a layer replaces it whole; sd_scripts option by option)."""
    dumped = resolved.spec.model_dump(mode="json")
    rows = []
    for path in leaf_paths():
        value: Any = dumped
        for part in path:
            value = value[part]
        key = ".".join(path)
        if path == ("sd_scripts",):
            for option, option_value in value.items():
                rows.append(ExplainRow(f"sd_scripts.{option}", option_value,
                                       resolved.sources.get(f"sd_scripts.{option}", DEFAULT_LAYER), "raw sd-scripts option"))
            continue
        rows.append(ExplainRow(key, value, resolved.sources.get(key, DEFAULT_LAYER), describe(path)))
    return rows


def validate(name: str, home: Path) -> Resolved:
    """Validate a preset by name or file (and what it extends) with every check `kr render` makes, without
    needing a dataset or a base. Raises BadInput for an unknown preset or missing file, SpecError (a BadInput)
    for an invalid spec or rendered options sd-scripts would refuse or ignore."""
    from . import render

    if Path(name).expanduser().is_file() and "/" not in name:
        name = f"./{name}"  # a file in this folder, even without .toml
    resolved = resolve(name, home)
    try:
        render.check_spec(resolved.spec, home)
    except SpecError as error:
        error.file = error.file or blamed_file(resolved.chain, resolved.sources, error.field, home)
        raise
    return resolved


def copy_preset(name: str, dest: str, home: Path, *, force: bool = False) -> Path:
    """Copy a preset file: a bare DEST name goes into the user presets folder, a path is used as given.
    Raises BadInput for an unknown preset or an existing target without `force`."""
    source, _ = locate(name, home)
    if "/" in dest or dest.endswith(".toml"):
        target = Path(dest).expanduser()
        if target.is_dir():
            target = target / source.name
    else:
        target = workspace.presets_dir(home) / f"{dest}.toml"
    if target.exists() and not force:
        raise BadInput(f"{target} already exists; kr does not overwrite. Fix: pick another name or pass --force",
                       file=str(target))
    atomic.write_bytes(target, source.read_bytes())
    return target.resolve()
