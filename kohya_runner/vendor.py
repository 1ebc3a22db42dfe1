"""The library behind `kr vendor ...`: installing, checking and bundling the pinned sd-scripts.

kr renders arguments for one sd-scripts commit (vendor/pin.toml). This module puts exactly that
commit on a machine and keeps checking it is still there:

- install: from a checkout folder, a tarball/zip (`install`), a git clone (`install_git`, the only
  networked path besides `bundle`), or an offline bundle (`install_bundle`); always staged beside the
  destination, verified against the pinned git tree id, then renamed into place.
- verify/status: the tree id of the installed checkout, which tracked files changed, and which
  files the trainer itself created there (ignored).
- create_trainer_env: the trainer's own venv (torch first, then sd-scripts' requirements.txt).
- bundle/install_bundle: one tarball carrying checkout + wheelhouse + tokenizer source to an
  air-gapped machine, every member sha256-checked on arrival.
- drift: the trainer scripts' real argparse options compared with the pinned option manifest.

Imports that cost start-up time (shutil, tempfile, tarfile, subprocess, hashlib,
kohya_runner.tokenizers) happen inside the functions that need them, so `import kohya_runner.vendor`
stays cheap for the CLI.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kohya_runner import atomic
from kohya_runner.errors import BadInput, Failed
from kohya_runner.hashing import sha256_file
from kohya_runner.gittree import (
    ArchiveError,
    Difference,
    Entries,
    Entry,
    compare,
    directory_entries,
    entries_from_json,
    entries_to_json,
    git_tree_hash,
    tarball_tree_hash,
    tree_id,
)
from kohya_runner.resources import data_dir, source_checkout

__all__ = [
    "Pin",
    "load_pin",
    "git_tree_hash",
    "tarball_tree_hash",
    "vendor_root",
    "default_sd_scripts_dir",
    "default_env_dir",
    "default_tokenizer_dir",
    "find_sd_scripts",
    "find_trainer_python",
    "InstallResult",
    "install",
    "install_git",
    "record_path",
    "file_list",
    "TrainerEnv",
    "detect_nvidia_gpu",
    "choose_torch_spec",
    "create_trainer_env",
    "BundleResult",
    "BundleInstall",
    "bundle",
    "install_bundle",
    "VerifyResult",
    "verify",
    "status",
    "OptionChange",
    "Drift",
    "drift",
    "diff_manifests",
]

RECORD_NAME = "kr-vendor.json"  # the install record, beside the checkout: vendor/kr-vendor.json
ENV_RECORD = "kr-env.json"  # written inside the trainer venv
SHIPPED_FILE_LIST = "sd-scripts-files.json"  # optional: path -> [mode, blob] of the pinned tree
BUNDLE_FORMAT = "kr-bundle/1"
BUNDLE_TOP = "kr-bundle"
OPEN_CLIP_REQUIREMENT = "open-clip-torch"

# torch for the trainer (contract §11 measured torch 2.14.1 + torchvision 0.29.1; sd-scripts imports
# torchvision). PyPI's Linux torch wheels are CUDA builds (several GB); the CPU build lives on PyTorch's
# own index, so a machine without an NVIDIA GPU asks for that.
TORCH_VERSION = "2.14.1"
TORCHVISION_VERSION = "0.29.1"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"

# pip options that take a value: kept together when splitting a torch spec
_PIP_VALUE_OPTIONS = {"-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--trusted-host", "-c", "--constraint"}

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "WANDB_MODE": "disabled",
}


# --- the pin ----------------------------------------------------------------------------------------


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
    commands against a stand-in repository; rendered options always follow kr's pinned option manifest."""
    if path is None and os.environ.get("KR_PIN_FILE"):
        path = Path(os.environ["KR_PIN_FILE"]).expanduser()
    path = Path(path) if path else data_dir("vendor") / "pin.toml"
    try:
        data = _read_toml(path)
        return Pin(str(data["repository"]), str(data["commit"]), str(data["tree"]), str(data.get("version", "")))
    except (OSError, ValueError, KeyError) as exc:
        raise Failed(
            f"kr's sd-scripts pin {path} cannot be read ({exc!r}); reinstall kr or restore the file from its repository."
        ) from None


