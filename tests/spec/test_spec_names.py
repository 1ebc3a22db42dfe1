"""Run names are file names: `name` and `saving.output_name` are one safe file-name component."""

from __future__ import annotations

import pytest

from kohya_runner.spec import SpecError, build_spec

BAD = ["../../../../escape", "a/b", "a\\b", "..", ".", ".hidden", "x" * 101, "é" * 51, "con\x00", "tab\tname",
       "new\nline", " lead", "trail ", "-rf", "", "   "]
GOOD = ["client-a", "marker_v2", "Café style", "x" * 100, "a.b", "$(id)", "日本"]


@pytest.mark.parametrize("value", BAD)
@pytest.mark.parametrize("key", ["name", "output_name"])
def test_unsafe_names_are_refused_naming_the_field_and_the_fix(key, value):
    data = {"name": value} if key == "name" else {"saving": {"output_name": value}}
    with pytest.raises(SpecError) as info:
        build_spec(data)
    [problem] = info.value.problems
    assert problem.path == ("name" if key == "name" else "saving.output_name")
    assert problem.fix and "client-a" in problem.fix
    assert "Fix:" in info.value.message


@pytest.mark.parametrize("value", GOOD)
def test_plain_names_are_kept(value):
    spec = build_spec({"name": value, "saving": {"output_name": value}})
    assert spec.name == value and spec.output_name == value


def test_the_limit_leaves_room_for_sd_scripts_suffixes():
    from kohya_runner.spec._checks import NAME_MAX_BYTES

    longest = "x" * NAME_MAX_BYTES + "-step00000500-state" + "_e000010_00_20250101120000_4294967295.png"
    assert len(longest.encode()) < 255


def test_run_ids_stay_inside_the_runs_folder(tmp_path):
    from kohya_runner.ledger import Ledger

    ledger = Ledger(tmp_path / "ledger.sqlite")
    for name in ("../../escape", "..", "-rf", "a/b"):
        row = ledger.create_run(name, tmp_path / "runs")
        assert (tmp_path / "runs").resolve() in __import__("pathlib").Path(row.run_dir).resolve().parents
        assert not row.run_id.startswith((".", "-")) and "/" not in row.run_id
