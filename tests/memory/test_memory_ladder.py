"""The out-of-memory ladder on real specs: its order, the effective batch kept, invalid rungs skipped, the
rank only when allowed, and the failed run's hint naming the same next rung."""

from __future__ import annotations

from kohya_runner.memory import next_rung, rungs
from kohya_runner.monitor import oom_hint
from kohya_runner.spec import build_spec


def _spec(**groups):
    return build_spec({"model": {"family": "sdxl"}, **groups})


def test_the_ladder_order_costs_the_least_first():
    spec = _spec(dataset={"batch_size": 4}, training={"gradient_accumulation_steps": 2},
                 precision={"gradient_checkpointing": False, "mixed_precision": "bf16"}, optimizer={"type": "AdamW"})
    names = [r.name for r in rungs(spec)]
    assert names[:2] == ["batch 1 with gradient accumulation", "gradient checkpointing"]
    assert names.index("8-bit optimizer") < names.index("fp8 base model")
    assert "half the rank" not in names  # the rank is never lowered unless the spec allows it
    rung, changed = next_rung(spec)
    assert rung.changes == {"dataset.batch_size": 1, "training.gradient_accumulation_steps": 8}
    assert changed.dataset.batch_size * changed.training.gradient_accumulation_steps == 8  # same effective batch


def test_climbing_reaches_every_automatic_rung_once_then_stops():
    spec = _spec(dataset={"batch_size": 2}, precision={"gradient_checkpointing": False}, optimizer={"type": "AdamW"},
                 network={"dim": 16, "alpha": 8}, guard={"oom_retry_rank": True})
    seen = []
    while (found := next_rung(spec)) is not None:
        rung, spec = found
        seen.append(rung.name)
    assert seen[-2:] == ["half the rank", "half the rank"]  # 16 → 8 → 4
    others = [name for name in seen if name != "half the rank"]
    assert len(others) == len(set(others))  # every other rung once
    assert spec.dataset.batch_size == 1 and spec.precision.gradient_checkpointing and spec.optimizer.type == "AdamW8bit"
    assert spec.network.dim == 4  # halved while above 4
    assert "a lower resolution" not in seen  # named in the hint only: it changes what the LoRA learns from


def test_an_invalid_rung_is_skipped_and_an_exhausted_ladder_says_none():
    # cached text-encoder outputs would be wrong with shuffled captions: the retry takes the next rung instead
    spec = _spec(dataset={"batch_size": 1, "shuffle_caption": True, "keep_tokens": 1}, optimizer={"type": "AdamW8bit"},
                 precision={"gradient_checkpointing": True})
    assert "cached text-encoder outputs" in [r.name for r in rungs(spec)]
    assert next_rung(spec)[0].name == "bf16 gradients"
    fp32 = _spec(precision={"mixed_precision": "no", "cache_text_encoder_outputs": True},
                 optimizer={"type": "Prodigy", "lr": 1.0}, dataset={"batch_size": 1})
    assert next_rung(fp32) is None


def test_the_hint_names_the_rung_a_retry_would_take():
    spec = _spec(precision={"gradient_checkpointing": False}, dataset={"batch_size": 1})
    assert "precision.gradient_checkpointing=true" in oom_hint(spec)
    assert next_rung(spec)[0].text == "precision.gradient_checkpointing=true"
