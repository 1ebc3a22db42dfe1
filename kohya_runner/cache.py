"""Shared latent and text-encoder caches: one folder per cache key, made of links to the images.

sd-scripts writes its cache files beside the images and, when it reuses them, checks only that the
expected arrays exist: not the base model, the VAE, the resolution, the buckets or the captions
(contract §7.6). So kr never lets it write into the user's dataset folder. Every run reads its images
through a folder under `<home>/caches/` holding symlinks to the images and their caption files; the
folder's name is a hash of everything the cached arrays depend on, so a cache is never stale (any
change gives another folder) and runs that differ only in optimizer, learning rate, schedule, rank,
alpha, steps or seed share one.

Writers never race: a run whose cache folder is incomplete takes an exclusive lock for its caching
phase (and first deletes the truncated or temporary files a killed run left, §7.1); a run whose
folder is complete takes a shared lock. The supervisor holding the lock drops it as soon as the
trainer's log leaves the caching phase.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import atomic, workspace
from .hashing import sha256_file
from .sdscripts import cache_files
from .sdscripts.cache_files import TE_ARRAYS, latents_on_disk, te_on_disk

SCHEMA = "kr.cache-key/1"
KEY_FILE = ".kr-cache.json"  # hidden: sd-scripts' `*.png` globs never see it
LOCK_FILE = ".lock"
HASH_MEMO = ".hashes.json"
# Raw sd-scripts options that change the cached arrays (§7.6 table).
RAW_LATENT_KEYS = ("resize_interpolation", "alpha_mask", "v2", "vae")
RAW_TE_KEYS = ("weighted_captions", "max_token_length", "v2")
BIG_FILE = 64 << 20  # larger files are identified by size, mtime and their first and last MiB
_PARTIAL = re.compile(r"\.npz\.tmp|\.tmp$")  # the tiny trainer's temp files; sd-scripts writes in place


# ----------------------------------------------------------------------------------------------
# What the cache depends on.


def writes_to_disk(spec) -> bool:
    """Does the trainer write cache files into its image folder (and so need the lock)?"""
    return latents_on_disk(spec) or te_on_disk(spec)


def _vae_dtype(spec) -> str:
    p = spec.precision
    return "fp32" if p.no_half_vae or p.mixed_precision == "no" else p.mixed_precision


def key_document(home: Path, spec, images: list[tuple[str, Path]], captions: list[tuple[str, Path]],
                 memo: HashMemo | None = None) -> dict[str, Any]:
    """Everything the cached arrays depend on (contract §7.6), and nothing they do not."""
    from . import render

    memo = memo or HashMemo(workspace.caches_dir(home))
    d, raw = spec.dataset, spec.sd_scripts
    base = Path(render.resolve_base(spec, home))
    vae = Path(spec.model.vae).expanduser().resolve() if spec.model.vae else None
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "family": spec.model.family,
        "base": identity(base, memo),
        "vae": identity(vae, memo) if vae else None,
        "vae_dtype": _vae_dtype(spec),
        "resolution": list(d.resolution),
        "enable_bucket": d.enable_bucket,
        "min_bucket_reso": d.min_bucket_reso,
        "max_bucket_reso": d.max_bucket_reso,
        "bucket_reso_steps": d.bucket_reso_steps,
        "bucket_no_upscale": d.bucket_no_upscale,
        "flip_aug": d.flip_aug,
        "raw": {k: raw[k] for k in RAW_LATENT_KEYS if k in raw},
        "caption_extension": d.caption_extension,
        # Names and content, not paths: an edited image gives another folder; a moved dataset the same one.
        "images": [[name, memo.digest(path)] for name, path in images],
        # Which images have a caption file decides which links exist; the text matters only to a TE cache
        # on disk (in memory it is encoded again by every run anyway).
        "captions": [[name, memo.digest(path) if te_on_disk(spec) else None] for name, path in captions],
        "text_encoder": None,
    }
    if te_on_disk(spec):
        doc["text_encoder"] = {
            "caption_prefix": d.caption_prefix, "caption_suffix": d.caption_suffix,
            "max_token_length": spec.model.max_token_length, "dtype": spec.precision.mixed_precision,
            "raw": {k: raw[k] for k in RAW_TE_KEYS if k in raw},
        }
    memo.save()
    return doc


def key_of(doc: dict[str, Any]) -> str:
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def identity(path: Path, memo: "HashMemo") -> dict[str, Any]:
    """A base model or VAE by content: small files fully hashed, big ones by size, mtime and both ends."""
    if path.is_file():
        return {"file": memo.digest(path)}
    files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
    return {"folder": [[str(p.relative_to(path)), memo.digest(p)] for p in files]}


class HashMemo:
    """sha256 of files, remembered per (real path, size, mtime, inode) in `<caches>/.hashes.json`, so a
    dataset is read in full once, not on every run."""

    def __init__(self, root: Path):
        self.path = root / HASH_MEMO
        try:
            self.entries: dict[str, list] = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.entries = {}
        self.dirty = False

    def digest(self, path: Path) -> str:
        real = os.path.realpath(path)
        st = os.stat(real)
        stamp = [st.st_size, st.st_mtime_ns, st.st_ino]
        known = self.entries.get(real)
        if known and known[:3] == stamp:
            return known[3]
        value = _partial_digest(real, st.st_size) if st.st_size > BIG_FILE else sha256_file(real)
        self.entries[real] = stamp + [value]
        self.dirty = True
        return value

    def save(self) -> None:
        if not self.dirty:
            return
        kept = {p: v for p, v in self.entries.items() if os.path.exists(p)}
        try:
            atomic.write_text(self.path, json.dumps(kept, separators=(",", ":")))
        except OSError:
            pass  # only a speed-up
        self.dirty = False


def _partial_digest(path: str, size: int) -> str:
    digest = hashlib.sha256(f"partial:{size}:".encode())
    with open(path, "rb") as handle:
        digest.update(handle.read(1 << 20))
        handle.seek(max(0, size - (1 << 20)))
        digest.update(handle.read(1 << 20))
    return digest.hexdigest()


# ----------------------------------------------------------------------------------------------
# The folder.


@dataclass
class CacheFolder:
    key: str
    path: Path
    family: str
    images: list[str]  # link names of the images, in the folder
    latent_arrays: tuple[str, ...] = ()  # arrays every latent file must hold; () when latents are not on disk
    te: bool = False  # text-encoder outputs on disk
    created: bool = False
    relinked: int = 0
    doc: dict[str, Any] = field(default_factory=dict)

    def expected_files(self) -> int:
        return len(self.images) * ((1 if self.latent_arrays else 0) + (1 if self.te else 0))

    def cache_files(self) -> list[Path]:
        return sorted(p for p in self.path.glob("*.npz") if not p.name.startswith("."))

    def missing(self) -> list[str]:
        """Images whose cache files are absent or unreadable (a truncated .npz has no zip directory)."""
        names = {p.name for p in self.cache_files()}
        missing = []
        for image in self.images:
            stem = os.path.splitext(image)[0]
            if self.latent_arrays:
                pattern = cache_files.latent_cache_pattern(stem, self.family)
                latent = next((n for n in names if pattern.match(n)), None)
                if latent is None or not valid_npz(self.path / latent, self.latent_arrays):
                    missing.append(image)
                    continue
            if self.te and not valid_npz(self.path / cache_files.te_cache_name(stem), TE_ARRAYS):
                missing.append(image)
        return missing

    def complete(self) -> bool:
        return self.expected_files() == 0 or not self.missing()

    def scrub(self) -> list[str]:
        """Delete what a killed writer leaves: temporary files and cache files that do not open (§7.1)."""
        removed = []
        for entry in os.scandir(self.path):
            name = entry.name
            if name.startswith(".") or entry.is_symlink():
                continue
            partial = _PARTIAL.search(name) is not None
            if partial or (name.endswith(".npz") and not valid_npz(Path(entry.path), ())):
                try:
                    os.unlink(entry.path)
                    removed.append(name)
                except FileNotFoundError:
                    pass
        return removed

    def lock(self) -> "CacheLock":
        return CacheLock(self.path)


def valid_npz(path: Path, arrays: tuple[str, ...]) -> bool:
    """The zip directory (written last) reads, and names every array wanted."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
    return all(f"{a}.npy" in names for a in arrays)


