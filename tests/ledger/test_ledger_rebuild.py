"""The ledger is an index of the run folders: rebuilt when missing, on request when damaged, reopened
when its file is replaced under a live process. Real SQLite files, real folders."""

from __future__ import annotations

import json
import sqlite3

import pytest

from kohya_runner import ledger as ledger_mod, runfolder
from kohya_runner.errors import BadInput
from kohya_runner.ledger import open_ledger, rebuild


def _remove_ledger(home):
    for suffix in ("", "-wal", "-shm"):
        (home / f"ledger.sqlite{suffix}").unlink(missing_ok=True)


def _workspace(home):
    """Three runs (one finished, one a sweep member, one still running) and the sweep's folder."""
    ledger = open_ledger(home)
    runs = home / "runs"
    done = ledger.create_run("marker", runs, preset="marker", backend="tiny")
    ledger.update(done.run_id, status="running", pid=1, started_at=10.0)
    ledger.finish(done.run_id, "succeeded", reason="finished", loss=0.125, steps_done=12, steps_total=12)
    sweep = ledger.create_sweep("lr", home / "sweeps", preset="marker", members=1)
    member = ledger.create_run("lr", runs, sweep_id=sweep.sweep_id)
    ledger.finish(member.run_id, "failed", reason="error")
    live = ledger.create_run("zine", runs)
    ledger.update(live.run_id, status="running", pid=4242, pgid=4242)
    (home / "sweeps" / sweep.sweep_id / "sweep.json").write_text(json.dumps(
        {"schema": "kr.sweep/1", "sweep_id": sweep.sweep_id, "name": "lr", "preset": "marker", "created": 5.0,
         "owner": None, "members": [{"index": 0, "runs": [member.run_id]}]}))
    ledger.close()
    return done, member, live, sweep


def test_a_missing_ledger_is_rebuilt_from_the_run_folders(home, capsys):
    done, member, live, sweep = _workspace(home)
    _remove_ledger(home)
    ledger = open_ledger(home)
    assert "rebuilt it from 3 run folder(s)" in capsys.readouterr().err
    rows = {r.run_id: r for r in ledger.runs()}
    assert set(rows) == {done.run_id, member.run_id, live.run_id}
    assert rows[done.run_id].status == "succeeded" and rows[done.run_id].loss == 0.125
    assert rows[done.run_id].id == done.id and rows[done.run_id].started_at == 10.0
    assert rows[member.run_id].sweep_id == sweep.sweep_id and rows[member.run_id].status == "failed"
    assert rows[live.run_id].status == "running" and rows[live.run_id].pid == 4242  # settled later, from its files
    assert [s.sweep_id for s in ledger.sweeps()] == [sweep.sweep_id]
    assert ledger.sweeps()[0].status == "finished"
    # ids are never reused: the next run continues the sequence instead of clashing with a folder
    assert ledger.create_run("marker", home / "runs").id == live.id + 1


def test_sweep_membership_comes_from_sweep_json_when_run_json_lacks_it(home):
    _, member, _, sweep = _workspace(home)
    record = json.loads(runfolder.of(member.run_dir).record.read_text())
    record["sweep_id"] = None
    runfolder.of(member.run_dir).record.write_text(json.dumps(record))
    _remove_ledger(home)
    assert open_ledger(home).get(member.run_id).sweep_id == sweep.sweep_id


def test_a_damaged_ledger_is_a_clear_error_and_rebuild_keeps_it_aside(home):
    done, *_ = _workspace(home)
    _remove_ledger(home)
    (home / "ledger.sqlite").write_bytes(b"garbage" * 500)
    with pytest.raises(BadInput) as error:
        open_ledger(home)
    assert str(home / "ledger.sqlite") in error.value.message and "kr runs rebuild" in error.value.message
    result = rebuild(home, keep_previous=True)
    assert result.runs == 3 and result.kept.name.startswith("ledger.sqlite.corrupt-")
    assert result.kept.read_bytes().startswith(b"garbage")
    assert open_ledger(home).get(done.run_id).status == "succeeded"


def test_an_older_run_folder_without_run_json_is_rebuilt_from_its_manifest(home):
    folder = home / "runs" / "old-0007"
    (folder / "archive").mkdir(parents=True)
    (folder / "spec.json").write_text(json.dumps({"name": "old"}))
    (folder / "output").mkdir()
    (folder / "output" / "old.safetensors").write_bytes(b"x")
    (folder / "archive" / "manifest.json").write_text(json.dumps({
        "run": {"run_id": "old-0007", "name": "old", "preset": "marker", "started_at": 3.0, "finished_at": 9.0},
        "outcome": {"status": "succeeded", "reason": "finished", "message": "done", "hint": None},
        "result": "output/old.safetensors", "losses": {"final_average_loss": 0.5}}))
    row = open_ledger(home).get("old-0007")
    assert (row.id, row.status, row.preset, row.loss) == (7, "succeeded", "marker", 0.5)
    assert row.result_path == str(folder / "output" / "old.safetensors")


def test_a_live_ledger_reopens_when_its_file_is_deleted_under_it(home):
    ledger = open_ledger(home)
    row = ledger.create_run("marker", home / "runs")
    ledger.update(row.run_id, status="running", pid=99)
    _remove_ledger(home)  # what a user's `rm` does while a supervisor holds the file open
    ledger.update(row.run_id, steps_done=3)
    assert ledger.finish(row.run_id, "succeeded")
    fresh = sqlite3.connect(home / "ledger.sqlite")
    assert fresh.execute("SELECT status, steps_done FROM runs WHERE run_id = ?", (row.run_id,)).fetchone() == ("succeeded", 3)
    fresh.close()
    assert ledger_mod.read_record(row.run_dir)["status"] == "succeeded"


def test_run_json_mirrors_the_rows_lifecycle(home):
    ledger = open_ledger(home)
    row = ledger.create_run("marker", home / "runs", preset="marker", backend="tiny")
    assert ledger_mod.read_record(row.run_dir)["status"] == "queued"
    ledger.update(row.run_id, status="running", pid=5, supervisor_pid=6)
    record = ledger_mod.read_record(row.run_dir)
    assert (record["status"], record["pid"], record["supervisor_pid"], record["preset"]) == ("running", 5, 6, "marker")


def test_rebuilding_a_healthy_ledger_keeps_it_as_previous(home):
    done, *_ = _workspace(home)
    result = rebuild(home, keep_previous=True)
    assert result.kept.name.startswith("ledger.sqlite.previous-")
    assert open_ledger(home).get(done.run_id).status == "succeeded"


def test_a_sql_mistake_is_not_reported_as_a_full_disk(home):
    ledger = open_ledger(home)
    with pytest.raises(sqlite3.OperationalError):
        with ledger._write() as db:
            db.execute("UPDATE runs SET no_such_column = 1")


def test_a_folder_too_broken_for_a_row_still_keeps_its_number(home):
    _workspace(home)
    (home / "runs" / "half-0009").mkdir()  # kr died between creating the folder and writing anything in it
    _remove_ledger(home)
    ledger = open_ledger(home)
    assert "half-0009" not in {r.run_id for r in ledger.runs()}
    assert ledger.create_run("half", home / "runs").run_id == "half-0010"
