"""One tarball (checkout + wheelhouse + tokenizer source) made on a connected machine, installed on an air-gapped one."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import BadInput, Failed
from ..gittree import entries_to_json
from ..hashing import sha256_file
from ._files import now_utc, refuse_existing, staging_dir, write_json_atomic
from .env import TrainerEnv, create_trainer_env, run_logged, split_torch_spec
from .checkout import InstallResult, copy_checkout, extract_archive, install
from .pin import Pin, default_env_dir, default_sd_scripts_dir, default_tokenizer_dir, load_pin
from .trees import reference_files, short_list, verified_entries

BUNDLE_FORMAT = "kr-bundle/1"
BUNDLE_TOP = "kr-bundle"
OPEN_CLIP_REQUIREMENT = "open-clip-torch"


@dataclass
class BundleResult:
    path: Path
    sha256: str
    size: int
    files: int

    def to_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path)}


def bundle(
    out_file: Path,
    sd_scripts: Path,
    *,
    requirements: Path | None = None,
    torch_spec: str,
    pin: Pin | None = None,
    pip_options: Sequence[str] = (),
    python: str | None = None,
    tokenizer_source: Path | None = None,
) -> BundleResult:
    """One tarball with the pinned checkout, a wheelhouse (torch + requirements) and the open-clip wheel.

    Runs `pip download` with `python` (default: this interpreter), so make the bundle with the same Python
    version and platform as the air-gapped machine. pip_options are passed to every `pip download`
    (e.g. ["--no-index", "--find-links", DIR] to build it from local wheels). tokenizer_source is an
    open_clip_torch wheel, or a folder holding one, used instead of downloading it. A name ending in
    .gz/.tgz is gzipped; plain .tar is faster, wheels being compressed already.
    Raises BadInput (no requirements file), Failed (checkout not the pin, pip download failed).
    """
    import shutil

    pin = pin or load_pin()
    out_file, sd_scripts = Path(out_file).expanduser(), Path(sd_scripts).expanduser()
    requirements = Path(requirements) if requirements else sd_scripts / "requirements.txt"
    if not requirements.is_file():
        raise BadInput(
            f"{requirements} does not exist. Point --requirements at a requirements file, or give an sd-scripts checkout that "
            "has one."
        )
    reference = reference_files(pin.tree, checkout=sd_scripts)
    checkout_entries = verified_entries(sd_scripts, pin.tree, reference, where=f"The checkout {sd_scripts}", pin=pin)
    python = python or sys.executable
    with staging_dir(out_file, "bundle") as staging:
        root = staging / BUNDLE_TOP
        copy_checkout(sd_scripts, root / "sd-scripts", checkout_entries)
        shutil.copyfile(requirements, root / "requirements.txt")
        _download_wheels(root, requirements, torch_spec, python, list(pip_options), staging)
        _bundle_tokenizer_wheel(root / "tokenizers", tokenizer_source, python, list(pip_options), staging)
        (root / "pin.toml").write_text(_pin_toml(pin), encoding="utf-8")
        manifest = {
            "format": BUNDLE_FORMAT,
            "created_at": now_utc(),
            "kr_version": _kr_version(),
            "python": _python_version(python),
            "pin": pin.to_dict(),
            "torch_spec": torch_spec,
            "sd_scripts_files": entries_to_json(checkout_entries),
        }
        manifest["members"] = _member_hashes(root)
        write_json_atomic(root / "manifest.json", manifest)
        _write_tar(root, out_file)
    digest = sha256_file(out_file)
    return BundleResult(out_file, digest, out_file.stat().st_size, len(manifest["members"]))


def _download_wheels(root: Path, requirements: Path, torch_spec: str, python: str, pip_options: list[str], staging: Path) -> None:
    wheelhouse = root / "wheelhouse"
    wheelhouse.mkdir(parents=True)
    log = staging / "pip-download.log"
    download = [python, "-m", "pip", "download", "--disable-pip-version-check", "-d", str(wheelhouse), *pip_options]
    torch_requirements, torch_options = split_torch_spec(torch_spec)
    run_logged([*download, *torch_options, *torch_requirements], log=log, what="downloading torch")
    remote, has_local = _downloadable_requirements(requirements)
    filtered = staging / "requirements-download.txt"
    filtered.write_text("\n".join(remote) + "\n", encoding="utf-8")
    run_logged([*download, "-r", str(filtered)], log=log, what="downloading sd-scripts' requirements")
    if has_local:
        # `-e .` is built on the air-gapped machine; pip's isolated build needs setuptools from the wheelhouse
        run_logged([*download, "setuptools", "wheel"], log=log, what="downloading build tools")


def _downloadable_requirements(requirements: Path) -> tuple[list[str], bool]:
    """The lines pip can download, and whether local/editable lines (like `-e .`) were left out."""
    remote, has_local = [], False
    for line in requirements.read_text(encoding="utf-8").splitlines():
        text = line.split(" #", 1)[0].strip()
        if not text or text.startswith("#"):
            continue
        if text.startswith(("-e", "--editable")) or text in (".", "./") or text.startswith(("./", "../", "file:")):
            has_local = True
            continue
        remote.append(text)
    return remote, has_local


def _bundle_tokenizer_wheel(target: Path, source: Path | None, python: str, pip_options: list[str], staging: Path) -> None:
    import shutil

    from ..tokenizers import read_bpe

    target.mkdir(parents=True)
    if source is None:
        cmd = [
            python,
            "-m",
            "pip",
            "download",
            "--disable-pip-version-check",
            "--no-deps",
            "-d",
            str(target),
            *pip_options,
            OPEN_CLIP_REQUIREMENT,
        ]
        run_logged(cmd, log=staging / "pip-download.log", what="downloading open-clip-torch (for the tokenizers)")
    else:
        source = Path(source)
        wheels = [source] if source.is_file() else sorted(source.glob("open_clip_torch-*.whl"))[-1:]
        if not wheels:
            raise BadInput(
                f"No open_clip_torch-*.whl in {source}. Run `pip download --no-deps open-clip-torch -d {source}` first."
            )
        shutil.copyfile(wheels[0], target / wheels[0].name)
    read_bpe(target)  # fails now, on the connected machine, if the wheel holds no BPE vocabulary


def _pin_toml(pin: Pin) -> str:
    return "".join(f'{key} = "{value}"\n' for key, value in pin.to_dict().items())


def _kr_version() -> str:
    from .. import __version__

    return __version__


def _python_version(python: str) -> str | None:
    import subprocess

    try:
        result = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True, text=True, timeout=60
        )
    except OSError:
        return None
    return result.stdout.strip() or None


def _member_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file under root ("link:<target>" for a symlink), manifest.json itself excepted."""
    hashes = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel == "manifest.json" or (path.is_dir() and not path.is_symlink()):
            continue
        hashes[rel] = f"link:{os.readlink(path)}" if path.is_symlink() else sha256_file(path)
    return hashes


