"""`kr run` end to end with the built-in tiny trainer: both backends (the tiny backend, and the
sd-scripts backend against a stand-in checkout whose entry scripts run the tiny trainer), the archive,
`kr runs` commands, detach + tail, and resume with a cumulative step count."""

from __future__ import annotations

from kohya_runner import workspace

import csv
import json
import sys
import tarfile
import time
from pathlib import Path

import pytest

from conftest import make_standin_checkout, no_process_left, run_kr

from kohya_runner.process import group_alive

SMALL = ["training.epochs=4", "sampling.steps=3", "sampling.every_n_epochs=2", "saving.every_n_epochs=2"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """The tiny bases and the demo images, built once for the module."""
    from kohya_runner.tiny import build_tiny_base, write_style_dataset

    root = tmp_path_factory.mktemp("tiny-shared")
    return {
        "sdxl": build_tiny_base(root / "tiny-sdxl", "sdxl"),
        "sd15": build_tiny_base(root / "tiny-sd15", "sd15"),
        "images": write_style_dataset(root / "images", count=16, size=64),
    }


def use_shared_bases(home: Path, shared) -> None:
    (home / "bases").mkdir(parents=True, exist_ok=True)
    for family in ("sdxl", "sd15"):
        link = workspace.tiny_base_dir(home, family)
        if not link.exists():
            link.symlink_to(shared[family])


@pytest.fixture(scope="module")
def finished(tmp_path_factory, shared):
    """One finished tiny-backend run, shared by the read-only tests below."""
    home = tmp_path_factory.mktemp("kr-home")
    use_shared_bases(home, shared)
    env = {"KR_HOME": str(home)}
    result = run_kr("run", "tiny-demo", "--dataset", shared["images"], "--base", "tiny", *SMALL, env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    row = json.loads(run_kr("runs", "ls", "--json", env=env).stdout)["runs"][0]
    return {"home": home, "env": env, "row": row, "stdout": result.stdout,
            "data": json.loads(run_kr("runs", "show", row["run_id"], "--json", env=env).stdout)}


def test_tiny_run_end_to_end(finished):
    run, manifest = finished["data"]["run"], finished["data"]["manifest"]
    run_dir = Path(run["run_dir"])
    assert run["status"] == "succeeded" and run["backend"] == "tiny" and run["exit_code"] == 0
    assert run["steps_done"] == run["steps_total"] == 32 and run["epochs_total"] == 4
    command = json.loads((run_dir / "command.json").read_text())
    assert command["argv"][:3] == [sys.executable, "-m", "kohya_runner.tiny"]
    assert [l["file"] for l in manifest["loras"]] == ["tiny-demo-000002.safetensors", "tiny-demo.safetensors"]
    assert all(l["ok"] and l["rank"] == 8 and l["alpha"] == 8.0 for l in manifest["loras"])
    assert manifest["result"] == "output/tiny-demo.safetensors"
    # samples: the base model's column (e000000) and every 2 epochs; 12 prompts (4 subjects × trigger, no trigger, variant)
    columns = {Path(s).name.split("_")[1] for s in manifest["samples"]}
    assert columns == {"e000000", "e000002", "e000004"} and len(manifest["samples"]) == 36
    with open(run_dir / "archive" / "loss.csv") as f:
        rows = list(csv.DictReader(f))
    assert len([r for r in rows if r["tag"] == "loss/current"]) == 32
    assert {r["tag"] for r in rows} >= {"loss/current", "loss/average", "loss/epoch_average", "lr/unet"}
    assert manifest["dataset"]["counts"]["images"] == 16
    assert manifest["trainer"]["packages"]["torch"]
    assert "succeeded" in finished["stdout"]
    assert not group_alive(run["pgid"])


def test_runs_ls_show_diff_export_rm(finished, tmp_path, shared):
    env, row = finished["env"], finished["row"]
    listing = run_kr("runs", "ls", env=env)
    assert row["run_id"] in listing.stdout and "succeeded" in listing.stdout and "32/32" in listing.stdout
    shown = run_kr("runs", "show", row["run_id"][:6], env=env)  # a unique prefix is enough
    assert "rank 8 alpha 8.0" in shown.stdout and "result:" in shown.stdout
    exported = run_kr("runs", "export", row["run_id"], "-o", tmp_path, env=env)
    assert exported.returncode == 0, exported.stderr
    with tarfile.open(tmp_path / f"{row['run_id']}.tar.gz") as tar:
        names = tar.getnames()
    assert f"{row['run_id']}/archive/manifest.json" in names
    assert f"{row['run_id']}/output/tiny-demo.safetensors" in names
    assert not any("/logs/" in n or n.endswith(".npz") for n in names)
    again = run_kr("runs", "export", row["run_id"], "-o", tmp_path, env=env)
    assert again.returncode == 2 and "does not overwrite" in again.stderr
    # a second, different run to diff against, then rm it
    second = run_kr("run", "tiny-demo", "--dataset", shared["images"], "--base", "tiny", *SMALL, "network.dim=4",
                    "optimizer.lr=5e-3", "--json", env=env, timeout=300)
    assert second.returncode == 0, second.stderr
    other = json.loads(second.stdout)["run_id"]
    diff = json.loads(run_kr("runs", "diff", row["run_id"], other, "--json", env=env).stdout)
    assert {d["key"]: (d["a"], d["b"]) for d in diff["settings"]} == {"network.dim": (8, 4), "optimizer.lr": (0.01, 0.005)}
    removed = run_kr("runs", "rm", other, "--yes", env=env)
    assert removed.returncode == 0 and not Path(json.loads(second.stdout)["run_dir"]).exists()
    assert other not in run_kr("runs", "ls", env=env).stdout


def test_sdscripts_backend_runs_the_standin_checkout(tmp_path, shared, home):
    checkout = make_standin_checkout(tmp_path / "sd-scripts", "tiny")
    env = {"KR_SD_SCRIPTS": str(checkout), "KR_SD_PYTHON": sys.executable}
    result = run_kr("run", "tiny-demo", "--dataset", shared["images"], "--base", shared["sdxl"], *SMALL,
                    "--json", env=env, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    run = json.loads(result.stdout)
    command = json.loads((Path(run["run_dir"]) / "command.json").read_text())
    assert run["backend"] == "sd-scripts" and run["status"] == "succeeded"
    assert command["argv"] == [sys.executable, str(checkout / "sdxl_train_network.py"), "--config_file",
                               str(Path(run["run_dir"]) / "config.toml")]
    assert command["cwd"] == run["run_dir"] and command["env"]["HF_HUB_OFFLINE"] == "1"
    # SD1.5 goes through train_network.py
    sd15 = run_kr("run", "tiny-demo", "--dataset", shared["images"], "--base", shared["sd15"], *SMALL,
                  "model.family=sd15", "dataset.bucket_reso_steps=64", "dataset.min_bucket_reso=64",
                  "precision.cache_text_encoder_outputs=false", "precision.cache_text_encoder_outputs_to_disk=false",
                  "--json", env=env, timeout=300)
    assert sd15.returncode == 0, sd15.stdout + sd15.stderr
    run15 = json.loads(sd15.stdout)
    assert json.loads((Path(run15["run_dir"]) / "command.json").read_text())["argv"][1] == str(checkout / "train_network.py")
    assert not no_process_left(str(checkout))


def _show(run_id, env=None):
    return json.loads(run_kr("runs", "show", run_id, "--json", env=env).stdout)["run"]


def test_detach_tail_stop_and_resume_keep_steps_cumulative(shared, home):
    use_shared_bases(home, shared)
    started = run_kr("run", "tiny-demo", "--dataset", shared["images"], "--base", "tiny", "training.epochs=8",
                     "saving.every_n_epochs=2", "sampling.prompts=[]", "--detach", "--json")
    assert started.returncode == 0, started.stderr
    run_id = json.loads(started.stdout)["run_id"]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        row = _show(run_id)
        states = list((Path(row["run_dir"]) / "output").glob("*-state"))
        if states and (row["epoch"] or 0) >= 4:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"no state folder in time: {row}")
    stopped = run_kr("runs", "stop", run_id, "--timeout", "5", "--json")
    first = json.loads(stopped.stdout)
    assert first["status"] == "stopped" and first["result_path"]
    assert not group_alive(first["pgid"])
    resumed = run_kr("runs", "resume", run_id, "--json", timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    second = json.loads(resumed.stdout.split("\n", 1)[1] if resumed.stdout.startswith("resuming") else resumed.stdout)
    assert second["status"] == "succeeded" and second["resumed_from"] == run_id
    assert second["step_offset"] > 0 and second["step_offset"] % 8 == 0  # whole epochs of 8 steps
    assert second["steps_cumulative"] == 64  # 8 epochs × 8 steps, counted across both runs
    config = (Path(second["run_dir"]) / "config.toml").read_text()
    assert "resume = " in config and "-state" in config
    # tail re-attaches to a finished run and reports it
    tail = run_kr("runs", "tail", second["run_id"])
    assert tail.returncode == 0 and "succeeded" in tail.stdout


def test_every_run_json_output_names_its_schema(finished, tmp_path):
    env, run_id = finished["env"], finished["row"]["run_id"]
    commands = {
        "runs": ("runs", "ls"), "run": ("runs", "show", run_id), "runs-diff": ("runs", "diff", run_id, run_id),
        "runs-best": ("runs", "best", run_id), "runs-export": ("runs", "export", run_id, "-o", tmp_path),
        "report": ("report", run_id, "-o", tmp_path / "report"),
        "release": ("release", run_id, "-o", tmp_path / "released"),
        "sweeps": ("sweep", "ls"),
    }
    for schema, args in commands.items():
        result = run_kr(*args, "--json", env=env)
        assert result.returncode == 0, (args, result.stderr)
        data = json.loads(result.stdout)
        assert next(iter(data)) == "schema" and data["schema"] == f"kr.{schema}/1", (args, data.get("schema"))
