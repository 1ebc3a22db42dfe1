"""Base-model files for kr: which architecture a base is, and seeded random full-size bases.

* `detect_architecture(path)` tells SDXL / SD 1.x / SD 2.x apart from key names and shapes alone:
  for a `.safetensors` file it reads only the JSON header (fast on a 6.5 GB file), for a Diffusers
  folder the JSON configs, and for a pickled `.ckpt` it never unpickles (that runs code from the
  file); it only lists the strings inside a zip checkpoint's pickle with `pickletools`.
* `check_base_matches(info, family)` turns a mismatch into one clear BadInput paragraph.
* `write_random_base(family, dest)` writes a random-initialised checkpoint in the single-file
  (LDM/SAI) layout that sd-scripts loads strictly, part by part, so memory stays bounded.

Only the standard library is imported at module level: detection works without torch. torch,
diffusers and transformers are imported inside the functions that build models.
"""

from __future__ import annotations

import gc
import hashlib
import io
import json
import math
import os
import pickletools
import shutil
import struct
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

from . import lorafile
from .errors import BadInput, Failed
from .sdscripts.architectures import (  # noqa: F401  (bases.X names kept for importers)
    CLIP_L_CONFIG, CROSS_ATTENTION_DIM, OPENCLIP_BIGG_CONFIG, SD15_UNET_CONFIG, SDXL_UNET_CONFIG, VAE_CONFIG,
)
from .tiny.base import read_marker as read_kr_tiny_marker

if TYPE_CHECKING:  # annotations only: keeps `import kohya_runner.bases` torch-free
    import torch

FAMILIES = ("sdxl", "sd15", "sd2")
FAMILY_LABELS = {"sdxl": "SDXL", "sd15": "SD 1.x", "sd2": "SD 2.x", "unknown": "an unknown architecture"}
RANDOM_FAMILIES = ("sd15", "sdxl")
DTYPES = {"fp16": "F16", "bf16": "BF16", "fp32": "F32"}  # kr name -> safetensors dtype tag

_UNET = "model.diffusion_model."
_VAE = "first_stage_model."
_SD1_TE = "cond_stage_model.transformer."
_SD2_TE = "cond_stage_model.model."
_SDXL_TE1 = "conditioner.embedders.0.transformer."
_SDXL_TE2 = "conditioner.embedders.1.model."
_REFINER_TE = "conditioner.embedders.0.model."  # the SDXL refiner conditions on OpenCLIP only

# A safetensors header is JSON text; safetensors itself refuses headers over 100 MB.
_MAX_HEADER_BYTES = 100_000_000
# A torch zip checkpoint's pickle holds only names and tensor stubs (~100 KB for SD); cap the read.
_MAX_PICKLE_BYTES = 64 * 1024 * 1024
_PICKLE_STRING_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE",
                      "SHORT_BINSTRING", "BINSTRING", "STRING"}
_CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
# Components sd-scripts loads from a Diffusers folder (through from_pretrained), per family.
_DIFFUSERS_COMPONENTS = {"sd15": ("unet", "vae", "text_encoder"), "sd2": ("unet", "vae", "text_encoder"),
                         "sdxl": ("unet", "vae", "text_encoder", "text_encoder_2")}


# =============================================================================================
# detection
# =============================================================================================

@dataclass(frozen=True)
class BaseInfo:
    """What kr could tell about a base model without loading it."""

    path: Path
    family: str  # "sdxl" | "sd15" | "sd2" | "unknown"
    format: str  # "single-file" | "diffusers" | "ckpt"
    reason: str  # one short sentence: the evidence, or why the family is unknown
    is_v_pred: bool | None = None  # None: the file does not say
    tensor_count: int | None = None  # None: not countable without loading (pickles)
    size_bytes: int = 0
    kr_tiny: bool = False  # a kr tiny base: for the built-in tiny trainer only

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with a stable shape (for `--json`)."""
        data = asdict(self)
        data["path"] = str(self.path)
        return data


def detect_architecture(path: Path | str) -> BaseInfo:
    """Family and format of a base model (single file, Diffusers folder or pickled checkpoint).

    Raises BadInput when the path cannot be examined at all (missing, unreadable, a `.safetensors`
    file that is not safetensors); a readable file that is not a usable base comes back with
    family "unknown" and the reason.
    """
    path = Path(path)
    if path.is_dir():
        return _detect_diffusers_folder(path)
    if not path.is_file():
        raise BadInput(
            f"Base model not found: {path} is neither a file nor a folder. Pass the path of a "
            "single-file checkpoint (.safetensors) or of a Diffusers model folder."
        )
    if path.suffix.lower() == ".safetensors":
        return _detect_safetensors(path)
    return _detect_pickled_checkpoint(path)


def check_base_matches(info: BaseInfo, family: str) -> None:
    """Raise BadInput unless the detected family is the one the preset trains."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {', '.join(FAMILIES)}")
    if info.family == family:
        return
    expected = FAMILY_LABELS[family]
    if info.family == "unknown":
        raise BadInput(
            f"Base model {info.path} is not recognisable as an {expected} base: {info.reason}. "
            f"The preset trains {expected}. Fix: point the base at a full {expected} checkpoint "
            f"(a single-file .safetensors with U-Net, text encoder(s) and VAE, or a Diffusers "
            f"model folder)."
        )
    detected = FAMILY_LABELS[info.family]
    raise BadInput(
        f"Base model {info.path} is {detected} ({info.reason}), but the preset trains {expected}. "
        f"Fix: pick an {detected} preset for this file, or point the base at an {expected} "
        f"checkpoint."
    )