def _write_tar(root: Path, out_file: Path) -> None:
    import tarfile

    mode = "w:gz" if out_file.name.endswith((".gz", ".tgz")) else "w"
    partial = out_file.with_name(f".{out_file.name}.partial")
    try:
        with tarfile.open(partial, mode, format=tarfile.PAX_FORMAT) as tar:
            for path in [root, *sorted(root.rglob("*"))]:
                info = tar.gettarinfo(str(path), arcname=path.relative_to(root.parent).as_posix())
                info.uid = info.gid = 0
                info.uname = info.gname = ""  # the bundle should not carry the packer's user names
                if info.isfile():
                    with open(path, "rb") as handle:
                        tar.addfile(info, handle)
                else:
                    tar.addfile(info)
        os.replace(partial, out_file)
    finally:
        partial.unlink(missing_ok=True)


@dataclass
class BundleInstall:
    sd_scripts: InstallResult
    env: TrainerEnv
    tokenizers: list[Path] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "sd_scripts": self.sd_scripts.to_dict(),
            "env": self.env.to_dict(),
            "tokenizers": [str(path) for path in self.tokenizers],
        }


def install_bundle(
    file: Path,
    home: Path,
    *,
    pin: Pin | None = None,
    sd_scripts_dir: Path | None = None,
    env_dir: Path | None = None,
    tokenizer_dir: Path | None = None,
    force: bool = False,
    base_python: str | None = None,
) -> BundleInstall:
    """Install checkout, trainer environment and tokenizers from a bundle, with no network.

    Every member's sha256 is checked against the bundle manifest, and the checkout against kr's pin.
    Destinations default to default_sd_scripts_dir/default_env_dir/default_tokenizer_dir(home).
    Raises BadInput (not a bundle, other pin or Python, existing installs), Failed (damaged bundle).
    """
    import tarfile

    pin = pin or load_pin()
    file, home = Path(file).expanduser(), Path(home).expanduser()
    dest = Path(sd_scripts_dir) if sd_scripts_dir else default_sd_scripts_dir(home)
    env_dir = Path(env_dir) if env_dir else default_env_dir(home)
    tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else default_tokenizer_dir(home)
    if not file.is_file() or not tarfile.is_tarfile(file):
        raise BadInput(f"{file} is not a kr bundle (a tar file made by `kr vendor bundle`). Check the path.")
    fix = "Pass --force to replace it with the bundle's contents."
    refuse_existing(dest, force, "An sd-scripts checkout", fix)
    refuse_existing(env_dir, force, "A trainer environment", fix)
    home.mkdir(parents=True, exist_ok=True)
    with staging_dir(home / "bundle", "unpack") as staging:
        extract_archive(file, staging)  # strips the kr-bundle/ top folder
        manifest = _checked_manifest(staging, file, pin)
        _check_bundle_python(manifest, file, base_python or sys.executable)
        checkout = install(
            staging / "sd-scripts",
            dest,
            expected_tree=pin.tree,
            force=force,
            commit=pin.commit,
            expected_files=manifest["sd_scripts_files"],
        )
        env = create_trainer_env(
            dest,
            env_dir,
            wheelhouse=staging / "wheelhouse",
            torch_spec=manifest["torch_spec"],
            requirements=staging / "requirements.txt",
            force=force,
            base_python=base_python,
        )
        tokenizers = _install_bundle_tokenizers(staging / "tokenizers", tokenizer_dir)
    return BundleInstall(checkout, env, tokenizers)


