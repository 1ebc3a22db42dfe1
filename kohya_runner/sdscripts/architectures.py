"""The Stable Diffusion architectures sd-scripts trains, as it hard-codes them (library/model_util.py,
sdxl_model_util.py, sdxl_original_unet.py): model configs written as diffusers / transformers
constructor arguments, native resolutions, and the layers networks.lora adapts (derived from the
same configs, so the random bases and the LoRA size estimate cannot disagree)."""

from __future__ import annotations

from typing import Any, Mapping

FAMILIES = ("sdxl", "sd15")  # the families kr trains (one sd-scripts script each)
FAMILY_RESOLUTION = {"sd15": 512, "sdxl": 1024}

SD15_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    "cross_attention_dim": 768, "attention_head_dim": 8,
}
SDXL_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 128, "in_channels": 4, "out_channels": 4, "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    # The first depth is unused: level 0 has no attention (SAI's transformer_depth [0, 2, 10]).
    "transformer_layers_per_block": (1, 2, 10), "attention_head_dim": (5, 10, 20),
    "cross_attention_dim": 2048, "use_linear_projection": True,
    "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
    "projection_class_embeddings_input_dim": 2816,
}
VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3, "out_channels": 3, "latent_channels": 4, "layers_per_block": 2,
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
}
CLIP_L_CONFIG: dict[str, Any] = {
    "vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
    "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu",
    "projection_dim": 768,
}
OPENCLIP_BIGG_CONFIG: dict[str, Any] = {
    "vocab_size": 49408, "hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32,
    "num_attention_heads": 20, "max_position_embeddings": 77, "hidden_act": "gelu",
    "projection_dim": 1280,
}

UNET_CONFIGS = {"sd15": SD15_UNET_CONFIG, "sdxl": SDXL_UNET_CONFIG}
# The width of the text conditioning tells the families apart (SD 2.x: OpenCLIP ViT-H, 1024).
CROSS_ATTENTION_DIM = {"sdxl": SDXL_UNET_CONFIG["cross_attention_dim"], "sd2": 1024,
                       "sd15": SD15_UNET_CONFIG["cross_attention_dim"]}
TEXT_ENCODER_CONFIGS = {"sd15": (CLIP_L_CONFIG,), "sdxl": (CLIP_L_CONFIG, OPENCLIP_BIGG_CONFIG)}


def _transformer_block_layers(channels: int, context_dim: int) -> list[tuple[int, int]]:
    c = channels
    return (
        [(c, c)] * 4  # attn1 to_q, to_k, to_v, to_out.0
        + [(c, c), (context_dim, c), (context_dim, c), (c, c)]  # attn2: q from the image, k/v from the text
        + [(c, 8 * c), (4 * c, c)]  # ff.net.0.proj (GEGLU, 2 x 4C) and ff.net.2
    )


def _attention_models(config: Mapping[str, Any]) -> list[tuple[int, int]]:
    """(channels, transformer depth) of every Transformer2DModel: down blocks hold layers_per_block,
    up blocks one more, and the mid block one at the deepest level."""
    channels = config["block_out_channels"]
    depths = config.get("transformer_layers_per_block") or (1,) * len(channels)
    per_down, per_up = config["layers_per_block"], config["layers_per_block"] + 1
    models: list[tuple[int, int]] = []
    for level, kind in enumerate(config["down_block_types"]):
        if kind.startswith("CrossAttn"):
            models += [(channels[level], depths[level])] * per_down
    models.append((channels[-1], depths[-1]))  # UNetMidBlock2DCrossAttn
    for j, kind in enumerate(config["up_block_types"]):
        level = len(channels) - 1 - j
        if kind.startswith("CrossAttn"):
            models += [(channels[level], depths[level])] * per_up
    return models


def unet_lora_layers(family: str) -> list[tuple[int, int]]:
    """(in_features, out_features) of every U-Net layer networks.lora adapts (default LierLa targets).
    proj_in/proj_out are C -> C (1x1 convs in SD1.5, linears in SDXL: same parameter count for LoRA)."""
    config = UNET_CONFIGS[family]
    context = config["cross_attention_dim"]
    layers: list[tuple[int, int]] = []
    for channels, depth in _attention_models(config):
        layers += [(channels, channels)] * 2 + _transformer_block_layers(channels, context) * depth
    return layers


def _clip_layers(config: Mapping[str, Any]) -> list[tuple[int, int]]:
    hidden, mlp = config["hidden_size"], config["intermediate_size"]
    return ([(hidden, hidden)] * 4 + [(hidden, mlp), (mlp, hidden)]) * config["num_hidden_layers"]  # q, k, v, out_proj, fc1, fc2


def text_encoder_lora_layers(family: str) -> list[tuple[int, int]]:
    """The adapted layers of the text encoder(s): CLIP-L, plus OpenCLIP bigG for SDXL."""
    return [layer for config in TEXT_ENCODER_CONFIGS[family] for layer in _clip_layers(config)]