# ---------------------------------------------------------------------------------------------
# single-file safetensors
# ---------------------------------------------------------------------------------------------

def _detect_safetensors(path: Path) -> BaseInfo:
    size = path.stat().st_size
    index, metadata = _read_safetensors_header(path, size)
    shapes = {name: entry.get("shape") for name, entry in index.items()}
    family, reason = _classify_keys(shapes)
    if metadata.get("kr_random_base"):
        reason = f"kr random base, seed {metadata.get('seed', '?')}; {reason}"
    return BaseInfo(path=path, family=family, format="single-file", reason=reason,
                    is_v_pred=_v_pred_from_single_file(shapes, metadata),
                    tensor_count=len(index), size_bytes=size)


def _read_safetensors_header(path: Path, size: int) -> tuple[dict[str, dict], dict[str, str]]:
    """lorafile.read_header, guarded: a non-safetensors file's first 8 bytes can read as a huge
    header length, which must not turn into a multi-GB read."""
    not_safetensors = BadInput(
        f"{path} is not a valid safetensors file (its header cannot be read). Re-download or "
        "re-export the checkpoint, or pass another base model."
    )
    try:
        with open(path, "rb") as handle:
            prefix = handle.read(8)
    except OSError as exc:
        raise BadInput(f"Cannot read base model {path}: {exc.strerror}. Check the file's permissions.") from exc
    if len(prefix) < 8:
        raise not_safetensors
    (header_len,) = struct.unpack("<Q", prefix)
    if header_len > min(_MAX_HEADER_BYTES, size - 8):
        raise not_safetensors
    try:
        index, metadata = lorafile.read_header(path)
    except (ValueError, UnicodeDecodeError) as exc:
        raise not_safetensors from exc
    if not all(isinstance(entry, dict) and "shape" in entry for entry in index.values()):
        raise not_safetensors
    return index, metadata


def _v_pred_from_single_file(shapes: Mapping[str, Any], metadata: Mapping[str, str]) -> bool | None:
    """True/False where the file says so: the modelspec prediction type, or the `v_pred` marker
    tensor some tools add. SD 2.x 768-v and 512-base checkpoints are otherwise indistinguishable."""
    prediction = str(metadata.get("modelspec.prediction_type", "")).lower()
    if prediction in ("v", "v_prediction", "v-prediction"):
        return True
    if prediction in ("epsilon", "eps"):
        return False
    return True if "v_pred" in shapes else None


def _classify_keys(shapes: Mapping[str, list[int] | None]) -> tuple[str, str]:
    """(family, reason) from LDM/SAI key names, with shapes where known (None: names only)."""
    names = list(shapes)
    if not any(name.startswith(_UNET) for name in names):
        return "unknown", _describe_non_checkpoint(names)

    def has(prefix: str) -> bool:
        return any(name.startswith(prefix) for name in names)

    if has(_REFINER_TE):
        return "unknown", ("an SDXL refiner (its only text encoder is OpenCLIP at conditioner.embedders.0); "
                           "sd-scripts trains on the SDXL base layout")
    context_dim = _cross_attention_dim(shapes)
    if context_dim == CROSS_ATTENTION_DIM["sdxl"] or has(_SDXL_TE2) or has(_UNET + "label_emb."):
        family, text_encoders = "sdxl", (_SDXL_TE1, _SDXL_TE2)
    elif context_dim == CROSS_ATTENTION_DIM["sd2"] or has(_SD2_TE):
        family, text_encoders = "sd2", (_SD2_TE,)
    elif context_dim == CROSS_ATTENTION_DIM["sd15"] or has(_SD1_TE):
        family, text_encoders = "sd15", (_SD1_TE,)
    else:
        return "unknown", f"a U-Net with cross-attention width {context_dim}, which is no SD 1.x/2.x/XL width"
    label = FAMILY_LABELS[family]
    missing = [prefix + "*" for prefix in (*text_encoders, _VAE) if not has(prefix)]
    if missing:
        return "unknown", (f"an {label} U-Net without {', '.join(missing)}: sd-scripts loads the text "
                           "encoder(s) and the VAE from the same file")
    in_channels = _shape_dim(shapes, _UNET + "input_blocks.0.0.weight", 1)
    if in_channels not in (None, 4):
        return "unknown", (f"an {label} U-Net with {in_channels} input channels (inpainting or "
                           "instruct model); sd-scripts' U-Net takes 4")
    evidence = f"cross-attention {context_dim}" if context_dim else "key names"
    return family, f"{label} single-file layout ({evidence}, {', '.join(p + '*' for p in text_encoders)})"


