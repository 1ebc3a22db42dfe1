"""manifest(): what the run archive stores to trace a LoRA to its exact dataset."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..errors import Failed
from ..sdscripts.subset import DatasetSettings
from ._scan import scan
from ._stats import settings_for


def manifest(dir: Path, settings: DatasetSettings | None = None) -> dict:
    """Relative names, sizes and sha256 of every image sd-scripts would read and of its caption file,
    with counts and a `manifest_sha256` over all of it. No absolute paths, no caption text, no folder
    name, no timestamps: the same bytes always give the same hash. Raises BadInput for a missing folder,
    Failed for an unreadable file."""
    settings = settings_for(dir, settings)
    found = scan(settings)
    files = []
    for img in found.images:
        files.append(_manifest_entry(img.path, img.rel, "image"))
        if img.caption_path is not None:
            files.append(_manifest_entry(img.caption_path, img.caption_path.name, "caption", image=img.rel))
    body = {
        "schema": "kr.dataset-manifest/1",
        "caption_extension": found.caption_extension,
        "counts": {
            "images": len(found.images),
            "captions": sum(1 for f in files if f["kind"] == "caption"),
            "bytes": sum(f["bytes"] for f in files),
        },
        "files": files,
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return {**body, "manifest_sha256": hashlib.sha256(canonical).hexdigest()}


def _manifest_entry(path: Path, rel: str, kind: str, image: str | None = None) -> dict:
    digest = hashlib.sha256()
    size = 0
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
    except OSError as exc:
        raise Failed(f"cannot read {path} for the dataset manifest: {exc.strerror}. Check its permissions.") from None
    entry = {"path": rel, "kind": kind, "bytes": size, "sha256": digest.hexdigest()}
    if image is not None:
        entry["image"] = image
    return entry
