"""Sample prompts: templates, the trigger ablation and variants (spec/prompts.py)."""

from __future__ import annotations

import pytest

from kohya_runner.spec import SpecError, build_spec, render_prompt, sample_prompts


def problems(data: dict) -> list[str]:
    with pytest.raises(SpecError) as info:
        build_spec(data)
    return [p.render() for p in info.value.problems]


def test_prompt_template_placeholders():
    spec = build_spec({"sampling": {"prompts": ["a cat"], "template": "{subject}, by {trigger}"}})
    assert render_prompt(spec, "a cat") == "a cat, by TOK"
    assert "placeholders" in problems({"sampling": {"template": "{subject} {artist}"}})[0]
    assert "{subject}" in problems({"sampling": {"template": "no subject"}})[0]


def test_sample_prompts_trigger_ablation_and_variants():
    spec = build_spec({"sampling": {"prompts": ["a cat", "a dog"], "variants": ["{subject}, {trigger} style"], "seed": 10}})
    prompts = sample_prompts(spec)
    assert [(p.index, p.kind, p.text, p.seed) for p in prompts] == [
        (0, "trigger", "in the style of TOK, a cat", 10), (1, "trigger", "in the style of TOK, a dog", 11),
        (2, "no-trigger", "a cat", 10), (3, "no-trigger", "a dog", 11),
        (4, "variant-1", "a cat, TOK style", 10), (5, "variant-1", "a dog, TOK style", 11)]
    off = build_spec({"sampling": {"prompts": ["a cat"], "without_trigger": False}})
    assert [p.kind for p in sample_prompts(off)] == ["trigger"]
    assert "variant 1" in problems({"sampling": {"variants": ["no subject here"]}})[0]


@pytest.mark.parametrize("data, field, flag", [
    ({"sampling": {"prompts": ["a cat", "n ugly hands"]}}, "sampling.prompts[1]", "--n"),  # via "{subject}" (no trigger)
    ({"sampling": {"prompts": ["ss ddim"], "template": "{subject}, by {trigger}"}}, "sampling.prompts[0]", "--ss"),
    ({"sampling": {"prompts": ["a cat"], "template": "d 12 {subject} {trigger}"}}, "sampling.template", "--d"),
    ({"sampling": {"prompts": ["a cat"], "untriggered_template": "W 512 {subject}"}}, "sampling.untriggered_template", "--w"),
    ({"sampling": {"prompts": ["a cat"], "variants": ["l 7.5 {subject}"]}}, "sampling.variants[0]", "--l"),
    ({"dataset": {"trigger": "s 3"}, "sampling": {"prompts": ["a cat"], "template": "{trigger} {subject}"}},
     "dataset.trigger", "--s"),
    ({"dataset": {"trigger": None}, "sampling": {"prompts": ["g 5 geese"], "template": "{trigger}{subject}"}},
     "sampling.prompts[0]", "--g"),
])
def test_prompts_sd_scripts_would_read_as_options_are_refused(data, field, flag):
    with pytest.raises(SpecError) as info:
        build_spec(data)
    problem = next(p for p in info.value.problems if flag in p.message)
    assert problem.path == field and "reword" in problem.fix


def test_ordinary_prompts_starting_with_letters_are_fine():
    build_spec({"sampling": {"prompts": ["nice hands", "s three swans", "d dogs"], "template": "{subject} {trigger}"}})


def test_a_template_that_joins_into_an_option_marker_is_refused():
    with pytest.raises(SpecError) as info:
        build_spec({"sampling": {"prompts": ["a cat -"], "template": "{subject}-w 64 {trigger}"}})
    assert info.value.problems[0].path == "sampling.template" and "' --'" in info.value.problems[0].message
