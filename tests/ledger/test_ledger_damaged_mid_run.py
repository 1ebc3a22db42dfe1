"""A ledger overwritten while a run trains: the training still ends as it should, archived from its
folder, and `kr runs rebuild` brings the run back into `kr runs ls`. A real `kr run` subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from conftest import run_kr
from kohya_runner import ledger as ledger_mod


def _running_row(home, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listing = run_kr("runs", "ls", "--json")
        rows = json.loads(listing.stdout)["runs"] if listing.returncode == 0 else []
        if rows and rows[0]["status"] == "running" and (rows[0]["steps_done"] or 0) >= 1:
            return rows[0]
        time.sleep(0.3)
    raise AssertionError("the run did not start")


def test_ledger_overwritten_mid_run_the_run_succeeds_and_is_archived(home, style_images, sdxl_header_base,
                                                                        fault_checkout):
    env = {**os.environ, "KR_FAULT": "slow", "KR_FAULT_DELAY": "0.3"}
    kr = subprocess.Popen([sys.executable, "-m", "kohya_runner", "run", "marker", "--dataset", str(style_images),
                           "--base", str(sdxl_header_base), "training.epochs=3"], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
    try:
        row = _running_row(home)
        (home / "ledger.sqlite").write_bytes(b"overwritten by mistake" * 400)  # in place: same file, garbage
        out, err = kr.communicate(timeout=120)
    finally:
        kr.kill()
    assert kr.returncode == 0, out + err
    assert "Traceback" not in err and "internal error" not in err, err
    run_dir = row["run_dir"]
    manifest = json.loads((home / "runs" / row["run_id"] / "archive" / "manifest.json").read_text())
    assert manifest["outcome"]["status"] == "succeeded" and manifest["result"] == "output/marker.safetensors"
    assert ledger_mod.read_record(run_dir)["status"] == "succeeded"
    # The garbage may stay (the kr that trained had nothing more to write) or be overwritten by that kr's own
    # last writes through its open connection; either way nothing is lost and the user is told what to do.
    listing = run_kr("runs", "ls")
    assert "Traceback" not in listing.stderr
    if listing.returncode == 0:
        assert row["run_id"] in listing.stdout
    else:
        assert listing.returncode == 2 and "kr runs rebuild" in listing.stderr
    assert run_kr("runs", "rebuild").returncode == 0
    shown = json.loads(run_kr("runs", "show", row["run_id"], "--json").stdout)["run"]
    assert shown["status"] == "succeeded" and shown["result_path"].endswith("output/marker.safetensors")
    assert shown["steps_done"] == 12
