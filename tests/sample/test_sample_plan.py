"""kohya_runner.sample._plan: which images a post-hoc job makes, checked without a model."""

from __future__ import annotations

from pathlib import Path

import pytest

from kohya_runner.checkpoints import Checkpoint
from kohya_runner.errors import BadInput
from kohya_runner.sample import Request, column_key, parse_strengths
from kohya_runner.sample._plan import build, pick_checkpoints, prompts_for
from kohya_runner.spec import build_spec, sample_prompts

FOUND = [Checkpoint(Path("out/m-000004.safetensors"), "epoch", 4, 32), Checkpoint(Path("out/m-000008.safetensors"), "epoch", 8, 64),
         Checkpoint(Path("out/m.safetensors"), "final", 10, 80)]


def _spec(**sampling):
    return build_spec({"sampling": {"prompts": ["a red circle", "a blue house"], "variants": ["a drawing of {subject}, {trigger} style"],
                                    **sampling}})


def test_checkpoint_choices():
    assert pick_checkpoints(FOUND, "all") == FOUND
    assert pick_checkpoints(FOUND, "final") == [FOUND[2]]
    assert pick_checkpoints(FOUND, "e4,8") == FOUND[:2]
    assert pick_checkpoints(FOUND, "best", best=FOUND[1]) == [FOUND[1]]
    assert pick_checkpoints(FOUND, "e10") == [FOUND[2]]  # the final file is epoch 10
    with pytest.raises(BadInput, match="no checkpoint at epoch 5.*epoch 4, epoch 8"):
        pick_checkpoints(FOUND, "e5")
    with pytest.raises(BadInput, match="not all, final, best"):
        pick_checkpoints(FOUND, "newest")


def test_columns_line_up_with_the_training_samples():
    assert [column_key(c, 10) for c in FOUND] == ["e000004", "e000008", "e000010"]
    assert column_key(Checkpoint(Path("x"), "step", None, 500), None) == "s000500"


def test_strengths_are_numbers_in_range_without_repeats():
    assert parse_strengths("0.5, 1,1.0,0") == [0.5, 1.0, 0.0]
    for bad in ("strong", "1,,2", "nan", "5"):
        with pytest.raises(BadInput):
            parse_strengths(bad)


def test_prompts_keep_the_runs_own_indices_and_seeds():
    spec = _spec()
    prompts = prompts_for(spec, Request())
    assert [(k, t, s, i) for k, _, t, s, i in prompts] == [(p.kind, p.text, p.seed, p.index) for p in sample_prompts(spec)]
    only = prompts_for(spec, Request(kinds=["no-trigger"], extra_prompts=["a green tree"]))
    assert [(t, i) for _, _, t, _, i in only] == [("a red circle", 2), ("a blue house", 3), ("a green tree", None)]
    seeded = prompts_for(spec, Request(kinds=["trigger"], seeds=[7, 8]))
    assert [s for *_, s, _ in seeded] == [7, 8, 7, 8]


def test_a_job_has_a_base_pass_then_one_pass_per_checkpoint_by_strength():
    spec = _spec()
    passes = build(spec, FOUND[1:], Request(strengths=[0.5, 1.0]), 10)
    assert [p.column for p in passes] == ["base", "e000008", "e000010"]
    assert len(passes[0].cells) == 6 and len(passes[1].cells) == 12
    assert [c.strength for c in passes[1].cells] == [0.5] * 6 + [1.0] * 6  # gen_img batches like with like
    names = [c.file for p in passes for c in p.cells]
    assert len(set(names)) == len(names) and all("/" not in n and not n.startswith(".") for n in names)


def test_max_images_keeps_a_whole_grid_or_refuses():
    spec = _spec()
    passes = build(spec, FOUND, Request(strengths=[1.0], max_images=8), 10)
    assert sum(len(p.cells) for p in passes) == 8 and {len(p.cells) for p in passes} == {2}
    with pytest.raises(BadInput, match="--max-images 3"):
        build(spec, FOUND, Request(max_images=3), 10)


def test_nothing_to_sample_is_refused():
    with pytest.raises(BadInput, match="no prompt to sample"):
        build(build_spec({}), FOUND, Request(), 10)
