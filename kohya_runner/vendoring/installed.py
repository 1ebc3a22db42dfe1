"""Verifying the installed checkout against the pin, and everything `kr vendor status` shows."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import BadInput
from ..gittree import Difference, compare, entries_from_json, tree_id
from .pin import Pin, default_sd_scripts_dir, default_tokenizer_dir, find_sd_scripts, find_trainer_python, load_pin, record_path
from .trees import mismatch_message, reference_files, scan_checkout


@dataclass
class VerifyResult:
    ok: bool
    path: Path
    tree: str
    expected: str
    commit: str | None  # as recorded at install time
    recorded_tree: str | None
    named: bool  # whether a file list was available to name changed/missing/added files
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)  # created by the trainer; ignored

    def to_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path)}

    def message(self, pin: Pin | None = None) -> str:
        """One paragraph for the CLI when not ok."""
        if self.ok:
            return f"{self.path} matches the pinned tree {self.expected[:12]}."
        unmodified = self.named and not (self.changed or self.missing or self.added)
        if unmodified and self.recorded_tree and self.recorded_tree != self.expected:
            return (
                f"The checkout {self.path} is unmodified, but it is another sd-scripts version (commit "
                f"{self.commit or 'unknown'}, tree {self.recorded_tree[:12]}) than the one this kr is pinned to "
                f"(tree {self.expected[:12]}). Install the pinned commit with `kr vendor install ... --force`."
            )
        diff = Difference(self.changed, self.missing, self.added) if self.named else None
        return mismatch_message(f"The checkout {self.path}", self.tree, self.expected, diff, pin)


def verify(path: Path, *, expected_tree: str | None = None) -> VerifyResult:
    """Hash the checkout (ignoring .git and trainer-created files) and compare it with the pin.

    Names the files that differ from the install record (kr-vendor.json beside the checkout), else from
    a file list kr ships or `git ls-tree`, when one is available.
    Raises BadInput when path is not a folder; Failed when kr's pin cannot be read.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise BadInput(
            f"{path} is not a folder, so there is no sd-scripts checkout to verify. Install one with `kr vendor install`."
        )
    expected = expected_tree or load_pin().tree
    record = _read_record(path)
    reference = entries_from_json(record["files"]) if record else reference_files(expected, checkout=path)
    entries, extra = scan_checkout(path, reference or {})
    tree = tree_id(entries)
    diff = compare(entries, reference) if reference else Difference([], [], [])
    return VerifyResult(
        ok=tree == expected,
        path=path,
        tree=tree,
        expected=expected,
        commit=record.get("commit") if record else None,
        recorded_tree=record.get("tree") if record else None,
        named=reference is not None,
        changed=diff.changed,
        missing=diff.missing,
        added=diff.added,
        extra=extra,
    )


def _read_record(checkout: Path) -> dict | None:
    try:
        record = json.loads(record_path(checkout).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("checkout") != Path(checkout).name:
        return None
    return record if isinstance(record.get("files"), dict) else None


_TRAINER_QUERY = r"""
import importlib.metadata as md, importlib.util, json, os, re, sys
out = {"python_version": sys.version.split()[0], "torch": None, "cuda": None}
try:
    out["torch"] = md.version("torch")
except md.PackageNotFoundError:
    pass
spec = importlib.util.find_spec("torch")  # locates torch without importing it (seconds saved)
if spec and spec.submodule_search_locations:
    version_py = os.path.join(list(spec.submodule_search_locations)[0], "version.py")
    if os.path.isfile(version_py):
        found = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", open(version_py).read(), re.M)
        out["cuda"] = found.group(1) if found else None
print(json.dumps(out))
"""


def python_facts(python: Path) -> dict:
    """Python, torch and CUDA versions of a trainer python, without importing torch; errors land in 'error'.

    Raises nothing.
    """
    import subprocess

    try:
        result = subprocess.run([str(python), "-I", "-c", _TRAINER_QUERY], capture_output=True, text=True, timeout=60)
        info = json.loads(result.stdout)
        return {**info, "error": None}
    except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
        return {"python_version": None, "torch": None, "cuda": None, "error": f"{python} could not be queried: {exc}"}


def status(home: Path, *, tokenizer_dir: Path | None = None, check_tree: bool = True) -> dict:
    """Everything `kr vendor status` shows, as JSON-ready data (shape below is stable).

    {"pin": {repository, commit, tree, version},
     "sd_scripts": {path, from, installed, verified, tree, commit, installed_at, named, changed, missing, added, extra,
                    error},
     "trainer": {python, from, python_version, torch, cuda, error},
     "tokenizers": tokenizer_status(...)}
    "from" is "env" (KR_SD_SCRIPTS / KR_SD_PYTHON), "default" or None when nothing is found. "named" says
    whether a file list (install record, kr's shipped list, git) named changed / missing / added files.
    Raises Failed when kr's pin cannot be read; problems of the install are reported in the data.
    """
    from ..tokenizers import tokenizer_status

    pin = load_pin()
    return {
        "pin": pin.to_dict(),
        "sd_scripts": _sd_scripts_status(home, pin, check_tree),
        "trainer": _trainer_status(home),
        "tokenizers": tokenizer_status(Path(tokenizer_dir) if tokenizer_dir else default_tokenizer_dir(home)),
    }


def _sd_scripts_status(home: Path, pin: Pin, check_tree: bool) -> dict:
    info = {
        "path": None,
        "from": None,
        "installed": False,
        "verified": None,
        "tree": None,
        "commit": None,
        "installed_at": None,
        "named": None,
        "changed": [],
        "missing": [],
        "added": [],
        "extra": [],
        "error": None,
    }
    try:
        path = find_sd_scripts(home)
    except BadInput as exc:
        return {**info, "error": str(exc)}
    if path is None:
        return {**info, "path": str(default_sd_scripts_dir(home))}
    record = _read_record(path) or {}
    info.update(
        path=str(path),
        installed=True,
        commit=record.get("commit"),
        installed_at=record.get("installed_at"),
        **{"from": "env" if os.environ.get("KR_SD_SCRIPTS") else "default"},
    )
    if check_tree:
        result = verify(path, expected_tree=pin.tree)
        info.update(
            verified=result.ok,
            tree=result.tree,
            named=result.named,
            changed=result.changed,
            missing=result.missing,
            added=result.added,
            extra=result.extra,
        )
    return info


def _trainer_status(home: Path) -> dict:
    info = {"python": None, "from": None, "python_version": None, "torch": None, "cuda": None, "error": None}
    try:
        python = find_trainer_python(home)
    except BadInput as exc:
        return {**info, "error": str(exc)}
    if python is None:
        return info
    info.update(python=str(python), **{"from": "env" if os.environ.get("KR_SD_PYTHON") else "default"})
    info.update(python_facts(python))
    return info