def _cross_attention_dim(shapes: Mapping[str, list[int] | None]) -> int | None:
    """Width of the text conditioning: the input size of any U-Net cross-attention key projection."""
    for name, shape in shapes.items():
        if name.startswith(_UNET) and name.endswith(".attn2.to_k.weight") and shape and len(shape) == 2:
            return int(shape[1])
    return None


def _shape_dim(shapes: Mapping[str, list[int] | None], name: str, dim: int) -> int | None:
    shape = shapes.get(name)
    return int(shape[dim]) if shape and len(shape) > dim else None


def _describe_non_checkpoint(names: list[str]) -> str:
    """Why a file without U-Net keys is not a base, in the user's terms."""
    if not names:
        return "the file contains no tensors"
    if any("lora" in name.lower() or name.startswith(("lycoris_", "hada_")) for name in names):
        return "a LoRA/network file, not a base model: use it as a network and pass a full checkpoint as the base"
    if any(name.startswith(("down_blocks.", "encoder.down_blocks.", "conv_in.")) for name in names):
        return ("one Diffusers component (U-Net or VAE weights): pass the whole Diffusers model folder, "
                "or a single-file checkpoint")
    if any(name.startswith(("encoder.down.", "decoder.up.")) for name in names):
        return "a standalone VAE: pass it with the VAE option, not as the base"
    if any(name.startswith(("text_model.", "transformer.resblocks.")) for name in names):
        return "a standalone text encoder, not a full checkpoint"
    return f"no Stable Diffusion U-Net keys ({_UNET}*) in the file; first key: {names[0]}"


# ---------------------------------------------------------------------------------------------
# pickled checkpoints (.ckpt / .pt / .bin): never unpickled
# ---------------------------------------------------------------------------------------------

def _detect_pickled_checkpoint(path: Path) -> BaseInfo:
    size = path.stat().st_size
    names, why_not = _pickle_key_names(path)
    if names is None:
        return BaseInfo(path=path, family="unknown", format="ckpt", size_bytes=size,
                        reason=f"{why_not}; kr never unpickles checkpoints (that runs code from the file): "
                               "convert it to .safetensors to have it checked")
    family, reason = _classify_keys({name: None for name in names})
    return BaseInfo(path=path, family=family, format="ckpt", size_bytes=size,
                    reason=f"{reason}; key names read from the pickle without running it, shapes not checked")


def _pickle_key_names(path: Path) -> tuple[list[str] | None, str]:
    """The dotted strings inside a torch zip checkpoint's data.pkl, listed with pickletools (which
    only decodes opcodes and never imports or calls anything), or (None, why not)."""
    if not zipfile.is_zipfile(path):
        return None, "a legacy (non-zip) pickle"
    try:
        with zipfile.ZipFile(path) as archive:
            member = next((i for i in archive.infolist()
                           if i.filename == "data.pkl" or i.filename.endswith("/data.pkl")), None)
            if member is None:
                return None, "a zip file without a PyTorch data.pkl"
            if member.file_size > _MAX_PICKLE_BYTES:
                return None, "a pickle too large to inspect"
            payload = archive.read(member)
        strings = [arg for op, arg, _ in pickletools.genops(io.BytesIO(payload))
                   if op.name in _PICKLE_STRING_OPS and isinstance(arg, str)]
    except (zipfile.BadZipFile, ValueError, EOFError, OSError):
        return None, "an unreadable PyTorch checkpoint"
    return [s for s in dict.fromkeys(strings) if "." in s and " " not in s], ""


# ---------------------------------------------------------------------------------------------
# Diffusers folders
# ---------------------------------------------------------------------------------------------

