"""Git tree ids computed in pure Python.

kr pins sd-scripts by the id of its root tree, so it can check a checkout, a GitHub tarball or a zip
against the pin on an air-gapped machine that may have no git CLI. The ids are computed exactly as git
does: a blob id is sha1(b"blob <size>\\0" + content); a tree lists "<mode> <name>\\0<20-byte id>" entries
sorted by name, where a directory sorts as if its name ended in "/".

Everything here works on `Entries`: a flat mapping of POSIX relative path -> Entry(mode, blob id), so a
directory, an archive and a recorded file list can be compared with one another file by file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

MODE_FILE = "100644"
MODE_EXEC = "100755"
MODE_LINK = "120000"
MODE_TREE = "40000"
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"

_CHUNK = 1 << 20


@dataclass(frozen=True)
class Entry:
    mode: str  # MODE_FILE, MODE_EXEC or MODE_LINK
    blob: str  # hex sha1 of the git blob

    def to_json(self) -> list[str]:
        return [self.mode, self.blob]


Entries = dict[str, Entry]


class ArchiveError(ValueError):
    """An archive kr cannot read as a source tree (unsafe path, several top folders, unknown format)."""


# --- blobs and trees --------------------------------------------------------------------------------


def blob_id(data: bytes) -> str:
    """git's blob id of these bytes. Raises nothing."""
    import hashlib  # imported where used: keeps `import kohya_runner.vendoring` fast for the CLI

    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _blob_id_of_stream(size: int, read: Callable[[int], bytes]) -> str:
    import hashlib

    digest = hashlib.sha1(b"blob %d\0" % size)
    remaining = size
    while remaining > 0:
        chunk = read(min(_CHUNK, remaining))
        if not chunk:
            raise OSError(f"file ended {remaining} bytes early")
        digest.update(chunk)
        remaining -= len(chunk)
    return digest.hexdigest()


def tree_id(entries: Mapping[str, Entry]) -> str:
    """The root tree id git would record for these files (empty folders vanish, as in git).

    Raises ArchiveError (not a KrError: callers word it) when a path lies under a file.
    """
    root: dict = {}
    for path, entry in entries.items():
        node = root
        *folders, name = path.split("/")
        for folder in folders:
            node = node.setdefault(folder, {})
            if not isinstance(node, dict):
                raise ArchiveError(f"{path!r} lies under {folder!r}, which is also a file or symlink")
        if isinstance(node.get(name), dict):
            raise ArchiveError(f"{path!r} is both a folder and a file or symlink")
        node[name] = entry
    return _tree_of(root).hex()


def _tree_of(node: dict) -> bytes:
    import hashlib

    rows = []
    for name, child in node.items():
        raw = name.encode("utf-8", "surrogateescape")
        if isinstance(child, dict):
            rows.append((raw + b"/", MODE_TREE, raw, _tree_of(child)))
        else:
            rows.append((raw, child.mode, raw, bytes.fromhex(child.blob)))
    rows.sort(key=lambda row: row[0])  # git's order: bytewise, trees compared as "name/"
    body = b"".join(mode.encode() + b" " + raw + b"\0" + oid for _, mode, raw, oid in rows)
    return hashlib.sha1(b"tree %d\0" % len(body) + body).digest()


def entries_from_json(data: Mapping[str, list[str]]) -> Entries:
    """Entries from their JSON form {path: [mode, blob]}. Raises nothing (bad data: KeyError/ValueError)."""
    return {path: Entry(mode, blob) for path, (mode, blob) in data.items()}


def entries_to_json(entries: Mapping[str, Entry]) -> dict[str, list[str]]:
    """The JSON form {path: [mode, blob]} of entries. Raises nothing."""
    return {path: entries[path].to_json() for path in sorted(entries)}


# --- directories ------------------------------------------------------------------------------------

# skip(relpath, is_dir, abspath) -> True to leave that file or folder out.
SkipFn = Callable[[str, bool, Path], bool]


def directory_entries(root: Path, skip: SkipFn | None = None) -> Entries:
    """Every file and symlink under root as git would stage it; `.git` is always left out.

    Raises nothing (OSError from the filesystem passes through).
    """
    entries: Entries = {}
    _walk(Path(root), "", skip, entries)
    return entries


def _walk(folder: Path, prefix: str, skip: SkipFn | None, entries: Entries) -> None:
    with os.scandir(folder) as listing:
        items = sorted(listing, key=lambda item: item.name)
    for item in items:
        rel = prefix + item.name
        path = Path(item.path)
        is_link = item.is_symlink()
        is_dir = item.is_dir(follow_symlinks=False)
        if item.name == ".git" or (skip is not None and skip(rel, is_dir, path)):
            continue
        if is_dir:
            _walk(path, rel + "/", skip, entries)
        elif is_link:
            entries[rel] = Entry(MODE_LINK, blob_id(os.fsencode(os.readlink(path))))
        elif item.is_file(follow_symlinks=False):
            entries[rel] = _file_entry(path, item.stat(follow_symlinks=False))
        # sockets, fifos and devices are not something git can track


def _file_entry(path: Path, st: os.stat_result) -> Entry:
    mode = MODE_EXEC if st.st_mode & stat.S_IXUSR else MODE_FILE
    with open(path, "rb") as handle:
        return Entry(mode, _blob_id_of_stream(st.st_size, handle.read))


def git_tree_hash(path: Path) -> str:
    """The tree id of a working tree or plain folder, exactly as `git write-tree` would give it.

    Raises nothing (OSError from the filesystem passes through).
    """
    return tree_id(directory_entries(Path(path)))


# --- archives (tar, tar.gz, tgz, tar.bz2, tar.xz, zip) -----------------------------------------------


