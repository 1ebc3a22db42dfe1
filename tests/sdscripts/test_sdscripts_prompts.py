"""The sample prompts file read exactly as sd-scripts reads it at the pin (sdscripts/prompts.py).

Expected dicts were printed by the real line_to_prompt_dict (library/train_util.py at the pin)."""

from __future__ import annotations

import pytest

from kohya_runner.sdscripts.prompts import option_at_start, parse_prompt_line, read_prompt_file

# line → what the real line_to_prompt_dict returned for it
REAL = {
    "n ugly hands --w 64": {"prompt": "n ugly hands", "negative_prompt": "ugly hands", "width": 64},
    "ss ddim --w 64": {"prompt": "ss ddim", "sample_sampler": "ddim", "width": 64},
    "d 12 dogs --w 64": {"prompt": "d 12 dogs", "seed": 12, "width": 64},
    "W 512 wide --w 64": {"prompt": "W 512 wide", "width": 64},
    "l 7.5 lanterns --w 64": {"prompt": "l 7.5 lanterns", "scale": 7.5, "width": 64},
    "s 3 swans --w 64": {"prompt": "s 3 swans", "sample_steps": 3, "width": 64},
    "a cat --n  two spaces --w 64": {"prompt": "a cat", "negative_prompt": " two spaces", "width": 64},
    "l ... x --w 64": {"prompt": "l ... x", "width": 64},  # float('...') fails: logged, piece unread
    "cn x": {"prompt": "cn x", "controlnet_image": "x"},
    "fs 3 foxes": {"prompt": "fs 3 foxes", "flow_shift": "3 foxes"},
    "g 5 geese": {"prompt": "g 5 geese", "guidance_scale": 5.0},
    "h 12 hens": {"prompt": "h 12 hens", "height": 12},
    "ctr x": {"prompt": "ctr x"},
    "rcfg 1.5 r": {"prompt": "rcfg 1.5 r"},
    "S 3 --s 20": {"prompt": "S 3", "sample_steps": 20},
}


@pytest.mark.parametrize("line", REAL)
def test_parse_prompt_line_is_line_to_prompt_dict(line):
    assert parse_prompt_line(line) == REAL[line]


def test_steps_are_clamped_like_sd_scripts():
    assert parse_prompt_line("a --s 0 --d 3")["sample_steps"] == 1
    assert parse_prompt_line("a --s 5000")["sample_steps"] == 1000


@pytest.mark.parametrize("prompt, flag", [("n ugly hands", "n"), ("  ss ddim", "ss"), ("D 12 dogs", "d"), ("w 512", "w"),
                                          ("l 7.5", "l"), ("s 3 swans", "s"), ("ctr x", "ctr"), ("l ... x", "l")])
def test_option_at_start(prompt, flag):
    assert option_at_start(prompt).flag == flag


@pytest.mark.parametrize("prompt", ["a cat", "n", "n ", "nothing", "s three swans", "d dogs", "ssddim", "wide 512"])
def test_ordinary_prompts_are_not_options(prompt):
    assert option_at_start(prompt) is None


def test_read_prompt_file_like_sample_images_common():
    text = "# comment\n\n  a cat --w 64  \r\n #indented hash kept\rlast"
    assert read_prompt_file(text) == ["a cat --w 64", "#indented hash kept", "last"]