def _read_toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    with open(path, "rb") as handle:
        return tomllib.load(handle)


# --- where things live ------------------------------------------------------------------------------


def vendor_root(home: Path) -> Path:
    """Where sd-scripts and its trainer environment live: KR_VENDOR_DIR if set; else a source checkout of kr
    keeps them beside the pin (vendor/, git-ignored), and a wheel install in the workspace (<home>/vendor)."""
    override = os.environ.get("KR_VENDOR_DIR")
    if override:
        return Path(override).expanduser().resolve()
    checkout = source_checkout()
    return checkout / "vendor" if checkout is not None else Path(home) / "vendor"


def default_sd_scripts_dir(home: Path) -> Path:
    return vendor_root(home) / "sd-scripts"


def default_env_dir(home: Path) -> Path:
    return vendor_root(home) / "env"


def default_tokenizer_dir(home: Path) -> Path:
    """The one tokenizer cache: the workspace's, which rendered configs pass as --tokenizer_cache_dir."""
    from kohya_runner.tokenizers import folder_for

    return folder_for(home)


def find_sd_scripts(home: Path) -> Path | None:
    """KR_SD_SCRIPTS if set, else the default install if present, else None."""
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


def _venv_python(env_dir: Path) -> Path:
    return Path(env_dir) / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def find_trainer_python(home: Path) -> Path | None:
    """KR_SD_PYTHON if set, else the python of the default trainer venv if present, else None."""
    override = os.environ.get("KR_SD_PYTHON")
    if override:
        path = Path(override).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BadInput(
                f"KR_SD_PYTHON points to {path}, which is not an executable python. Point it at the trainer environment's "
                "python or unset it."
            )
        return path
    python = _venv_python(default_env_dir(home))
    return python if python.is_file() else None


def record_path(checkout: Path) -> Path:
    """The install record kr keeps beside a checkout (not inside, so it never changes the tree).

    It names the checkout folder it describes, so a record is never taken for a sibling's.
    """
    return Path(checkout).parent / RECORD_NAME


# --- scanning a checkout ----------------------------------------------------------------------------


def _is_trainer_junk(rel: str, is_dir: bool, path: Path) -> bool:
    """Files sd-scripts' own setup and runs create inside the checkout (`pip install -e .`, bytecode, a venv)."""
    name = rel.rsplit("/", 1)[-1]
    if not is_dir:
        return name.endswith((".pyc", ".pyo"))
    return name in ("__pycache__", ".eggs") or name.endswith(".egg-info") or rel == "build" or (path / "pyvenv.cfg").is_file()


def scan_checkout(root: Path, tracked: Collection[str] = ()) -> tuple[Entries, list[str]]:
    """(entries of the tracked-looking files, the trainer-created paths that were left out).

    A path listed in `tracked` is never treated as junk, so a tracked file that happens to look like
    one (say a committed build/ folder) still counts.
    """
    tracked = set(tracked)
    tracked_dirs = {path.rsplit("/", depth)[0] for path in tracked for depth in range(1, path.count("/") + 1)}
    extra: list[str] = []

    def skip(rel: str, is_dir: bool, path: Path) -> bool:
        if rel in tracked or rel in tracked_dirs or not _is_trainer_junk(rel, is_dir, path):
            return False
        extra.append(rel + "/" if is_dir else rel)
        return True

    return directory_entries(Path(root), skip), sorted(extra)


# --- reference file lists (to name the files that differ) ---------------------------------------------


def file_list(checkout: Path) -> dict:
    """{"tree", "files": {path: [mode, blob]}} of a checkout: saved as vendor/sd-scripts-files.json from a
    pristine checkout of the pinned commit, it lets `install` name the files a bad tarball changed."""
    entries, _ = scan_checkout(Path(checkout))
    return {"tree": tree_id(entries), "files": entries_to_json(entries)}