@dataclass
class Member:
    """One member of an archive, its path already checked and (for callers) made relative to the top folder."""

    path: str
    kind: str  # "file", "link" or "dir" (folders are dropped before callers see them)
    executable: bool
    size: int
    link_target: str
    open: Callable[[], object]  # for files: a binary stream positioned at the start

    def entry(self) -> Entry:
        if self.kind == "link":
            return Entry(MODE_LINK, blob_id(os.fsencode(self.link_target)))
        with self.open() as stream:  # type: ignore[attr-defined]
            return Entry(MODE_EXEC if self.executable else MODE_FILE, _blob_id_of_stream(self.size, stream.read))


def is_archive(path: Path) -> bool:
    """Whether path is a tar or zip file (by content). Raises nothing."""
    import tarfile
    import zipfile

    path = Path(path)
    return path.is_file() and (tarfile.is_tarfile(path) or zipfile.is_zipfile(path))


def iter_archive(path: Path, strip_top_dir: bool = True) -> Iterator[Member]:
    """The files and symlinks of a tar or zip archive, paths checked for safety and the top folder removed.

    Raises ArchiveError on an unsafe or unreadable member (callers turn it into BadInput).
    """
    import tarfile
    import zipfile

    path = Path(path)
    # tar first: a tar whose last member is a wheel ends with a zip directory and would pass as a zip
    if tarfile.is_tarfile(path):
        yield from _strip(_tar_members(path), strip_top_dir, path)
    elif zipfile.is_zipfile(path):
        yield from _strip(_zip_members(path), strip_top_dir, path)
    else:
        raise ArchiveError(f"{path} is neither a tar nor a zip archive")


def archive_read_errors() -> tuple[type[BaseException], ...]:
    """What reading a damaged or hostile archive can raise (for callers turning it into one message)."""
    import tarfile
    import zipfile
    import zlib

    return (ArchiveError, OSError, EOFError, tarfile.TarError, zipfile.BadZipFile, zlib.error)


def archive_entries(path: Path, strip_top_dir: bool = True) -> Entries:
    """The entries of an archive's files, as git would stage them. Raises ArchiveError (see iter_archive)."""
    return {member.path: member.entry() for member in iter_archive(path, strip_top_dir)}


def tarball_tree_hash(tar_path: Path, strip_top_dir: bool = True) -> str:
    """The tree id of an archive's contents, read straight from its members (nothing is extracted).

    Raises ArchiveError (see iter_archive).
    """
    return tree_id(archive_entries(tar_path, strip_top_dir))


def _tar_members(path: Path) -> Iterator[Member]:
    import tarfile

    with tarfile.open(path, "r:*") as archive:
        for info in archive:
            if info.isdir():
                yield Member(info.name, "dir", False, 0, "", lambda: None)
            elif info.issym():
                yield Member(info.name, "link", False, 0, info.linkname, lambda: None)
            elif info.isfile() or info.islnk():  # a hard link reads as its target's content
                yield Member(
                    info.name,
                    "file",
                    bool(info.mode & stat.S_IXUSR),
                    _tar_size(archive, info),
                    "",
                    lambda info=info: archive.extractfile(info),
                )
            else:
                raise ArchiveError(f"{path}: member {info.name!r} is a device or fifo, which a source tree never holds")


def _tar_size(archive, info) -> int:
    return archive.getmember(info.linkname).size if info.islnk() else info.size


def _zip_members(path: Path) -> Iterator[Member]:
    import zipfile

    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            unix_mode = info.external_attr >> 16
            if info.is_dir():
                yield Member(info.filename, "dir", False, 0, "", lambda: None)
            elif stat.S_ISLNK(unix_mode):
                target = archive.read(info).decode("utf-8", "surrogateescape")
                yield Member(info.filename, "link", False, 0, target, lambda: None)
            else:
                yield Member(
                    info.filename,
                    "file",
                    bool(unix_mode & stat.S_IXUSR),
                    info.file_size,
                    "",
                    lambda info=info: archive.open(info),
                )


def _strip(members: Iterator[Member], strip_top_dir: bool, archive: Path) -> Iterator[Member]:
    top = None
    for member in members:
        parts = _safe_parts(member.path, archive)
        if strip_top_dir:
            if top is None:
                top = parts[0]
            elif parts[0] != top:
                raise ArchiveError(
                    f"{archive} has more than one top-level folder ({top!r} and {parts[0]!r}); "
                    "a GitHub-style tarball has exactly one"
                )
            parts = parts[1:]
            if not parts:
                if member.kind != "dir":
                    raise ArchiveError(f"{archive}: {member.path!r} is a file at the top level, outside the top folder")
                continue
        if member.kind == "dir":
            continue
        member.path = "/".join(parts)
        yield member


def _safe_parts(name: str, archive: Path) -> list[str]:
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if name.startswith("/") or ".." in parts or not parts:
        raise ArchiveError(f"{archive}: member {name!r} has an unsafe path (absolute or with '..')")
    return parts


# --- comparing --------------------------------------------------------------------------------------


@dataclass
class Difference:
    changed: list[str]
    missing: list[str]
    added: list[str]

    def __bool__(self) -> bool:
        return bool(self.changed or self.missing or self.added)


def compare(actual: Mapping[str, Entry], expected: Mapping[str, Entry]) -> Difference:
    """Files whose content or mode differ, files expected but absent, and files present but not expected.

    Raises nothing.
    """
    changed = sorted(path for path in actual.keys() & expected.keys() if actual[path] != expected[path])
    return Difference(changed, sorted(expected.keys() - actual.keys()), sorted(actual.keys() - expected.keys()))
