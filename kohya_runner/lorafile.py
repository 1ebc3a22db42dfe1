"""Small, torch-free helpers for kohya-style LoRA files.

* Key naming: the kohya `networks.lora` name of a model module, for SD 1.x (diffusers-style U-Net
  names) and SDXL (the SAI-style `input_blocks` / `middle_block` / `output_blocks` names sd-scripts
  uses), plus the tensor suffixes `.lora_down.weight`, `.lora_up.weight` and `.alpha`.
* Reading a safetensors header (tensor index and `__metadata__`) without loading any tensor.
* The `sshs_model_hash` / `sshs_legacy_hash` values sd-scripts writes into every LoRA header,
  computed the way library/train_util.py does (sd-webui-additional-networks hashes over a copy of
  the file whose metadata keeps only the `ss_*` keys).

Only the standard library is imported at module level, so `kr` can import this cheaply.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: keeps the import cheap for kr
    from pathlib import Path
    from typing import Iterable, Mapping

PREFIX_UNET = "lora_unet"
PREFIX_TE = "lora_te"  # SD 1.x / 2.x: one text encoder
PREFIX_TE1 = "lora_te1"  # SDXL CLIP ViT-L
PREFIX_TE2 = "lora_te2"  # SDXL OpenCLIP bigG

DOWN_SUFFIX = ".lora_down.weight"
UP_SUFFIX = ".lora_up.weight"
ALPHA_SUFFIX = ".alpha"

# sd-webui-additional-networks' legacy hash reads 64 KiB at 1 MiB into the file.
_LEGACY_OFFSET = 0x100000
_LEGACY_LENGTH = 0x10000
_HASH_BLOCK = 1024 * 1024

# Where a diffusers SDXL U-Net attention block lives in the SAI layout (3 slots per level:
# `layers_per_block` = 2 resnet/attention pairs plus the down/upsampler).
_SDXL_DOWN_ATTN = re.compile(r"^down_blocks\.(\d+)\.attentions\.(\d+)\.")
_SDXL_UP_ATTN = re.compile(r"^up_blocks\.(\d+)\.attentions\.(\d+)\.")
_SDXL_MID_ATTN = re.compile(r"^mid_block\.attentions\.0\.")

# Byte sizes of the safetensors dtypes, and their order in the serializer's sort (descending).
_DTYPE_ORDER = ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16",
                "I32", "U32", "F32", "F64", "I64", "U64"]


# ---------------------------------------------------------------------------------------------
# key naming
# ---------------------------------------------------------------------------------------------

def sdxl_unet_module_to_sai(module_path: str) -> str:
    """Map a diffusers SDXL U-Net attention-module path to sd-scripts' SAI-style path.

    down_blocks.i.attentions.j -> input_blocks.{3i+j+1}.1, mid_block.attentions.0 -> middle_block.1,
    up_blocks.i.attentions.j -> output_blocks.{3i+j}.1. The rest of the path (transformer_blocks.…)
    is the same in both layouts. Paths outside attention blocks are returned unchanged.
    """
    match = _SDXL_DOWN_ATTN.match(module_path)
    if match:
        i, j = int(match.group(1)), int(match.group(2))
        return f"input_blocks.{3 * i + j + 1}.1." + module_path[match.end():]
    match = _SDXL_UP_ATTN.match(module_path)
    if match:
        i, j = int(match.group(1)), int(match.group(2))
        return f"output_blocks.{3 * i + j}.1." + module_path[match.end():]
    match = _SDXL_MID_ATTN.match(module_path)
    if match:
        return "middle_block.1." + module_path[match.end():]
    return module_path


def kohya_lora_name(module_path: str, part: str, family: str = "sdxl") -> str:
    """The kohya `lora_name` of one adapted module.

    `module_path` is the module's name inside its model (diffusers U-Net or transformers CLIP
    text model, e.g. `text_model.encoder.layers.0.self_attn.q_proj`); `part` is "unet", "te",
    "te1" or "te2"; `family` is "sdxl" or "sd15" (only the U-Net names differ).
    """
    if part == "unet":
        path = sdxl_unet_module_to_sai(module_path) if family == "sdxl" else module_path
        prefix = PREFIX_UNET
    elif part in ("te", "te1", "te2"):
        path = module_path
        prefix = {"te": PREFIX_TE, "te1": PREFIX_TE1, "te2": PREFIX_TE2}[part]
    else:
        raise ValueError(f"unknown model part {part!r}; expected unet, te, te1 or te2")
    return (prefix + "." + path).replace(".", "_")


def kohya_name_map(module_paths: Iterable[str], part: str, family: str = "sdxl") -> dict[str, str]:
    """kohya lora_name -> module path, for the given modules (the reverse of `kohya_lora_name`).

    Reversing needs the module list because `_` is ambiguous once dots are replaced.
    """
    return {kohya_lora_name(path, part, family): path for path in module_paths}


def split_lora_key(key: str) -> tuple[str, str]:
    """Split a tensor key into (lora_name, kind) with kind "down", "up" or "alpha"."""
    for suffix, kind in ((DOWN_SUFFIX, "down"), (UP_SUFFIX, "up"), (ALPHA_SUFFIX, "alpha")):
        if key.endswith(suffix):
            return key[: -len(suffix)], kind
    raise ValueError(f"not a kohya LoRA tensor key: {key!r}")


def lora_part(lora_name: str) -> str:
    """"unet", "te", "te1" or "te2" from a lora_name's prefix."""
    for prefix, part in ((PREFIX_TE1 + "_", "te1"), (PREFIX_TE2 + "_", "te2"),
                         (PREFIX_TE + "_", "te"), (PREFIX_UNET + "_", "unet")):
        if lora_name.startswith(prefix):
            return part
    raise ValueError(f"unknown LoRA prefix in {lora_name!r}")


