"""Sample prompts and sample images, the way sd-scripts' sample_images does it.

Prompt files: `.txt` (one prompt per line, ` --` separated options `--n --w --h --d --s --l --ss`,
blank and `#` lines skipped), `.json` (strings or objects) or `.toml` (`[prompt]` + subsets).
Images go to `{output_dir}/sample/{output_name}_{e000000|000000}_{ii}_{YYYYmmddHHMMSS}[_{seed}].png`.
Generation is a small classifier-free-guidance loop over a diffusers scheduler (no pipeline
import), using the models' own text encoding and U-Net call.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time

logger = logging.getLogger(__name__)

TRAIN_TIMESTEPS = 1000
BETA_START, BETA_END, BETA_SCHEDULE = 0.00085, 0.012, "scaled_linear"


def line_to_prompt_dict(line: str) -> dict:
    parts = line.split(" --")
    prompt = {"prompt": parts[0]}
    patterns = [("w", r"w (\d+)", lambda m: ("width", int(m.group(1)))),
                ("h", r"h (\d+)", lambda m: ("height", int(m.group(1)))),
                ("d", r"d (\d+)", lambda m: ("seed", int(m.group(1)))),
                ("s", r"s (\d+)", lambda m: ("sample_steps", max(1, min(1000, int(m.group(1)))))),
                ("l", r"l ([\d\.]+)", lambda m: ("scale", float(m.group(1)))),
                ("n", r"n (.+)", lambda m: ("negative_prompt", m.group(1))),
                ("ss", r"ss (.+)", lambda m: ("sample_sampler", m.group(1))),
                ("cn", r"cn (.+)", lambda m: ("controlnet_image", m.group(1)))]
    for part in parts:
        try:
            for _, pattern, convert in patterns:
                match = re.match(pattern, part, re.IGNORECASE)
                if match:
                    key, value = convert(match)
                    prompt[key] = value
                    break
        except ValueError as exc:
            logger.error(f"Exception in parsing / 解析エラー: {part}")
            logger.error(exc)
    return prompt


def load_prompts(path: str) -> list[dict]:
    if path.endswith(".txt"):
        with open(path, "r", encoding="utf-8") as handle:
            lines = handle.readlines()
        prompts = [line.strip() for line in lines if len(line.strip()) > 0 and line[0] != "#"]
    elif path.endswith(".toml"):
        import toml

        with open(path, "r", encoding="utf-8") as handle:
            data = toml.load(handle)
        prompts = [dict(**data["prompt"], **subset) for subset in data["prompt"]["subset"]]
    elif path.endswith(".json"):
        with open(path, "r", encoding="utf-8") as handle:
            prompts = json.load(handle)
    else:
        # sd-scripts reaches the loop below with `prompts` unassigned
        raise UnboundLocalError("cannot access local variable 'prompts' where it is not associated with a value")
    result = []
    for index, entry in enumerate(prompts):
        entry = line_to_prompt_dict(entry) if isinstance(entry, str) else dict(entry)
        entry["enum"] = index
        entry.pop("subset", None)
        result.append(entry)
    return result


def make_scheduler(sampler: str, v_parameterization: bool = False):
    """sd-scripts' get_my_scheduler: sampler name -> diffusers scheduler; unknown names -> DDIM."""
    import diffusers

    names = {"ddim": "DDIMScheduler", "ddpm": "DDPMScheduler", "pndm": "PNDMScheduler",
             "lms": "LMSDiscreteScheduler", "k_lms": "LMSDiscreteScheduler",
             "euler": "EulerDiscreteScheduler", "k_euler": "EulerDiscreteScheduler",
             "euler_a": "EulerAncestralDiscreteScheduler", "k_euler_a": "EulerAncestralDiscreteScheduler",
             "dpmsolver": "DPMSolverMultistepScheduler", "dpmsolver++": "DPMSolverMultistepScheduler",
             "dpmsingle": "DPMSolverSinglestepScheduler", "heun": "HeunDiscreteScheduler",
             "dpm_2": "KDPM2DiscreteScheduler", "k_dpm_2": "KDPM2DiscreteScheduler",
             "dpm_2_a": "KDPM2AncestralDiscreteScheduler", "k_dpm_2_a": "KDPM2AncestralDiscreteScheduler"}
    kwargs = {}
    if sampler in ("dpmsolver", "dpmsolver++"):
        kwargs["algorithm_type"] = sampler
    if v_parameterization:
        kwargs["prediction_type"] = "v_prediction"
    class_name = names.get(sampler, "DDIMScheduler")
    if class_name == "LMSDiscreteScheduler" and not _has_scipy():
        logger.warning(f"sampler {sampler} needs scipy, which is not installed: using ddim / scipyがないためddimを使います")
        class_name = "DDIMScheduler"
    scheduler_class = getattr(diffusers, class_name)
    return scheduler_class(num_train_timesteps=TRAIN_TIMESTEPS, beta_start=BETA_START, beta_end=BETA_END,
                           beta_schedule=BETA_SCHEDULE, **kwargs)


def _has_scipy() -> bool:
    import importlib.util

    return importlib.util.find_spec("scipy") is not None


