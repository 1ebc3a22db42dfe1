"""Real sweeps: a 2×2 of the built-in tiny trainer (shared cache, one member family stopped by the guard,
results, ledger links), a clean Ctrl-C, `kr sweep stop` from another terminal, and resume with a stand-in
sd-scripts checkout."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_standin_checkout, no_process_left, run_kr
from sweep_fixtures import QUICK, shared, tiny_home  # noqa: F401  (fixtures are used by name)

from kohya_runner.errors import BadInput

TESTS = Path(__file__).resolve().parents[1]


def _ledger_rows(home: Path) -> list:
    from kohya_runner.ledger import open_ledger

    if not (home / "ledger.sqlite").exists():
        return []
    ledger = open_ledger(home)
    try:
        return ledger.runs()
    finally:
        ledger.close()


def _runs(env, sweep_id):
    return json.loads(run_kr("runs", "ls", "--sweep", sweep_id, "--json", env=env).stdout)["runs"]


def test_tiny_2x2_sweep_end_to_end(tiny_home):
    home, images = tiny_home["home"], tiny_home["images"]
    env = {"KR_HOME": str(home)}
    before = sorted(p.name for p in images.iterdir())
    result = run_kr("sweep", "tiny-demo", "--dataset", images, "--base", "tiny", "--grid", "optimizer.lr=1e-2,3e-2",
                    "--grid", "guard.divergence_factor=3.0,1.001", "guard.warmup_steps=1", *QUICK,
                    "--max-parallel", "2", "--json", env=env, timeout=400)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    sweep_id = summary["sweep_id"]
    assert summary["status"] == "finished" and summary["varying"] == ["optimizer.lr", "guard.divergence_factor"]
    members = {m["member"]: m for m in summary["members"]}
    assert [m["status"] for m in summary["members"]] == ["succeeded", "diverged", "succeeded", "diverged"]
    for label in ("m01", "m03"):
        assert members[label]["final_loss"] > 0 and members[label]["min_loss"] <= members[label]["final_loss"]
        assert members[label]["it_per_s"] > 0 and members[label]["seconds"] > 0
    for label in ("m02", "m04"):  # kr's guard stopped them at once
        assert "above 1.001 × its running minimum" in members[label]["reason"]
    # the ledger: every member an ordinary run, linked to the sweep
    runs = _runs(env, sweep_id)
    assert sorted(r["run_id"] for r in runs) == sorted(m["run_id"] for m in summary["members"])
    assert all(r["sweep_id"] == sweep_id for r in runs)
    diverged = [r for r in runs if r["status"] == "diverged"]
    assert all(r["reason"] == "loss_diverged" and r["steps_done"] < 16 for r in diverged)
    assert all(r["steps_done"] == 16 for r in runs if r["status"] == "succeeded")
    # one shared cache, encoded once: every cache file was written before any other member started
    folders = [p for p in (home / "caches").iterdir() if p.is_dir() and not p.name.startswith(".")]
    assert len(folders) == 1
    npz = list(folders[0].glob("*.npz"))
    assert len(npz) == 32
    started = sorted(r["started_at"] for r in runs)
    assert max(p.stat().st_mtime for p in npz) < started[1], "the cache was written after a second member started"
    assert all(f'image_dir = "{folders[0]}"' in (Path(r["run_dir"]) / "dataset.toml").read_text() for r in runs)
    assert sorted(p.name for p in images.iterdir()) == before  # nothing written into the dataset folder
    # the results files
    sweep_dir = Path(summary["sweep_dir"])
    with open(sweep_dir / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["member"], r["optimizer.lr"], r["guard.divergence_factor"], r["status"]) for r in rows] == [
        ("m01", "0.01", "3", "succeeded"), ("m02", "0.01", "1.001", "diverged"),
        ("m03", "0.03", "3", "succeeded"), ("m04", "0.03", "1.001", "diverged")]
    assert float(rows[0]["final_avg_loss"]) == pytest.approx(members["m01"]["final_loss"])
    markdown = (sweep_dir / "results.md").read_text()
    assert "| m01 | optimizer.lr=0.01 guard.divergence_factor=3 | succeeded |" in markdown
    assert "![average loss of every member](loss_overlay.png)" in markdown
    assert (sweep_dir / "loss_overlay.png").stat().st_size > 5000
    json.loads((sweep_dir / "sweep.json").read_text())
    # kr sweep ls / show
    listing = json.loads(run_kr("sweep", "ls", "--json", env=env).stdout)["sweeps"]
    assert listing[0]["sweep_id"] == sweep_id and listing[0]["done"] == 4 and listing[0]["best"]["member"] in ("m01", "m03")
    shown = run_kr("sweep", "show", sweep_id, env=env)
    assert shown.returncode == 0 and "m04" in shown.stdout and "diverged" in shown.stdout
    assert json.loads(run_kr("sweep", "show", sweep_id, "--json", env=env).stdout)["members"] == summary["members"]
    assert not no_process_left(str(home))


def test_ctrl_c_stops_every_member_and_nothing_is_left(tiny_home):
    home, images = tiny_home["home"], tiny_home["images"]
    env = {**os.environ, "KR_HOME": str(home)}
    process = subprocess.Popen([sys.executable, "-m", "kohya_runner", "sweep", "tiny-demo", "--dataset", str(images),
                                "--base", "tiny", "--seeds", "1,2,3", "training.epochs=30", "sampling.at_first=false",
                                "sampling.every_n_epochs=100", "--max-parallel", "2"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if sum(r.status == "running" and (r.steps_done or 0) >= 1 for r in _ledger_rows(home)) == 2:
                break
            assert process.poll() is None, process.communicate()
            time.sleep(0.5)
        else:
            raise AssertionError("two members never trained at once")
        process.send_signal(signal.SIGINT)  # what the terminal sends on Ctrl-C
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, err
    assert "stopping the sweep" in out
    sweep_id = json.loads(run_kr("sweep", "ls", "--json", env={"KR_HOME": str(home)}).stdout)["sweeps"][0]["sweep_id"]
    summary = json.loads(run_kr("sweep", "show", sweep_id, "--json", env={"KR_HOME": str(home)}).stdout)
    assert summary["status"] == "stopped"
    assert sorted(m["status"] for m in summary["members"]) == ["pending", "stopped", "stopped"], (summary, out, err)
    runs = _runs({"KR_HOME": str(home)}, sweep_id)
    assert len(runs) == 2 and all(r["status"] == "stopped" and r["stop_requested"] for r in runs)
    assert not no_process_left(str(home))


# ----------------------------------------------------------------------------------------------
# Failures, resume: a stand-in sd-scripts checkout (fast), failing by seed.

SEEDED_STANDIN = '''import os, runpy, sys, toml
args = {{}}
for table in toml.load(sys.argv[sys.argv.index("--config_file") + 1]).values():
    args.update(table)
os.environ["KR_FAULT"] = os.environ.get("KR_FAULT_SEED_%d" % args["seed"], os.environ.get("KR_FAULT", "ok"))
sys.argv[0] = {script!r}
runpy.run_path({script!r}, run_name="__main__")
'''


@pytest.fixture
def seeded_checkout(tmp_path, home, monkeypatch):
    checkout = make_standin_checkout(tmp_path / "standin-sd-scripts", "fault")
    script = str(TESTS / "fault_trainer.py")
    (checkout / "sdxl_train_network.py").write_text(SEEDED_STANDIN.format(script=script))
    monkeypatch.setenv("KR_SD_SCRIPTS", str(checkout))
    monkeypatch.setenv("KR_SD_PYTHON", sys.executable)
    yield checkout
    assert not no_process_left(str(checkout))


def test_failing_members_do_not_stop_the_others_and_resume_retries_them(seeded_checkout, style_images, base_file, home):
    env = {"KR_HOME": str(home), "KR_FAULT_SEED_2": "crash"}
    args = ["sweep", "marker", "--dataset", style_images, "--base", base_file, "--seeds", "1,2", "--grid",
            "training.epochs=1,3", "--max-parallel", "2", "--json"]
    result = run_kr(*args, env=env, timeout=300)
    assert result.returncode == 1, result.stderr  # not every member succeeded
    summary = json.loads(result.stdout)
    assert summary["status"] == "finished"
    by_seed = {m["values"]["training.seed"]: [] for m in summary["members"]}
    for m in summary["members"]:
        by_seed[m["values"]["training.seed"]].append(m["status"])
    assert by_seed == {1: ["succeeded", "succeeded"], 2: ["failed", "failed"]}
    # longest first: the 3-epoch members started before the 1-epoch ones
    runs = sorted(_runs(env, summary["sweep_id"]), key=lambda r: r["started_at"])
    assert [r["epochs_total"] for r in runs][:2] == [3, 3]
    # resume skips finished members (failed counts as finished unless --retry-failed)
    again = run_kr("sweep", "resume", summary["sweep_id"], env={"KR_HOME": str(home)}, timeout=300)
    assert again.returncode == 1 and "every member has finished" in again.stdout
    retried = run_kr("sweep", "resume", summary["sweep_id"], "--retry-failed", "--json", env={"KR_HOME": str(home)},
                     timeout=300)
    assert retried.returncode == 0, retried.stderr
    final = json.loads(retried.stdout)
    assert [m["status"] for m in final["members"]] == ["succeeded"] * 4
    record = json.loads((Path(final["sweep_dir"]) / "sweep.json").read_text())
    assert sorted(len(m["runs"]) for m in record["members"]) == [1, 1, 2, 2]  # only the failed ones ran again
    assert len(_runs(env, summary["sweep_id"])) == 6


def test_interrupted_sweep_resumes_the_unfinished_members(seeded_checkout, style_images, base_file, home):
    env = {**os.environ, "KR_HOME": str(home), "KR_FAULT": "slow"}  # 0.3 s a step, 4 steps an epoch
    # longest first: m03 (16 epochs) and m02 (6) start; m01 (5) starts when m02 has finished
    process = subprocess.Popen([sys.executable, "-m", "kohya_runner", "sweep", "marker", "--dataset", str(style_images),
                                "--base", str(base_file), "--grid", "training.epochs=5,6,16", "--max-parallel", "2"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            rows = _ledger_rows(home)
            if len(rows) == 3 and sum(r.status == "running" and (r.steps_done or 0) >= 1 for r in rows) == 2:
                break  # m02 has finished, m01 and m03 are training
            time.sleep(0.1)
        else:
            raise AssertionError("the sweep never reached its third member")
        process.send_signal(signal.SIGTERM)  # `kill`: the same clean stop as Ctrl-C
        process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1
    sweep_id = json.loads(run_kr("sweep", "ls", "--json", env={"KR_HOME": str(home)}).stdout)["sweeps"][0]["sweep_id"]
    statuses = {m["member"]: m["status"] for m in
                json.loads(run_kr("sweep", "show", sweep_id, "--json", env={"KR_HOME": str(home)}).stdout)["members"]}
    assert statuses == {"m01": "stopped", "m02": "succeeded", "m03": "stopped"}
    resumed = run_kr("sweep", "resume", sweep_id, "--json", env={"KR_HOME": str(home), "KR_FAULT": "ok"}, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    final = json.loads(resumed.stdout)
    assert final["status"] == "finished" and [m["status"] for m in final["members"]] == ["succeeded"] * 3
    record = json.loads((Path(final["sweep_dir"]) / "sweep.json").read_text())
    assert [len(m["runs"]) for m in record["members"]] == [2, 1, 2]


# ----------------------------------------------------------------------------------------------
# `kr sweep stop` from another terminal (kohya_runner.sweep.stop).


def _start_slow_sweep(style_images, base_file, home) -> subprocess.Popen:
    env = {**os.environ, "KR_HOME": str(home), "KR_FAULT": "slow"}  # 0.3 s a step: long enough to stop
    process = subprocess.Popen([sys.executable, "-m", "kohya_runner", "sweep", "marker", "--dataset", str(style_images),
                                "--base", str(base_file), "--seeds", "1,2", "training.epochs=30", "--max-parallel", "2"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if sum(r.status == "running" and (r.steps_done or 0) >= 1 for r in _ledger_rows(home)) == 2:
            return process
        assert process.poll() is None, process.communicate()
        time.sleep(0.2)
    process.kill()
    raise AssertionError("two members never trained at once")


def test_sweep_stop_asks_the_running_kr_to_stop_its_members(seeded_checkout, style_images, base_file, home):
    process = _start_slow_sweep(style_images, base_file, home)
    try:
        sweep_id = json.loads(run_kr("sweep", "ls", "--json").stdout)["sweeps"][0]["sweep_id"]
        stopped = run_kr("sweep", "stop", sweep_id)
        assert stopped.returncode == 0, stopped.stderr
        assert stopped.stdout.strip() == f"asked {sweep_id} (kr pid {process.pid}) to stop its members"
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1 and "stopping the sweep" in out, err
    summary = json.loads(run_kr("sweep", "show", sweep_id, "--json").stdout)
    assert summary["status"] == "stopped" and [m["status"] for m in summary["members"]] == ["stopped", "stopped"]


def test_sweep_stop_without_its_kr_stops_the_members_itself(seeded_checkout, style_images, base_file, home):
    from kohya_runner import sweep

    process = _start_slow_sweep(style_images, base_file, home)
    process.kill()  # kr itself dies; the members go on under their detached supervisors
    process.communicate(timeout=30)
    sweep_id = json.loads(run_kr("sweep", "ls", "--json").stdout)["sweeps"][0]["sweep_id"]
    result = sweep.stop(home, sweep_id)
    assert result.sweep_id == sweep_id and result.owner_pid is None
    assert sorted(r.status for r in result.stopped) == ["stopped", "stopped"]
    assert all(r.stop_requested for r in result.stopped)
    assert _runs({"KR_HOME": str(home)}, sweep_id)[0]["status"] == "stopped"
    again = run_kr("sweep", "stop", sweep_id)
    assert again.returncode == 0 and again.stdout.strip() == f"{sweep_id} is not running"
    with pytest.raises(BadInput):
        sweep.stop(home, "sweep-nosuch-0001")
