"""The one spec diff and the flat form of a spec (spec/diff.py)."""

from __future__ import annotations

from kohya_runner.spec import ABSENT, Change, build_spec, diff, flatten, leaf_paths, show_value


def test_flatten_expands_groups_and_dict_fields():
    spec = build_spec({"optimizer": {"args": {"weight_decay": 0.01}}, "sd_scripts": {"huber_c": 0.1}})
    flat = flatten(spec)
    assert flat["optimizer.lr"] == 1e-4 and flat["optimizer.args.weight_decay"] == 0.01
    assert flat["sd_scripts.huber_c"] == 0.1 and "optimizer.args" not in flat
    assert flat["network.args"] == {}  # an empty dict field stays one value, so every field shows
    assert flatten(spec) == flatten(spec.model_dump(mode="json"))
    assert {k for k in flat if not k.startswith(("optimizer.args", "sd_scripts"))} == \
        {".".join(p) for p in leaf_paths() if p not in (("optimizer", "args"), ("sd_scripts",))}


def test_same_specs_have_no_changes():
    assert diff(build_spec({}), build_spec({})) == []


def test_changes_are_dotted_sorted_and_show_both_sides():
    a = build_spec({"optimizer": {"args": {"weight_decay": 0.01, "betas": "0.9,0.99"}}, "network": {"dim": 8}})
    b = build_spec({"optimizer": {"args": {"weight_decay": 0.05}}, "network": {"dim": 8}, "training": {"seed": 7}})
    assert diff(a, b) == [
        Change("optimizer.args.betas", "0.9,0.99", ABSENT),
        Change("optimizer.args.weight_decay", 0.01, 0.05),
        Change("training.seed", 42, 7),
    ]


def test_an_emptied_dict_field_is_its_entries_not_an_extra_row():
    a, b = build_spec({}), build_spec({"optimizer": {"args": {"weight_decay": 0.05}}, "sd_scripts": {"huber_c": 0.2}})
    assert diff(a, b) == [Change("optimizer.args.weight_decay", ABSENT, 0.05), Change("sd_scripts.huber_c", ABSENT, 0.2)]
    assert diff(b, a) == [Change("optimizer.args.weight_decay", 0.05, ABSENT), Change("sd_scripts.huber_c", 0.2, ABSENT)]


def test_values_compare_by_their_json_so_types_count():
    a = build_spec({"optimizer": {"args": {"decouple": 1}}})
    b = build_spec({"optimizer": {"args": {"decouple": True}}})
    assert diff(a, b) == [Change("optimizer.args.decouple", 1, True)]


def test_none_is_a_value_and_absent_is_not():
    a, b = build_spec({}), build_spec({"training": {"noise_offset": 0.05}})
    [change] = diff(a, b)
    assert change == Change("training.noise_offset", None, 0.05)
    assert change.to_dict() == {"key": "training.noise_offset", "before": None, "after": 0.05}
    assert Change("optimizer.args.x", ABSENT, 1).to_dict()["before"] is None


def test_show_value_one_way():
    assert [show_value(v) for v in (ABSENT, None, "euler_a", 1e-4, True, [1024, 768], {"a": 1})] == \
        ["(not set)", "none", "euler_a", "0.0001", "true", "[1024, 768]", '{"a": 1}']


def test_diff_takes_dumped_dicts_too():
    a, b = build_spec({}), build_spec({"network": {"dim": 32}})
    assert diff(a.model_dump(mode="json"), b.model_dump(mode="json")) == diff(a, b) == [Change("network.dim", 16, 32)]
