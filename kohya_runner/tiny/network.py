"""The LoRA network of the tiny trainer: peft adapters placed where kohya's `networks.lora` puts
its modules, saved and loaded in kohya's key layout.

Targets follow networks.lora (LoRA-LierLa): every Linear and 1x1 Conv2d inside the U-Net's
`Transformer2DModel` blocks, and the Linear layers of the text encoders' `CLIPAttention` and
`CLIPMLP`. peft's default init is kohya's (down: kaiming-uniform a=sqrt(5), up: zeros) and its
scale is alpha / rank. Saved keys are `<lora_name>.lora_down.weight`, `.lora_up.weight` and
`.alpha`, with `lora_unet` / `lora_te1` / `lora_te2` / `lora_te` names from kohya_runner.lorafile.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from kohya_runner import lorafile

logger = logging.getLogger(__name__)

UNET_TARGET_CLASSES = ("Transformer2DModel",)
TE_TARGET_CLASSES = ("CLIPAttention", "CLIPMLP")
ADAPTER = "default"


def target_module_paths(root, container_classes) -> list[str]:
    """Linear / 1x1 Conv2d modules inside the given container classes, in model order."""
    paths: list[str] = []
    for name, module in root.named_modules():
        if type(module).__name__ not in container_classes:
            continue
        for child_name, child in module.named_modules():
            kind = type(child).__name__
            if kind == "Linear" or (kind == "Conv2d" and tuple(child.kernel_size) == (1, 1)):
                path = f"{name}.{child_name}" if name else child_name
                if path not in paths:
                    paths.append(path)
    return paths


def lora_name_of(part_name: str, path: str, family: str) -> str:
    """kohya name of a module. transformers >= 5 dropped CLIPTextModel's `text_model` wrapper; kohya
    (and sd-scripts' transformers 4.x) name text-encoder modules `text_model.encoder.layers...`."""
    if part_name != "unet" and not path.startswith("text_model."):
        path = "text_model." + path
    return lorafile.kohya_lora_name(path, part_name, family)


@dataclass
class Part:
    name: str  # "unet", "te", "te1", "te2"
    model: object
    paths: list[str]
    ranks: dict[str, int]
    alphas: dict[str, float]


class LoRANetwork:
    """LoRA adapters on the tiny models, with kohya's naming, groups and file format."""

    def __init__(self, models, dim: int | None, alpha, train_unet: bool = True, train_text_encoder: bool = True,
                 modules_dim: dict | None = None, modules_alpha: dict | None = None, verbose: bool = True):
        self.family = models.family
        self.dim = 4 if dim is None else dim
        self.alpha = 1.0 if alpha is None else alpha
        self.parts: list[Part] = []
        from_weights = modules_dim is not None
        if verbose and not from_weights:
            logger.info(f"create LoRA network. base dim (rank): {self.dim}, alpha: {self.alpha}")
            logger.info("neuron dropout: p=None, rank dropout: p=None, module dropout: p=None")
        elif verbose:
            logger.info("create LoRA network from weights")

        te_parts = []
        for index, (part_name, encoder) in enumerate(zip(models.family.te_parts, models.text_encoders)):
            if verbose:
                label = f" {index + 1}" if len(models.text_encoders) > 1 else ""
                logger.info(f"create LoRA for Text Encoder{label}:")
            te_parts.append(self._part(part_name, encoder, TE_TARGET_CLASSES, modules_dim, modules_alpha))
        te_count = sum(len(p.paths) for p in te_parts)
        unet_part = self._part("unet", models.unet, UNET_TARGET_CLASSES, modules_dim, modules_alpha)
        if verbose:
            logger.info(f"create LoRA for Text Encoder: {te_count} modules.")
            logger.info(f"create LoRA for U-Net: {len(unet_part.paths)} modules.")

        # like networks.lora.apply_to: parts that are not trained get no modules at all
        if train_text_encoder:
            if verbose:
                logger.info(f"enable LoRA for text encoder: {te_count} modules")
            self.parts.extend(p for p in te_parts if p.paths)
        if train_unet:
            if verbose:
                logger.info(f"enable LoRA for U-Net: {len(unet_part.paths)} modules")
            if unet_part.paths:
                self.parts.append(unet_part)
        for part in self.parts:
            self._inject(part)

    def _part(self, name, model, classes, modules_dim, modules_alpha) -> Part:
        paths = target_module_paths(model, classes)
        ranks, alphas = {}, {}
        kept = []
        for path in paths:
            lora_name = lora_name_of(name, path, self.family.name)
            if modules_dim is not None:
                if lora_name not in modules_dim:
                    continue
                rank, alpha = modules_dim[lora_name], modules_alpha[lora_name]
            else:
                rank, alpha = self.dim, self.alpha
            if not rank:
                continue
            ranks[path] = rank
            alphas[path] = rank if alpha is None or alpha == 0 else alpha
            kept.append(path)
        return Part(name, model, kept, ranks, alphas)

    def _inject(self, part: Part) -> None:
        import re

        from peft import LoraConfig, inject_adapter_in_model

        first = part.paths[0]
        config = LoraConfig(
            r=part.ranks[first], lora_alpha=float(part.alphas[first]), target_modules=list(part.paths),
            rank_pattern={re.escape(p): r for p, r in part.ranks.items()},
            alpha_pattern={re.escape(p): float(a) for p, a in part.alphas.items()},
            init_lora_weights=True, lora_dropout=0.0, bias="none")
        inject_adapter_in_model(config, part.model, adapter_name=ADAPTER)

    # -- training helpers ----------------------------------------------------------------------

    def layers(self):
        for part in self.parts:
            for path in part.paths:
                yield part, path, part.model.get_submodule(path)

    def parameters(self):
        for _, _, layer in self.layers():
            yield layer.lora_A[ADAPTER].weight
            yield layer.lora_B[ADAPTER].weight

    def prepare_optimizer_params(self, text_encoder_lr, unet_lr, default_lr):
        """kohya's parameter groups: text encoders (one group), then the U-Net; a group whose
        learning rate is 0 or None is dropped ("NO LR skipping!")."""
        groups, descriptions = [], []
        for label, part_names, lr in (("textencoder", ("te", "te1", "te2"), text_encoder_lr),
                                      ("unet", ("unet",), unet_lr)):
            params = [p for part, _, layer in self.layers() if part.name in part_names
                      for p in (layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight)]
            if not params:
                continue
            lr = default_lr if lr is None else lr
            if lr == 0 or lr is None:
                logger.info("NO LR skipping!")
                continue
            for param in params:
                param.requires_grad_(True)
            groups.append({"params": params, "lr": lr})
            descriptions.append(label)
        return groups, descriptions

    def set_multiplier(self, multiplier: float) -> None:
        for _, _, layer in self.layers():
            layer.set_scale(ADAPTER, multiplier)

    def to(self, dtype) -> None:
        for param in self.parameters():
            param.data = param.data.to(dtype)

    # -- kohya state dict ----------------------------------------------------------------------

    def kohya_state_dict(self, dtype=None) -> dict:
        import torch

        state = {}
        for part, path, layer in self.layers():
            name = lora_name_of(part.name, path, self.family.name)
            state[name + lorafile.DOWN_SUFFIX] = layer.lora_A[ADAPTER].weight.detach().clone()
            state[name + lorafile.UP_SUFFIX] = layer.lora_B[ADAPTER].weight.detach().clone()
            # kohya keeps alpha as given: an int alpha (the argparse default 1) is an int64 buffer
            state[name + lorafile.ALPHA_SUFFIX] = torch.tensor(part.alphas[path])
        if dtype is not None:
            state = {k: v.to("cpu").to(dtype) for k, v in state.items()}
        return {k: v.contiguous() for k, v in state.items()}

    def load_kohya_state_dict(self, state: dict) -> "LoadInfo":
        """Copy matching kohya tensors into the adapters (non-strict, shapes must match)."""
        import torch

        own = {}
        for part, path, layer in self.layers():
            name = lora_name_of(part.name, path, self.family.name)
            own[name + lorafile.DOWN_SUFFIX] = layer.lora_A[ADAPTER].weight
            own[name + lorafile.UP_SUFFIX] = layer.lora_B[ADAPTER].weight
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own and not k.endswith(lorafile.ALPHA_SUFFIX)]
        with torch.no_grad():
            for key, param in own.items():
                if key in state:
                    value = state[key]
                    if tuple(value.shape) != tuple(param.shape):
                        raise RuntimeError(f"Error(s) in loading state_dict: size mismatch for {key}: copying a param "
                                           f"with shape {tuple(value.shape)}, the shape in current model is "
                                           f"{tuple(param.shape)}.")
                    param.copy_(value.to(param.dtype))
        return LoadInfo(missing, unexpected)

    def save_weights(self, file: str, dtype, metadata: dict | None) -> None:
        """Write the LoRA like networks.lora save_weights, plus sshs hashes; atomically."""
        import torch

        if metadata is not None and len(metadata) == 0:
            metadata = None
        state = self.kohya_state_dict(dtype)
        tmp = f"{file}.tmp-{os.getpid()}"
        try:
            if os.path.splitext(file)[1] == ".safetensors":
                from safetensors.torch import save, save_file

                metadata = {} if metadata is None else metadata
                ss_only = {k: v for k, v in metadata.items() if k.startswith("ss_")}
                model_hash, legacy_hash = lorafile.hashes_from_serialized(save(state, ss_only))
                metadata["sshs_model_hash"] = model_hash
                metadata["sshs_legacy_hash"] = legacy_hash
                save_file(state, tmp, metadata)
            else:
                torch.save(state, tmp)  # ckpt / pt: a pickle without metadata, like sd-scripts
            os.replace(tmp, file)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)


@dataclass
class LoadInfo:
    missing_keys: list
    unexpected_keys: list

    def __str__(self) -> str:
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return f"_IncompatibleKeys(missing_keys={self.missing_keys}, unexpected_keys={self.unexpected_keys})"


def read_kohya_file(path: str) -> dict:
    """A kohya LoRA file's tensors (safetensors, or a ckpt/pt pickle)."""
    if os.path.splitext(path)[1] == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    import torch

    return torch.load(path, map_location="cpu")


def dims_and_alphas(state: dict) -> tuple[dict, dict]:
    """lora_name -> rank and lora_name -> alpha of a kohya state dict (alpha defaults to rank)."""
    dims, alphas = {}, {}
    for key, value in state.items():
        try:
            name, kind = lorafile.split_lora_key(key)
        except ValueError:
            continue
        if kind == "down":
            dims[name] = int(value.shape[0])
        elif kind == "alpha":
            alphas[name] = float(value.float().item())
    for name in dims:
        alphas.setdefault(name, dims[name])
    return dims, alphas
