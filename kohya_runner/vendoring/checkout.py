"""Installing the pinned checkout from a folder, an archive or one git commit: staged, verified, swapped in."""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import atomic
from ..errors import BadInput, Failed
from ..gittree import ArchiveError, Entries, compare, entries_to_json, tree_id
from ._files import now_utc, refuse_existing, staging_dir, write_json_atomic
from .pin import Pin, pin_or_none, record_path
from .trees import mismatch_message, reference_files, scan_checkout, verified_entries


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
    Raises BadInput (missing/unknown source, existing dest without force), Failed (not the pinned tree).
    """
    from ..gittree import is_archive

    source, dest = Path(source).expanduser(), Path(dest).expanduser()
    refuse_existing(
        dest, force, "An sd-scripts checkout", "Run `kr vendor verify` to check it, or install again with --force to replace it."
    )
    if not source.exists():
        raise BadInput(
            f"The sd-scripts source {source} does not exist. Give a checkout folder or a tarball of the pinned commit."
        )
    pin = pin_or_none()
    commit = commit or (pin.commit if pin and pin.tree == expected_tree else None)
    reference = reference_files(expected_tree, explicit=expected_files, checkout=source if source.is_dir() else None)
    with staging_dir(dest) as staging:
        if source.is_dir():
            copy_checkout(source, staging, reference or {})
        elif is_archive(source):
            _check_archive(source, expected_tree, reference, pin)
            extract_archive(source, staging)
        else:
            raise BadInput(
                f"{source} is neither a folder nor a tar/zip archive. Give an sd-scripts checkout folder or its GitHub tarball."
            )
        entries = verified_entries(staging, expected_tree, reference, where=str(source), pin=pin)
        return _finish_install(staging, dest, entries, expected_tree, commit, source=str(source))


def copy_checkout(source: Path, target: Path, tracked: Collection[str]) -> None:
    """Copy the scanned files of a checkout (modes and symlinks kept, .git and trainer files left out). Raises nothing."""
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
    from ..gittree import archive_entries, archive_read_errors

    try:
        entries = archive_entries(archive)
        tree = tree_id(entries)
    except archive_read_errors() as exc:
        raise BadInput(f"The archive {archive} cannot be read as an sd-scripts tarball: {exc}. Download it again.") from None
    if tree != expected_tree:
        diff = compare(entries, reference) if reference else None
        raise Failed(mismatch_message(f"The archive {archive}", tree, expected_tree, diff, pin))


def extract_archive(archive: Path, target: Path, strip_top_dir: bool = True) -> None:
    """Extract files and symlinks only, never through a symlink and never outside target.

    Raises BadInput when the archive cannot be read or is unsafe.
    """
    import shutil

    from ..gittree import archive_read_errors, iter_archive

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


def _finish_install(staging: Path, dest: Path, entries: Entries, tree: str, commit: str | None, *, source: str) -> InstallResult:
    record = {
        "kr_vendor": 1,
        "checkout": dest.name,
        "commit": commit,
        "tree": tree,
        "installed_at": now_utc(),
        "source": source,
        "files": entries_to_json(entries),
    }
    replaced = atomic.swap_dir(staging, dest)
    write_json_atomic(record_path(dest), record)
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
    Raises BadInput (bad commit id, no git, existing dest), Failed (fetch failed, not the pinned tree).
    """
    import shutil

    dest = Path(dest).expanduser()
    if len(commit) != 40 or any(char not in "0123456789abcdef" for char in commit.lower()):
        raise BadInput(f"{commit!r} is not a full 40-character commit id; git can only fetch a single commit by its full id.")
    refuse_existing(
        dest, force, "An sd-scripts checkout", "Run `kr vendor verify` to check it, or install again with --force to replace it."
    )
    if shutil.which("git") is None:
        raise BadInput(
            "`git` is not installed, so kr cannot clone sd-scripts. Install git, or use `kr vendor install --from TARBALL` / "
            "`--bundle FILE`."
        )
    pin = pin_or_none()
    repository = repository or (pin.repository if pin else None)
    if expected_tree is None and pin and pin.commit == commit:
        expected_tree = pin.tree
    with staging_dir(dest) as staging:
        _git_fetch_commit(staging, repository, commit, timeout)
        entries = verified_entries(staging, expected_tree, None, where=f"Commit {commit} of {repository}", pin=pin)
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
