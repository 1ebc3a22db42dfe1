"""Sample from a tiny base, optionally with a kohya LoRA file applied (for tests and kr's reports).

    pipe = load_pipeline(base_dir, "out/marker.safetensors", multiplier=1.0)
    image = generate(pipe, "in the style of TOK, a cup of coffee", seed=1, steps=20, w=64, h=64)

The LoRA is read in kohya's key layout and placed on the models through peft (rank and alpha per
module from the file), so anything the tiny trainer (or sd-scripts, for matching shapes) wrote
loads back the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class TinyPipeline:
    models: object  # kohya_runner.tiny.models.TinyModels
    network: object | None  # kohya_runner.tiny.network.LoRANetwork when a LoRA is applied
    lora_path: str | None
    multiplier: float


def load_pipeline(base_dir, lora_path=None, multiplier: float = 1.0) -> TinyPipeline:
    """The tiny base at `base_dir` (family read from its kr_tiny.json) plus an optional LoRA."""
    from kohya_runner.tiny.base import read_marker
    from kohya_runner.tiny.models import FAMILIES, limit_threads, load_base

    limit_threads()
    marker = read_marker(Path(base_dir))
    if marker is None:
        raise ValueError(f"{base_dir} is not a tiny base (no kr_tiny.json)")
    models = load_base(Path(base_dir), FAMILIES[marker["family"]])
    network = None
    if lora_path is not None:
        network = apply_lora(models, str(lora_path), multiplier)
    return TinyPipeline(models, network, None if lora_path is None else str(lora_path), multiplier)


def apply_lora(models, lora_path: str, multiplier: float = 1.0):
    """Put the LoRA file's modules on `models` (in place) and return the network."""
    from kohya_runner.tiny.network import LoRANetwork, dims_and_alphas, read_kohya_file

    state = read_kohya_file(lora_path)
    dims, alphas = dims_and_alphas(state)
    network = LoRANetwork(models, None, None, train_unet=True, train_text_encoder=True,
                          modules_dim=dims, modules_alpha=alphas, verbose=False)
    info = network.load_kohya_state_dict(state)
    placed = sum(len(part.paths) for part in network.parts)
    if placed < len(dims):
        raise ValueError(f"{lora_path}: {len(dims) - placed} of {len(dims)} LoRA modules match no module of this "
                         f"{models.family.name} base (wrong family?); unexpected keys: {info.unexpected_keys[:3]}")
    network.set_multiplier(multiplier)
    for param in network.parameters():
        param.requires_grad_(False)
    return network


def generate(pipe: TinyPipeline, prompt: str, seed: int = 0, steps: int = 20, w: int = 64, h: int = 64,
             cfg: float = 7.5, negative: str | None = None, sampler: str = "ddim"):
    """One PIL image; deterministic for a seed and independent of the global random state."""
    import torch

    from kohya_runner.tiny.sampling import generate_image

    generator = torch.Generator().manual_seed(seed)
    width, height = max(64, w - w % 8), max(64, h - h % 8)
    with torch.no_grad():
        return generate_image(pipe.models, prompt, negative, width, height, steps, cfg, sampler,
                              generator=generator)