def _detect_diffusers_folder(path: Path) -> BaseInfo:
    model_index = _read_json(path / "model_index.json")
    marker = read_kr_tiny_marker(path)
    if model_index is None and marker is None:
        # Not a model folder (e.g. a folder of checkpoints): do not walk it.
        return BaseInfo(path=path, family="unknown", format="diffusers",
                        reason="a folder without model_index.json, so not a Diffusers model folder")
    tensor_count, size = _folder_weights(path)
    common = {"path": path, "format": "diffusers", "is_v_pred": _v_pred_from_scheduler(path),
              "tensor_count": tensor_count, "size_bytes": size}
    class_name = (model_index or {}).get("_class_name") or "pipeline without _class_name"
    family = _pipeline_family(path, class_name)
    if isinstance(marker, dict):
        family = marker["family"] if marker.get("family") in FAMILIES else family or "unknown"
        reason = f"kr tiny base ({FAMILY_LABELS[family]}, kr_tiny.json): for the built-in tiny trainer only"
        return BaseInfo(family=family, reason=reason, kr_tiny=True, **common)
    if family is None:
        return BaseInfo(family="unknown", reason=f"a Diffusers {class_name}, not one sd-scripts trains", **common)
    missing = [name for name in _DIFFUSERS_COMPONENTS[family] if not (path / name).is_dir()]
    if missing:
        return BaseInfo(family="unknown", reason=f"a Diffusers {class_name} without the {', '.join(missing)} "
                                                 "folder(s) sd-scripts loads", **common)
    return BaseInfo(family=family, reason=f"Diffusers {class_name} (model_index.json)", **common)


def _pipeline_family(path: Path, class_name: str) -> str | None:
    if class_name == "StableDiffusionXLPipeline":
        return "sdxl"
    if class_name == "StableDiffusionPipeline":
        # SD 1.x and 2.x share the pipeline class; the U-Net's cross-attention width tells them apart.
        unet_config = _read_json(path / "unet" / "config.json") or {}
        return "sd2" if unet_config.get("cross_attention_dim") == 1024 else "sd15"
    return None


def _v_pred_from_scheduler(path: Path) -> bool | None:
    prediction = (_read_json(path / "scheduler" / "scheduler_config.json") or {}).get("prediction_type")
    return {"v_prediction": True, "epsilon": False}.get(prediction)


def _folder_weights(path: Path) -> tuple[int | None, int]:
    """(tensors in all .safetensors files, bytes of all files) under a folder; variants included."""
    tensor_count, size, any_safetensors = 0, 0, False
    for file in path.rglob("*"):
        if not file.is_file():
            continue
        size += file.stat().st_size
        if file.suffix == ".safetensors":
            try:
                tensor_count += len(_read_safetensors_header(file, file.stat().st_size)[0])
                any_safetensors = True
            except BadInput:
                continue
    return (tensor_count if any_safetensors else None), size


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# =============================================================================================
# random full-size bases
# =============================================================================================
#
# The model configs sd-scripts hard-codes live in sdscripts.architectures (one owner with the
# LoRA size estimate); imported above under their old names.

# open_clip initialises logit_scale to log(1 / 0.07); only sd-scripts' save path reads it back.
_OPENCLIP_LOGIT_SCALE = math.log(1 / 0.07)


@dataclass(frozen=True)
class ModelPart:
    """One model of a checkpoint: how to build it and where its tensors go in the single file."""

    name: str  # "unet" | "text_encoder" | "text_encoder_2" | "vae"
    config: Mapping[str, Any]
    ldm_prefix: str


def model_parts(family: str, configs: Mapping[str, Mapping[str, Any]] | None = None) -> list[ModelPart]:
    """The parts of a random base of `family`; `configs` overrides a part's config by name (tests
    use small configs with the same topology)."""
    if family == "sd15":
        parts = [ModelPart("unet", SD15_UNET_CONFIG, _UNET), ModelPart("text_encoder", CLIP_L_CONFIG, _SD1_TE),
                 ModelPart("vae", VAE_CONFIG, _VAE)]
    elif family == "sdxl":
        parts = [ModelPart("unet", SDXL_UNET_CONFIG, _UNET), ModelPart("text_encoder", CLIP_L_CONFIG, _SDXL_TE1),
                 ModelPart("text_encoder_2", OPENCLIP_BIGG_CONFIG, _SDXL_TE2), ModelPart("vae", VAE_CONFIG, _VAE)]
    else:
        raise ValueError(f"no random-base parts for family {family!r}")
    overrides = configs or {}
    return [ModelPart(p.name, overrides.get(p.name, p.config), p.ldm_prefix) for p in parts]


def build_module(part: ModelPart) -> "torch.nn.Module":
    """The diffusers / transformers module of a part, with the library's default initialisation
    (on whatever default device and dtype are active: `meta` builds cost no memory)."""
    if part.name == "unet":
        from diffusers import UNet2DConditionModel
        return UNet2DConditionModel(**part.config)
    if part.name == "vae":
        from diffusers import AutoencoderKL
        return AutoencoderKL(**part.config)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    model_class = CLIPTextModelWithProjection if part.name == "text_encoder_2" else CLIPTextModel
    return model_class(CLIPTextConfig(**part.config))


