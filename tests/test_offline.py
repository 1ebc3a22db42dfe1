"""The offline proof: a whole `kr run` with the tiny trainer inside a network namespace that has no
network at all (`unshare -n`: only a loopback interface, and that one down). Needs root or user
namespaces (CI runs as root); skipped with the reason where unshare is not permitted."""

from __future__ import annotations

from kohya_runner import workspace

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import no_process_left
from tiny_fixtures import tiny_bases, tiny_demo_images  # noqa: F401  (session fixtures)


def unshare_problem() -> str | None:
    if shutil.which("unshare") is None:
        return "the unshare command (util-linux) is not installed"
    try:
        probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"unshare -n could not run: {error}"
    if probe.returncode != 0:
        return f"unshare -n is not permitted here (needs root or user namespaces): {probe.stderr.strip()}"
    return None


PROBLEM = unshare_problem()
pytestmark = pytest.mark.skipif(PROBLEM is not None, reason=PROBLEM or "")


def offline(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["unshare", "-n", "--", *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_the_namespace_has_no_network():
    # Interfaces only; nothing is sent anywhere.
    probe = offline(sys.executable, "-c", "import socket, json; print(json.dumps([n for _, n in socket.if_nameindex()]))",
                    env=dict(os.environ))
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout) == ["lo"]


def test_a_whole_tiny_run_succeeds_without_any_network(home, tiny_bases, tiny_demo_images, tmp_path):  # noqa: F811
    shutil.copytree(tiny_bases["sdxl"], workspace.tiny_base_dir(home, "sdxl"))
    images = tmp_path / "images"
    shutil.copytree(tiny_demo_images, images)
    env = {**os.environ, "KR_HOME": str(home)}
    kr = [sys.executable, "-m", "kohya_runner"]
    result = offline(*kr, "run", "tiny-demo", "--dataset", str(images), "--base", "tiny", "training.epochs=2",
                     'sampling.prompts=["a cup of coffee"]', "sampling.at_first=false", "sampling.every_n_epochs=2",
                     "--json", env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    row = json.loads(result.stdout)
    assert row["status"] == "succeeded" and row["steps_done"] == row["steps_total"] > 0
    run_dir = Path(row["run_dir"])
    assert (run_dir / "output" / "tiny-demo.safetensors").is_file()
    assert list((run_dir / "output" / "sample").glob("*.png"))  # sampling ran too
    manifest = json.loads((run_dir / "archive" / "manifest.json").read_text())
    assert manifest["outcome"]["status"] == "succeeded" and all(lora["ok"] for lora in manifest["loras"])
    # the ledger, export and the checks work the same way in there
    listing = offline(*kr, "runs", "ls", "--json", env=env)
    assert json.loads(listing.stdout)["runs"][0]["run_id"] == row["run_id"]
    export = offline(*kr, "runs", "export", row["run_id"], "-o", str(tmp_path), env=env)
    assert export.returncode == 0 and (tmp_path / f"{row['run_id']}.tar.gz").is_file()
    assert not no_process_left(str(run_dir))
