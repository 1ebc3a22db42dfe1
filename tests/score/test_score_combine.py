"""kohya_runner.score._combine: the documented combination of a checkpoint's parts."""

from __future__ import annotations

import pytest

from kohya_runner.score import combine


def _parts(**values):
    return {"base_train_loss": 0.10, "train_loss": 0.08, "change_with": 0.3, "change_without": 0.1, "style": 0.6,
            **values}


def test_score_is_effect_times_selectivity():
    parts = combine(_parts(), has_trigger=True)
    assert parts["fit"] == pytest.approx(0.2) and parts["selectivity"] == pytest.approx(0.75)
    assert parts["leakage"] == pytest.approx(1 / 3)
    assert parts["score"] == pytest.approx(100 * (0.6 + 1.0) / 2 * 0.75)


def test_a_leaky_lora_scores_lower_than_a_selective_one():
    selective = combine(_parts(), has_trigger=True)
    leaky = combine(_parts(change_without=0.3), has_trigger=True)
    assert leaky["leakage"] == pytest.approx(1.0) and leaky["score"] < selective["score"]


def test_without_a_trigger_selectivity_does_not_count():
    parts = combine(_parts(change_without=0.3), has_trigger=False)
    assert "selectivity" not in parts and parts["score"] == pytest.approx(80.0)


def test_held_out_images_decide_fit_and_flag_copying():
    parts = combine(_parts(held_out_loss=0.12, base_held_out_loss=0.10), has_trigger=True)
    assert parts["fit"] == pytest.approx(-0.2) and parts["copying"] is True
    honest = combine(_parts(held_out_loss=0.085, base_held_out_loss=0.10), has_trigger=True)
    assert honest["copying"] is False


def test_nothing_measured_gives_no_score():
    assert combine({"checkpoint": "x"}, has_trigger=True)["score"] is None


def test_one_ranking_rule_picks_the_top_entry():
    from kohya_runner.score import top

    entries = [{"checkpoint": "a", "score": 40.0, "step": 10}, {"checkpoint": "b", "score": None, "step": 20},
               {"checkpoint": "c", "score": 55.0, "step": 30}, {"checkpoint": "d", "score": 55.0, "step": 40}]
    assert top(entries)["checkpoint"] == "d"  # a tie goes to the later checkpoint
    assert top(entries[1:2]) is None and top([]) is None
