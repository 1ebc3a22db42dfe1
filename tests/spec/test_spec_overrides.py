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