def _reference_files(expected_tree: str, *, explicit: Mapping | None = None, checkout: Path | None = None) -> Entries | None:
    """A path -> (mode, blob) list whose own tree id is expected_tree, so it can be trusted to name files."""
    for candidate in (_as_entries(explicit), _shipped_file_list(), _git_ls_tree(checkout, expected_tree)):
        if candidate and tree_id(candidate) == expected_tree:
            return candidate
    return None


def _as_entries(data: Mapping | None) -> Entries | None:
    if not data:
        return None
    first = next(iter(data.values()))
    return dict(data) if hasattr(first, "blob") else entries_from_json(data)  # type: ignore[arg-type]


def _shipped_file_list() -> Entries | None:
    try:
        path = data_dir("vendor") / SHIPPED_FILE_LIST
    except FileNotFoundError:
        return None
    if not path.is_file():
        return None
    return entries_from_json(json.loads(path.read_text(encoding="utf-8"))["files"])


def _git_ls_tree(checkout: Path | None, tree: str) -> Entries | None:
    # Only when the checkout is a git repository that holds the pinned tree and git is installed.
    import shutil

    if checkout is None or not (Path(checkout) / ".git").exists() or shutil.which("git") is None:
        return None
    import subprocess

    result = subprocess.run(
        ["git", "-C", str(checkout), "ls-tree", "-r", "-z", "--full-tree", tree],
        capture_output=True,
        timeout=60,
    )
    if result.returncode != 0:
        return None
    entries = {}
    for row in result.stdout.split(b"\0"):
        if row:
            meta, path = row.split(b"\t", 1)
            mode, kind, blob = meta.decode().split()
            if kind == "blob":
                entries[path.decode("utf-8", "surrogateescape")] = Entry(mode, blob)
    return entries


def _mismatch_message(where: str, tree: str, expected: str, diff: Difference | None, pin: Pin | None = None) -> str:
    what = f"{where} is not the pinned sd-scripts: its git tree is {tree[:12]}, the pin expects {expected[:12]}."
    if diff is None:
        detail = " kr has no file list for the pinned tree here, so it cannot name the files that differ."
    elif not diff:
        detail = " Its files match kr's file list, yet the tree differs: check file modes and symlinks."
    else:
        detail = "".join(
            f" {label}: {_short_list(paths)}."
            for label, paths in (("Changed", diff.changed), ("Missing", diff.missing), ("Added", diff.added))
            if paths
        )
    pinned = pin is not None and pin.tree == expected
    commit = f" {pin.commit}" if pinned else ""
    tarball = f" ({pin.archive_url()})" if pinned else ""
    how = (
        f" Use an unmodified copy of the pinned commit{commit}: its GitHub tarball{tarball}, a fresh "
        "`git clone` + `git checkout`, or a kr bundle; do not edit files inside the installed checkout."
    )
    return what + detail + how


def _short_list(paths: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def _pin_or_none() -> Pin | None:
    try:
        return load_pin()
    except Failed:
        return None


# --- staging and swapping into place ------------------------------------------------------------------


@contextmanager
def _staging_dir(dest: Path, label: str = "new") -> Iterator[Path]:
    """A fresh folder beside dest (same filesystem, so the final rename is atomic), removed on the way out."""
    import shutil
    import tempfile

    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.kr-{label}-", dir=dest.parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _refuse_existing(dest: Path, force: bool, what: str, fix: str) -> None:
    if (dest.exists() or dest.is_symlink()) and not force:
        raise BadInput(f"{what} already exists at {dest}. {fix}")


def _write_json_atomic(path: Path, data: dict) -> None:
    atomic.write_text(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def _now() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


# --- install ----------------------------------------------------------------------------------------


@dataclass
class InstallResult:
    path: Path
    tree: str
    commit: str | None
    record: Path
    files: int
    replaced: bool

    def to_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path), "record": str(self.record)}


