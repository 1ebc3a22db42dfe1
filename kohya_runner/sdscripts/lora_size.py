"""The size of one LoRA file from networks.lora (contract §4.2; checked against measured files in §11)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import BadInput
from .architectures import FAMILIES, text_encoder_lora_layers, unet_lora_layers


@dataclass(frozen=True)
class LoraSize:
    modules: int
    tensors: int
    parameters: int
    bytes: int  # estimate: tensor data exactly, safetensors header approximated

    def to_dict(self) -> dict:
        return {"modules": self.modules, "tensors": self.tensors, "parameters": self.parameters, "bytes": self.bytes}


PRECISION_BYTES = {"fp16": 2, "bf16": 2, "float": 4, "fp32": 4, None: 4}
HEADER_BYTES_PER_TENSOR = 150  # '"lora_unet_..._to_k.lora_down.weight":{"dtype":"F16","shape":[..],"data_offsets":[..]}'
HEADER_METADATA_BYTES = 8192  # ss_* / modelspec keys; more with tag frequencies


def lora_file_size(family: str, network_dim: int | None = 4, *, unet_only: bool = False, save_precision: str | None = "fp16") -> LoraSize:
    """Size of one LoRA file from networks.lora (default LierLa targets, no conv_dim). Raises BadInput
    for an unknown family."""
    if family not in FAMILIES:
        raise BadInput(f"unknown model family {family!r}: use one of {', '.join(FAMILIES)}")
    rank = network_dim or 4
    layers = unet_lora_layers(family) + ([] if unet_only else text_encoder_lora_layers(family))
    parameters = sum(rank * (fan_in + fan_out) for fan_in, fan_out in layers)  # lora_down + lora_up
    tensors = 3 * len(layers)  # lora_down, lora_up, alpha
    element = PRECISION_BYTES.get(save_precision, 4)
    data = (parameters + len(layers)) * element  # alphas are saved in the same dtype
    return LoraSize(len(layers), tensors, parameters, data + tensors * HEADER_BYTES_PER_TENSOR + HEADER_METADATA_BYTES)

