"""Hostile and wrong input, end to end: a clear error naming the field or file and the fix, exit 2,
nothing launched and nothing written: a bad base, refused runs and sweeps leave no row, folder,
cache or record; read-only commands create no workspace; what is not there is refused."""

from __future__ import annotations

import json
import struct

import pytest

from conftest import run_kr
from e2e_helpers import refused, tree


@pytest.mark.parametrize("content, words", [
    (b"", "empty"), (b"hello, this is not a model\n", "safetensors"),
    (struct.pack("<Q", 2) + b"{}", "no tensors"),
])
def test_a_bad_base_is_refused_before_a_run_exists(home, tmp_path, style_images, fault_checkout, content, words):
    base = tmp_path / "model.safetensors"
    base.write_bytes(content)
    result = run_kr("run", "marker", "--dataset", style_images, "--base", base)
    refused(result, str(base), words)
    assert tree(home) == []  # no run row, folder, cache: not even a workspace
    ls = run_kr("runs", "ls", "--json", env={"KR_HOME": str(home)})
    assert ls.returncode == 0 and json.loads(ls.stdout)["runs"] == []


def test_a_base_of_the_wrong_family_is_refused(home, tmp_path, sd15_header_base, style_images, fault_checkout):
    result = run_kr("run", "marker", "--dataset", style_images, "--base", sd15_header_base)
    refused(result, str(sd15_header_base), "sd15")
    assert tree(home / "runs") == []


def test_refused_sweep_leaves_no_record(home, sdxl_header_base, style_images, fault_checkout):
    result = run_kr("sweep", "marker", "--dataset", style_images, "--base", sdxl_header_base,
                    "--grid", "optimizer.lr=1e-4,2e-4", "--max-parallel", "0")
    refused(result, "max-parallel")
    assert tree(home / "sweeps") == [] and tree(home / "runs") == []
    assert tree(home / "caches") == []


def test_refused_run_creates_no_cache_folder(home, sdxl_header_base, style_images, fault_checkout):
    for override in ("sd_scripts.not_an_option=1", "sd_scripts.log_with=wandb", "model.vae=/nonexistent/vae.safetensors",
                     "network.weights=/nonexistent/lora.safetensors"):
        result = run_kr("run", "marker", "--dataset", style_images, "--base", sdxl_header_base, override)
        refused(result)
        assert tree(home / "runs") == [] and tree(home / "caches") == [], override


def test_read_only_commands_create_no_workspace(tmp_path):
    missing = tmp_path / "nonexistent"
    for args in (("runs", "show", "X", "--home", missing), ("runs", "ls", "--home", missing)):
        run_kr(*args)
        assert not missing.exists(), args
    # the same through KR_HOME (and --home before the subcommand): a lookup is refused, a listing is empty
    env = {"KR_HOME": str(missing)}
    for args in (("runs", "show", "X"), ("sweep", "show", "X"), ("report", "X"), ("runs", "tail", "X")):
        refused(run_kr(*args, env=env), "no kr workspace", str(missing))
        assert not missing.exists(), args
    for args, key in ((("runs", "ls", "--json"), "runs"), (("sweep", "ls", "--json"), "sweeps")):
        result = run_kr(*args, env=env)
        assert result.returncode == 0 and json.loads(result.stdout)[key] == [], result.stdout + result.stderr
        assert not missing.exists(), args
    refused(run_kr("--home", missing, "runs", "show", "X"), "no kr workspace")
    assert not missing.exists()


def test_refuse_what_is_not_there(home, sdxl_header_base, style_images, fault_checkout):
    refused(run_kr("run", "marker", "--dataset", style_images, "--base", sdxl_header_base, "--gpu", "7"), "7")
    refused(run_kr("runs", "ls", "--status", "bogus"), "bogus")
    refused(run_kr("runs", "show", ""))
