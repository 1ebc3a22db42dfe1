"""`kr run` end to end against a FAULT-INJECTING STAND-IN trainer (tests/fault_trainer.py) behind a
stand-in sd-scripts checkout: the sd-scripts backend's command, working folder, environment, success
rules, failure classification, stopping and reconciliation. After every test nothing of the run is left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import no_process_left, run_kr

from kohya_runner.process import group_alive


@pytest.fixture
def launch(tmp_path, style_images, base_file, fault_checkout, home):
    """Run `kr run marker …` against the fault stand-in; returns (completed process, ledger row)."""

    def go(fault: str, *extra: str, timeout: float = 120, env: dict | None = None):
        result = run_kr("run", "marker", "--dataset", style_images, "--base", base_file, "training.epochs=2", *extra,
                        env={"KR_FAULT": fault, **(env or {})}, timeout=timeout)
        return result, last_run()

    yield go
    leftovers = no_process_left(str(fault_checkout))
    assert not leftovers, leftovers


def last_run() -> dict | None:
    listing = run_kr("runs", "ls", "--json")
    rows = json.loads(listing.stdout)["runs"] if listing.returncode == 0 else []
    if not rows:
        return None
    shown = run_kr("runs", "show", rows[0]["run_id"], "--json")
    return json.loads(shown.stdout)


def test_success_command_cwd_env_and_archive(launch, fault_checkout):
    result, data = launch("ok")
    assert result.returncode == 0, result.stderr
    run, manifest = data["run"], data["manifest"]
    assert run["status"] == "succeeded" and run["exit_code"] == 0
    assert run["steps_done"] == 8 and run["steps_total"] == 8 and run["epochs_total"] == 2
    run_dir = Path(run["run_dir"])
    command = json.loads((run_dir / "command.json").read_text())
    assert command["backend"] == "sd-scripts"
    assert command["argv"] == [sys.executable, str(fault_checkout / "sdxl_train_network.py"), "--config_file",
                               str(run_dir / "config.toml")]
    assert command["cwd"] == str(run_dir)
    for key, value in {"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                       "HF_HUB_DISABLE_TELEMETRY": "1", "WANDB_MODE": "disabled"}.items():
        assert command["env"][key] == value
    assert int(command["env"]["COLUMNS"]) >= 160
    assert run["result_path"] == str(run_dir / "output" / "marker.safetensors")
    assert [l["file"] for l in manifest["loras"]] == ["marker-000001.safetensors", "marker.safetensors"]
    assert all(l["ok"] and l["rank"] == 16 and l["alpha"] == 8.0 and len(l["sha256"]) == 64 for l in manifest["loras"])
    csv_lines = (run_dir / "archive" / "loss.csv").read_text().splitlines()
    assert csv_lines[0] == "tag,step,wall_time,value" and len(csv_lines) == 1 + manifest["losses"]["points"]
    assert manifest["losses"]["final_average_loss"] == pytest.approx(0.0625)
    assert (run_dir / "archive" / "loss.png").stat().st_size > 1000
    assert {"config.toml", "dataset.toml", "spec.json", "command.json"} <= set(manifest["files"])
    assert manifest["dataset"]["counts"]["images"] == 3
    assert manifest["trainer"]["packages"]["safetensors"]
    # the run id is stamped into the training options (modelspec.kr_run_id in sd-scripts' header)
    assert f'metadata_kr_run_id = "{run["run_id"]}"' in (run_dir / "config.toml").read_text()


def test_crash_is_failed_with_the_exception(launch):
    result, data = launch("crash")
    assert result.returncode == 1
    run = data["run"]
    assert run["status"] == "failed" and run["exit_code"] == 1
    assert "RuntimeError: stand-in crash in the training loop" in run["hint"]
    assert data["manifest"]["outcome"]["status"] == "failed"


def test_cuda_oom_names_the_next_memory_setting(launch):
    result, data = launch("oom", "--no-retry")  # (the retries themselves: tests/memory/test_memory_retry.py)
    run = data["run"]
    assert result.returncode == 1 and run["status"] == "failed" and run["reason"] == "cuda_oom"
    # marker: gradient checkpointing on, batch 2 → the next setting is batch 1 with accumulation
    assert "dataset.batch_size=1" in run["hint"] and "gradient_accumulation_steps=2" in run["hint"]
    _, data = launch("oom", "dataset.batch_size=1", "--no-retry")
    assert "precision.full_bf16=true" in data["run"]["hint"]


def test_nan_loss_is_killed_at_once_and_diverged(launch):
    start = time.monotonic()
    result, data = launch("nan", env={"KR_FAULT_DELAY": "0.5"})
    run = data["run"]
    assert result.returncode == 1
    assert run["status"] == "diverged" and run["reason"] == "nan_loss"
    assert run["steps_done"] < 8, "the run must not go on to the end"
    assert time.monotonic() - start < 30
    assert not (Path(run["run_dir"]) / "output" / "marker.safetensors").exists()


def test_no_data_exit_0_is_a_failure(launch):
    result, data = launch("nodata")
    run = data["run"]
    assert result.returncode == 1
    assert run["status"] == "failed" and run["reason"] == "no_data" and run["exit_code"] == 0
    assert "No data found" in run["hint"] or "found no images" in run["hint"]


def test_exit_0_without_model_is_a_failure(launch):
    result, data = launch("exit0_nomodel")
    assert result.returncode == 1
    assert data["run"]["status"] == "failed" and data["run"]["reason"] == "no_model"


def _start_detached(style_images, base_file, fault, extra=()):
    result = run_kr("run", "marker", "--dataset", style_images, "--base", base_file, "training.epochs=3", *extra, "--detach",
                    "--json", env={"KR_FAULT": fault})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["run_id"]


def _wait_for(run_id, predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = json.loads(run_kr("runs", "show", run_id, "--json").stdout)["run"]
        if predicate(row):
            return row
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting on {run_id}: {row}")


@pytest.mark.parametrize("fault", ["hang", "hang_child"])
def test_hang_then_stop_empties_the_process_group(fault, launch, style_images, base_file):
    run_id = _start_detached(style_images, base_file, fault)
    row = _wait_for(run_id, lambda r: r["status"] == "running" and r["steps_total"])
    started = time.monotonic()
    result = run_kr("runs", "stop", run_id, "--timeout", "1", "--json")
    assert result.returncode == 0, result.stderr
    final = json.loads(result.stdout)
    assert final["status"] == "stopped"
    assert time.monotonic() - started < 30
    assert not group_alive(row["pgid"])  # SIGINT was ignored: SIGTERM ended it, and its worker too


def test_ctrl_c_stops_and_the_newest_checkpoint_is_the_result(tmp_path, style_images, base_file, fault_checkout, home):
    # The stand-in pauses after saving epoch 2's checkpoint and says so (the gate file): Ctrl-C lands there
    # however fast or loaded the machine is, with no fixed delay to outrun.
    gate = tmp_path / "paused"
    kr = _start_paused_run(style_images, base_file, gate, pause_after_epoch=2)
    try:
        _wait_for_file(gate, kr)
        kr.send_signal(signal.SIGINT)  # what the terminal sends on Ctrl-C
        out, err = kr.communicate(timeout=300)
    finally:
        kr.kill()
    assert kr.returncode == 1, err
    row = json.loads(run_kr("runs", "ls", "--json").stdout)["runs"][0]
    final = json.loads(run_kr("runs", "show", row["run_id"], "--json").stdout)["run"]
    output = Path(final["run_dir"]) / "output"
    epochs = sorted(output.glob("marker-0000*.safetensors"))
    assert [p.name for p in epochs] == ["marker-000001.safetensors", "marker-000002.safetensors"]
    assert not (output / "marker.safetensors").exists()
    assert final["status"] == "stopped" and final["result_path"] == str(epochs[-1])
    assert not group_alive(final["pgid"])
    assert not no_process_left(str(fault_checkout))


def test_ctrl_c_as_the_trainer_starts_stops_it_too(tmp_path, style_images, base_file, fault_checkout, home):
    # Ctrl-C in the moment between the trainer's start and kr following it: kr's handler is in place before
    # the launch, so the trainer is stopped (not left training unsupervised while kr exits 130).
    gate = tmp_path / "paused"
    kr = _start_paused_run(style_images, base_file, gate, pause_after_epoch=1)
    try:
        _wait_for_file(home / "runs", kr, pattern="*/trainer.log")  # created by the launch itself
        kr.send_signal(signal.SIGINT)
        out, err = kr.communicate(timeout=300)
    finally:
        kr.kill()
        gate.unlink(missing_ok=True)  # lets a trainer that was not stopped finish
    assert kr.returncode == 1, err
    final = json.loads(run_kr("runs", "ls", "--json").stdout)["runs"][0]
    assert final["status"] == "stopped", final
    assert not (Path(final["run_dir"]) / "output" / "marker.safetensors").exists()
    assert not no_process_left(str(fault_checkout))


def _start_paused_run(style_images, base_file, gate: Path, pause_after_epoch: int) -> subprocess.Popen:
    """`kr run marker` (3 epochs) on the fault stand-in, which pauses after `pause_after_epoch` and says so in `gate`."""
    env = {**os.environ, "KR_FAULT": "ok", "KR_FAULT_PAUSE_AFTER_EPOCH": str(pause_after_epoch),
           "KR_FAULT_GATE": str(gate)}
    return subprocess.Popen([sys.executable, "-m", "kohya_runner", "run", "marker", "--dataset", str(style_images),
                             "--base", str(base_file), "training.epochs=3"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_file(path: Path, process: subprocess.Popen, timeout: float = 300.0, pattern: str | None = None) -> None:
    """Until `path` (or a file matching `pattern` under it) exists: returns as soon as it does; fails early
    if kr ended."""
    deadline = time.monotonic() + timeout
    while not (any(path.glob(pattern)) if pattern else path.exists()):
        if process.poll() is not None:
            raise AssertionError(f"kr ended (exit {process.returncode}) before the trainer reached the gate: "
                                 + process.communicate()[1])
        if time.monotonic() > deadline:
            raise AssertionError(f"the trainer did not reach the gate {path} in {timeout:.0f} s")
        time.sleep(0.02)


def _wait_for_latest(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = json.loads(run_kr("runs", "ls", "--json").stdout or '{"runs": []}')["runs"]
        if rows and predicate(rows[0]):
            return rows[0]
        time.sleep(0.3)
    raise AssertionError("timed out")


def test_kr_killed_mid_run_is_reconciled(style_images, base_file, fault_checkout, home):
    # 16 steps of 0.5 s: the trainer is still mid-run when kr is killed, however loaded the machine is
    env = {**os.environ, "KR_FAULT": "slow", "KR_FAULT_DELAY": "0.5"}
    kr = subprocess.Popen([sys.executable, "-m", "kohya_runner", "run", "marker", "--dataset", str(style_images), "--base",
                           str(base_file), "training.epochs=4"], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    row = _wait_for_latest(lambda r: r["status"] == "running" and (r["steps_done"] or 0) >= 1)
    kr.kill()  # kr dies; the trainer is in its own session and keeps training
    kr.wait()
    middle = json.loads(run_kr("runs", "show", row["run_id"], "--json").stdout)["run"]
    assert middle["status"] == "running"  # the trainer is alive, so nothing is settled yet
    deadline = time.monotonic() + 60
    while group_alive(row["pgid"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    final = json.loads(run_kr("runs", "show", row["run_id"], "--json").stdout)
    assert final["run"]["status"] == "succeeded", final["run"]
    assert final["run"]["exit_code"] is None  # not a child of the kr that settled it
    assert final["manifest"]["result"] == "output/marker.safetensors"


def test_kr_killed_and_trainer_killed_is_crashed(style_images, base_file, fault_checkout, home):
    run_id = _start_detached(style_images, base_file, "slow")
    row = _wait_for(run_id, lambda r: r["status"] == "running" and r["pid"])
    os.kill(row["supervisor_pid"], signal.SIGKILL)
    os.killpg(row["pgid"], signal.SIGKILL)
    deadline = time.monotonic() + 10
    while group_alive(row["pgid"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    final = _wait_for(run_id, lambda r: not r["status"] in ("running", "queued"))
    assert final["status"] == "crashed"


def test_trainer_killed_by_sigkill_is_crashed_with_oom_killer_hint(style_images, base_file, fault_checkout, home):
    run_id = _start_detached(style_images, base_file, "slow")
    row = _wait_for(run_id, lambda r: r["status"] == "running" and r["pid"])
    os.kill(row["pid"], signal.SIGKILL)  # what the kernel's OOM killer does
    final = _wait_for(run_id, lambda r: r["status"] not in ("running", "queued"))
    assert final["status"] == "crashed" and final["reason"] == "killed" and "OOM killer" in final["hint"]
    assert final["exit_code"] == -9


def test_missing_sd_scripts_is_a_clear_error(style_images, base_file, home, monkeypatch, tmp_path):
    monkeypatch.setenv("KR_SD_SCRIPTS", str(tmp_path / "nowhere"))
    result = run_kr("run", "marker", "--dataset", style_images, "--base", base_file)
    assert result.returncode == 2 and "sd-scripts is not installed" in result.stderr and "kr vendor install" in result.stderr
    assert "Traceback" not in result.stderr
    assert json.loads(run_kr("runs", "ls", "--json").stdout)["runs"] == []  # nothing was created


def test_privacy_options_are_refused_before_launch(style_images, base_file, fault_checkout, home):
    for override in ("sd_scripts.log_with=wandb", "sd_scripts.huggingface_repo_id=me/lora", "sd_scripts.wandb_api_key=x"):
        result = run_kr("run", "marker", "--dataset", style_images, "--base", base_file, override)
        assert result.returncode == 2 and "refused" in result.stderr, result.stderr
    assert run_kr("run", "marker", "--dataset", style_images, "--base", "stabilityai/sdxl").returncode == 2
    assert json.loads(run_kr("runs", "ls", "--json").stdout)["runs"] == []


def test_gpus_kr_cannot_use_are_refused_naming_the_fix(monkeypatch):
    # --gpu 7 on a machine without GPU 7 used to train on the CPU (an empty device list for the trainer)
    from kohya_runner.cli.run import gpu_list, gpu_option
    from kohya_runner.errors import BadInput

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert gpu_option("1") == [1] and gpu_list("0,1") == [0, 1] and gpu_option("cpu") == [] == gpu_list("CPU")
    with pytest.raises(BadInput, match=r"--gpu asks for GPU 2, which is not there: 2 GPUs are visible \(0, 1.*Fix: --gpu 0"):
        gpu_option("2")
    with pytest.raises(BadInput, match="lists GPU 1 more than once"):
        gpu_list("1,1")
    with pytest.raises(BadInput, match="give GPU numbers"):
        gpu_list("first")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU at all: every number is refused, the CPU named
    with pytest.raises(BadInput, match=r"--gpus asks for GPU 0, but no GPU is visible on this machine.*Fix: --gpus cpu"):
        gpu_list("0", "--gpus")


def test_refused_inputs_write_no_cache_folder_or_hash_index(style_images, base_file, fault_checkout, home, tmp_path):
    # each used to create caches/<key>/ and rewrite the cache's hash index before being refused
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    for override in ("sd_scripts.not_an_option=1", "sd_scripts.log_with=wandb", f"model.vae={tmp_path / 'no-vae.safetensors'}",
                     f"network.weights={tmp_path / 'no-lora.safetensors'}", f"model.base={empty}"):
        result = run_kr("run", "marker", "--dataset", style_images, "--base", base_file, override)
        assert result.returncode == 2 and "Traceback" not in result.stderr, (override, result.stderr)
        assert not home.exists(), (override, sorted(str(p) for p in home.rglob("*")))
