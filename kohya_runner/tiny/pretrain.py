"""Pretrain the tiny base on the procedural world (`world.py`), so that it draws what it is asked.

    python -m kohya_runner.tiny.pretrain --out DIR           # all stages, seed 0: ~45 min on 2 cores
    python -m kohya_runner.tiny.pretrain --stage sdxl --out DIR --vae DIR/vae-stage.safetensors

Stages: `vae` (one VAE for both families), then `sdxl` and `sd15` (text encoder(s) + U-Net each).
The VAE learns to reconstruct the world plain and in the three looks of `styles.py` (a codec that
cannot draw hatching or halftone would hide any style). The U-Nets learn mostly the plain world
from captions naming the objects, plus the looks under plain descriptions ("ink outlines and
hatching on paper, a red circle"), never under the trigger: like a real base, the tiny base has
the drawing features a style LoRA steers, and draws plainly for words it was not taught ("in the
style of TOK"). Models are built with `base.py`'s own constructors, so the weights fit the
Diffusers folders and kohya names exactly.

A family stage writes `tiny-<family>.safetensors` (fp16, keys prefixed `unet.`, `vae.`,
`text_encoder.`, `text_encoder_2.`) and records its sha256, seed, steps, thread count and torch
version in `manifest.json` in DIR; `base.py` loads from the package's `weights/` folder and checks
that hash. Fixed step counts and seeded generators: the same seed, thread count and torch build
give the same weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import time
from pathlib import Path

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
MANIFEST = "manifest.json"
CAPTION_PREFIXES = ("", "", "", "a drawing of ", "a picture of ", "in the style of flat, ",
                    "in the style of plain colours, ", "simple shapes, ")
CAPTION_DROPOUT = 0.1  # empty captions teach the unconditional branch classifier-free guidance needs
# The base learns the looks' drawing features under plain descriptions (never the trigger), as a real
# base knows outlines, halftone and pastel: a style LoRA then steers what the base can draw.
LOOK_WORDS = {"marker": "ink outlines and hatching on paper", "zine": "black and white photocopy, halftone",
              "editorial-cartoon": "pastel cartoon, drop shadow"}
LETTERS = "abcdefghijklmnopqrstuvwxyz"
STYLED_SHARE = 0.35


def log(message: str) -> None:
    print(time.strftime("%H:%M:%S"), message, flush=True)


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------

def render_pool(count: int, seed: int, styled_share: float, size: int):
    """(uint8 images N x 3 x size x size, captions) of random scenes; a share drawn in the styles."""
    import numpy as np
    import torch

    from .styles import STYLES, render_style
    from .world import render_plain, sample_scene

    rng = random.Random(seed)
    images, captions = [], []
    for index in range(count):
        scene = sample_scene(rng)
        if rng.random() < styled_share:
            style = rng.choice(STYLES)
            image = render_style(scene, style, size, seed * 7_919 + index)
            caption = f"{LOOK_WORDS[style]}, {scene.caption()}"
        else:
            image = render_plain(scene, size)
            caption = scene.caption()
        images.append(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))
        captions.append(caption)
    return torch.from_numpy(np.stack(images)), captions


def to_unit(images):
    return images.float() / 127.5 - 1.0


# ---------------------------------------------------------------------------------------------
# VAE stage
# ---------------------------------------------------------------------------------------------

def train_vae(out: Path, seed: int, steps: int, batch: int) -> Path:
    import torch

    from .base import _vae

    torch.manual_seed(seed)
    vae = _vae("sdxl")
    log(f"vae: {sum(p.numel() for p in vae.parameters())} parameters; rendering the image pool")
    images, _ = render_pool(3072, seed, styled_share=0.5, size=vae.config.sample_size)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=2e-3, weight_decay=0.0)
    schedule = _warmup_cosine(optimizer, steps)
    generator = torch.Generator().manual_seed(seed)
    vae.train()
    for step in range(steps):
        pick = torch.randint(0, len(images), (batch,), generator=generator)
        x = to_unit(images[pick])
        if step % 2:
            x = x.flip(3)
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator)).sample
        loss = (recon - x).pow(2).mean() + 0.5 * (recon - x).abs().mean() + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0:
            log(f"vae step {step} loss {loss.item():.4f}")
    return _save_vae(vae, images, out, seed, steps)


def _save_vae(vae, images, out: Path, seed: int, steps: int) -> Path:
    import torch

    vae.eval()
    with torch.no_grad():
        means = torch.cat([vae.encode(to_unit(images[i:i + 256])).latent_dist.mean for i in range(0, 1024, 256)])
    vae.train()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "vae-stage.safetensors"
    state = {k: v.detach().contiguous() for k, v in vae.state_dict().items()}
    _save_with_facts(state, path, {"latent_std": f"{means.std().item():.6f}", "steps": steps, "seed": seed})
    log(f"vae: saved {path} after {steps} steps (latent std {means.std().item():.4f})")
    return path


def load_family_vae(vae_path: Path, family: str):
    """The stage VAE with its latent rescaled so that latents x scaling_factor have unit spread."""
    import torch
    from safetensors.torch import load_file

    from .base import _vae

    vae = _vae(family)
    vae.load_state_dict(load_file(str(vae_path)))
    latent_std = float(_facts(vae_path)["latent_std"])
    k = 1.0 / (vae.config.scaling_factor * latent_std)
    channels = vae.config.latent_channels
    with torch.no_grad():  # fold the factor into the 1x1 convs around the latent: same images, new scale
        vae.quant_conv.weight[:channels] *= k
        vae.quant_conv.bias[:channels] *= k
        vae.quant_conv.bias[channels:] += 2 * math.log(k)
        vae.post_quant_conv.weight /= k
    return vae


# ---------------------------------------------------------------------------------------------
# family stage: text encoder(s) + U-Net on the plain world
# ---------------------------------------------------------------------------------------------

def train_family(family: str, vae_path: Path, out: Path, seed: int, steps: int, batch: int, pool: int,
                 styled_share: float = STYLED_SHARE, init: Path | None = None) -> Path:
    import torch

    from .base import _text_encoder, _unet
    from .models import FAMILIES, TinyModels

    torch.manual_seed(seed)
    vae = load_family_vae(vae_path, family)
    vae.requires_grad_(False)
    vae.eval()
    encoders = [_text_encoder(family, 1)] + ([_text_encoder(family, 2)] if family == "sdxl" else [])
    unet = _unet(family)
    models = TinyModels(FAMILIES[family], unet, vae, encoders, _tokenizers(family, out))
    if init is not None:  # development: go on from earlier weights
        from .base import _load_part, load_weights_file
        state = load_weights_file(init)
        for name, module in (("unet", unet), ("text_encoder", encoders[0]), ("text_encoder_2", encoders[-1])):
            if name != "text_encoder_2" or family == "sdxl":
                _load_part(module, state, name + ".")
    log(f"{family}: rendering and encoding {pool} scenes ({styled_share:.0%} in the looks)")
    images, captions = render_pool(pool, seed + 17, styled_share=styled_share, size=vae.config.sample_size)
    with torch.no_grad():
        dists = [vae.encode(to_unit(images[i:i + 256])).latent_dist for i in range(0, len(images), 256)]
    scale = vae.config.scaling_factor
    means = torch.cat([d.mean for d in dists]) * scale
    stds = torch.cat([d.std for d in dists]) * scale
    log(f"{family}: scaled latent std {means.std().item():.3f}")

    params = list(unet.parameters()) + [p for encoder in encoders for p in encoder.parameters()]
    for module in [unet, *encoders]:
        module.train()
    optimizer = torch.optim.AdamW(params, lr=2e-3, weight_decay=0.01)
    schedule = _warmup_cosine(optimizer, steps)
    alphas_cumprod = _alphas_cumprod()
    generator = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    size = vae.config.sample_size
    size_conds = ([(size, size)] * batch, [(0, 0)] * batch, [(size, size)] * batch)
    for step in range(steps):
        pick = torch.randint(0, len(means), (batch,), generator=generator)
        latents = means[pick] + stds[pick] * torch.randn(means[pick].shape, generator=generator)
        texts = [_augment(captions[i], rng) for i in pick.tolist()]
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, 1000, (batch,), generator=generator)
        a = alphas_cumprod[timesteps].view(-1, 1, 1, 1)
        noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
        context, pooled = models.encode_text(models.tokenize(texts))
        predicted = models.predict_noise(noisy, timesteps, context, pooled, size_conds)
        snr = a.flatten() / (1 - a.flatten())
        weight = torch.clamp(snr, max=5.0) / snr  # min-SNR: do not let the easy, low-noise steps dominate
        loss = ((predicted - noise).pow(2).mean(dim=(1, 2, 3)) * weight).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        if step % 100 == 0:
            log(f"{family} step {step} loss {loss.item():.4f} lr {schedule.get_last_lr()[0]:.2e}")
    return save_family(models, family, out, seed, steps, vae_path)


def _augment(caption: str, rng: random.Random) -> str:
    """Dropout, a neutral prefix or, for plain scenes, an unknown style word: words the base was not
    taught (a LoRA's trigger among them) leave the plain look unchanged."""
    if rng.random() < CAPTION_DROPOUT:
        return ""
    if rng.random() < 0.25 and not caption.startswith(tuple(LOOK_WORDS.values())):
        word = "".join(rng.choice(LETTERS) for _ in range(rng.randint(2, 6)))
        return f"in the style of {word}, {caption}"
    return rng.choice(CAPTION_PREFIXES) + caption


def _tokenizers(family: str, out: Path) -> list:
    import tempfile

    from transformers import CLIPTokenizer

    from .base import _save_tokenizers

    folder = Path(tempfile.mkdtemp(prefix=".tokenizers.", dir=out))
    _save_tokenizers(folder, family)
    names = ["tokenizer", "tokenizer_2"] if family == "sdxl" else ["tokenizer"]
    return [CLIPTokenizer.from_pretrained(folder / name) for name in names]


def _alphas_cumprod():
    import torch

    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2  # scaled_linear
    return torch.cumprod(1 - betas, 0).float()


def _warmup_cosine(optimizer, steps: int, warmup: int = 50):
    """Warm-up, then cosine decay to 10 % of the learning rate."""
    import torch

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def save_family(models, family: str, out: Path, seed: int, steps: int, vae_path: Path) -> Path:
    """Write the family's fp16 weights file and record its sha256 in the manifest."""
    import torch

    parts = {"unet": models.unet, "vae": models.vae, "text_encoder": models.text_encoders[0]}
    if family == "sdxl":
        parts["text_encoder_2"] = models.text_encoders[1]
    state = {f"{name}.{key}": value.detach().to(torch.float16).contiguous()
             for name, module in parts.items() for key, value in module.state_dict().items()
             if value.is_floating_point()}
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"tiny-{family}.safetensors"
    tmp = path.with_suffix(".tmp")
    _save_with_facts(state, tmp, {"family": family, "seed": seed, "steps": steps})
    tmp.replace(path)
    record_in_manifest(out, family, path, {"seed": seed, "steps": steps, "vae_steps": _vae_steps(vae_path),
                                             "threads": torch.get_num_threads(), "torch": torch.__version__})
    log(f"{family}: saved {path} after {steps} steps")
    return path


def _vae_steps(vae_path: Path) -> int:
    return int(_facts(vae_path)["steps"])


FACTS_KEY = "kr_pretrain"


def _save_with_facts(state: dict, path: Path, facts: dict) -> None:
    """safetensors' header keeps metadata keys in hash order: one key with sorted JSON keeps the
    file's bytes (and so its sha256) the same for the same weights."""
    from safetensors.torch import save_file

    save_file(state, str(path), metadata={FACTS_KEY: json.dumps(facts, sort_keys=True)})


def _facts(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        return json.loads(handle.metadata()[FACTS_KEY])


def record_in_manifest(out: Path, family: str, path: Path, extra: dict) -> None:
    manifest_path = out / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = {}
    manifest[family] = {"file": path.name, "sha256": sha256_of(path), **extra}
    manifest_path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


STAGES = ("vae", "sdxl", "sd15")
DEFAULT_STEPS = {"vae": 3500, "sdxl": 5000, "sd15": 5000}
DEFAULT_BATCH = {"vae": 16, "sdxl": 32, "sd15": 32}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kohya_runner.tiny.pretrain", description=__doc__.split("\n")[0])
    parser.add_argument("--stage", default="all", choices=("all",) + STAGES,
                        help="all: the VAE, then the SDXL-shaped and the SD1.5-shaped family (default)")
    parser.add_argument("--out", type=Path, default=WEIGHTS_DIR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help=f"optimizer steps per stage (default {DEFAULT_STEPS})")
    parser.add_argument("--batch", type=int, default=None, help=f"batch size (default {DEFAULT_BATCH})")
    parser.add_argument("--pool", type=int, default=16384, help="scenes the U-Net sees")
    parser.add_argument("--styled-share", type=float, default=STYLED_SHARE, help="share of the U-Net's scenes in the looks")
    parser.add_argument("--vae", type=Path, default=None, help="the vae stage's file (default OUT/vae-stage.safetensors)")
    parser.add_argument("--init", type=Path, default=None, help="development: start a family from these weights")
    parser.add_argument("--threads", type=int, default=2, help="torch threads; results are reproducible for a "
                                                                "seed, thread count and torch build")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    stages = STAGES if args.stage == "all" else (args.stage,)
    vae_path = args.vae or args.out / "vae-stage.safetensors"
    for stage in stages:
        started = time.time()
        steps, batch = args.steps or DEFAULT_STEPS[stage], args.batch or DEFAULT_BATCH[stage]
        if stage == "vae":
            vae_path = train_vae(args.out, args.seed, steps, batch)
        else:
            train_family(stage, vae_path, args.out, args.seed, steps, batch, args.pool, args.styled_share, args.init)
        log(f"{stage}: {steps} steps in {time.time() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
