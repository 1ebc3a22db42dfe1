"""The first hour of a new user, on the tiny backend: the README tour works as written."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import run_kr

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from kohya_runner.tiny import write_style_dataset

    return write_style_dataset(tmp_path_factory.mktemp("tour") / "images", count=8, size=64)


def test_shipped_style_preset_runs_on_the_tiny_base_with_a_name(home, images):
    started = time.monotonic()
    result = run_kr("run", "marker", "--dataset", images, "--base", "tiny", "--name", "client-a",
                    "training.epochs=2", timeout=600, env={"KR_HOME": str(home)})
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    rows = json.loads(run_kr("runs", "ls", "--json", env={"KR_HOME": str(home)}).stdout)
    rows = rows["runs"] if isinstance(rows, dict) else rows
    assert rows[0]["run_id"].startswith("client-a") and rows[0]["status"] == "succeeded"
    assert "kr report" in result.stdout and "kr release" in result.stdout  # what to do next
    assert "note: tiny model, native scale: training at 64 px (preset: 1024)" in result.stdout  # said, not silent
    config = (Path(rows[0]["run_dir"]) / "config.toml").read_text()
    prompts = (Path(rows[0]["run_dir"]) / "sample_prompts.txt").read_text()
    assert 'resolution = "64,64"' in config and 'mixed_precision = "no"' in config
    assert "--w 64 --h 64" in prompts and "--s 20" in prompts
    assert took < 240, f"the marker preset on the tiny base took {took:.0f} s"
    # lean loop (a sanity pair during training), then the full grid post hoc and the scores
    lines = [line for line in prompts.splitlines() if line.strip() and not line.startswith("#")]
    assert len(lines) == 2 and all("TOK" in line for line in lines) and "sampling the post-hoc grid" in result.stderr
    show = json.loads(run_kr("runs", "show", rows[0]["run_id"], "--json", env={"KR_HOME": str(home)}).stdout)
    assert show["posthoc"]["images"] == 54 and show["scores"] and show["scores"][0]["score"] is not None


def test_home_flag_after_the_subcommand(tmp_path):
    root = tmp_path / "elsewhere"
    result = run_kr("presets", "ls", "--home", root)
    assert result.returncode == 0, result.stderr


def test_doctor_knows_the_tiny_backend(home):
    # a fresh workspace: the tiny base is not built yet, and no sd-scripts, tokenizers or GPU are needed
    result = run_kr("doctor", "tiny-demo", "--base", "tiny", env={"KR_HOME": str(home)})
    assert result.returncode == 0, result.stdout + result.stderr
    checked = [line[2:].split("  ")[0] for line in result.stdout.splitlines() if line[:1] in "✓!✗"]
    assert "tiny trainer" in checked and "base model" in checked and "optimizer" in checked
    assert not {"sd-scripts", "tokenizers", "GPU", "CUDA", "accelerate config"} & set(checked), checked


def test_shipped_style_preset_sweeps_on_the_tiny_base(home, images):
    # the post-hoc grid and scores of the preset are tested by the run above and in test_which_lora
    result = run_kr("sweep", "marker", "--dataset", images, "--base", "tiny", "--grid", "network.dim=4,8",
                    "training.epochs=1", "evaluation.after_training=missing", "--max-parallel", "2", "--json",
                    timeout=600, env={"KR_HOME": str(home)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "native scale" in result.stderr  # fitted like `kr run`, said once
    assert [m["status"] for m in json.loads(result.stdout)["members"]] == ["succeeded", "succeeded"]
