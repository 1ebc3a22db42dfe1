"""The ledger is not a single point of failure: run folders are the truth it is rebuilt from."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import run_kr



def _latest(home, timeout=60.0, predicate=lambda row: True):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listing = run_kr("runs", "ls", "--json", env={"KR_HOME": str(home)})
        rows = json.loads(listing.stdout or "[]") if listing.returncode == 0 else []
        rows = rows["runs"] if isinstance(rows, dict) else rows
        if rows and predicate(rows[0]):
            return rows[0]
        time.sleep(0.3)
    raise AssertionError("timed out")


def test_ledger_deleted_mid_run_the_run_still_succeeds_and_is_listed(home, style_images, sdxl_header_base, fault_checkout):
    env = {**os.environ, "KR_FAULT": "slow", "KR_FAULT_DELAY": "0.3", "KR_HOME": str(home)}
    kr = subprocess.Popen([sys.executable, "-m", "kohya_runner", "run", "marker", "--dataset", str(style_images),
                           "--base", str(sdxl_header_base), "training.epochs=3"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    try:
        row = _latest(home, predicate=lambda r: r["status"] == "running" and (r["steps_done"] or 0) >= 1)
        for suffix in ("", "-wal", "-shm"):
            (home / f"ledger.sqlite{suffix}").unlink(missing_ok=True)
        out, err = kr.communicate(timeout=120)
    finally:
        kr.kill()
    assert kr.returncode == 0, out + err
    shown = json.loads(run_kr("runs", "show", row["run_id"], "--json", env={"KR_HOME": str(home)}).stdout)
    assert shown["run"]["status"] == "succeeded"
    assert shown["manifest"]["result"] == "output/marker.safetensors"
    assert row["run_id"] in run_kr("runs", "ls", env={"KR_HOME": str(home)}).stdout


def test_corrupt_ledger_is_a_clear_error_and_can_be_rebuilt(home, style_images, sdxl_header_base, fault_checkout):
    env = {"KR_HOME": str(home), "KR_FAULT": "ok"}
    first = run_kr("run", "marker", "--dataset", style_images, "--base", sdxl_header_base, "training.epochs=2", env=env)
    assert first.returncode == 0, first.stderr
    run_id = _latest(home)["run_id"]
    (home / "ledger.sqlite").write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (home / f"ledger.sqlite{suffix}").unlink(missing_ok=True)
    broken = run_kr("runs", "ls", env=env)
    assert broken.returncode == 2 and "ledger" in broken.stderr and "rebuild" in broken.stderr, broken.stderr
    assert "Traceback" not in broken.stderr
    rebuilt = run_kr("runs", "rebuild", env=env)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert list(home.glob("ledger.sqlite.corrupt*")), "the bad file is kept aside"
    assert run_id in run_kr("runs", "ls", env=env).stdout
