"""The sample prompts file (.txt, §3.8): one prompt per line, options after " --", read exactly as
sd-scripts reads it at the pin (library/train_util.py: sample_images_common's .txt branch and
line_to_prompt_dict).

sd-scripts matches its option patterns against EVERY " --" piece of a line, the first one (the prompt)
included, case-insensitively and anchored at the piece's start. So a prompt that starts like an option
("n ugly hands", "ss ddim", "s 3 swans") is also read as that option; `option_at_start` finds those.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable


@dataclass(frozen=True)
class PromptOption:
    flag: str  # as written in a prompt line, without the "--"
    key: str  # line_to_prompt_dict's key
    pattern: re.Pattern
    convert: Callable[[str], Any]
    meaning: str


def _steps(text: str) -> int:
    return max(1, min(1000, int(text)))


def _option(flag: str, value: str, key: str, convert: Callable[[str], Any], meaning: str) -> PromptOption:
    return PromptOption(flag, key, re.compile(rf"{flag} ({value})", re.IGNORECASE), convert, meaning)


# line_to_prompt_dict at the pin, in its order: the first pattern that matches a piece decides it.
PROMPT_OPTIONS = (
    _option("w", r"\d+", "width", int, "sample width"),
    _option("h", r"\d+", "height", int, "sample height"),
    _option("d", r"\d+", "seed", int, "seed"),
    _option("s", r"\d+", "sample_steps", _steps, "sampling steps"),
    _option("l", r"[\d\.]+", "scale", float, "CFG scale"),
    _option("g", r"[\d\.]+", "guidance_scale", float, "guidance scale"),
    _option("n", r".+", "negative_prompt", str, "negative prompt"),
    _option("ss", r".+", "sample_sampler", str, "sampler"),
    _option("cn", r".+", "controlnet_image", str, "ControlNet image"),
    _option("ctr", r".+", "cfg_trunc_ratio", float, "CFG truncation ratio"),
    _option("rcfg", r".+", "renorm_cfg", float, "CFG renormalisation"),
    _option("fs", r".+", "flow_shift", str, "flow shift"),
)


def sample_prompt_lines(spec, prompts: Iterable) -> list[str]:
    """One line per prompt (items with `.text` and `.seed`), with the spec's sampling options after ' --'."""
    s = spec.sampling
    width, height = spec.sample_size
    lines = []
    for prompt in prompts:
        parts = [prompt.text]
        if s.negative_prompt:
            parts.append(f"--n {s.negative_prompt}")
        parts += [f"--w {width}", f"--h {height}", f"--d {prompt.seed}", f"--s {s.steps}",
                  f"--l {_decimal(s.cfg_scale)}"]
        lines.append(" ".join(parts))
    return lines


def intended_prompt_dict(spec, prompt) -> dict[str, Any]:
    """What sd-scripts must read from `prompt`'s line: the dict line_to_prompt_dict should return."""
    s = spec.sampling
    width, height = spec.sample_size
    wanted: dict[str, Any] = {"prompt": prompt.text.lstrip()}  # sd-scripts strips the whole line
    if s.negative_prompt:
        wanted["negative_prompt"] = s.negative_prompt
    wanted.update(width=width, height=height, seed=prompt.seed, sample_steps=s.steps, scale=float(s.cfg_scale))
    return wanted


def _decimal(value: float) -> str:
    """A number the --l pattern ([\\d.]+) reads whole: no exponent (repr gives 1e-05 for tiny values)."""
    text = repr(float(value))
    if "e" in text or "E" in text:
        from decimal import Decimal

        text = format(Decimal(text), "f")
    return text.removesuffix(".0") if text.endswith(".0") else text


def read_prompt_file(text: str) -> list[str]:
    """The prompt lines of a .txt file as sample_images_common reads them: open(..., encoding="utf-8")
    .readlines() (universal newlines), each stripped, blank lines and lines whose first character is '#' skipped."""
    lines = io.TextIOWrapper(io.BytesIO(text.encode("utf-8")), encoding="utf-8").readlines()
    return [line.strip() for line in lines if len(line.strip()) > 0 and line[0] != "#"]


def parse_prompt_line(line: str) -> dict[str, Any]:
    """line_to_prompt_dict at the pin: the prompt is the first ' --' piece, and every piece, the first one
    included, is matched against the option patterns; a value that does not convert (sd-scripts logs
    "Exception in parsing") leaves that piece unread."""
    pieces = line.split(" --")
    parsed: dict[str, Any] = {"prompt": pieces[0]}
    for piece in pieces:
        for option in PROMPT_OPTIONS:
            match = option.pattern.match(piece)
            if match:
                try:
                    parsed[option.key] = option.convert(match.group(1))
                except ValueError:
                    pass
                break
    return parsed


def option_at_start(prompt: str) -> PromptOption | None:
    """The option sd-scripts would (try to) read from the start of this prompt text, or None. The line is
    stripped first, so leading spaces do not protect it."""
    first = prompt.lstrip().split(" --")[0]
    return next((option for option in PROMPT_OPTIONS if option.pattern.match(first)), None)
