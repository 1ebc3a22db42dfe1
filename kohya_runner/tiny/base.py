"""Build the tiny base model the built-in trainer trains on: pretrained on a small procedural world.

The result is a real Diffusers pipeline folder (model_index.json, unet/, vae/, text_encoder/,
[text_encoder_2/,] tokenizer/, [tokenizer_2/,] scheduler/) so that anything that reads a Diffusers
SD 1.5 / SDXL folder can read it, plus `kr_tiny.json`, the marker the tiny trainer checks.

Shapes are tiny (a ~1.5 M-parameter U-Net) but the structure is the one the kohya names describe:
the SDXL flavour has SDXL's text-and-time conditioning and `layers_per_block=2`, so the attention
blocks map exactly onto sd-scripts' `input_blocks.{3i+j+1}.1` / `middle_block.1` /
`output_blocks.{3i+j}.1` names; the SD 1.5 flavour keeps diffusers names and 1x1-conv projections.
Both levels of the two-level U-Net carry cross-attention: with attention only at the coarse level
a LoRA on a random base can barely lower the loss, with it at full latent resolution it learns.

The weights come from `weights/tiny-<family>.safetensors` (made by `python -m
kohya_runner.tiny.pretrain`, see world.py and pretrain.py): the base draws "a red circle" when asked.
Their sha256 (weights/manifest.json) is checked before use. `build_tiny_base(..., pretrained=False)`
still gives the old random-initialised base (same shapes), for tests that want a model that knows
nothing and for pretraining itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

MARKER = "kr_tiny.json"
FORMAT_VERSION = 2  # 2: pretrained weights (and a wider VAE); 1: random initialisation
# KR_TINY_WEIGHTS points at another weights folder (with its own manifest): for trying pretraining runs
WEIGHTS_DIR = Path(os.environ.get("KR_TINY_WEIGHTS") or Path(__file__).resolve().parent / "weights")
WEIGHTS_MANIFEST = "manifest.json"
FAMILIES = ("sdxl", "sd15")

# One character-level vocabulary serves both tokenizers: 256 byte-unicode symbols, their
# end-of-word forms and the two CLIP specials. No merges, so every character is one token.
BOS_TOKEN, EOS_TOKEN = "<|startoftext|>", "<|endoftext|>"
VOCAB_SIZE = 256 * 2 + 2

TE_HIDDEN = 32
TE_LAYERS = 2
TE2_PROJECTION = 32
TIME_EMBED_DIM = 8  # SDXL add_time_ids embedding width per value (6 values)
LATENT_CHANNELS = 4
NATIVE_RESOLUTION = 64


def build_tiny_base(dest: Path, family: str = "sdxl", seed: int = 0, pretrained: bool = True) -> Path:
    """Build the tiny base at `dest` once; return `dest`.

    `pretrained` loads the committed weights (the seed then only seeds buffers and the marker);
    `pretrained=False` initialises randomly from the seed. Deterministic either way. Written into a
    temporary sibling folder and renamed into place, so concurrent builders never see (or leave) a
    half-written model: the first rename wins and the others discard their copy.
    Raises ValueError for an unknown family, FileExistsError when `dest` holds something else, and
    kohya_runner.errors.Failed when the committed weights are missing or fail their sha256 check.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    dest = Path(dest)
    if _is_complete(dest, family, seed, pretrained):
        return dest
    if dest.exists():
        found = read_marker(dest) or {}
        if found.get("format", FORMAT_VERSION) != FORMAT_VERSION:
            raise FileExistsError(f"{dest} holds a format-{found.get('format')} tiny base; this kohya_runner builds "
                                  f"format {FORMAT_VERSION} (pretrained): move the old folder away to rebuild it")
        raise FileExistsError(f"{dest} exists and is not a tiny {family} base (seed {seed})")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    try:
        _write_base(tmp, family, seed, pretrained)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not _is_complete(dest, family, seed, pretrained):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def read_marker(base_dir: Path) -> dict | None:
    """The `kr_tiny.json` of a base folder, or None if it is not a tiny base."""
    try:
        return json.loads((Path(base_dir) / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _is_complete(dest: Path, family: str, seed: int, pretrained: bool) -> bool:
    marker = read_marker(dest)
    return bool(marker) and marker.get("family") == family and marker.get("seed") == seed \
        and marker.get("format") == FORMAT_VERSION and marker.get("pretrained", False) == pretrained


def pretrained_state(family: str) -> dict:
    """The committed weights of a family as fp32 tensors keyed `unet.` / `vae.` / `text_encoder[_2].`.

    Raises kohya_runner.errors.Failed when the file is missing or its sha256 is not the manifest's.
    """
    import torch

    from ..errors import Failed

    try:
        entry = json.loads((WEIGHTS_DIR / WEIGHTS_MANIFEST).read_text(encoding="utf-8"))[family]
        path = WEIGHTS_DIR / entry["file"]
        data = path.read_bytes()
    except (OSError, ValueError, KeyError) as exc:
        raise Failed(f"the tiny {family} base's pretrained weights are missing from {WEIGHTS_DIR} ({exc}). Fix: "
                     f"reinstall kohya-runner, or rebuild them with `python -m kohya_runner.tiny.pretrain`",
                     file=str(WEIGHTS_DIR))
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry["sha256"]:
        raise Failed(f"{path} is damaged: sha256 {digest} is not the manifest's {entry['sha256']} (a Git LFS "
                     f"pointer or a partial copy?). Fix: reinstall kohya-runner", file=str(path))
    from safetensors.torch import load as load_bytes

    return {key: value.to(torch.float32) for key, value in load_bytes(data).items()}


def load_weights_file(path: Path) -> dict:
    import torch
    from safetensors.torch import load_file

    return {key: value.to(torch.float32) for key, value in load_file(str(path)).items()}


def _load_part(model, state: dict, prefix: str) -> None:
    part = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    missing, unexpected = model.load_state_dict(part, strict=False)
    floating_missing = [k for k in missing if model.state_dict()[k].is_floating_point()]
    if floating_missing or unexpected:
        raise ValueError(f"pretrained weights do not fit the {prefix[:-1]}: missing {floating_missing[:3]}, "
                         f"unexpected {unexpected[:3]}")


def _write_base(folder: Path, family: str, seed: int, pretrained: bool = True) -> None:
    import torch
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # "Writing model shards" bars would land in kr's output

    state = pretrained_state(family) if pretrained else None
    with torch.random.fork_rng(devices=[]):
        _save_tokenizers(folder, family)
        parts = [("text_encoder", seed, lambda: _text_encoder(family, 1))]
        if family == "sdxl":
            parts.append(("text_encoder_2", seed + 1, lambda: _text_encoder(family, 2)))
        parts += [("vae", seed + 2, lambda: _vae(family)), ("unet", seed + 3, lambda: _unet(family))]
        for name, part_seed, make in parts:
            torch.manual_seed(part_seed)
            model = make()
            if state is not None:
                _load_part(model, state, name + ".")
            model.save_pretrained(folder / name, safe_serialization=True)
    _scheduler(family).save_pretrained(folder / "scheduler")
    _write_model_index(folder, family)
    what = "kohya_runner tiny base pretrained on the tiny world" if pretrained else "kohya_runner tiny random base"
    marker = {"format": FORMAT_VERSION, "family": family, "seed": seed, "pretrained": pretrained,
              "native_resolution": NATIVE_RESOLUTION, "what": what}
    (folder / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# components
# ---------------------------------------------------------------------------------------------

def _unet(family: str):
    from diffusers import UNet2DConditionModel

    common = dict(sample_size=NATIVE_RESOLUTION // 8, in_channels=LATENT_CHANNELS,
                  out_channels=LATENT_CHANNELS, layers_per_block=2, block_out_channels=(32, 64),
                  norm_num_groups=32)
    if family == "sdxl":
        return UNet2DConditionModel(
            **common,
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            attention_head_dim=(2, 4), cross_attention_dim=TE_HIDDEN * 2, use_linear_projection=True,
            transformer_layers_per_block=1, addition_embed_type="text_time",
            addition_time_embed_dim=TIME_EMBED_DIM,
            projection_class_embeddings_input_dim=6 * TIME_EMBED_DIM + TE2_PROJECTION)
    return UNet2DConditionModel(
        **common,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        attention_head_dim=8, cross_attention_dim=TE_HIDDEN, use_linear_projection=False)


def _vae(family: str):
    from diffusers import AutoencoderKL

    # four levels -> three downsamples -> the 8x latent of SD/SDXL
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 32, 32, 32), layers_per_block=1, norm_num_groups=8,
        sample_size=NATIVE_RESOLUTION, scaling_factor=0.13025 if family == "sdxl" else 0.18215)


def _text_encoder(family: str, index: int):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    # SDXL's second encoder (OpenCLIP bigG) pads with "!" (id 0) and uses gelu; ViT-L quick_gelu
    bigg = family == "sdxl" and index == 2
    config = CLIPTextConfig(
        vocab_size=VOCAB_SIZE, hidden_size=TE_HIDDEN, intermediate_size=TE_HIDDEN * 2,
        num_hidden_layers=TE_LAYERS, num_attention_heads=4, max_position_embeddings=77,
        hidden_act="gelu" if bigg else "quick_gelu", projection_dim=TE2_PROJECTION,
        bos_token_id=VOCAB_SIZE - 2, eos_token_id=VOCAB_SIZE - 1, pad_token_id=0 if bigg else VOCAB_SIZE - 1)
    model_class = CLIPTextModelWithProjection if bigg else CLIPTextModel
    return model_class(config)


def _scheduler(family: str):
    from diffusers import EulerDiscreteScheduler, PNDMScheduler

    common = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    if family == "sdxl":
        return EulerDiscreteScheduler(**common, timestep_spacing="leading", steps_offset=1)
    return PNDMScheduler(**common, skip_prk_steps=True, steps_offset=1)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable-unicode table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) \
        + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in codes)))