def ldm_tensors(part: ModelPart, state_dict: Mapping[str, "torch.Tensor"]) -> Iterator[tuple[str, "torch.Tensor"]]:
    """(single-file name, tensor) for every tensor of a part's diffusers/transformers state dict."""
    if part.name == "unet":
        items = _unet_to_ldm(part.config, state_dict)
    elif part.name == "vae":
        items = _vae_to_ldm(part.config, state_dict)
    elif part.name == "text_encoder":
        items = ((_hf_text_model_key(key), value) for key, value in state_dict.items())
    else:
        items = _openclip_to_ldm(state_dict)
    for name, tensor in items:
        yield part.ldm_prefix + name, tensor


def ldm_shapes(family: str, configs: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, dict[str, tuple[int, ...]]]:
    """part name -> {single-file tensor name: shape} of a random base, without allocating weights."""
    torch = _import_model_libraries()
    shapes = {}
    for part in model_parts(family, configs):
        with torch.device("meta"):
            module = build_module(part)
        shapes[part.name] = {name: tuple(t.shape) for name, t in ldm_tensors(part, module.state_dict())}
    return shapes


# ---------------------------------------------------------------------------------------------
# diffusers / transformers names -> single-file (LDM / SAI) names
# ---------------------------------------------------------------------------------------------

_UNET_RESNET_NAMES = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                      "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_VAE_RESNET_NAMES = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTENTION_NAMES = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_OPENCLIP_LAYER_NAMES = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc",
                         "mlp.fc2": "mlp.c_proj", "self_attn.out_proj": "attn.out_proj"}


def _unet_prefixes(config: Mapping[str, Any]) -> dict[str, tuple[str, Mapping[str, str]]]:
    """diffusers U-Net module prefix -> (LDM prefix, renames inside it).

    LDM numbers the U-Net as flat lists: input_blocks.0 is conv_in, then each level has
    `layers_per_block` (resnet, attention) slots plus one for its downsampler; output_blocks have
    one more resnet per level, and the level's upsampler sits after the attention when there is
    one (output_blocks.N.2) and directly after the resnet when there is not (output_blocks.N.1).
    """
    layers = config["layers_per_block"]
    slots = layers + 1
    prefixes: dict[str, tuple[str, Mapping[str, str]]] = {
        "conv_in.": ("input_blocks.0.0.", {}), "conv_norm_out.": ("out.0.", {}), "conv_out.": ("out.2.", {}),
        "time_embedding.linear_1.": ("time_embed.0.", {}), "time_embedding.linear_2.": ("time_embed.2.", {}),
        "add_embedding.linear_1.": ("label_emb.0.0.", {}), "add_embedding.linear_2.": ("label_emb.0.2.", {}),
        "mid_block.resnets.0.": ("middle_block.0.", _UNET_RESNET_NAMES),
        "mid_block.attentions.0.": ("middle_block.1.", {}),
        "mid_block.resnets.1.": ("middle_block.2.", _UNET_RESNET_NAMES),
    }
    for level in range(len(config["block_out_channels"])):
        for j in range(layers):
            block = 1 + level * slots + j
            prefixes[f"down_blocks.{level}.resnets.{j}."] = (f"input_blocks.{block}.0.", _UNET_RESNET_NAMES)
            prefixes[f"down_blocks.{level}.attentions.{j}."] = (f"input_blocks.{block}.1.", {})
        prefixes[f"down_blocks.{level}.downsamplers.0.conv."] = (f"input_blocks.{(level + 1) * slots}.0.op.", {})
        for j in range(slots):
            block = level * slots + j
            prefixes[f"up_blocks.{level}.resnets.{j}."] = (f"output_blocks.{block}.0.", _UNET_RESNET_NAMES)
            prefixes[f"up_blocks.{level}.attentions.{j}."] = (f"output_blocks.{block}.1.", {})
        upsampler_slot = 2 if "CrossAttn" in config["up_block_types"][level] else 1
        prefixes[f"up_blocks.{level}.upsamplers.0."] = (f"output_blocks.{level * slots + layers}.{upsampler_slot}.", {})
    return prefixes


