"""The metadata policy of a LoRA file: keep | minimal | scrub (contract §4.3, §4.4, §7.8).

sd-scripts writes caption-derived tag counts, dataset folder names, the base model's file name, the
output name and the training comment into every LoRA header. kr applies a policy to *copies* of a
run's LoRAs (export, release); the run's own files are never touched.

- keep:    the file unchanged (a `title` only replaces modelspec.title).
- minimal: the `ss_*` keys sd-scripts itself keeps with --no_metadata (ss_v2, ss_base_model_version,
           ss_network_module/_dim/_alpha/_args) plus the modelspec keys, with the title neutralised.
- scrub:   every training hyperparameter kept; removed: ss_tag_frequency, ss_dataset_dirs,
           ss_reg_dataset_dirs, ss_bucket_info, ss_training_comment, and in ss_datasets each dataset's
           tag_frequency/bucket_info and each subset's image_dir/metadata_file/class_tokens/caption
           prefix and suffix; names neutralised: ss_output_name, ss_sd_model_name, ss_vae_name,
           modelspec.title; any other value that is a file path removed.

minimal and scrub also drop modelspec.kr_run_id (the run id repeats the preset/output name). The
tensor data section is copied byte for byte, so `sshs_model_hash` stays what it was; both `sshs_*`
hashes are recomputed for the new header exactly as sd-scripts computes them (lorafile.sshs_hashes)
and stored.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import tempfile
from pathlib import Path

from . import atomic, lorafile
from .errors import BadInput
from .sdscripts.metadata import MINIMAL_SS_KEYS

POLICIES = ("keep", "minimal", "scrub")

SCRUB_REMOVED = ("ss_tag_frequency", "ss_dataset_dirs", "ss_reg_dataset_dirs", "ss_bucket_info", "ss_training_comment")
RUN_ID_KEY = "modelspec.kr_run_id"
HASH_KEYS = ("sshs_model_hash", "sshs_legacy_hash")
DATASET_REMOVED = ("tag_frequency", "bucket_info")
SUBSET_REMOVED = ("image_dir", "metadata_file", "class_tokens", "caption_prefix", "caption_suffix")
NEUTRAL_NAME = "lora"
NEUTRAL_BASE = "base-model"
NEUTRAL_VAE = "vae"

_WINDOWS_PATH = re.compile(r"^[A-Za-z]:[\\/]")
_PLACEHOLDERS = {"sshs_model_hash": "0" * 64, "sshs_legacy_hash": "0" * 8}


def check_policy(policy: str) -> str:
    """The policy name if kr knows it. Raises BadInput otherwise."""
    if policy not in POLICIES:
        raise BadInput(f"unknown metadata policy {policy!r}. Fix: use one of {', '.join(POLICIES)}")
    return policy


def looks_like_path(value: str) -> bool:
    """Whether a metadata value looks like a local path (one that could name a user's folders). Raises nothing."""
    text = value.strip()
    return text.startswith(("/", "~/", "\\\\", "./", "../")) or bool(_WINDOWS_PATH.match(text))


def policy_metadata(metadata: dict[str, str], policy: str, title: str | None = None) -> tuple[dict[str, str], dict]:
    """(the header metadata under `policy`, without sshs_* keys; what was removed and neutralised).

    Raises nothing.
    """
    check_policy(policy)
    removed: list[str] = []
    neutralised: dict[str, str] = {}
    source = {k: v for k, v in metadata.items() if k not in HASH_KEYS}
    if policy == "keep":
        out = dict(source)
        if title is not None:
            out["modelspec.title"] = neutralised["modelspec.title"] = title
        return out, {"removed": removed, "neutralised": neutralised}
    name = title if title is not None else NEUTRAL_NAME
    out = {}
    for key, value in source.items():
        if key == RUN_ID_KEY:
            removed.append(key)
        elif policy == "minimal" and not (key in MINIMAL_SS_KEYS or key.startswith("modelspec.")):
            removed.append(key)
        elif policy == "scrub" and key in SCRUB_REMOVED:
            removed.append(key)
        else:
            out[key] = value
    replacements = {"modelspec.title": name, "ss_output_name": name, "ss_sd_model_name": NEUTRAL_BASE,
                    "ss_vae_name": NEUTRAL_VAE}
    for key, value in replacements.items():
        if key in out and out[key] != value:
            out[key] = neutralised[key] = value
    if "ss_datasets" in out:
        cleaned = _scrub_datasets(out["ss_datasets"])
        if cleaned is None:
            del out["ss_datasets"]
            removed.append("ss_datasets")
        elif cleaned != out["ss_datasets"]:
            out["ss_datasets"] = neutralised["ss_datasets"] = cleaned
    for key in [k for k, v in out.items() if k not in replacements and looks_like_path(v)]:
        del out[key]
        removed.append(key)
    return out, {"removed": sorted(removed), "neutralised": neutralised}


def _scrub_datasets(text: str) -> str | None:
    """ss_datasets without tag counts, bucket lists, folder and file names, and caption text; None if unreadable."""
    try:
        datasets = json.loads(text)
    except ValueError:
        return None
    if not isinstance(datasets, list):
        return None
    for dataset in datasets:
        if not isinstance(dataset, dict):
            return None
        for key in DATASET_REMOVED:
            dataset.pop(key, None)
        for subset in dataset.get("subsets") or []:
            if isinstance(subset, dict):
                for key in SUBSET_REMOVED:
                    subset.pop(key, None)
    return json.dumps(datasets)


def apply_policy(src: Path, dest: Path, policy: str, *, title: str | None = None) -> dict:
    """Write a copy of the LoRA `src` to `dest` (atomically) with its metadata under `policy`.

    Returns {"policy", "source", "dest", "removed", "neutralised", "kept", "sshs_model_hash",
    "sshs_legacy_hash"}. `title` becomes modelspec.title (and, for minimal/scrub, ss_output_name).
    Raises BadInput for an unknown policy, a missing source, or a destination that is the source.
    """
    check_policy(policy)
    src, dest = Path(src), Path(dest)
    if not src.is_file():
        raise BadInput(f"{src} is not a file, so there is no LoRA to copy. Fix: give the path of a .safetensors LoRA")
    if dest.exists() and dest.resolve() == src.resolve():
        raise BadInput(f"{dest} is the LoRA itself; kr never rewrites a run's own files. Fix: give another destination")
    try:
        index, metadata = lorafile.read_header(src)
        header_len = _header_length(src)
    except (ValueError, UnicodeDecodeError) as error:
        raise BadInput(f"{src} is not a readable safetensors file ({error}); kr can apply a metadata policy only to "
                       "safetensors LoRAs. Fix: check the file (kr runs show lists the run's LoRA checks)") from None
    new, report = policy_metadata(metadata, policy, title)
    if policy == "keep" and title is None:
        atomic.copy_file(src, dest)
        model_hash, legacy_hash = metadata.get("sshs_model_hash"), metadata.get("sshs_legacy_hash")
    else:
        model_hash, legacy_hash = _write_with_metadata(src, 8 + header_len, index, new, dest)
    return {"policy": policy, "source": str(src), "dest": str(dest), "removed": report["removed"],
            "neutralised": report["neutralised"], "kept": len(new), "sshs_model_hash": model_hash,
            "sshs_legacy_hash": legacy_hash}


def _header_length(path: Path) -> int:
    with open(path, "rb") as handle:
        prefix = handle.read(8)
    if len(prefix) != 8:
        raise ValueError("file too short to be safetensors")
    return struct.unpack("<Q", prefix)[0]


def _header_bytes(index: dict, metadata: dict[str, str]) -> bytes:
    header = {"__metadata__": metadata, **index}
    text = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return text + b" " * ((8 - len(text) % 8) % 8)  # padded like the safetensors serializer


def _write_with_metadata(src: Path, data_start: int, index: dict, metadata: dict[str, str], dest: Path) -> tuple[str, str]:
    """New header + the source's data section byte for byte; the sshs hashes go into same-length placeholders,
    so the header keeps its size when they are filled in."""
    with_placeholders = {**metadata, **_PLACEHOLDERS}
    header = _header_bytes(index, with_placeholders)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w+b") as out:
            out.write(struct.pack("<Q", len(header)) + header)
            with open(src, "rb") as source:
                source.seek(data_start)
                shutil.copyfileobj(source, out, 1 << 20)
            out.flush()
            model_hash, legacy_hash = lorafile.sshs_hashes(tmp)  # ignores the sshs_* keys themselves
            final = _header_bytes(index, {**metadata, "sshs_model_hash": model_hash, "sshs_legacy_hash": legacy_hash})
            assert len(final) == len(header)
            out.seek(8)
            out.write(final)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return model_hash, legacy_hash
