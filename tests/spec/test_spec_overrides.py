"""`key.path=value` overrides typed by the spec (spec/overrides.py)."""

from __future__ import annotations

import pytest

from kohya_runner.errors import BadInput
from kohya_runner.spec import coerce_value, parse_override


def test_overrides_typed_by_spec():
    assert parse_override("optimizer.lr=2e-4").value == 2e-4
    assert parse_override("network.unet_only=false").value is False
    assert parse_override("dataset.trigger=123").value == "123"  # a string field keeps the text
    assert parse_override("dataset.trigger=none").value is None
    assert parse_override("sampling.prompts=[\"a cat\", \"a dog\"]").value == ["a cat", "a dog"]
    assert parse_override("optimizer.args.weight_decay=0.1").value == 0.1
    assert parse_override("optimizer.args.betas=0.9,0.99").value == "0.9,0.99"
    assert coerce_value(("sd_scripts", "noise_offset_random_strength"), "true") is True


@pytest.mark.parametrize("text, hint", [
    ("optimizer.lrr=1", "did you mean 'optimizer.lr'?"),
    ("optimiser.lr=1", "did you mean 'optimizer'?"),
    ("noequals", "key.path=value"),
    ("optimizer=1", "names a whole group"),
    ("optimizer.lr.x=1", "has no sub-keys"),
])
def test_bad_override_messages(text, hint):
    with pytest.raises(BadInput) as info:
        parse_override(text)
    assert hint in info.value.message


@pytest.mark.parametrize("typed, path, value", [("learning_rate=1e-4", ("optimizer", "lr"), 1e-4),
                                                ("max_train_steps=800", ("training", "steps"), 800),
                                                ("network_dim=32", ("network", "dim"), 32),
                                                ("train_batch_size=2", ("dataset", "batch_size"), 2),
                                                ("lr_scheduler=cosine", ("scheduler", "name"), "cosine")])
def test_sd_scripts_option_names_are_taken_as_their_spec_field_with_a_note(typed, path, value):
    from kohya_runner.spec import parse_override

    override = parse_override(typed)
    assert override.path == path and override.value == value
    assert override.note == f"note: {typed.split('=')[0]} is sd-scripts' name; kr calls it {'.'.join(path)}"


@pytest.mark.parametrize("typed, words", [("network_args=conv_dim=4", ["network.args", "Fix: set network.args="]),
                                          ("sdpa=true", ["precision.attention"]),
                                          ("output_dir=/tmp/x", ["kr sets itself", "Fix: remove it"]),
                                          ("optimizer.learning_rate=1", ["did you mean optimizer.lr?"]),
                                          ("lerning_rate=1", ["did you mean optimizer.lr?"])])
def test_sd_scripts_names_that_cannot_be_moved_get_the_exact_fix(typed, words):
    from kohya_runner.errors import BadInput
    from kohya_runner.spec import parse_override

    with pytest.raises(BadInput) as info:
        parse_override(typed)
    assert all(word in info.value.message for word in words), info.value.message


def test_every_owned_option_maps_to_a_real_spec_path():
    from kohya_runner.spec import annotation_at
    from kohya_runner.spec.overrides import sd_scripts_names

    names = sd_scripts_names()
    assert {"learning_rate", "max_train_steps", "network_dim", "train_batch_size"} <= set(names)
    for option, target in names.items():
        if target != "kr":
            annotation_at(tuple(target.split(".")))  # raises for a path the spec does not have
