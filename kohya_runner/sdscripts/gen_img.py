"""sd-scripts' image generator at the pin, `gen_img.py`: its command line and its prompt-file lines.

One script for SD1.x and SDXL (`--sdxl`). kr starts it once per network (checkpoint), with a prompts file
(`--from_file`) whose lines carry their own settings after ` --`:

    in the style of TOK, a man thinking --n blurry --w 1024 --h 1024 --d 1234 --s 28 --l 7.0 --am 0.75 --f NAME.png

`--d` is the seed, `--am` the network multiplier of that line (the LoRA strength), `--f` the output file
name (written into `--outdir`). gen_img splits a line on " --", so a prompt must not contain " --" (kr's
spec refuses it, as sd-scripts' trainer would misread it too). Lines whose settings differ (size, steps,
multiplier, …) never share a batch, so one process serves every strength of one checkpoint.

The tiny trainer's `python -m kohya_runner.tiny.gen_img` accepts the same arguments and lines.
"""

from __future__ import annotations

from pathlib import Path

SCRIPT = "gen_img.py"
NETWORK_MODULE = "networks.lora"
# gen_img.py's --sampler choices at the pin (the trainer's sample_sampler names, without ddpm)
SAMPLERS = ("ddim", "pndm", "lms", "euler", "euler_a", "heun", "dpm_2", "dpm_2_a", "dpmsolver", "dpmsolver++",
            "dpmsingle", "k_lms", "k_euler", "k_euler_a", "k_dpm_2", "k_dpm_2_a")


def prompt_line(text: str, *, seed: int, width: int, height: int, steps: int, cfg: float, file_name: str,
                negative: str | None = None, multiplier: float | None = None) -> str:
    """One line of the prompts file. `text` and `negative` come from a validated spec (single line, no ' --')."""
    if " --" in text or "\n" in text or (negative and (" --" in negative or "\n" in negative)):
        raise ValueError(f"a gen_img prompt line cannot hold ' --' or a line break: {text!r}")
    parts = [text]
    if negative:
        parts.append(f"n {negative}")
    parts += [f"w {width}", f"h {height}", f"d {seed}", f"s {steps}", f"l {cfg:g}"]
    if multiplier is not None:
        parts.append(f"am {multiplier:g}")
    parts.append(f"f {file_name}")
    return " --".join(parts)


def arguments(*, family: str, base: str, outdir: Path, prompts_file: Path, sampler: str,
              network: Path | None = None, v_parameterization: bool = False, clip_skip: int | None = None,
              vae: str | None = None, tokenizer_cache_dir: str | None = None, batch_size: int = 1,
              precision: str = "no") -> list[str]:
    """gen_img.py's arguments for one network (or none: the base model alone); the trainer backend puts
    its python and script in front."""
    command = ["--ckpt", base, "--outdir", str(outdir), "--from_file", str(prompts_file),
               "--sampler", sampler if sampler in SAMPLERS else "ddim", "--images_per_prompt", "1",
               "--batch_size", str(batch_size), "--sdxl" if family == "sdxl" else "--v1"]
    if precision in ("fp16", "bf16"):
        command.append(f"--{precision}")
    if v_parameterization:
        command.append("--v_parameterization")
    if clip_skip:
        command += ["--clip_skip", str(clip_skip)]
    if vae:
        command += ["--vae", vae]
    if tokenizer_cache_dir:
        command += ["--tokenizer_cache_dir", tokenizer_cache_dir]
    if network is not None:
        command += ["--network_module", NETWORK_MODULE, "--network_weights", str(network), "--network_mul", "1.0"]
    return command
