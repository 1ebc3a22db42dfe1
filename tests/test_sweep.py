"""`kr sweep`: definitions (grid, paired sets, seeds, sweep TOML), validation of every member before
anything starts, the dry run, kr's loss guard, and real sweeps: a 2×2 of the built-in tiny trainer
(shared cache, one member family stopped by the guard, results, ledger links), a clean Ctrl-C, and
resume with a stand-in sd-scripts checkout."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import make_standin_checkout, no_process_left, run_kr

from kohya_runner import sweep
from kohya_runner.errors import BadInput
from kohya_runner.monitor import LossGuard, Progress, classify

QUICK = ["training.epochs=2", "sampling.at_first=false", "sampling.every_n_epochs=100", "saving.every_n_epochs=100",
         "saving.state=false"]


# ----------------------------------------------------------------------------------------------
# Defining a sweep.


def test_split_values_keeps_brackets_braces_and_quotes_together():
    assert sweep.split_values("1e-4,3e-4") == ["1e-4", "3e-4"]
    assert sweep.split_values('[1,2],{a = 1, b = 2},"x,y",64x96') == ["[1,2]", "{a = 1, b = 2}", '"x,y"', "64x96"]


def test_grid_values_are_typed_like_overrides():
    axis = sweep.grid_axis("optimizer.lr=1e-4,3e-4")
    assert axis.choices == [[("optimizer.lr", 1e-4)], [("optimizer.lr", 3e-4)]]
    assert sweep.grid_axis("optimizer.type=AdamW8bit,Prodigy").choices[1] == [("optimizer.type", "Prodigy")]
    assert sweep.grid_axis("training.steps=none,100").choices[0] == [("training.steps", None)]
    with pytest.raises(BadInput, match="did you mean 'optimizer.lr'"):
        sweep.grid_axis("optimizer.lrr=1,2")
    with pytest.raises(BadInput, match="key.path=value1,value2"):
        sweep.grid_axis("optimizer.lr")


SWEEP_TOML = """
[sweep]
name = "optimizers"
preset = "tiny-demo"
seeds = [1, 2]

[set]
training.epochs = 2

[grid]
network.dim = [4, 8]
"dataset.resolution" = [[64, 64], [96, 96]]

[[paired]]
optimizer.type = "AdamW"
optimizer.lr = [1e-4, 2e-4, 3e-4, 5e-4]

[[paired]]
optimizer.type = "Prodigy"
optimizer.lr = 1.0
optimizer.args = { d_coef = 1.0, weight_decay = 0.01, safeguard_warmup = true }