# ---------------------------------------------------------------------------------------------
# safetensors header
# ---------------------------------------------------------------------------------------------

def read_header(path: str | Path) -> tuple[dict[str, dict], dict[str, str]]:
    """(tensor index, metadata) of a safetensors file; reads only the header.

    The index maps tensor name -> {"dtype", "shape", "data_offsets"} (offsets relative to the
    data section); metadata is the `__metadata__` dict (empty if absent).
    """
    with open(path, "rb") as handle:
        header_len, header = _read_raw_header(handle)
    parsed = json.loads(header)
    metadata = parsed.pop("__metadata__", None) or {}
    return parsed, dict(metadata)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The `__metadata__` of a safetensors file (empty dict if none)."""
    return read_header(path)[1]


def tensor_shapes(path: str | Path) -> dict[str, list[int]]:
    """Tensor name -> shape, from the header alone."""
    return {name: list(info["shape"]) for name, info in read_header(path)[0].items()}


def _read_raw_header(handle) -> tuple[int, bytes]:
    prefix = handle.read(8)
    if len(prefix) != 8:
        raise ValueError("file too short to be safetensors")
    (header_len,) = struct.unpack("<Q", prefix)
    header = handle.read(header_len)
    if len(header) != header_len:
        raise ValueError("truncated safetensors header")
    return header_len, header


# ---------------------------------------------------------------------------------------------
# sshs hashes
# ---------------------------------------------------------------------------------------------

def addnet_hash_safetensors(path: str | Path) -> str:
    """sha256 over everything after the header: sd-scripts' `sshs_model_hash` of a file whose
    tensors were laid out by the safetensors serializer (metadata does not change it)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        header_len, _ = _read_raw_header(handle)
        handle.seek(8 + header_len)
        for block in iter(lambda: handle.read(_HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def sshs_hashes(path: str | Path) -> tuple[str, str]:
    """(`sshs_model_hash`, `sshs_legacy_hash`) exactly as sd-scripts computes them for this file.

    sd-scripts serializes the state dict with only the `ss_*` metadata and hashes that byte
    string: the model hash is sha256 of the data section; the legacy hash is sha256 of 64 KiB at
    offset 1 MiB (first 8 hex digits). The data section does not depend on metadata, and the
    legacy window only depends on the length of the `ss_*`-only header, so both can be recomputed
    from any file that safetensors wrote, e.g. after `kr` rewrites its header.
    """
    index, metadata = read_header(path)
    ss_metadata = {k: v for k, v in metadata.items() if k.startswith("ss_")}
    header = serialized_header(index, ss_metadata)
    with open(path, "rb") as handle:
        header_len, _ = _read_raw_header(handle)
        data_start = 8 + header_len
        model_hash = addnet_hash_safetensors(path)
        legacy_window = _legacy_window(handle, data_start, header)
    legacy_hash = hashlib.sha256(legacy_window).hexdigest()[0:8]
    return model_hash, legacy_hash


def _legacy_window(handle, data_start: int, virtual_header: bytes) -> bytes:
    """Bytes [1 MiB, 1 MiB + 64 KiB) of the virtual file `len + virtual_header + data`."""
    prefix = struct.pack("<Q", len(virtual_header)) + virtual_header
    start, end = _LEGACY_OFFSET, _LEGACY_OFFSET + _LEGACY_LENGTH
    window = prefix[start:end]
    data_from = max(0, start - len(prefix))
    data_to = end - len(prefix)
    if data_to > data_from:
        handle.seek(data_start + data_from)
        window += handle.read(data_to - data_from)
    return window


def serialized_header(index: Mapping[str, Mapping], metadata: Mapping[str, str] | None) -> bytes:
    """The header bytes (padded) the safetensors serializer writes for these tensors + metadata.

    Tensors are ordered like the serializer orders the data (dtype descending, then name) and get
    fresh contiguous offsets; the header is padded with spaces to a multiple of 8. Key order inside
    `__metadata__` follows the mapping (safetensors' own order is a hash-map order, which changes
    the bytes but never the length, and only the length matters for the hashes).
    """
    header: dict[str, object] = {}
    if metadata is not None:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name in sorted(index, key=lambda n: (-_dtype_rank(index[n]["dtype"]), n)):
        info = index[name]
        start, end = info["data_offsets"]
        size = end - start
        header[name] = {"dtype": info["dtype"], "shape": list(info["shape"]),
                        "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return text + b" " * ((8 - len(text) % 8) % 8)


def _dtype_rank(dtype: str) -> int:
    try:
        return _DTYPE_ORDER.index(dtype)
    except ValueError:
        return len(_DTYPE_ORDER)  # unknown dtypes first; they do not occur in LoRA files


def hashes_from_serialized(data: bytes) -> tuple[str, str]:
    """(`sshs_model_hash`, `sshs_legacy_hash`) of an in-memory safetensors byte string that was
    serialized with only the `ss_*` metadata (what sd-scripts' precalculate step does)."""
    (header_len,) = struct.unpack("<Q", data[:8])
    model_hash = hashlib.sha256(data[8 + header_len:]).hexdigest()
    legacy_hash = hashlib.sha256(data[_LEGACY_OFFSET:_LEGACY_OFFSET + _LEGACY_LENGTH]).hexdigest()[0:8]
    return model_hash, legacy_hash


# ---------------------------------------------------------------------------------------------
# summaries
# ---------------------------------------------------------------------------------------------

def lora_modules(path: str | Path) -> dict[str, dict]:
    """lora_name -> {"rank", "down_shape", "up_shape", "dtype"} from the header alone."""
    index, _ = read_header(path)
    modules: dict[str, dict] = {}
    for key, info in index.items():
        try:
            name, kind = split_lora_key(key)
        except ValueError:
            continue
        entry = modules.setdefault(name, {})
        if kind == "down":
            entry["down_shape"] = list(info["shape"])
            entry["rank"] = info["shape"][0]
            entry["dtype"] = info["dtype"]
        elif kind == "up":
            entry["up_shape"] = list(info["shape"])
    return modules
