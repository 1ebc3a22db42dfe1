"""kohya_runner.sdscripts.gen_img: gen_img.py's prompt lines and arguments, read back as gen_img reads them
(the tiny generator's parser is a copy of gen_img.py's at the pin)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from kohya_runner.sdscripts import gen_img
from kohya_runner.tiny.gen_img import parse_args, parse_line


def test_a_line_reads_back_as_asked():
    line = gen_img.prompt_line("in the style of TOK, a man thinking", seed=1234, width=1024, height=768, steps=28,
                               cfg=7.0, file_name="e000008_m0.75_p00_trigger_1234.png", negative="blurry, text",
                               multiplier=0.75)
    read = parse_line(line, SimpleNamespace(W=None, H=None, steps=50, scale=7.5))
    assert read == {"prompt": "in the style of TOK, a man thinking", "negative": "blurry, text", "width": 1024,
                    "height": 768, "seed": 1234, "steps": 28, "scale": 7.0, "multiplier": 0.75,
                    "file": "e000008_m0.75_p00_trigger_1234.png"}


@pytest.mark.parametrize("text", ["a cat --n dog", "a cat\n--s 1"])
def test_a_prompt_that_would_inject_options_is_refused(text):
    with pytest.raises(ValueError):
        gen_img.prompt_line(text, seed=1, width=64, height=64, steps=1, cfg=1, file_name="x.png")


def test_arguments_for_a_checkpoint_and_for_the_base():
    base = gen_img.arguments(family="sdxl", base="/m/base.safetensors", outdir="/o", prompts_file="/o/p.txt",
                             sampler="euler_a", precision="bf16")
    assert "--sdxl" in base and "--bf16" in base and "--network_weights" not in base
    lora = gen_img.arguments(family="sd15", base="/m/b.safetensors", outdir="/o", prompts_file="/o/p.txt",
                             sampler="ddpm", network="/r/out/m.safetensors", clip_skip=2)
    assert "--v1" in lora and lora[lora.index("--sampler") + 1] == "ddim"  # gen_img has no ddpm
    assert lora[lora.index("--network_module") + 1] == "networks.lora" and "--clip_skip" in lora
    parsed = parse_args(lora)  # the tiny generator accepts what kr passes to gen_img.py
    assert parsed.network_weights == ["/r/out/m.safetensors"] and parsed.from_file == "/o/p.txt"
