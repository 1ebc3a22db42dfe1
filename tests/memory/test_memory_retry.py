"""Out-of-memory retries with the fault stand-in (`KR_FAULT=oom_until`: CUDA out of memory at step 2 until
the options named in KR_FAULT_FITS_WHEN are on): each attempt is its own run, linked to the first in the
ledger and in its run folder, and the summary names what changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from conftest import no_process_left, run_kr

MARKER = ["run", "marker", "training.epochs=2"]


@pytest.fixture
def kr_run(home, style_images, sdxl_header_base, fault_checkout):
    def go(*extra, fault="oom_until", fits_when="gradient_checkpointing", timeout=180):
        return run_kr(*MARKER, "--dataset", style_images, "--base", sdxl_header_base, *extra, timeout=timeout,
                      env={"KR_HOME": str(home), "KR_FAULT": fault, "KR_FAULT_FITS_WHEN": fits_when})
    yield go
    assert not no_process_left(str(fault_checkout))


def _rows(home) -> list[dict]:
    rows = json.loads(run_kr("runs", "ls", "--json", env={"KR_HOME": str(home)}).stdout)["runs"]
    return sorted(rows, key=lambda r: r["id"])


def _spec(row) -> dict:
    with open(os.path.join(row["run_dir"], "spec.json"), encoding="utf-8") as handle:
        return json.load(handle)


def test_out_of_memory_then_the_next_setting_succeeds_as_a_linked_run(kr_run, home):
    result = kr_run("precision.gradient_checkpointing=false", "dataset.batch_size=1")
    assert result.returncode == 0, result.stdout + result.stderr
    first, second = _rows(home)
    assert (first["status"], first["reason"]) == ("failed", "cuda_oom")
    assert second["status"] == "succeeded"
    assert second["retry_of"] == first["run_id"] and second["retry_change"] == "precision.gradient_checkpointing=true"
    assert first["retry_of"] is None
    assert _spec(second)["precision"]["gradient_checkpointing"] is True
    assert _spec(first)["precision"]["gradient_checkpointing"] is False  # the first run's folder is untouched
    assert f"{first['run_id']} ran out of GPU memory; attempt 2 of {first['run_id']} is {second['run_id']}" in result.stderr
    assert "attempts (CUDA out of memory, then the next memory setting):" in result.stdout
    assert f"{first['run_id']} (as asked): out of memory" in result.stdout
    assert f"{second['run_id']} (with precision.gradient_checkpointing=true): succeeded" in result.stdout
    # the link is in the run folder too: a rebuilt ledger keeps it
    assert run_kr("runs", "rebuild", env={"KR_HOME": str(home)}).returncode == 0
    assert _rows(home)[1]["retry_of"] == first["run_id"]


def test_no_retry_leaves_one_failed_run_naming_the_next_setting(kr_run, home):
    result = kr_run("precision.gradient_checkpointing=false", "dataset.batch_size=1", "--no-retry")
    assert result.returncode == 1
    (only,) = _rows(home)
    assert only["reason"] == "cuda_oom" and "precision.gradient_checkpointing=true" in only["hint"]


def test_the_retries_stop_at_their_limit(kr_run, home):
    result = kr_run("dataset.batch_size=2", "guard.oom_retries=1", fault="oom")  # out of memory whatever it sets
    assert result.returncode == 1
    rows = _rows(home)
    assert [(r["status"], r["reason"]) for r in rows] == [("failed", "cuda_oom")] * 2
    assert rows[1]["retry_change"] == "dataset.batch_size=1, training.gradient_accumulation_steps=2"
    assert _spec(rows[1])["dataset"]["batch_size"] * _spec(rows[1])["training"]["gradient_accumulation_steps"] == 2


def test_a_detached_run_climbs_two_rungs_in_its_own_supervisor(home, style_images, sdxl_header_base, fault_checkout):
    env = {**os.environ, "KR_HOME": str(home), "KR_FAULT": "oom_until", "KR_FAULT_FITS_WHEN": "gradient_checkpointing"}
    started = subprocess.run([sys.executable, "-m", "kohya_runner", *MARKER, "--dataset", str(style_images), "--base",
                              str(sdxl_header_base), "precision.gradient_checkpointing=false", "dataset.batch_size=2",
                              "--detach"], env=env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        rows = _rows(home)
        if len(rows) == 3 and rows[2]["status"] not in ("queued", "running"):
            break
        time.sleep(0.5)
    assert [r["status"] for r in rows] == ["failed", "failed", "succeeded"], rows
    first = rows[0]["run_id"]
    assert [r["retry_of"] for r in rows] == [None, first, first]
    assert [r["retry_change"] for r in rows[1:]] == ["dataset.batch_size=1, training.gradient_accumulation_steps=2",
                                                      "precision.gradient_checkpointing=true"]
    assert not no_process_left(str(fault_checkout))


def test_a_sweep_member_that_runs_out_of_memory_is_retried_in_its_slot(home, style_images, sdxl_header_base,
                                                                      fault_checkout):
    result = run_kr("sweep", "marker", "--dataset", style_images, "--base", sdxl_header_base, "training.epochs=1",
                    "dataset.batch_size=1",
                    "--grid", "precision.gradient_checkpointing=true,false", "--max-parallel", "1", "--json",
                    env={"KR_HOME": str(home), "KR_FAULT": "oom_until", "KR_FAULT_FITS_WHEN": "gradient_checkpointing"},
                    timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert [m["status"] for m in summary["members"]] == ["succeeded", "succeeded"]
    rows = _rows(home)
    assert len(rows) == 3 and all(r["sweep_id"] == summary["sweep_id"] for r in rows)
    failed = next(r for r in rows if r["status"] == "failed")
    retried = next(r for r in rows if r["retry_of"])
    assert retried["retry_of"] == failed["run_id"] and retried["status"] == "succeeded"
    assert "ran out of GPU memory: attempt 2 with gradient checkpointing" in result.stderr
    assert not no_process_left(str(fault_checkout))