def install(
    source: Path,
    dest: Path,
    *,
    expected_tree: str,
    force: bool = False,
    commit: str | None = None,
    expected_files: Mapping | None = None,
) -> InstallResult:
    """Install sd-scripts from a checkout folder or an archive (.tar, .tar.gz, .tgz, .tar.xz, .zip).

    The copy is made beside dest, checked against expected_tree, and only then renamed into place; an
    existing install is refused unless force, and kept until the new one is verified. `.git` and files
    the trainer creates (`__pycache__`, `*.egg-info`, a venv) are not copied. `expected_files`
    (path -> [mode, blob]) lets a mismatch name the files that differ; without it kr uses the list it
    ships, or `git ls-tree` when the source is a git checkout holding the pinned tree.
    """
    from kohya_runner.gittree import is_archive

    source, dest = Path(source).expanduser(), Path(dest).expanduser()
    _refuse_existing(
        dest, force, "An sd-scripts checkout", "Run `kr vendor verify` to check it, or install again with --force to replace it."
    )
    if not source.exists():
        raise BadInput(
            f"The sd-scripts source {source} does not exist. Give a checkout folder or a tarball of the pinned commit."
        )
    pin = _pin_or_none()
    commit = commit or (pin.commit if pin and pin.tree == expected_tree else None)
    reference = _reference_files(expected_tree, explicit=expected_files, checkout=source if source.is_dir() else None)
    with _staging_dir(dest) as staging:
        if source.is_dir():
            _copy_checkout(source, staging, reference or {})
        elif is_archive(source):
            _check_archive(source, expected_tree, reference, pin)
            _extract_archive(source, staging)
        else:
            raise BadInput(
                f"{source} is neither a folder nor a tar/zip archive. Give an sd-scripts checkout folder or its GitHub tarball."
            )
        entries = _verified_entries(staging, expected_tree, reference, where=str(source), pin=pin)
        return _finish_install(staging, dest, entries, expected_tree, commit, source=str(source))


def _copy_checkout(source: Path, target: Path, tracked: Collection[str]) -> None:
    import shutil

    entries, _ = scan_checkout(source, tracked)
    for rel, entry in entries.items():
        src, dst = source / rel, target / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if entry.mode == "120000":
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copyfile(src, dst)
            os.chmod(dst, 0o755 if entry.mode == "100755" else 0o644)


def _check_archive(archive: Path, expected_tree: str, reference: Entries | None, pin: Pin | None) -> None:
    # Checked before anything is written, so a wrong tarball fails fast and names the file.
    from kohya_runner.gittree import archive_entries, archive_read_errors

    try:
        entries = archive_entries(archive)
        tree = tree_id(entries)
    except archive_read_errors() as exc:
        raise BadInput(f"The archive {archive} cannot be read as an sd-scripts tarball: {exc}. Download it again.") from None
    if tree != expected_tree:
        diff = compare(entries, reference) if reference else None
        raise Failed(_mismatch_message(f"The archive {archive}", tree, expected_tree, diff, pin))


def _extract_archive(archive: Path, target: Path, strip_top_dir: bool = True) -> None:
    """Extract files and symlinks only, never through a symlink and never outside target."""
    import shutil

    from kohya_runner.gittree import archive_read_errors, iter_archive

    links: set[str] = set()
    try:
        for member in iter_archive(archive, strip_top_dir):
            parents = member.path.split("/")[:-1]
            if any("/".join(parents[: depth + 1]) in links for depth in range(len(parents))):
                raise ArchiveError(f"{archive}: {member.path!r} lies under a symlink in the archive")
            path = target / member.path
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_symlink() or path.exists():
                path.unlink()  # a later member of the same name wins, as in tar
            if member.kind == "link":
                os.symlink(member.link_target, path)
                links.add(member.path)
            else:
                with member.open() as stream, open(path, "wb") as out:  # type: ignore[attr-defined]
                    shutil.copyfileobj(stream, out, 1 << 20)
                os.chmod(path, 0o755 if member.executable else 0o644)
    except archive_read_errors() as exc:
        raise BadInput(
            f"The archive {archive} cannot be extracted safely: {exc}. Use an archive straight from GitHub or from `kr vendor "
            "bundle`."
        ) from None


