"""Drift: the trainer scripts' real argparse options compared with kr's pinned option manifest."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import Failed
from ..resources import data_dir
from ..sdscripts.environment import OFFLINE_ENV  # the probe imports sd-scripts: same no-network rule as a run

_ATTRIBUTES = ("action", "type", "default", "choices", "nargs", "required", "flags")


@dataclass(frozen=True)
class OptionChange:
    script: str
    option: str
    attribute: str
    old: object
    new: object


@dataclass
class Drift:
    added: list[tuple[str, str]]  # (script, option) present in the checkout, not in the pinned manifest
    removed: list[tuple[str, str]]  # (script, option) in the manifest, gone from the checkout
    changed: list[OptionChange]

    @property
    def ok(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def to_dict(self) -> dict:
        return {
            "ok": self.ok,
            "added": [{"script": script, "option": option} for script, option in self.added],
            "removed": [{"script": script, "option": option} for script, option in self.removed],
            "changed": [asdict(change) for change in self.changed],
        }


def diff_manifests(pinned: Mapping, probed: Mapping) -> Drift:
    """Compare two option manifests ({"scripts": {script: {option: spec}}}).

    Raises nothing.
    """
    added, removed, changed = [], [], []
    pinned_scripts, probed_scripts = pinned.get("scripts", {}), probed.get("scripts", {})
    for script in sorted(pinned_scripts.keys() | probed_scripts.keys()):
        old, new = pinned_scripts.get(script, {}), probed_scripts.get(script, {})
        added += [(script, option) for option in sorted(new.keys() - old.keys())]
        removed += [(script, option) for option in sorted(old.keys() - new.keys())]
        for option in sorted(old.keys() & new.keys()):
            changed += _option_changes(script, option, old[option], new[option])
    return Drift(added, removed, changed)


def _option_changes(script: str, option: str, old: Mapping, new: Mapping) -> list[OptionChange]:
    # Compared as JSON text, so 1 vs 1.0 or True vs 1 count as changes, as they would in a rendered TOML.
    names = [*_ATTRIBUTES, *sorted((old.keys() | new.keys()) - set(_ATTRIBUTES))]
    return [
        OptionChange(script, option, name, old.get(name), new.get(name))
        for name in names
        if json.dumps(old.get(name), sort_keys=True) != json.dumps(new.get(name), sort_keys=True)
    ]


def drift(sd_scripts: Path, python: str | Path, manifest_path: Path | None = None, *, timeout: float = 600) -> Drift:
    """Run the trainer's own argparse setup (with its python, cwd = the checkout) and diff it with the manifest.

    Raises Failed when the probe cannot run or fails.
    """
    import subprocess
    import tempfile

    sd_scripts = Path(sd_scripts).expanduser()
    manifest_path = Path(manifest_path) if manifest_path else data_dir("vendor") / "sd-scripts-args.json"
    pinned = json.loads(manifest_path.read_text(encoding="utf-8"))
    probe = Path(__file__).resolve().parent.parent / "sdscripts" / "drift_probe.py"
    with tempfile.TemporaryDirectory(prefix="kr-drift-") as work:
        out = Path(work) / "options.json"
        # -I keeps kohya_runner/ (the probe's folder) off sys.path: its tokenizers.py would shadow HF's package
        cmd = [str(python), "-I", str(probe), str(out)]
        try:
            result = subprocess.run(
                cmd, cwd=sd_scripts, capture_output=True, text=True, timeout=timeout, env={**os.environ, **OFFLINE_ENV}
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise Failed(
                f"The drift probe could not run with {python}: {exc}. Check the trainer environment (`kr vendor status`)."
            ) from None
        if result.returncode != 0 or not out.is_file():
            tail = "\n".join(result.stderr.strip().splitlines()[-12:])
            raise Failed(
                f"Reading sd-scripts' options in {sd_scripts} with {python} failed (exit {result.returncode}):\n{tail}\nCheck "
                "that this is an sd-scripts checkout and that its trainer environment is complete (`kr vendor status`)."
            )
        probed = json.loads(out.read_text(encoding="utf-8"))
    return diff_manifests(pinned, probed)