def should_sample(args, epoch, steps: int) -> bool:
    if steps == 0:
        return bool(args.sample_at_first)
    if args.sample_every_n_steps is None and args.sample_every_n_epochs is None:
        return False
    if args.sample_every_n_epochs is not None:
        return epoch is not None and epoch % args.sample_every_n_epochs == 0
    return steps % args.sample_every_n_steps == 0 and epoch is None


def sample_images(args, models, epoch, steps: int, autocast) -> None:
    """Called at step 0, after every optimizer step (epoch=None) and at every epoch end."""
    import torch

    if not should_sample(args, epoch, steps):
        return
    logger.info("")
    logger.info(f"generating sample images at step / サンプル画像生成 ステップ: {steps}")
    if not os.path.isfile(args.sample_prompts):
        logger.error(f"No prompt file / プロンプトファイルがありません: {args.sample_prompts}")
        return

    prompts = load_prompts(args.sample_prompts)
    save_dir = args.output_dir + "/sample"
    os.makedirs(save_dir, exist_ok=True)
    rng_state = torch.get_rng_state()  # sampling must not change the training random stream
    try:
        with torch.no_grad():
            for prompt in prompts:
                _sample_one(args, models, save_dir, prompt, epoch, steps, autocast)
    finally:
        torch.set_rng_state(rng_state)


def _sample_one(args, models, save_dir: str, entry: dict, epoch, steps: int, autocast) -> None:
    import torch

    negative = entry.get("negative_prompt")
    sample_steps = entry.get("sample_steps", 30)
    width = entry.get("width", 512)
    height = entry.get("height", 512)
    scale = entry.get("scale", 7.5)
    seed = entry.get("seed")
    prompt = entry.get("prompt", "")
    sampler = entry.get("sample_sampler", args.sample_sampler)
    if seed is not None:
        torch.manual_seed(seed)
    else:
        torch.seed()  # truly random, like sd-scripts
    height = max(64, height - height % 8)
    width = max(64, width - width % 8)
    logger.info(f"prompt: {prompt}")
    logger.info(f"negative_prompt: {negative}")
    logger.info(f"height: {height}")
    logger.info(f"width: {width}")
    logger.info(f"sample_steps: {sample_steps}")
    logger.info(f"scale: {scale}")
    logger.info(f"sample_sampler: {sampler}")
    if seed is not None:
        logger.info(f"seed: {seed}")
    with autocast():
        image = generate_image(models, prompt, negative, width, height, sample_steps, scale, sampler,
                               args.v_parameterization, clip_skip=args.clip_skip)
    stamp = time.strftime("%Y%m%d%H%M%S", time.localtime())
    number = f"e{epoch:06d}" if epoch is not None else f"{steps:06d}"
    seed_suffix = "" if seed is None else f"_{seed}"
    prefix = "" if args.output_name is None else args.output_name + "_"
    name = f"{prefix}{number}_{entry['enum']:02d}_{stamp}{seed_suffix}.png"
    save_png(image, os.path.join(save_dir, name))


def save_png(image, path: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}.png"
    image.save(tmp)
    os.replace(tmp, path)


def generate_image(models, prompt: str, negative: str | None, width: int, height: int, steps: int,
                   scale: float, sampler: str = "ddim", v_parameterization: bool = False,
                   generator=None, clip_skip: int | None = None):
    """One image (PIL) from the models as they are (with whatever LoRA is applied)."""
    import numpy as np
    import torch
    from PIL import Image

    scheduler = make_scheduler(sampler, v_parameterization)
    scheduler.set_timesteps(steps)
    context, pooled = models.encode_text(models.tokenize([prompt]), clip_skip)
    use_cfg = scale > 1.0
    if use_cfg:
        uncond, uncond_pooled = models.encode_text(models.tokenize([negative or ""]), clip_skip)
        context = torch.cat([uncond, context])
        pooled = None if pooled is None else torch.cat([uncond_pooled, pooled])
    batch = 2 if use_cfg else 1
    size_conds = ([(height, width)] * batch, [(0, 0)] * batch, [(height, width)] * batch)
    dtype = next(models.unet.parameters()).dtype
    latents = torch.randn((1, 4, height // 8, width // 8), generator=generator, dtype=torch.float32)
    latents = latents * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_in = torch.cat([latents] * batch)
        model_in = scheduler.scale_model_input(model_in, t)
        noise = models.predict_noise(model_in.to(dtype), t, context.to(dtype),
                                     None if pooled is None else pooled.to(dtype), size_conds).float()
        if use_cfg:
            noise_uncond, noise_cond = noise.chunk(2)
            noise = noise_uncond + scale * (noise_cond - noise_uncond)
        latents = scheduler.step(noise, t, latents, generator=generator).prev_sample \
            if _accepts_generator(scheduler) else scheduler.step(noise, t, latents).prev_sample
    vae_dtype = next(models.vae.parameters()).dtype
    decoded = models.decode_latents(latents.to(vae_dtype)).float()
    pixels = ((decoded[0].clamp(-1, 1) + 1) / 2 * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(np.ascontiguousarray(pixels))


def _accepts_generator(scheduler) -> bool:
    import inspect

    return "generator" in inspect.signature(scheduler.step).parameters