def _dataset_files(spec) -> tuple[Path, list[tuple[str, Path]], list[tuple[str, Path]]]:
    from . import dataset, render

    source = render.resolve_dataset_dir(spec)
    found = dataset.scan(dataset.settings_from_spec(spec))  # no images: the trainer says "No data found"
    images = [(img.rel, img.path) for img in found.images]
    captions = sorted({(img.caption_path.name, img.caption_path) for img in found.images if img.caption_path})
    return source, images, captions


def prepare(home: Path, spec) -> CacheFolder:
    """The cache folder for this spec, created (atomically) if new; links re-pointed if the dataset moved."""
    source, images, captions = _dataset_files(spec)
    root = workspace.caches_dir(home)
    root.mkdir(parents=True, exist_ok=True)
    doc = key_document(home, spec, images, captions)
    key = key_of(doc)
    path = root / f"{spec.model.family}-{key}"
    links = [(name, Path(os.path.realpath(target))) for name, target in images + captions]
    created = False
    relinked = 0
    if not path.is_dir():
        created = _create(root, path, doc, links, source)
    else:
        relinked = _relink(path, links)
    folder = CacheFolder(key, path, spec.model.family, [name for name, _ in images], created=created,
                         relinked=relinked, doc=doc)
    return for_spec(folder, spec)


def for_spec(folder: CacheFolder, spec) -> CacheFolder:
    """Set which files a run with `spec` expects in the folder (and so what "complete" means)."""
    folder.latent_arrays = cache_files.latent_arrays(spec.dataset.flip_aug, bool(spec.sd_scripts.get("alpha_mask"))) \
        if latents_on_disk(spec) else ()
    folder.te = te_on_disk(spec)
    return folder