def _vae_prefixes(config: Mapping[str, Any]) -> dict[str, tuple[str, Mapping[str, str]]]:
    """diffusers AutoencoderKL module prefix -> (LDM prefix, renames inside it).

    LDM numbers the decoder's up levels from the bottom (up.3 runs first), diffusers from the top.
    """
    levels = len(config["block_out_channels"])
    layers = config["layers_per_block"]
    prefixes: dict[str, tuple[str, Mapping[str, str]]] = {
        name: (name, {}) for name in ("encoder.conv_in.", "encoder.conv_out.", "decoder.conv_in.",
                                      "decoder.conv_out.", "quant_conv.", "post_quant_conv.")}
    for side in ("encoder", "decoder"):
        prefixes[f"{side}.conv_norm_out."] = (f"{side}.norm_out.", {})
        prefixes[f"{side}.mid_block.attentions.0."] = (f"{side}.mid.attn_1.", _VAE_ATTENTION_NAMES)
        for j in range(2):
            prefixes[f"{side}.mid_block.resnets.{j}."] = (f"{side}.mid.block_{j + 1}.", _VAE_RESNET_NAMES)
    for level in range(levels):
        for j in range(layers):
            prefixes[f"encoder.down_blocks.{level}.resnets.{j}."] = (f"encoder.down.{level}.block.{j}.", _VAE_RESNET_NAMES)
        prefixes[f"encoder.down_blocks.{level}.downsamplers.0."] = (f"encoder.down.{level}.downsample.", {})
        ldm_level = levels - 1 - level
        for j in range(layers + 1):
            prefixes[f"decoder.up_blocks.{level}.resnets.{j}."] = (f"decoder.up.{ldm_level}.block.{j}.", _VAE_RESNET_NAMES)
        prefixes[f"decoder.up_blocks.{level}.upsamplers.0."] = (f"decoder.up.{ldm_level}.upsample.", {})
    return prefixes


def _rename(key: str, prefixes: Mapping[str, tuple[str, Mapping[str, str]]]) -> str:
    """Apply the longest matching module prefix, then the renames inside that module."""
    parts = key.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        head = ".".join(parts[:cut]) + "."
        if head in prefixes:
            new_head, inner = prefixes[head]
            return new_head + _rename_inner(".".join(parts[cut:]), inner)
    raise KeyError(f"no single-file name for {key!r}")


def _rename_inner(rest: str, renames: Mapping[str, str]) -> str:
    for old, new in renames.items():
        if rest.startswith(old + "."):
            return new + rest[len(old):]
    return rest


def _unet_to_ldm(config: Mapping[str, Any], state_dict: Mapping[str, "torch.Tensor"]) -> Iterator[tuple[str, "torch.Tensor"]]:
    prefixes = _unet_prefixes(config)
    for key, value in state_dict.items():
        yield _rename(key, prefixes), value


def _vae_to_ldm(config: Mapping[str, Any], state_dict: Mapping[str, "torch.Tensor"]) -> Iterator[tuple[str, "torch.Tensor"]]:
    prefixes = _vae_prefixes(config)
    for key, value in state_dict.items():
        name = _rename(key, prefixes)
        # The LDM VAE's mid-block attention projections are 1x1 convolutions; diffusers uses linears.
        if ".mid.attn_1." in name and name.endswith((".q.weight", ".k.weight", ".v.weight", ".proj_out.weight")):
            value = value.reshape(*value.shape, 1, 1)
        yield name, value


def _hf_text_model_key(key: str) -> str:
    """The transformers 4.x name of a CLIP text-model tensor (`text_model.…`), which is what
    single files and sd-scripts' pinned transformers use; transformers 5 drops the prefix."""
    return key if key.startswith(("text_model.", "text_projection.")) else "text_model." + key


def _openclip_to_ldm(state_dict: Mapping[str, "torch.Tensor"]) -> Iterator[tuple[str, "torch.Tensor"]]:
    """transformers CLIPTextModelWithProjection -> open_clip names, as in SDXL's conditioner.embedders.1.model."""
    import torch

    hf = {_hf_text_model_key(key): value for key, value in state_dict.items()}
    in_proj_done: set[str] = set()
    for key, value in hf.items():
        if key == "text_model.embeddings.token_embedding.weight":
            yield "token_embedding.weight", value
        elif key == "text_model.embeddings.position_embedding.weight":
            yield "positional_embedding", value
        elif key.startswith("text_model.final_layer_norm."):
            yield "ln_final." + key.rsplit(".", 1)[1], value
        elif key == "text_projection.weight":
            # open_clip applies x @ text_projection; a torch Linear stores the transpose.
            yield "text_projection", value.T.contiguous()
        elif key.startswith("text_model.encoder.layers."):
            layer, rest = key[len("text_model.encoder.layers."):].split(".", 1)
            block = f"transformer.resblocks.{layer}."
            if rest.startswith(("self_attn.q_proj.", "self_attn.k_proj.", "self_attn.v_proj.")):
                # open_clip uses one fused in_proj for q, k, v (in that order).
                kind = rest.rsplit(".", 1)[1]
                if block + kind not in in_proj_done:
                    in_proj_done.add(block + kind)
                    qkv = [hf[f"text_model.encoder.layers.{layer}.self_attn.{p}_proj.{kind}"] for p in "qkv"]
                    yield f"{block}attn.in_proj_{kind}", torch.cat(qkv)
            else:
                yield block + _rename_inner(rest, _OPENCLIP_LAYER_NAMES), value
        else:
            raise KeyError(f"no single-file name for {key!r}")
    reference = hf["text_model.final_layer_norm.weight"]
    yield "logit_scale", torch.full((), _OPENCLIP_LOGIT_SCALE, dtype=reference.dtype, device=reference.device)


