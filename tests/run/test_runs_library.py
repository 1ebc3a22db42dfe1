"""`kr runs rm` and `kr runs diff` as library functions (kohya_runner.run.remove / diff) and through the
CLI, on finished runs made without training (tests/synthetic_run.py): a real ledger, real run folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from synthetic_run import make_run

from kohya_runner import run, workspace
from kohya_runner.errors import BadInput
from kohya_runner.ledger import open_ledger


def test_remove_deletes_folders_and_rows_after_confirmation(home):
    first, second, kept = (make_run(home, subjects=1, epochs=2, size=64) for _ in range(3))
    asked = []
    assert run.remove(home, [first.run_id], confirm=lambda rows: asked.append(rows) or False) == []
    assert Path(first.run_dir).is_dir() and [r.run_id for r in asked[0]] == [first.run_id]  # "no": nothing deleted
    removed = run.remove(home, [first.run_id, second.run_id], confirm=lambda rows: True)
    assert [r.run_id for r in removed] == [first.run_id, second.run_id]
    assert not Path(first.run_dir).exists() and not Path(second.run_dir).exists()
    assert [r.run_id for r in open_ledger(home).runs()] == [kept.run_id]
    with pytest.raises(BadInput):
        run.remove(home, [first.run_id])  # gone from the ledger too


def test_remove_refuses_a_running_run_and_deletes_nothing(home):
    done = make_run(home, subjects=1, epochs=2, size=64)
    active = open_ledger(home).create_run("live", workspace.runs_dir(home), preset="tiny-demo")
    with pytest.raises(BadInput, match="still running. Fix: `kr runs stop` first"):
        run.remove(home, [done.run_id, active.run_id])
    assert Path(done.run_dir).is_dir() and len(open_ledger(home).runs()) == 2


def test_diff_lists_changed_spec_keys_and_results(home):
    a = make_run(home, subjects=1, epochs=2, size=64)
    b = make_run(home, subjects=1, epochs=2, size=64, overrides=("network.dim=4", "optimizer.lr=0.02"))
    same = run.diff(home, a.run_id, a.run_id)
    assert same.settings == [] and same.results[0] == ("status", "succeeded", "succeeded")
    result = run.diff(home, a.run_id, b.run_id)
    keys = [k for k, _, _ in result.settings]
    assert "network.dim" in keys and "optimizer.lr" in keys and keys == sorted(keys)
    assert dict((k, (x, y)) for k, x, y in result.settings)["optimizer.lr"][1] == 0.02
    data = result.to_json()
    assert data["a"] == a.run_id and data["b"] == b.run_id
    assert [r["key"] for r in data["results"]] == ["status", "final avr_loss", "time"]
    assert data["results"][2]["a"] == "0:01:20"  # the synthetic run took 80 s


def test_runs_rm_and_diff_cli_print_what_the_library_returns(kr, home):
    a = make_run(home, subjects=1, epochs=2, size=64)
    b = make_run(home, subjects=1, epochs=2, size=64, overrides=("network.dim=4",))
    shown = kr("runs", "diff", a.run_id, b.run_id)
    assert shown.exit_code == 0 and "network.dim" in shown.stdout and a.run_id in shown.stdout.splitlines()[0]
    assert kr.json("runs", "diff", a.run_id, b.run_id) == {"schema": "kr.runs-diff/1", **run.diff(home, a.run_id, b.run_id).to_json()}
    assert "(same settings)" in kr("runs", "diff", a.run_id, a.run_id).stdout
    deleted = kr("runs", "rm", a.run_id, "--yes")
    assert deleted.exit_code == 0 and deleted.stdout.strip() == f"deleted {a.run_id}"
    assert [r["run_id"] for r in kr.json("runs", "ls")["runs"]] == [b.run_id]


@pytest.mark.parametrize("args", [("runs", "show", ""), ("runs", "show", "  "), ("runs", "rm", "", "--yes"),
                                  ("runs", "diff", "", "")])
def test_an_empty_run_id_picks_no_run(kr, home, args):
    # an empty prefix matched every id: with one run, `kr runs show ""` showed it and `kr runs rm ""` deleted it
    only = make_run(home, subjects=1, epochs=2, size=64)
    result = kr(*args)
    assert result.exit_code == 2 and "no run given" in result.output, result.output
    assert Path(only.run_dir).is_dir() and [r.run_id for r in open_ledger(home).runs()] == [only.run_id]
    with pytest.raises(BadInput, match="no run given"):
        run.remove(home, [""])


def test_an_unknown_status_is_refused_naming_the_statuses(kr, home):
    make_run(home, subjects=1, epochs=2, size=64)
    result = kr("runs", "ls", "--status", "succeeded", "--status", "bogus")
    assert result.exit_code == 2 and "'bogus' is not a run status" in result.output
    assert "succeeded" in result.output and "diverged" in result.output  # the statuses it knows
    assert len(kr.json("runs", "ls", "--status", "succeeded")["runs"]) == 1


def test_read_only_commands_leave_a_missing_workspace_missing(tmp_path):
    from conftest import Kr

    missing = tmp_path / "no-workspace"
    kr = Kr(missing)
    listing = kr("runs", "ls", "--json")
    assert listing.exit_code == 0 and '"runs": []' in listing.stdout  # nothing recorded: an empty listing
    for args in (("runs", "show", "1"), ("runs", "stop", "1"), ("runs", "best", "1"), ("sweep", "show", "1"),
                 ("report", "1")):
        result = kr(*args)
        assert result.exit_code == 2 and f"no kr workspace at {missing}" in result.output, (args, result.output)
    assert kr("sweep", "ls").exit_code == 0
    assert not missing.exists()


def test_the_recorded_spec_holds_the_dataset_folder_as_an_absolute_path(tmp_path, monkeypatch):
    # post-hoc sampling and scoring read the dataset later, from any folder: spec.json must not be relative
    from kohya_runner.run import with_absolute_dataset
    from kohya_runner.spec import build_spec

    (tmp_path / "pictures").mkdir()
    monkeypatch.chdir(tmp_path)
    spec = with_absolute_dataset(build_spec({"dataset": {"dir": "./pictures"}}))
    assert spec.dataset.dir == str(tmp_path / "pictures")
    assert with_absolute_dataset(build_spec({})).dataset.dir is None