def _verified_entries(
    root: Path, expected_tree: str | None, reference: Entries | None, *, where: str, pin: Pin | None
) -> Entries:
    entries, _ = scan_checkout(root, reference or {})
    tree = tree_id(entries)
    if expected_tree and tree != expected_tree:
        diff = compare(entries, reference) if reference else None
        raise Failed(_mismatch_message(where, tree, expected_tree, diff, pin))
    return entries


def _finish_install(staging: Path, dest: Path, entries: Entries, tree: str, commit: str | None, *, source: str) -> InstallResult:
    record = {
        "kr_vendor": 1,
        "checkout": dest.name,
        "commit": commit,
        "tree": tree,
        "installed_at": _now(),
        "source": source,
        "files": entries_to_json(entries),
    }
    replaced = atomic.swap_dir(staging, dest)
    _write_json_atomic(record_path(dest), record)
    return InstallResult(dest, tree, commit, record_path(dest), len(entries), replaced)


def install_git(
    dest: Path,
    commit: str,
    *,
    repository: str | None = None,
    expected_tree: str | None = None,
    force: bool = False,
    timeout: float = 1800,
) -> InstallResult:
    """Fetch one commit with the git CLI (kr's only networked install path) and install it like `install`.

    repository defaults to the pin's; expected_tree defaults to the pin's tree when commit is the pinned
    commit. The checkout keeps its (shallow) .git, so sd-scripts can record its commit in metadata.
    """
    import shutil

    dest = Path(dest).expanduser()
    if len(commit) != 40 or any(char not in "0123456789abcdef" for char in commit.lower()):
        raise BadInput(f"{commit!r} is not a full 40-character commit id; git can only fetch a single commit by its full id.")
    _refuse_existing(
        dest, force, "An sd-scripts checkout", "Run `kr vendor verify` to check it, or install again with --force to replace it."
    )
    if shutil.which("git") is None:
        raise BadInput(
            "`git` is not installed, so kr cannot clone sd-scripts. Install git, or use `kr vendor install --from TARBALL` / "
            "`--bundle FILE`."
        )
    pin = _pin_or_none()
    repository = repository or (pin.repository if pin else None)
    if expected_tree is None and pin and pin.commit == commit:
        expected_tree = pin.tree
    with _staging_dir(dest) as staging:
        _git_fetch_commit(staging, repository, commit, timeout)
        entries = _verified_entries(staging, expected_tree, None, where=f"Commit {commit} of {repository}", pin=pin)
        return _finish_install(staging, dest, entries, tree_id(entries), commit, source=f"git {repository} {commit}")


def _git_fetch_commit(target: Path, repository: str, commit: str, timeout: float) -> None:
    _git(["init", "-q", str(target)], timeout)
    try:
        _git(["-C", str(target), "fetch", "-q", "--depth", "1", repository, commit], timeout)
    except Failed as shallow_error:
        # Servers that refuse fetching a bare commit id: fetch the branches and look for it there.
        try:
            _git(["-C", str(target), "fetch", "-q", repository, "+refs/heads/*:refs/remotes/kr/*"], timeout)
        except Failed:
            raise Failed(
                f"kr could not fetch commit {commit} from {repository}: {shallow_error} This machine may be "
                "offline or unable to reach the repository: install from a tarball (`kr vendor install --from "
                "FILE`) or a bundle made on a connected machine (`kr vendor bundle`, then `--bundle FILE`)."
            ) from None
    _git(["-C", str(target), "-c", "advice.detachedHead=false", "checkout", "-q", "--detach", commit], timeout)