def _create(root: Path, path: Path, doc: dict, links: list[tuple[str, Path]], source: Path) -> bool:
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=root))
    try:
        for name, target in links:
            os.symlink(target, tmp / name)
        info = {"key": key_of(doc), "created": time.time(), "source": str(source), "document": doc}
        atomic.write_text(tmp / KEY_FILE, json.dumps(info, indent=1, ensure_ascii=False, default=str) + "\n")
        (tmp / LOCK_FILE).touch()
        try:
            os.rename(tmp, path)  # the first builder wins; a folder is never half made
            return True
        except OSError:
            if not path.is_dir():
                raise
            return False
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _relink(path: Path, links: list[tuple[str, Path]]) -> int:
    """Same content at another place (the dataset folder moved): point the links there, each atomically."""
    changed = 0
    for name, target in links:
        link = path / name
        try:
            if os.readlink(link) == str(target):
                continue
        except OSError:
            pass
        tmp = path / f".{name}.{os.getpid()}.link"
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        os.symlink(target, tmp)
        os.replace(tmp, link)
        changed += 1
    return changed


def folder_at(path: Path) -> CacheFolder | None:
    """The cache folder at `path` (a run's image_dir), from its key file; None if it is not one."""
    try:
        info = json.loads((path / KEY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    doc = info.get("document", {})
    return CacheFolder(info.get("key", ""), path, doc.get("family", "sdxl"), [n for n, _ in doc.get("images", [])], doc=doc)


def folder_of_run(home: Path, run_dir: Path, spec) -> CacheFolder | None:
    """The cache folder a rendered run reads its images from, with what its spec writes there."""
    from ._toml import load_file

    try:
        doc = load_file(run_dir / "dataset.toml")
        image_dir = Path(doc["datasets"][0]["subsets"][0]["image_dir"])
    except (OSError, KeyError, IndexError, ValueError):
        return None
    root = workspace.caches_dir(home).resolve()
    if root not in image_dir.resolve().parents:
        return None
    folder = folder_at(image_dir)
    return for_spec(folder, spec) if folder is not None else None


# ----------------------------------------------------------------------------------------------
# Locking: exclusive while a run may write the cache, shared while it only reads it.


class Cancelled(Exception):
    """The wait for a cache lock was cancelled (a stop request came first)."""


class CacheLock:
    """flock(2) on `<folder>/.lock`, held by kr (never by the trainer: Popen closes the descriptor)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder / LOCK_FILE
        self.fd: int | None = None
        self.exclusive = False

    @property
    def held(self) -> bool:
        return self.fd is not None

    def acquire(self, exclusive: bool, cancelled: Callable[[], bool] | None = None,
                on_wait: Callable[[], None] | None = None, poll: float = 0.2) -> bool:
        """Wait for the lock; False if `cancelled()` turned true first."""
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        operation = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
        waited = False
        while True:
            try:
                fcntl.flock(fd, operation)
                break
            except BlockingIOError:
                if cancelled is not None and cancelled():
                    os.close(fd)
                    return False
                if not waited and on_wait is not None:
                    on_wait()
                waited = True
                time.sleep(poll)
        self.fd, self.exclusive = fd, exclusive
        return True

    def try_acquire(self, exclusive: bool) -> bool:
        return self.acquire(exclusive, cancelled=lambda: True)

    def downgrade(self) -> None:
        import fcntl

        if self.fd is not None and self.exclusive:
            fcntl.flock(self.fd, fcntl.LOCK_SH)
            self.exclusive = False

    def release(self) -> None:
        if self.fd is not None:
            import fcntl

            try:
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = None


def acquire_for_run(home: Path, run_dir: Path, spec, cancelled: Callable[[], bool] | None = None,
                    on_wait: Callable[[], None] | None = None) -> CacheLock | None:
    """The lock a run holds through its caching phase, or None (no cache folder, or nothing written to it).

    A complete folder is only read: shared. An incomplete one is written: exclusive, after deleting
    any partial files a killed run left; once scrubbed, if it turns out complete, shared again.
    Raises Cancelled when `cancelled()` turned true while waiting.
    """
    if not writes_to_disk(spec):
        return None
    folder = folder_of_run(home, run_dir, spec)
    if folder is None:
        return None
    lock = folder.lock()
    exclusive = not folder.complete()
    if not lock.acquire(exclusive, cancelled, on_wait):
        raise Cancelled()
    if not exclusive:
        return lock
    folder.scrub()
    if folder.complete():
        lock.downgrade()
    return lock


def after_run(lock: CacheLock | None, phase: str) -> list[str]:
    """A run ended while holding the lock: if it may have been writing, delete what it left half made."""
    if lock is None or not lock.held:
        return []
    removed = []
    try:
        if lock.exclusive and phase in ("starting", "caching"):
            folder = folder_at(lock.folder)
            if folder is not None:
                removed = folder.scrub()
    finally:
        lock.release()
    return removed