[[paired]]
optimizer.type = "Adafactor"
optimizer.lr = [1e-4, 2e-4]
optimizer.args = { relative_step = false, scale_parameter = false, warmup_init = false }
"""


def test_sweep_file_grid_paired_ladders_and_seeds(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text(SWEEP_TOML)
    definition = sweep.load_file(path)
    assert definition.preset == "tiny-demo" and definition.name == "optimizers"
    assert definition.fixed == [("training.epochs", 2)]
    assert [a.name for a in definition.axes] == ["network.dim", "dataset.resolution", "paired", "seed"]
    paired = definition.axes[2]
    assert len(paired.choices) == 4 + 1 + 2  # a ladder inside an alternative expands it
    prodigy = paired.choices[4]
    assert dict(prodigy) == {"optimizer.type": "Prodigy", "optimizer.lr": 1.0,
                             "optimizer.args": {"d_coef": 1.0, "weight_decay": 0.01, "safeguard_warmup": True}}
    assert definition.axes[1].choices == [[("dataset.resolution", [64, 64])], [("dataset.resolution", [96, 96])]]
    members = sweep.expand(definition)
    assert len(members) == 2 * 2 * 7 * 2
    assert members[0] == [("network.dim", 4), ("dataset.resolution", [64, 64]), ("optimizer.type", "AdamW"),
                          ("optimizer.lr", 1e-4), ("training.seed", 1)]


def test_named_paired_sets_are_independent_axes(tmp_path):
    path = tmp_path / "sweep.toml"
    path.write_text('[[paired.opt]]\noptimizer.type = "AdamW"\n[[paired.opt]]\noptimizer.type = "Lion"\n'
                    '[[paired.sched]]\nscheduler.name = "cosine"\n[[paired.sched]]\nscheduler.name = "linear"\n'
                    'scheduler.warmup_steps = 4\n')
    definition = sweep.load_file(path)
    assert [a.name for a in definition.axes] == ["paired.opt", "paired.sched"]
    assert len(sweep.expand(definition)) == 4


@pytest.mark.parametrize("text, message", [
    ("[grid]\noptimizer.lr = [1e-4]\n[[paired]]\noptimizer.lr = 2e-4\n", "set both by"),
    ("[set]\noptimizer.lr = [1e-4, 2e-4]\n", "move it to \\[grid\\]"),
    ("[grid]\noptimizer.lrr = [1e-4]\n", "did you mean 'optimizer.lr'"),
    ("[sweeps]\nname = 'x'\n", "unknown table"),
    ("[sweep]\nseeds = 3\n", "seeds must be a list"),
    ("[sweep]\nname = 'x'\n", "varies nothing"),
    ("[grid\n", "not valid TOML"),
])
def test_bad_sweep_files_are_clear_errors(tmp_path, text, message):
    path = tmp_path / "sweep.toml"
    path.write_text(text)
    with pytest.raises(BadInput, match=message):
        sweep.expand(sweep.load_file(path))


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    from kohya_runner.tiny import build_tiny_base, make_demo_dataset

    folder = tmp_path_factory.mktemp("sweep-shared")
    return {"sdxl": build_tiny_base(folder / "tiny-sdxl", "sdxl"),
            "images": make_demo_dataset(folder / "images", count=16, size=64)}


@pytest.fixture
def tiny_home(home, shared):
    """A workspace with the tiny SDXL base, and the demo images at 64 px (read through kr's cache folders,
    so they stay untouched and can be shared)."""
    (home / "bases").mkdir(parents=True)
    (home / "bases" / "tiny-sdxl").symlink_to(shared["sdxl"])
    return {"home": home, "images": shared["images"]}


def test_dry_run_lists_members_changes_steps_and_refuses_invalid_ones(kr, tiny_home):
    images = tiny_home["images"]
    result = kr("sweep", "tiny-demo", "--dataset", images, "--base", "tiny", "--grid", "optimizer.type=AdamW,Prodigy",
                "--grid", "optimizer.lr=1e-2,3e-2", "training.epochs=2", "--dry-run")
    assert result.exit_code == 2
    out = result.stdout
    assert "4 member(s), 2 valid, 32 steps in total" in out and "every member: training.epochs=2" in out
    lines = {line.split()[0]: line for line in out.splitlines()[3:]}
    assert lines["m01"].split()[1:] == ["16", "(none:", "the", "preset", "as", "it", "is)"]
    assert lines["m02"].split()[1:] == ["16", "optimizer.lr=0.03"]
    assert lines["m03"].split()[1:4] == ["–", "optimizer.type=Prodigy", "optimizer.lr=0.01"]
    assert "INVALID: optimizer.lr = 0.01: is far too low for Prodigy" in out
    assert "2 of 4 sweep members are invalid; nothing was launched" in result.stderr
    assert "--skip-invalid" in result.stderr and "Traceback" not in result.stderr
    data = kr.json("sweep", "tiny-demo", "--dataset", images, "--base", "tiny", "--grid", "optimizer.type=AdamW,Prodigy",
                   "--grid", "optimizer.lr=1e-2,3e-2", "training.epochs=2", "--dry-run", "--skip-invalid")
    assert data["total_steps"] == 32 and data["varying"] == ["optimizer.type", "optimizer.lr"]
    assert [m["valid"] for m in data["members"]] == [True, True, False, False]
    assert data["members"][1]["changes"] == {"optimizer.lr": [0.01, 0.03]}
    assert data["members"][0]["steps"] == 16
    assert not (tiny_home["home"] / "sweeps").exists()  # a dry run starts nothing


def test_sweep_input_errors_are_bad_input(kr, tiny_home, tmp_path):
    images = tiny_home["images"]
    cases = [
        (["sweep", "tiny-demo", "--dataset", images, "--base", "tiny"], "varies nothing"),
        (["sweep", "tiny-demo", "--dataset", tmp_path / "nope", "--base", "tiny", "--seeds", "1,2"], "dataset folder not found"),
        (["sweep", "nosuchpreset", "--dataset", images, "--base", "tiny", "--seeds", "1,2"], "unknown preset"),
        (["sweep", "tiny-demo", "--dataset", images, "--base", "tiny", "--seeds", "1,x"], "whole numbers"),
        (["sweep", "tiny-demo", "--dataset", images, "--base", "tiny", "--grid", "optimizer.lr=1,2", "optimizer.lr=3"],
         "both a command-line override and swept"),
        (["sweep", "tiny-demo", "--dataset", images, "--base", "/nowhere/model.safetensors", "--seeds", "1,2"],
         "every member of the sweep fails the same way: base model not found"),
    ]
    for args, message in cases:
        result = kr(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr, (message, result.stderr)
        assert "Traceback" not in result.stderr


def test_the_dataset_check_runs_once_before_anything_starts(kr, tiny_home, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_home["images"], broken)
    (broken / "000_a_man_thinking.png").write_bytes(b"not a png")
    result = kr("sweep", "tiny-demo", "--dataset", broken, "--base", "tiny", "--seeds", "1,2", *QUICK)
    assert result.exit_code == 2
    assert "has 1 error(s); nothing was launched" in result.stderr and "000_a_man_thinking.png" in result.stderr
    assert "--skip-check" in result.stderr
    assert kr.json("sweep", "ls") == [] and kr.json("runs", "ls") == []


# ----------------------------------------------------------------------------------------------
# kr's loss guard.


def test_loss_guard_rule():
    def fed(guard, *points):
        reason = None
        for step, loss in points:
            reason = reason or guard.check(Progress(steps_done=step, avr_loss=loss))
        return reason

    reason = fed(LossGuard(3.0, 5), (5, 0.1), (8, 0.2), (10, 0.31))
    assert "rose to 0.31 at step 10, above 3 × its running minimum 0.1 since warm-up" in reason
    assert fed(LossGuard(3.0, 5), (5, 0.1), (10, 0.29)) is None
    # the running minimum starts at the end of warm-up: an early low average does not trip it
    assert fed(LossGuard(3.0, 5), (1, 0.01), (4, 0.05), (5, 0.1), (10, 0.2)) is None
    assert fed(LossGuard(None, 0), (1, 0.1), (2, 5.0)) is None  # switched off
    assert fed(LossGuard(3.0, 0), (1, 0.1), (2, math.nan)) is None  # NaN has its own rule
    p = Progress(steps_done=10, avr_loss=0.31, min_loss=0.1)
    p.divergence = reason
    outcome = classify(p, -15, False, diverged=True)
    assert (outcome.status, outcome.reason) == ("diverged", "loss_diverged") and "lower optimizer.lr" in outcome.hint
    p.nan = True
    assert classify(p, -15, False, diverged=True).reason == "nan_loss"


def test_slots():
    assert sweep.slots_for(sweep.Options(gpus=[])) == [[]]
    assert sweep.slots_for(sweep.Options(gpus=[], max_parallel=2)) == [[], []]
    assert sweep.slots_for(sweep.Options(gpus=[0, 1, 3])) == [[0], [1], [3]]
    assert sweep.slots_for(sweep.Options(gpus=[0, 1, 3], max_parallel=2)) == [[0], [1]]
    with pytest.raises(BadInput):
        sweep.slots_for(sweep.Options(gpus=[], max_parallel=0))


# ----------------------------------------------------------------------------------------------
# Real sweeps with the tiny trainer.


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
    return json.loads(run_kr("runs", "ls", "--sweep", sweep_id, "--json", env=env).stdout)


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
    listing = json.loads(run_kr("sweep", "ls", "--json", env=env).stdout)
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
    sweep_id = json.loads(run_kr("sweep", "ls", "--json", env={"KR_HOME": str(home)}).stdout)[0]["sweep_id"]
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
    script = str(Path(__file__).with_name("fault_trainer.py"))
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
    sweep_id = json.loads(run_kr("sweep", "ls", "--json", env={"KR_HOME": str(home)}).stdout)[0]["sweep_id"]
    statuses = {m["member"]: m["status"] for m in
                json.loads(run_kr("sweep", "show", sweep_id, "--json", env={"KR_HOME": str(home)}).stdout)["members"]}
    assert statuses == {"m01": "stopped", "m02": "succeeded", "m03": "stopped"}
    resumed = run_kr("sweep", "resume", sweep_id, "--json", env={"KR_HOME": str(home), "KR_FAULT": "ok"}, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    final = json.loads(resumed.stdout)
    assert final["status"] == "finished" and [m["status"] for m in final["members"]] == ["succeeded"] * 3
    record = json.loads((Path(final["sweep_dir"]) / "sweep.json").read_text())
    assert [len(m["runs"]) for m in record["members"]] == [2, 1, 2]
