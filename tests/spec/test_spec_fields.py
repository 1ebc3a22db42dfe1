"""Every spec field is described, names the sd-scripts option it maps to, and takes its choices from the
pinned manifest where sd-scripts declares them (spec/model.py, spec/choices.py)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

import pytest

from kohya_runner.sdscripts import dataset_config, options, training_args
from kohya_runner.spec import SamplingSpec, SpecError, build_spec, describe, leaf_paths
from kohya_runner.spec.choices import LOSS_TYPES, MIXED_PRECISIONS, SAMPLERS, SAVE_PRECISIONS, TOKEN_LENGTHS


@pytest.mark.parametrize("path", leaf_paths(), ids=".".join)
def test_every_leaf_has_a_one_line_description(path):
    text = describe(path)
    assert text.strip() and "\n" not in text and len(text) <= 200, (path, text)


def _paths() -> training_args.RenderPaths:
    p = Path("/tmp/run")
    return training_args.RenderPaths(p / "config.toml", p / "dataset.toml", p / "prompts.txt", p / "output", p / "logs",
                                p / "tok", p / "images", "base.safetensors", "run", vae="vae.safetensors",
                                network_weights="w.safetensors", run_id="r-1", resume="state")


def test_descriptions_name_the_option_each_field_maps_to():
    spec = build_spec({"sampling": {"prompts": ["a cat"]}})
    owned = training_args.training_args(spec, _paths()).owned  # sd-scripts option → the spec field that sets it
    checked = 0
    for option, source in owned.items():
        if source.count(".") != 1 or option in ("sdpa", "xformers", "mem_eff_attn", "sample_prompts", "no_metadata",
                                                "console_log_simple"):
            continue  # set by kr itself, or one field → several flags (the description says so in words)
        assert f"({option})" in describe(tuple(source.split("."))), (source, option)
        checked += 1
    assert checked >= 50


def test_dataset_descriptions_name_dataset_toml_keys():
    for key in ("num_repeats", "caption_extension", "shuffle_caption", "keep_tokens", "caption_dropout_rate",
                "min_bucket_reso", "bucket_no_upscale", "flip_aug", "batch_size"):
        assert any(f"({key})" in describe(p) for p in leaf_paths() if p[0] == "dataset"), key


def test_named_options_exist_at_the_pin():
    known = set(options.manifest("sdxl_train_network")) | set(dataset_config.DATASET_SCHEMA["subsets"]) \
        | set(dataset_config.DATASET_SCHEMA["datasets"])
    for path in leaf_paths():
        for name in re.findall(r"\(([a-z_]+)\)", describe(path)):
            assert name in known, (path, name)


@pytest.mark.parametrize("choices, option", [
    (SAMPLERS, "sample_sampler"), (LOSS_TYPES, "loss_type"), (MIXED_PRECISIONS, "mixed_precision"),
    (SAVE_PRECISIONS, "save_precision"), (TOKEN_LENGTHS, "max_token_length"),
])
def test_choices_come_from_the_manifest(choices, option):
    for script in options.SCRIPTS.values():
        assert choices == tuple(c for c in options.manifest(script)[option].choices if c is not None)


def test_spec_fields_accept_exactly_the_manifest_choices():
    assert get_args(SamplingSpec.model_fields["sampler"].annotation) == SAMPLERS
    assert build_spec({"sampling": {"sampler": "k_dpm_2_a"}}).sampling.sampler == "k_dpm_2_a"
    with pytest.raises(SpecError) as info:
        build_spec({"sampling": {"sampler": "euler_ancestral"}})
    [message] = [p.render() for p in info.value.problems]
    assert message.startswith("sampling.sampler = 'euler_ancestral'") and "Fix: use one of the listed values" in message
    assert "'k_dpm_2_a'" in message
