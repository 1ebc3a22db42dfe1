"""`python -m kohya_runner.tiny.gen_img …`: sd-scripts' gen_img.py for the tiny base, same arguments and lines.

The subset kr uses (kohya_runner.sdscripts.gen_img): --ckpt --outdir --from_file --sampler --sdxl/--v1
--network_module/--network_weights/--network_mul --batch_size --images_per_prompt --clip_skip
--v_parameterization, and per line --n --w --h --d --s --l --am --f. Other arguments gen_img.py knows
are accepted and ignored (precision, attention, tokenizer cache: the tiny model runs in fp32 on the CPU).

A line with seed d draws its noise as the trainer's in-training sampler does after torch.manual_seed(d),
so at multiplier 1 it repeats the trainer's sample of that prompt and checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import time

logger = logging.getLogger("kohya_runner.tiny.gen_img")

LINE_OPTIONS = [("negative", r"n (.+)", str), ("width", r"w (\d+)", int), ("height", r"h (\d+)", int),
                ("seed", r"d (\d+)", int), ("steps", r"s (\d+)", int), ("scale", r"l ([\d\.]+)", float),
                ("multiplier", r"am ([\d\.\-,]+)", lambda v: float(v.split(",")[0])), ("file", r"f (.+)", str)]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kohya_runner.tiny.gen_img")
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--outdir", default="outputs")
    parser.add_argument("--from_file")
    parser.add_argument("--prompt")
    parser.add_argument("--sampler", default="ddim")
    parser.add_argument("--sdxl", action="store_true")
    parser.add_argument("--v1", action="store_true")
    parser.add_argument("--v2", action="store_true")
    parser.add_argument("--v_parameterization", action="store_true")
    parser.add_argument("--network_module", nargs="*")
    parser.add_argument("--network_weights", nargs="*")
    parser.add_argument("--network_mul", type=float, nargs="*")
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--images_per_prompt", type=int, default=1)
    parser.add_argument("--clip_skip", type=int)
    parser.add_argument("--W", type=int, default=None)
    parser.add_argument("--H", type=int, default=None)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--scale", type=float, default=7.5)
    parser.add_argument("--seed", type=int)
    for flag in ("--fp16", "--bf16", "--xformers", "--sdpa", "--no_half_vae"):
        parser.add_argument(flag, action="store_true")
    parser.add_argument("--vae")
    parser.add_argument("--tokenizer_cache_dir")
    return parser.parse_args(argv)


def parse_line(line: str, args) -> dict:
    """A prompt line as gen_img reads it: the prompt, then ' --' separated options."""
    parts = line.strip().split(" --")
    entry = {"prompt": parts[0], "negative": "", "width": args.W or 64, "height": args.H or 64, "seed": None,
             "steps": args.steps, "scale": args.scale, "multiplier": None, "file": None}
    for part in parts[1:]:
        for key, pattern, convert in LINE_OPTIONS:
            match = re.match(pattern, part, re.IGNORECASE)
            if match:
                entry[key] = convert(match.group(1))
                break
    entry["steps"] = max(1, min(1000, entry["steps"]))
    return entry


def read_lines(args) -> list[str]:
    if args.from_file:
        with open(args.from_file, encoding="utf-8") as handle:
            return [line for line in handle.read().splitlines() if line.strip() and not line.startswith("#")]
    return [args.prompt] if args.prompt else []


def main(argv: list[str] | None = None) -> int:
    import random

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    args = parse_args(argv)
    from kohya_runner.tiny.infer import load_pipeline

    started = time.perf_counter()
    weights = (args.network_weights or [None])[0]
    default_mul = (args.network_mul or [1.0])[0]
    pipe = load_pipeline(args.ckpt, weights, default_mul)
    logger.info(f"loaded {args.ckpt}" + (f" with {weights}" if weights else "") +
                f" in {time.perf_counter() - started:.2f}s")
    os.makedirs(args.outdir, exist_ok=True)
    lines = read_lines(args)
    seed_random = random.Random(args.seed)
    for index, line in enumerate(lines):
        entry = parse_line(line, args)
        seed = entry["seed"] if entry["seed"] is not None else seed_random.randint(0, 2**32 - 1)
        if pipe.network is not None:
            pipe.network.set_multiplier(default_mul if entry["multiplier"] is None else entry["multiplier"])
        logger.info(f"prompt {index + 1}/{len(lines)}: {entry['prompt']}")
        image = _generate(pipe, entry, seed, args)
        name = entry["file"] or f"im_{time.strftime('%Y%m%d%H%M%S')}_{index:03d}_{seed}.png"
        _save(image, os.path.join(args.outdir, name))
    logger.info("done!")
    return 0


def _generate(pipe, entry: dict, seed: int, args):
    import torch

    from kohya_runner.tiny.sampling import generate_image

    generator = torch.Generator().manual_seed(seed)
    width, height = max(64, entry["width"] - entry["width"] % 8), max(64, entry["height"] - entry["height"] % 8)
    with torch.no_grad():
        return generate_image(pipe.models, entry["prompt"], entry["negative"] or None, width, height, entry["steps"],
                              entry["scale"], args.sampler, args.v_parameterization, generator=generator,
                              clip_skip=args.clip_skip)


def _save(image, path: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}.png"
    image.save(tmp)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
