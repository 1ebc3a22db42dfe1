"""Hostile and wrong input, end to end: a clear error naming the field or file and the fix, exit 2,
nothing launched and nothing written: names that become file names, prompts sd-scripts would
read as options, sd-scripts option names, JSON errors."""

from __future__ import annotations

import json

import pytest

from conftest import run_kr
from e2e_helpers import refused, tree


@pytest.mark.parametrize("name", ["../../../../escape", "a/b", "..", ".", "x" * 300, "con\x07", " lead", "-rf"])
@pytest.mark.parametrize("key", ["name", "saving.output_name"])
def test_names_that_become_file_names_are_refused(home, tmp_path, sdxl_header_base, dataset_dir, key, name):
    out = tmp_path / "out"
    result = run_kr("render", "marker", "--dataset", dataset_dir, "--base", sdxl_header_base, "-o", out, f"{key}={name}")
    refused(result, key, "Fix")
    assert not out.exists() and not (tmp_path / "escape").exists()


def test_run_name_flag_is_validated_before_anything_exists(home, tmp_path, sdxl_header_base, style_images, fault_checkout):
    result = run_kr("run", "marker", "--dataset", style_images, "--base", sdxl_header_base, "--name", "../../escape")
    refused(result, "name")
    assert not (home / "runs").exists() or tree(home / "runs") == []
    assert not (home.parent / "escape").exists()


@pytest.mark.parametrize("subject, option", [
    ("n ugly hands", "--n"), ("ss ddim", "--ss"), ("d 12 dogs", "--d"), ("W 512 wide", "--w"),
    ("l 7.5 lanterns", "--l"), ("s 3 swans", "--s"),
])
def test_prompts_that_sd_scripts_would_read_as_options_are_refused(home, tmp_path, sdxl_header_base, dataset_dir,
                                                                   subject, option):
    out = tmp_path / "out"
    prompts = json.dumps([subject])
    result = run_kr("render", "marker", "--dataset", dataset_dir, "--base", sdxl_header_base, "-o", out,
                    f"sampling.prompts={prompts}", "sampling.template={subject}")
    refused(result, "sampling", option)
    assert not out.exists()


def test_json_errors_are_a_json_object_on_stdout(home, tmp_path, sdxl_header_base, dataset_dir):
    result = run_kr("render", "marker", "--dataset", dataset_dir, "--base", sdxl_header_base, "-o", tmp_path / "o",
                    "optimizer.lr=-1", "--json")
    assert result.returncode == 2
    error = json.loads(result.stdout)
    assert error["error"] and error["field"] == "optimizer.lr" and error["fix"]


@pytest.mark.parametrize("typed, path", [("learning_rate=1e-4", "optimizer.lr"), ("max_train_steps=800", "training.steps"),
                                         ("network_dim=32", "network.dim")])
def test_sd_scripts_option_names_map_to_spec_paths(home, typed, path):
    result = run_kr("presets", "explain", "marker", typed)
    assert path in result.stdout + result.stderr, result.stdout + result.stderr


def test_presets_validate_runs_the_render_checks(home, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[preset]\nextends = "marker"\n[sd_scripts]\nnot_an_option = 1\n')
    refused(run_kr("presets", "validate", bad), "not_an_option")
    wandb = tmp_path / "wandb.toml"
    wandb.write_text('[preset]\nextends = "marker"\n[sd_scripts]\nlog_with = "wandb"\n')
    refused(run_kr("presets", "validate", wandb), "wandb")
    assert run_kr("presets", "validate", "marker").returncode == 0