def tiny_vocab() -> dict[str, int]:
    symbols = list(bytes_to_unicode().values())
    vocab = {symbol: i for i, symbol in enumerate(symbols)}
    vocab.update({symbol + "</w>": len(symbols) + i for i, symbol in enumerate(symbols)})
    vocab[BOS_TOKEN] = len(vocab)
    vocab[EOS_TOKEN] = len(vocab)
    return vocab


def _save_tokenizers(folder: Path, family: str) -> None:
    from transformers import CLIPTokenizer

    names = ["tokenizer", "tokenizer_2"] if family == "sdxl" else ["tokenizer"]
    for name in names:
        target = folder / name
        target.mkdir(parents=True)
        # vocab.json + merges.txt keep the folder loadable by any transformers version
        (target / "vocab.json").write_text(json.dumps(tiny_vocab(), ensure_ascii=False), encoding="utf-8")
        (target / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
        pad = "!" if name == "tokenizer_2" else EOS_TOKEN
        tokenizer = CLIPTokenizer(vocab=str(target / "vocab.json"), merges=str(target / "merges.txt"),
                                  pad_token=pad, model_max_length=77)
        tokenizer.save_pretrained(target)


def _write_model_index(folder: Path, family: str) -> None:
    import diffusers

    if family == "sdxl":
        index = {
            "_class_name": "StableDiffusionXLPipeline",
            "force_zeros_for_empty_prompt": True,
            "scheduler": ["diffusers", "EulerDiscreteScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "tokenizer_2": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        }
    else:
        index = {
            "_class_name": "StableDiffusionPipeline",
            "feature_extractor": [None, None],
            "requires_safety_checker": False,
            "safety_checker": [None, None],
            "scheduler": ["diffusers", "PNDMScheduler"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
        }
    index["_diffusers_version"] = diffusers.__version__
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
