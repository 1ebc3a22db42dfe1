"""Scanning an sd-scripts checkout into git tree entries and naming the files that differ from the pin."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from ..errors import Failed
from ..gittree import Difference, Entries, Entry, compare, directory_entries, entries_from_json, entries_to_json, tree_id
from .pin import Pin, pin_file

# The pinned tree's file list, beside pin.toml: `git ls-tree -r -z <commit> | gzip -9n` (~7 KB). It names
# the files a checkout or tarball lacks, changes or adds even when it has no install record or .git.
SHIPPED_FILE_LIST = "sd-scripts-files.gz"


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
    Raises nothing (OSError from the filesystem passes through).
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
    """{"tree", "files": {path: [mode, blob]}} of a checkout, the JSON form `install` passes as expected_files.

    Raises nothing (OSError from the filesystem passes through).
    """
    entries, _ = scan_checkout(Path(checkout))
    return {"tree": tree_id(entries), "files": entries_to_json(entries)}


def reference_files(expected_tree: str, *, explicit: Mapping | None = None, checkout: Path | None = None) -> Entries | None:
    """A path -> (mode, blob) list whose own tree id is expected_tree, so it can be trusted to name files.

    Raises nothing.
    """
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
    # A missing or unreadable list only means kr cannot name files; reference_files checks its tree id.
    import gzip
    import zlib

    try:
        return parse_ls_tree(gzip.decompress((pin_file().parent / SHIPPED_FILE_LIST).read_bytes()))
    except (OSError, EOFError, zlib.error, ValueError):
        return None


def parse_ls_tree(output: bytes) -> Entries:
    """Entries from `git ls-tree -r -z` output (submodules, which git archives leave out, are skipped).

    Raises ValueError when a row is not of that form.
    """
    entries = {}
    for row in output.split(b"\0"):
        if row:
            meta, path = row.split(b"\t", 1)
            mode, kind, blob = meta.decode("ascii").split()
            if kind == "blob":
                entries[path.decode("utf-8", "surrogateescape")] = Entry(mode, blob)
    return entries


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
    return parse_ls_tree(result.stdout)


def mismatch_message(where: str, tree: str, expected: str, diff: Difference | None, pin: Pin | None = None) -> str:
    """The one paragraph naming a checkout or archive that is not the pinned tree, and how to fix it.

    Raises nothing.
    """
    what = f"{where} is not the pinned sd-scripts: its git tree is {tree[:12]}, the pin expects {expected[:12]}."
    if diff is None:
        detail = " kr has no file list for the pinned tree here, so it cannot name the files that differ."
    elif not diff:
        detail = " Its files match kr's file list, yet the tree differs: check file modes and symlinks."
    else:
        detail = f" Against the pinned tree's file list: {difference_counts(diff)}." + "".join(
            f" {label}: {short_list(paths)}."
            for label, paths in (("Missing", diff.missing), ("Changed", diff.changed), ("Extra", diff.added))
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


def difference_counts(diff: Difference) -> str:
    """ "N missing, M changed, K extra" (extra: files the pinned tree does not have). Raises nothing."""
    return f"{len(diff.missing)} missing, {len(diff.changed)} changed, {len(diff.added)} extra"


def first_differences(diff: Difference, limit: int = 3) -> str:
    """The first few differing paths, each marked missing / changed / extra. Raises nothing."""
    marked = [
        f"{path} ({label})"
        for label, paths in (("missing", diff.missing), ("changed", diff.changed), ("extra", diff.added))
        for path in paths
    ]
    return short_list(marked, limit)


def short_list(paths: Sequence[str], limit: int = 10) -> str:
    """At most limit paths, then how many more. Raises nothing."""
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def verified_entries(
    root: Path, expected_tree: str | None, reference: Entries | None, *, where: str, pin: Pin | None
) -> Entries:
    """The checkout's entries; raises Failed (naming the files that differ) when its tree is not expected_tree."""
    entries, _ = scan_checkout(root, reference or {})
    tree = tree_id(entries)
    if expected_tree and tree != expected_tree:
        diff = compare(entries, reference) if reference else None
        raise Failed(mismatch_message(where, tree, expected_tree, diff, pin))
    return entries