# ---------------------------------------------------------------------------------------------
# writing
# ---------------------------------------------------------------------------------------------

def default_random_base_name(family: str, seed: int) -> str:
    return f"kr-random-{family}-seed{seed}.safetensors"


def write_random_base(family: str, dest: Path | str, *, seed: int = 0, dtype: str = "fp16",
                      overwrite: bool = False, progress: Callable[[str], None] | None = None) -> Path:
    """Write a seeded random full-size `family` base ("sd15" | "sdxl") and return its path.

    `dest` is the file to write (`.safetensors`), or an existing folder to write
    `kr-random-<family>-seed<N>.safetensors` into. The same seed gives the same bytes (with the
    same torch version). The file appears only when complete (temp file + rename). `progress`,
    if given, gets one short line per model part as it is built. `kr base random` goes through
    kohya_runner.base_writer, which falls back to the trainer environment when this python lacks torch.
    Raises BadInput (bad arguments or destination), Failed (torch, diffusers or transformers missing).
    """
    dest = random_base_path(family, dest, seed=seed, dtype=dtype, overwrite=overwrite)
    return write_parts(model_parts(family), dest, seed=seed, dtype=dtype, overwrite=overwrite,
                       metadata={"kr_random_base": family, "seed": str(seed)}, progress=progress)


def random_base_path(family: str, dest: Path | str, *, seed: int = 0, dtype: str = "fp16",
                     overwrite: bool = False) -> Path:
    """The file write_random_base would write, after the same checks of its arguments (no torch needed).

    Raises BadInput (unknown family, bad seed or dtype, unusable destination).
    """
    _check_random_base_args(family, seed, dtype)
    return _random_base_destination(Path(dest), family, seed, overwrite)


def write_parts(parts: list[ModelPart], dest: Path, *, seed: int, dtype: str, metadata: Mapping[str, str],
                overwrite: bool = False, progress: Callable[[str], None] | None = None) -> Path:
    """Build each part (seeded, in `dtype`), convert it to single-file names and stream it to
    `dest`; only one part's weights are in memory at a time.

    Like kohya_runner.atomic, but streamed: a temp file in the same folder, fsync, then rename
    (or, without `overwrite`, a hard link, which fails rather than replace a file that appeared).
    """
    torch = _import_model_libraries()
    torch_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    header, order = _plan_layout(parts, torch_dtype, DTYPES[dtype], metadata)
    data_bytes = sum(end - start for _, (start, end) in order)
    _check_free_space(dest, 8 + len(header) + data_bytes)
    temp = None
    try:
        fd, temp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as handle:
            handle.write(struct.pack("<Q", len(header)) + header)
            for part in _parts_in_file_order(parts, order):
                if progress:
                    progress(f"building and writing {part.name}")
                _write_part(handle, part, order, 8 + len(header), torch_dtype, seed)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)  # mkstemp makes it owner-only; a base model is not a secret
        if overwrite:
            os.replace(temp, dest)
        else:
            os.link(temp, dest)
    except FileExistsError as exc:
        raise BadInput(f"{dest} appeared while the random base was being built; kr does not overwrite it. "
                       "Fix: choose another output file, or delete that one first.") from exc
    except OSError as exc:
        raise Failed(f"Could not write the random base to {dest}: {exc.strerror or exc}. "
                     "Check that the folder is writable and has space, then retry.") from exc
    finally:
        if temp:
            Path(temp).unlink(missing_ok=True)
    return dest


def _plan_layout(parts: list[ModelPart], torch_dtype, dtype_tag: str,
                 metadata: Mapping[str, str]) -> tuple[bytes, list[tuple[str, tuple[int, int]]]]:
    """The header bytes and the data layout [(name, (start, end))], from meta-device builds.

    The header comes from lorafile.serialized_header, so tensors sit in the order the
    safetensors serializer would put them; the part prefixes keep each part contiguous.
    """
    import torch

    index = {}
    for part in parts:
        with torch.device("meta"):
            module = build_module(part)
        for name, tensor in ldm_tensors(part, module.state_dict()):
            nbytes = math.prod(tensor.shape) * torch_dtype.itemsize
            index[name] = {"dtype": dtype_tag, "shape": list(tensor.shape), "data_offsets": [0, nbytes]}
    header = lorafile.serialized_header(index, metadata)
    entries = {name: entry for name, entry in json.loads(header).items() if name != "__metadata__"}
    order = sorted(((name, tuple(entry["data_offsets"])) for name, entry in entries.items()), key=lambda e: e[1])
    return header, order


