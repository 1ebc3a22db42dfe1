"""The sample prompts file (.txt, §3.8): one prompt per line, options after " --"."""

from __future__ import annotations

import re
from typing import Iterable


def sample_prompt_lines(spec, prompts: Iterable) -> list[str]:
    """One line per prompt (items with `.text` and `.seed`), with the spec's sampling options after ' --'."""
    s = spec.sampling
    width, height = spec.sample_size
    lines = []
    for prompt in prompts:
        parts = [prompt.text]
        if s.negative_prompt:
            parts.append(f"--n {s.negative_prompt}")
        parts += [f"--w {width}", f"--h {height}", f"--d {prompt.seed}", f"--s {s.steps}", f"--l {s.cfg_scale:g}"]
        lines.append(" ".join(parts))
    return lines


_PROMPT_OPTION = re.compile(r"^([a-zA-Z]+) (.*)$")


def parse_prompt_line(line: str) -> dict[str, str]:
    """How sd-scripts reads one .txt prompt line: cut at every ' --' (§3.8). Used to check renders."""
    pieces = line.split(" --")
    parsed = {"prompt": pieces[0].strip()}
    for piece in pieces[1:]:
        match = _PROMPT_OPTION.match(piece.strip())
        if match:
            parsed[match.group(1).lower()] = match.group(2).strip()
    return parsed
