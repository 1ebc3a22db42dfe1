"""The run spec: types, ranges, cross-field rules and the messages users see (spec/model, rules, errors)."""

from __future__ import annotations

import pytest

from kohya_runner.spec import Spec, SpecError, build_spec


def problems(data: dict) -> list[str]:
    with pytest.raises(SpecError) as info:
        build_spec(data)
    return [p.render() for p in info.value.problems]


def test_defaults_are_valid_and_hash_is_stable():
    assert build_spec({}).hash() == build_spec({}).hash()
    assert build_spec({}).hash() != build_spec({"network": {"dim": 32}}).hash()


def test_unknown_key_names_path_and_suggests():
    [message] = problems({"optimizer": {"learning_rat": 1e-4}})
    assert message.startswith("optimizer.learning_rat: unknown key")
    assert "did you mean optimizer.lr? (learning_rate is sd-scripts' name" in message  # the sd-scripts name, misspelled
    [message] = problems({"optimizer": {"momentum": 0.9}})
    assert "known keys here" in message
    [message] = problems({"network": {"dimm": 8}})
    assert "did you mean 'network.dim'?" in message


def test_wrong_type_and_range_name_value():
    [message] = problems({"network": {"dim": "big"}})
    assert message.startswith("network.dim = 'big':")
    [message] = problems({"network": {"dim": 0}})
    assert "network.dim = 0" in message and "greater than or equal to 1" in message
    [message] = problems({"precision": {"mixed_precision": "fp32"}})
    assert "precision.mixed_precision = 'fp32'" in message and "Fix: use one of the listed values" in message


def test_resolution_forms():
    assert build_spec({"dataset": {"resolution": 768}}).dataset.resolution == (768, 768)
    assert build_spec({"dataset": {"resolution": "1024,768"}}).dataset.resolution == (1024, 768)
    assert build_spec({"dataset": {"resolution": [896, 1152], "min_bucket_reso": 256}}).dataset.resolution == (896, 1152)
    assert "dataset.resolution" in problems({"dataset": {"resolution": "big"}})[0]


@pytest.mark.parametrize("data, path, fix", [
    ({"precision": {"cache_text_encoder_outputs": True}, "network": {"unet_only": False}},
     "precision.cache_text_encoder_outputs", "network.unet_only=true"),
    ({"scheduler": {"name": "constant", "warmup_steps": 50}}, "scheduler.warmup_steps", "constant_with_warmup"),
    ({"precision": {"full_bf16": True, "mixed_precision": "fp16", "no_half_vae": True}}, "precision.full_bf16", "mixed_precision=bf16"),
    ({"precision": {"full_fp16": True}}, "precision.full_fp16", "mixed_precision=fp16"),
    ({"dataset": {"bucket_reso_steps": 48}}, "dataset.bucket_reso_steps", "divisible by 32"),
    ({"model": {"family": "sd15"}, "dataset": {"bucket_reso_steps": 32, "resolution": 512, "min_bucket_reso": 256}},
     "dataset.bucket_reso_steps", "divisible by 64"),
    ({"optimizer": {"type": "Prodigy", "lr": 1e-4}}, "optimizer.lr", "optimizer.lr=1.0"),
    ({"optimizer": {"type": "DAdaptAdam", "lr": 0.05}}, "optimizer.lr", "optimizer.lr=1.0"),
    ({"training": {"epochs": 10, "steps": 1000}}, "training.steps", "set one of them"),
    ({"training": {"epochs": None}}, "training.epochs", "training.epochs or training.steps"),
    ({"precision": {"fp8_base": True, "mixed_precision": "no"}}, "precision.fp8_base", "mixed_precision=bf16"),
    ({"dataset": {"color_aug": True}}, "dataset.color_aug", "cache_latents"),
    ({"precision": {"cache_text_encoder_outputs": True}, "dataset": {"shuffle_caption": True, "keep_tokens": 1}},
     "dataset.shuffle_caption", "cache_text_encoder_outputs=false"),
    ({"dataset": {"shuffle_caption": True}}, "dataset.keep_tokens", "keep_tokens=1"),
    ({"dataset": {"min_bucket_reso": 1536}}, "dataset.min_bucket_reso", "min_bucket_reso="),
    ({"training": {"data_loader_workers": 0}}, "training.persistent_data_loader_workers", "data_loader_workers=1"),
    ({"sampling": {"every_n_steps": 100}}, "sampling.every_n_steps", "every_n_epochs=none"),
    ({"optimizer": {"text_encoder_lr": 5e-5}}, "optimizer.text_encoder_lr", "unet_only=false"),
    ({"optimizer": {"type": "Adafactor"}}, "optimizer.args", "relative_step=false"),
    ({"optimizer": {"type": "AdamWScheduleFree"}}, "scheduler.name", "scheduler.name=constant"),
    ({"model": {"clip_skip": 2}}, "model.clip_skip", "SD1.5 only"),
    ({"precision": {"mixed_precision": "fp16"}}, "precision.no_half_vae", "no_half_vae=true"),
    ({"network": {"args": {"conv_dimm": 4}}}, "network.args.conv_dimm", "network.args.conv_dim"),
    ({"saving": {"last_n_epochs": 3, "every_n_epochs": None}}, "saving.last_n_epochs", "every_n_epochs=1"),
])
def test_cross_field_rules(data, path, fix):
    found = problems(data)
    assert any(p.startswith(path) and fix in p for p in found), found


def test_every_error_has_path_value_and_fix():
    found = problems({"optimizer": {"type": "Prodigy", "lr": 1e-4}, "scheduler": {"name": "constant", "warmup_steps": 9}})
    assert len(found) == 2
    assert all(" = " in p and "Fix:" in p for p in found)


def test_optimizer_names_case_insensitive_and_suggest():
    assert build_spec({"optimizer": {"type": "adamw8bit"}}).optimizer.type == "AdamW8bit"
    assert build_spec({"optimizer": {"type": "pytorch_optimizer.CAME"}}).optimizer.type == "pytorch_optimizer.CAME"
    [message] = problems({"optimizer": {"type": "Prodigi"}})
    assert "Did you mean Prodigy?" in message


def test_warmup_float_is_ratio():
    assert build_spec({"scheduler": {"warmup_steps": 0.1}}).scheduler.warmup_steps == 0.1
    assert build_spec({"scheduler": {"warmup_steps": 100.0}}).scheduler.warmup_steps == 100
    assert "below 1" in problems({"scheduler": {"warmup_steps": 1.5}})[0]


@pytest.mark.parametrize("field, value", [
    (("dataset", "trigger"), "TOK\nx"), (("dataset", "trigger"), "TOK --n ugly"),
    (("sampling", "negative_prompt"), "a\rb"), (("dataset", "caption_prefix"), "x\u2028y"),
    (("saving", "output_name"), "../escape"), (("saving", "output_name"), ".hidden"),
    (("privacy", "training_comment"), "line\nbreak"),
])
def test_single_line_fields_reject_line_breaks_and_markers(field, value):
    [message] = problems({field[0]: {field[1]: value}})
    assert message.startswith(".".join(field))


def test_prompts_checked_one_by_one():
    [message] = problems({"sampling": {"prompts": ["ok", "bad --w 64"]}})
    assert "prompt 2" in message


def test_spec_group_defaults_are_complete():
    # Every group is present and independent (no shared mutable defaults between specs).
    a, b = Spec(), Spec()
    a.optimizer.args["x"] = 1
    assert b.optimizer.args == {}