def _parts_in_file_order(parts: list[ModelPart], order: list[tuple[str, tuple[int, int]]]) -> list[ModelPart]:
    """Parts sorted by where their tensors sit; each part must occupy one contiguous range."""
    owner = [next(p for p in parts if name.startswith(p.ldm_prefix)) for name, _ in order]
    runs = [part for i, part in enumerate(owner) if i == 0 or owner[i - 1] is not part]
    if len(runs) != len(parts):
        raise RuntimeError("part tensors interleave in the file layout; cannot stream part by part")
    return runs


def _write_part(handle, part: ModelPart, order: list[tuple[str, tuple[int, int]]], data_start: int,
                torch_dtype, seed: int) -> None:
    import torch

    module = _build_seeded(part, torch_dtype, seed)
    tensors = dict(ldm_tensors(part, module.state_dict()))
    for name, (start, end) in order:
        if not name.startswith(part.ldm_prefix):
            continue
        data = tensors.pop(name).detach().to(torch_dtype).contiguous().reshape(-1).view(torch.uint8)
        if handle.tell() != data_start + start or data.numel() != end - start:
            raise RuntimeError(f"layout mismatch while writing {name}")
        handle.write(data.numpy().data)
    del module, tensors
    gc.collect()  # release this part's weights before the next part is built


def _build_seeded(part: ModelPart, torch_dtype, seed: int) -> "torch.nn.Module":
    """Build a part in `torch_dtype` directly (half the memory of building in fp32 and casting),
    from a seed derived from (seed, part) so that parts draw independent random streams."""
    import torch

    part_seed = int.from_bytes(hashlib.sha256(f"kr-random-base:{seed}:{part.name}".encode()).digest()[:8], "little")
    previous_dtype = torch.get_default_dtype()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(part_seed)
        torch.set_default_dtype(torch_dtype)
        try:
            return build_module(part)
        finally:
            torch.set_default_dtype(previous_dtype)


def _check_random_base_args(family: str, seed: int, dtype: str) -> None:
    if family not in RANDOM_FAMILIES:
        raise BadInput(f"kr builds random bases for {' and '.join(RANDOM_FAMILIES)}, not {family!r}. "
                       f"Fix: pick one of {', '.join(RANDOM_FAMILIES)}.")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise BadInput(f"Random base seed {seed!r} is not a whole number from 0 to 2**63-1. Fix: pass e.g. --seed 0.")
    if dtype not in DTYPES:
        raise BadInput(f"Random base dtype {dtype!r} is not one of {', '.join(DTYPES)}. Fix: use fp16 (the default).")


def _random_base_destination(dest: Path, family: str, seed: int, overwrite: bool) -> Path:
    if dest.is_dir():
        dest = dest / default_random_base_name(family, seed)
    if dest.suffix.lower() != ".safetensors":
        raise BadInput(f"Random base output {dest} must end in .safetensors (sd-scripts picks the loader by "
                       "extension and would unpickle anything else). Fix: e.g. -o base.safetensors.")
    if dest.exists() and not overwrite:
        raise BadInput(f"{dest} already exists; kr does not overwrite it. Fix: choose another output "
                       "file, or delete that one first.")
    if not dest.parent.is_dir():
        raise BadInput(f"Folder {dest.parent} does not exist. Fix: create it, or choose another output file.")
    if not os.access(dest.parent, os.W_OK):
        raise BadInput(f"Folder {dest.parent} is not writable. Fix: choose another output file.")
    return dest


def _check_free_space(dest: Path, needed: int) -> None:
    free = shutil.disk_usage(dest.parent).free
    if free < needed:
        raise BadInput(f"Not enough disk space for the random base at {dest.parent}: it needs "
                       f"{needed / 2**30:.2f} GiB, {free / 2**30:.2f} GiB are free. Fix: free space or "
                       "choose another output folder.")


def _import_model_libraries():
    """torch (and a check that diffusers and transformers import), or Failed with the fix."""
    try:
        import diffusers  # noqa: F401
        import torch
        import transformers  # noqa: F401
    except ImportError as exc:
        raise Failed(f"Building a random base needs torch, diffusers and transformers ({exc.name} is "
                     "missing). Fix: pip install 'kohya-runner[demo]' (install the CPU torch first).") from exc
    return torch
