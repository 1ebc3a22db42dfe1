"""The pin (vendor/pin.toml: the one sd-scripts commit kr renders for) and where the install lives."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import BadInput, Failed
from ..resources import data_dir, source_checkout

RECORD_NAME = "kr-vendor.json"  # the install record, beside the checkout: vendor/kr-vendor.json


@dataclass(frozen=True)
class Pin:
    repository: str
    commit: str
    tree: str
    version: str

    @property
    def short(self) -> str:
        return self.commit[:7]

    def to_dict(self) -> dict:
        return asdict(self)

    def archive_url(self) -> str:
        return f"{self.repository.rstrip('/')}/archive/{self.commit}.tar.gz"


def load_pin(path: Path | None = None) -> Pin:
    """kr's pin (vendor/pin.toml). KR_PIN_FILE names another pin.toml: for kr's own tests of the install
    commands against a stand-in repository; rendered options always follow kr's pinned option manifest.
    Raises Failed when the pin file cannot be read.
    """
    path = Path(path) if path else pin_file()
    try:
        from .._toml import load_file

        data = load_file(path)
        return Pin(str(data["repository"]), str(data["commit"]), str(data["tree"]), str(data.get("version", "")))
    except (OSError, ValueError, KeyError) as exc:
        raise Failed(
            f"kr's sd-scripts pin {path} cannot be read ({exc!r}); reinstall kr or restore the file from its repository."
        ) from None


def pin_file() -> Path:
    """The pin.toml in use: KR_PIN_FILE if set, else the one kr ships (vendor/pin.toml).

    The pinned tree's file list lies beside it. Raises nothing (FileNotFoundError when kr's vendor/ data
    folder is missing from the installation).
    """
    override = os.environ.get("KR_PIN_FILE")
    return Path(override).expanduser() if override else data_dir("vendor") / "pin.toml"


# --- where things live ------------------------------------------------------------------------------


def vendor_root(home: Path) -> Path:
    """Where sd-scripts and its trainer environment live: KR_VENDOR_DIR if set; else a source checkout of kr
    keeps them beside the pin (vendor/, git-ignored), and a wheel install in the workspace (<home>/vendor).
    Raises nothing.
    """
    override = os.environ.get("KR_VENDOR_DIR")
    if override:
        return Path(override).expanduser().resolve()
    checkout = source_checkout()
    return checkout / "vendor" if checkout is not None else Path(home) / "vendor"


def default_sd_scripts_dir(home: Path) -> Path:
    """Raises nothing."""
    return vendor_root(home) / "sd-scripts"


def default_env_dir(home: Path) -> Path:
    """Raises nothing."""
    return vendor_root(home) / "env"


def default_tokenizer_dir(home: Path) -> Path:
    """The one tokenizer cache: the workspace's, which rendered configs pass as --tokenizer_cache_dir.

    Raises nothing.
    """
    from ..tokenizers import folder_for

    return folder_for(home)


def find_sd_scripts(home: Path) -> Path | None:
    """KR_SD_SCRIPTS if set, else the default install if present, else None.

    Raises BadInput when KR_SD_SCRIPTS names no folder.
    """
    override = os.environ.get("KR_SD_SCRIPTS")
    if override:
        path = Path(override).expanduser()
        if not path.is_dir():
            raise BadInput(
                f"KR_SD_SCRIPTS points to {path}, which is not a folder, so sd-scripts is not installed there. Fix: point it "
                "at an sd-scripts checkout, or unset it to use kr's own install (`kr vendor install --from PATH|TARBALL`)."
            )
        return path
    path = default_sd_scripts_dir(home)
    return path if path.is_dir() else None


def venv_python(env_dir: Path) -> Path:
    """The python of a venv folder (it may not exist yet). Raises nothing."""
    return Path(env_dir) / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def find_trainer_python(home: Path) -> Path | None:
    """KR_SD_PYTHON if set, else the python of the default trainer venv if present, else None.

    Raises BadInput when KR_SD_PYTHON names no executable.
    """
    override = os.environ.get("KR_SD_PYTHON")
    if override:
        path = Path(override).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BadInput(
                f"KR_SD_PYTHON points to {path}, which is not an executable python. Point it at the trainer environment's "
                "python or unset it."
            )
        return path
    python = venv_python(default_env_dir(home))
    return python if python.is_file() else None


def record_path(checkout: Path) -> Path:
    """The install record kr keeps beside a checkout (not inside, so it never changes the tree).

    It names the checkout folder it describes, so a record is never taken for a sibling's.
    Raises nothing.
    """
    return Path(checkout).parent / RECORD_NAME


def pin_or_none() -> Pin | None:
    """kr's pin, or None when it cannot be read (callers then skip what needs it). Raises nothing."""
    try:
        return load_pin()
    except Failed:
        return None