def _git(args: list[str], timeout: float) -> None:
    import subprocess

    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    try:
        result = subprocess.run(["git", *args], capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise Failed(
            f"`git {' '.join(args[:3])} ...` did not finish within {timeout:.0f} s; the network may be down or very slow."
        ) from None
    if result.returncode != 0:
        message = " ".join(result.stderr.split())[-600:] or f"exit status {result.returncode}"
        raise Failed(f"git said: {message}.")


# --- trainer environment ----------------------------------------------------------------------------


@dataclass
class TrainerEnv:
    path: Path
    python: Path
    torch_spec: str
    offline: bool

    def to_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path), "python": str(self.python)}


def detect_nvidia_gpu() -> bool:
    """True when an NVIDIA driver is present: `nvidia-smi -L` lists a GPU, or NVML can be loaded."""
    import shutil
    import subprocess

    if shutil.which("nvidia-smi"):
        try:
            result = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
            if result.returncode == 0 and "GPU" in result.stdout:
                return True
        except (OSError, subprocess.TimeoutExpired):
            pass
    import ctypes

    for name in ("libnvidia-ml.so.1", "nvml.dll"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def choose_torch_spec(gpu: bool | None = None) -> str:
    """The pip arguments for torch + torchvision on this machine (a CPU build without an NVIDIA GPU)."""
    if gpu is None:
        gpu = detect_nvidia_gpu()
    if gpu:
        return f"torch=={TORCH_VERSION} torchvision=={TORCHVISION_VERSION}"
    return f"torch=={TORCH_VERSION}+cpu torchvision=={TORCHVISION_VERSION}+cpu --extra-index-url {TORCH_CPU_INDEX}"


def split_torch_spec(spec: str) -> tuple[list[str], list[str]]:
    """('requirements', 'pip options') of a torch spec such as "torch==2.14.1+cpu --extra-index-url URL"."""
    import shlex

    requirements: list[str] = []
    options: list[str] = []
    tokens = iter(shlex.split(spec))
    for token in tokens:
        if token.startswith("-"):
            options.append(token)
            if token in _PIP_VALUE_OPTIONS:
                options.append(next(tokens, ""))
        else:
            requirements.append(token)
    if not requirements:
        raise BadInput(f"The torch spec {spec!r} names no package. Give something like 'torch==2.14.1 torchvision==0.29.1'.")
    return requirements, options


def create_trainer_env(
    sd_scripts: Path,
    env_dir: Path,
    *,
    wheelhouse: Path | None,
    torch_spec: str,
    requirements: Path | None = None,
    force: bool = False,
    base_python: str | None = None,
) -> TrainerEnv:
    """A venv for sd-scripts: torch first (as torch_spec says), then sd-scripts' requirements.txt.

    With a wheelhouse everything comes from it (`--no-index --find-links`), nothing from the network;
    without one pip uses its configured index (a networked step). pip's output goes to
    `<env_dir>.kr-pip.log`. On any failure the new venv is removed and a previous one (force) restored.
    """
    sd_scripts, env_dir = Path(sd_scripts).expanduser(), Path(env_dir).expanduser()
    requirements = Path(requirements) if requirements else sd_scripts / "requirements.txt"
    if not requirements.is_file():
        raise BadInput(
            f"{requirements} does not exist; sd-scripts' requirements.txt is needed to set up the trainer environment. Install "
            "sd-scripts first (`kr vendor install`)."
        )
    if wheelhouse is not None and not Path(wheelhouse).is_dir():
        raise BadInput(
            f"The wheelhouse {wheelhouse} is not a folder. Give the folder of wheels made by `kr vendor bundle` (or `pip "
            "download`)."
        )
    _refuse_existing(env_dir, force, "A trainer environment", "Use it as it is, or pass --force to rebuild it.")
    torch_requirements, torch_options = split_torch_spec(torch_spec)
    index = ["--no-index", "--find-links", str(wheelhouse)] if wheelhouse else torch_options
    log = env_dir.parent / (env_dir.name + ".kr-pip.log")
    with _replacing(env_dir):
        _run([base_python or sys.executable, "-m", "venv", str(env_dir)], log=log, what="creating the trainer venv")
        pip = [str(_venv_python(env_dir)), "-m", "pip", "install", "--disable-pip-version-check"]
        offline = wheelhouse is not None
        _run([*pip, *index, *torch_requirements], log=log, what="installing torch", offline=offline)
        pip_index = ["--no-index", "--find-links", str(wheelhouse)] if wheelhouse else []
        # cwd = the checkout, because its requirements.txt ends with `-e .` (the `library` package)
        _run(
            [*pip, *pip_index, "-r", str(requirements)],
            log=log,
            what="installing sd-scripts' requirements",
            cwd=sd_scripts,
            offline=offline,
        )
        env = TrainerEnv(env_dir, _venv_python(env_dir), torch_spec, wheelhouse is not None)
        _write_json_atomic(
            env_dir / ENV_RECORD,
            {"created_at": _now(), "sd_scripts": str(sd_scripts), "torch_spec": torch_spec, "offline": env.offline},
        )
    return env


@contextmanager
def _replacing(target: Path) -> Iterator[None]:
    """Build target in place (venvs are not relocatable); on failure remove it and bring back the old one."""
    import shutil
    import tempfile

    target.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.kr-old-", dir=target.parent))
        os.rename(target, old / "previous")
    try:
        yield
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        if old is not None:
            os.rename(old / "previous", target)
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _run(cmd: list[str], *, log: Path, what: str, cwd: Path | None = None, offline: bool = False, timeout: float = 7200) -> str:
    import subprocess

    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"}
    if offline:
        # The wheelhouse is the whole truth: no pip.conf, PIP_FIND_LINKS or constraints of this machine.
        env = {key: value for key, value in env.items() if not key.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"\n$ {' '.join(cmd)}\n")
        handle.flush()
        try:
            result = subprocess.run(
                cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise Failed(
                f"{what.capitalize()} took longer than {timeout:.0f} s and was stopped. The full output is in {log}."
            ) from None
        except OSError as exc:
            raise Failed(
                f"{what.capitalize()} could not start: {exc}. Check that {cmd[0]} exists and is a working python."
            ) from None
        handle.write(result.stdout)
    if result.returncode != 0:
        tail = "\n".join(result.stdout.strip().splitlines()[-15:])
        raise Failed(
            f"{what.capitalize()} failed (exit {result.returncode}); the last lines were:\n{tail}\nThe full output is in {log}. "
            "If a package is missing from the wheelhouse, make the bundle again on a machine with the same Python version."
        )
    return result.stdout


# --- bundle (connected machine) and install_bundle (air-gapped machine) -------------------------------


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
    reference = _reference_files(pin.tree, checkout=sd_scripts)
    checkout_entries = _verified_entries(sd_scripts, pin.tree, reference, where=f"The checkout {sd_scripts}", pin=pin)
    python = python or sys.executable
    with _staging_dir(out_file, "bundle") as staging:
        root = staging / BUNDLE_TOP
        _copy_checkout(sd_scripts, root / "sd-scripts", checkout_entries)
        shutil.copyfile(requirements, root / "requirements.txt")
        _download_wheels(root, requirements, torch_spec, python, list(pip_options), staging)
        _bundle_tokenizer_wheel(root / "tokenizers", tokenizer_source, python, list(pip_options), staging)
        (root / "pin.toml").write_text(_pin_toml(pin), encoding="utf-8")
        manifest = {
            "format": BUNDLE_FORMAT,
            "created_at": _now(),
            "kr_version": _kr_version(),
            "python": _python_version(python),
            "pin": pin.to_dict(),
            "torch_spec": torch_spec,
            "sd_scripts_files": entries_to_json(checkout_entries),
        }
        manifest["members"] = _member_hashes(root)
        _write_json_atomic(root / "manifest.json", manifest)
        _write_tar(root, out_file)
    digest = sha256_file(out_file)
    return BundleResult(out_file, digest, out_file.stat().st_size, len(manifest["members"]))


def _download_wheels(root: Path, requirements: Path, torch_spec: str, python: str, pip_options: list[str], staging: Path) -> None:
    wheelhouse = root / "wheelhouse"
    wheelhouse.mkdir(parents=True)
    log = staging / "pip-download.log"
    download = [python, "-m", "pip", "download", "--disable-pip-version-check", "-d", str(wheelhouse), *pip_options]
    torch_requirements, torch_options = split_torch_spec(torch_spec)
    _run([*download, *torch_options, *torch_requirements], log=log, what="downloading torch")
    remote, has_local = _downloadable_requirements(requirements)
    filtered = staging / "requirements-download.txt"
    filtered.write_text("\n".join(remote) + "\n", encoding="utf-8")
    _run([*download, "-r", str(filtered)], log=log, what="downloading sd-scripts' requirements")
    if has_local:
        # `-e .` is built on the air-gapped machine; pip's isolated build needs setuptools from the wheelhouse
        _run([*download, "setuptools", "wheel"], log=log, what="downloading build tools")


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

    from kohya_runner.tokenizers import read_bpe

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
        _run(cmd, log=staging / "pip-download.log", what="downloading open-clip-torch (for the tokenizers)")
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
    from kohya_runner import __version__

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
    _refuse_existing(dest, force, "An sd-scripts checkout", fix)
    _refuse_existing(env_dir, force, "A trainer environment", fix)
    home.mkdir(parents=True, exist_ok=True)
    with _staging_dir(home / "bundle", "unpack") as staging:
        _extract_archive(file, staging)  # strips the kr-bundle/ top folder
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
            f"The bundle {file} is damaged or was altered: {_short_list(bad + extra)} do not match its manifest. Copy it again "
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
    from kohya_runner.tokenizers import build_tokenizer_cache

    if not source.is_dir() or not any(source.iterdir()):
        return []
    return build_tokenizer_cache(tokenizer_dir, source=source)


# --- verify and status ------------------------------------------------------------------------------


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
        return _mismatch_message(f"The checkout {self.path}", self.tree, self.expected, diff, pin)


def verify(path: Path, *, expected_tree: str | None = None) -> VerifyResult:
    """Hash the checkout (ignoring .git and trainer-created files) and compare it with the pin.

    Names the files that differ from the install record (kr-vendor.json beside the checkout), else from
    a file list kr ships or `git ls-tree`, when one is available.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise BadInput(
            f"{path} is not a folder, so there is no sd-scripts checkout to verify. Install one with `kr vendor install`."
        )
    expected = expected_tree or load_pin().tree
    record = _read_record(path)
    reference = entries_from_json(record["files"]) if record else _reference_files(expected, checkout=path)
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


def _trainer_info(python: Path) -> dict:
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
     "sd_scripts": {path, from, installed, verified, tree, commit, installed_at, changed, missing, added, extra, error},
     "trainer": {python, from, python_version, torch, cuda, error},
     "tokenizers": tokenizer_status(...)}
    "from" is "env" (KR_SD_SCRIPTS / KR_SD_PYTHON), "default" or None when nothing is found.
    """
    from kohya_runner.tokenizers import tokenizer_status

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
    info.update(_trainer_info(python))
    return info


# --- drift ------------------------------------------------------------------------------------------

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
    """Compare two option manifests ({"scripts": {script: {option: spec}}})."""
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
    """Run the trainer's own argparse setup (with its python, cwd = the checkout) and diff it with the manifest."""
    import subprocess
    import tempfile

    sd_scripts = Path(sd_scripts).expanduser()
    manifest_path = Path(manifest_path) if manifest_path else data_dir("vendor") / "sd-scripts-args.json"
    pinned = json.loads(manifest_path.read_text(encoding="utf-8"))
    probe = Path(__file__).with_name("drift_probe.py")
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