def _checked_manifest(root: Path, file: Path, pin: Pin) -> dict:
    try:
        manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise BadInput(
            f"{file} has no readable manifest.json; it is not a kr bundle, or it is damaged. Make it again with `kr vendor "
            "bundle`."
        ) from None
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BadInput(
            f"{file} is a bundle of format {manifest.get('format')!r}; this kr reads {BUNDLE_FORMAT}. Make the bundle with the "
            "same kr version."
        )
    actual = _member_hashes(root)
    expected = manifest.get("members", {})
    bad = sorted(path for path in expected if actual.get(path) != expected[path])
    extra = sorted(actual.keys() - expected.keys())
    if bad or extra:
        raise Failed(
            f"The bundle {file} is damaged or was altered: {short_list(bad + extra)} do not match its manifest. Copy it again "
            "from the connected machine and compare its sha256 with the one `kr vendor bundle` printed."
        )
    bundled = manifest.get("pin", {})
    if bundled.get("tree") != pin.tree:
        raise BadInput(
            f"The bundle {file} carries sd-scripts commit {bundled.get('commit')}, but this kr is pinned to {pin.commit}. Make "
            "the bundle with the same kr version as this machine's."
        )
    return manifest


def _check_bundle_python(manifest: dict, file: Path, python: str) -> None:
    # Wheels are built for one Python version; a mismatch would only surface as pip's "no matching distribution".
    wanted, have = manifest.get("python"), _python_version(python)
    if wanted and have and wanted != have:
        raise BadInput(
            f"The bundle {file} was made for Python {wanted}, but the trainer environment would use Python {have} "
            f"({python}). Make the bundle with a Python {have} (bundle's `python=`), or install with a Python {wanted}."
        )


def _install_bundle_tokenizers(source: Path, tokenizer_dir: Path) -> list[Path]:
    from ..tokenizers import build_tokenizer_cache

    if not source.is_dir() or not any(source.iterdir()):
        return []
    return build_tokenizer_cache(tokenizer_dir, source=source)
