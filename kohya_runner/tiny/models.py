"""Loading the tiny base and the model calls the trainer and the sampler share.

`Family` holds what differs between `sdxl_train_network.py` and `train_network.py`; `TinyModels`
holds the loaded U-Net, VAE, text encoder(s) and tokenizer(s), with sd-scripts' text encoding
(SDXL: penultimate hidden states of both encoders concatenated plus TE2's pooled projection of the
EOS token; SD: the last hidden state, or `clip_skip`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

TOKEN_LENGTH = 77


def limit_threads() -> None:
    """One intra-op thread unless OMP_NUM_THREADS says otherwise: the tiny model's ops are too small
    to gain from a second thread, and on a busy 2-core machine spinning OpenMP threads cost 10x."""
    if "OMP_NUM_THREADS" not in os.environ:
        import torch

        torch.set_num_threads(1)


@dataclass(frozen=True)
class Family:
    name: str  # "sdxl" or "sd15"
    script: str
    vae_scale_factor: float
    latent_cache_suffix: str
    bucket_steps_divisor: int
    te_parts: tuple[str, ...]

    @property
    def is_sdxl(self) -> bool:
        return self.name == "sdxl"

    def model_version(self, args) -> str:
        if self.is_sdxl:
            return "sdxl_base_v1-0"
        version = "sd_v2" if args.v2 else "sd_v1"
        return version + ("_v" if args.v_parameterization else "")


FAMILIES = {
    "sdxl": Family("sdxl", "sdxl_train_network", 0.13025, "_sdxl.npz", 32, ("te1", "te2")),
    "sd15": Family("sd15", "train_network", 0.18215, "_sd.npz", 64, ("te",)),
}


@dataclass
class TinyModels:
    family: Family
    unet: object
    vae: object
    text_encoders: list
    tokenizers: list
    base_dir: str = ""
    extras: dict = field(default_factory=dict)

    # -- text -------------------------------------------------------------------------------

    def tokenize(self, captions: list[str]) -> list:
        return [tok(captions, padding="max_length", max_length=TOKEN_LENGTH, truncation=True,
                    return_tensors="pt").input_ids for tok in self.tokenizers]

    def encode_text(self, input_ids: list, clip_skip: int | None = None):
        """(context, pooled) for the U-Net; pooled is None for SD."""
        if self.family.is_sdxl:
            return self._encode_sdxl(*input_ids)
        return self._encode_sd(input_ids[0], clip_skip), None

    def _encode_sd(self, ids, clip_skip):
        encoder = self.text_encoders[0]
        if clip_skip is None:
            return encoder(ids)[0]
        out = encoder(ids, output_hidden_states=True, return_dict=True)
        inner = getattr(encoder, "text_model", encoder)  # transformers < 5 wraps the layers in text_model
        return inner.final_layer_norm(out.hidden_states[-clip_skip])

    def _encode_sdxl(self, ids1, ids2):
        import torch

        te1, te2 = self.text_encoders
        # sd-scripts takes hidden_states[11] of the 12-layer ViT-L, i.e. the penultimate layer
        hidden1 = te1(ids1, output_hidden_states=True, return_dict=True).hidden_states[-2]
        out2 = te2(ids2, output_hidden_states=True, return_dict=True)
        hidden2 = out2.hidden_states[-2]
        eos_id = self.tokenizers[1].eos_token_id
        eos_index = torch.argmax((ids2 == eos_id).int(), dim=1)  # first EOS (CLIP pooling workaround)
        pooled = out2.last_hidden_state[torch.arange(ids2.shape[0]), eos_index]
        pooled = te2.text_projection(pooled.to(te2.text_projection.weight.dtype))
        return torch.cat([hidden1, hidden2.to(hidden1.dtype)], dim=2), pooled.to(hidden1.dtype)

    # -- U-Net and VAE ------------------------------------------------------------------------

    def predict_noise(self, noisy_latents, timesteps, context, pooled=None, size_conds=None):
        """U-Net call; `size_conds` = (original_hw, crop_top_left, target_hw) per sample (SDXL)."""
        import torch

        if not self.family.is_sdxl:
            return self.unet(noisy_latents, timesteps, context).sample
        original, crop, target = size_conds
        time_ids = torch.tensor([list(o) + list(c) + list(t) for o, c, t in zip(original, crop, target)],
                                dtype=context.dtype, device=context.device)
        added = {"text_embeds": pooled, "time_ids": time_ids}
        return self.unet(noisy_latents, timesteps, context, added_cond_kwargs=added).sample

    def encode_images(self, images):
        """Raw VAE latents (unscaled) of images in [-1, 1]."""
        return self.vae.encode(images).latent_dist.sample()

    def decode_latents(self, latents):
        return self.vae.decode(latents / self.family.vae_scale_factor).sample


def load_models(args, family: Family) -> TinyModels:
    """Load the base given as --pretrained_model_name_or_path (a tiny Diffusers base folder)."""
    from kohya_runner.tiny.base import read_marker

    path = args.pretrained_model_name_or_path
    if path is None or not os.path.exists(path):
        raise ValueError(f'The provided pretrained_model_name_or_path "{path}" is neither a valid local path nor a '
                         f"valid repo id. Please check the parameter.")
    marker = read_marker(Path(path)) if os.path.isdir(path) else None
    if marker is None:
        raise ValueError(f"kohya_runner.tiny loads only tiny Diffusers bases made by kohya_runner.tiny.base "
                         f"(with kr_tiny.json): {path}")
    if marker.get("family") != family.name:
        raise RuntimeError(f"Error(s) in loading state_dict: {path} is a tiny {marker.get('family')} base, "
                           f"but {family.script}.py needs a {family.name} base")
    logger.info(f"load Diffusers pretrained models: {path}")
    return load_base(Path(path), family)


def load_base(base_dir: Path, family: Family) -> TinyModels:
    _quiet_progress_bars()
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    base_dir = Path(base_dir)
    unet = UNet2DConditionModel.from_pretrained(base_dir / "unet")
    vae = AutoencoderKL.from_pretrained(base_dir / "vae")
    encoders = [CLIPTextModel.from_pretrained(base_dir / "text_encoder")]
    tokenizers = [CLIPTokenizer.from_pretrained(base_dir / "tokenizer")]
    if family.is_sdxl:
        encoders.append(CLIPTextModelWithProjection.from_pretrained(base_dir / "text_encoder_2"))
        tokenizers.append(CLIPTokenizer.from_pretrained(base_dir / "tokenizer_2"))
    for model in [unet, vae, *encoders]:
        model.requires_grad_(False)
        model.eval()
    return TinyModels(family, unet, vae, encoders, tokenizers, str(base_dir))


def _quiet_progress_bars() -> None:
    try:
        import diffusers.utils.logging as diffusers_logging
        import transformers.utils.logging as transformers_logging

        diffusers_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()
    except Exception:  # pragma: no cover - cosmetic only
        pass
