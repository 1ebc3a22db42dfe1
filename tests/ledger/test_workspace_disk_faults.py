"""A full or read-only workspace: real filesystems (a small tmpfs, a read-only remount), not permissions
(root ignores them). Runs are refused before anything is written, with the workspace named; reading
runs keeps working. Skipped, with the reason, where mounting is not permitted."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid

import pytest

from conftest import run_kr


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@pytest.fixture
def mount_over(tmp_path):
    """mount_over(folder, size) puts a tmpfs of `size` at `folder`, keeping what the folder held;
    everything is unmounted at the end."""
    mounted = []

    def mount(folder, size="4m"):
        saved = tmp_path / f"saved-{uuid.uuid4().hex}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copytree(folder, saved, symlinks=True)
        result = _mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder))
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or result.returncode}); these tests "
                        "need root and mount rights")
        mounted.append(folder)
        shutil.copytree(saved, folder, symlinks=True, dirs_exist_ok=True)
        return folder

    try:
        yield mount
    finally:
        for folder in reversed(mounted):
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def _fill(folder):
    with open(folder / "filler", "wb") as handle:
        try:
            while True:
                handle.write(b"\0" * (1 << 16))
                handle.flush()
        except OSError:
            pass


def _finished_run(home, style_images, sdxl_header_base):
    result = run_kr("run", "marker", "--dataset", style_images, "--base", sdxl_header_base, "training.epochs=1",
                    env={"KR_FAULT": "ok"})
    assert result.returncode == 0, result.stderr
    rows = json.loads(run_kr("runs", "ls", "--json").stdout)["runs"]
    return rows[0]["run_id"]


def _reads_work(run_id):
    listing = run_kr("runs", "ls")
    assert listing.returncode == 0 and run_id in listing.stdout, listing.stderr
    shown = run_kr("runs", "show", run_id, "--json")
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["run"]["status"] == "succeeded"
    assert json.loads(run_kr("runs", "ls", "--json").stdout)["runs"][0]["run_id"] == run_id


def _refused(result, home, words):
    assert result.returncode == 2, result.stdout + result.stderr
    assert str(home) in result.stderr and all(w in result.stderr for w in words), result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr


def test_a_run_that_does_not_fit_is_refused_before_anything_is_written(home, style_images, sdxl_header_base,
                                                                        fault_checkout, mount_over):
    mount_over(home, "4m")
    result = run_kr("run", "marker", "--dataset", style_images, "--base", sdxl_header_base, env={"KR_FAULT": "ok"})
    _refused(result, home, ("free space", "--home"))
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())


def test_a_full_disk_keeps_reading_and_refuses_new_runs_clearly(home, style_images, sdxl_header_base, fault_checkout,
                                                                  mount_over):
    run_id = _finished_run(home, style_images, sdxl_header_base)
    mount_over(home, "64m")
    _fill(home)
    _reads_work(run_id)
    result = run_kr("run", "marker", "--dataset", style_images, "--base", sdxl_header_base, env={"KR_FAULT": "ok"})
    _refused(result, home, ("free space", "--home"))
    fresh = shutil.copytree(style_images, style_images.with_name("fresh-images"))  # a new cache folder too
    result = run_kr("run", "marker", "--dataset", fresh, "--base", sdxl_header_base, env={"KR_FAULT": "ok"})
    _refused(result, home, ("free space", "--home"))
    assert json.loads(run_kr("runs", "ls", "--json").stdout)["runs"][0]["run_id"] == run_id  # no new row


def test_a_ledger_write_on_a_full_disk_is_a_clear_error(home, mount_over):
    from kohya_runner.errors import Failed
    from kohya_runner.ledger import open_ledger

    mount_over(home, "4m")
    ledger = open_ledger(home)  # opened while there was room: its WAL index exists
    _fill(home)
    with pytest.raises(Failed) as error:
        for n in range(200):  # until the WAL needs a page the disk does not have
            ledger.create_run(f"run{n}-" + "x" * 30, home / "runs")
    assert str(home) in error.value.message and "free space" in error.value.message
    assert "rollback" not in error.value.message


def test_a_read_only_workspace_keeps_reading_and_refuses_new_runs_clearly(home, style_images, sdxl_header_base,
                                                                          fault_checkout, mount_over):
    run_id = _finished_run(home, style_images, sdxl_header_base)
    mount_over(home, "64m")
    remount = _mount("-o", "remount,ro", str(home))
    if remount.returncode != 0:
        pytest.skip(f"cannot remount read-only here ({remount.stderr.strip()})")
    _reads_work(run_id)
    result = run_kr("run", "marker", "--dataset", style_images, "--base", sdxl_header_base, env={"KR_FAULT": "ok"})
    _refused(result, home, ("read-only", "--home"))


def test_the_disk_filling_up_mid_run_loses_nothing(home, style_images, sdxl_header_base, fault_checkout, mount_over):
    import os
    import sys
    import time

    mount_over(home, "96m")  # room for the run as planned (rank 1); then something else fills the disk
    env = {**os.environ, "KR_FAULT": "slow", "KR_FAULT_DELAY": "0.3"}
    kr = subprocess.Popen([sys.executable, "-m", "kohya_runner", "run", "marker", "--dataset", str(style_images),
                           "--base", str(sdxl_header_base), "training.epochs=3", "network.dim=1", "network.alpha=1"],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        rows = []
        while time.monotonic() < deadline and not (rows and rows[0]["status"] == "running"):
            listing = run_kr("runs", "ls", "--json")
            rows = json.loads(listing.stdout)["runs"] if listing.returncode == 0 else []
            time.sleep(0.3)
        assert rows and rows[0]["status"] == "running", kr.stderr.read() if kr.poll() is not None else "not started"
        _fill(home)
        out, err = kr.communicate(timeout=120)
    finally:
        kr.kill()
    assert "Traceback" not in err and "internal error" not in err, err
    assert kr.returncode == 1, out + err  # the trainer could not save: a failed run, said plainly
    (home / "filler").unlink()
    shown = run_kr("runs", "show", rows[0]["run_id"], "--json")
    assert shown.returncode == 0, shown.stderr
    run = json.loads(shown.stdout)["run"]
    assert run["status"] not in ("queued", "running"), run  # settled: the ledger tells the truth
    assert json.loads((home / "runs" / run["run_id"] / "run.json").read_text())["status"] == run["status"]
