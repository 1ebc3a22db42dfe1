"""`kr vendor install | env | bundle | status | verify | drift | tokenizers` from the command line, offline.

A stand-in sd-scripts repository (git) plays the pinned commit through KR_PIN_FILE; wheels are built
here and pip runs with --no-index; the "network" clone is a file:// repository. Everything lands in
the test's KR_HOME and KR_VENDOR_DIR, never in the repository's own vendor/.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_standin_checkout, run_kr
from vendor_fixtures import (
    archive,
    build_wheel,
    fake_open_clip_wheel,
    make_repo,
    pinned_manifest,  # noqa: F401  (fixture)
    standin_checkout,
    tamper_tar,
)

STANDIN_FILES = {
    "train_network.py": "print('train_network stand-in')\n",
    "sdxl_train_network.py": "print('sdxl_train_network stand-in')\n",
    "requirements.txt": "# the stand-in's requirements\nkrfakedep==1.0\n",
    "library/__init__.py": "",
    "networks/lora.py": "RANK = 4\n",
}


@pytest.fixture
def standin(tmp_path, monkeypatch, home):
    """A git repository kr takes for the pinned sd-scripts (KR_PIN_FILE names its commit and tree)."""
    if shutil.which("git") is None:
        pytest.skip("the git CLI is needed to build the stand-in repository")
    repo = tmp_path / "sd-scripts-src"
    commit, tree = make_repo(repo, STANDIN_FILES)
    pin = tmp_path / "pin.toml"
    pin.write_text(f'repository = "file://{repo}"\ncommit = "{commit}"\ntree = "{tree}"\nversion = "0.0-test"\n')
    monkeypatch.setenv("KR_PIN_FILE", str(pin))
    return {"repo": repo, "commit": commit, "tree": tree, "dest": Path(os.environ["KR_VENDOR_DIR"]) / "sd-scripts"}


@pytest.fixture
def wheels(tmp_path) -> Path:
    folder = tmp_path / "wheels"
    folder.mkdir()
    build_wheel(folder, "torch", "0.0.1+cpu", {"torch/__init__.py": "__version__ = '0.0.1+cpu'\n",
                                                 "torch/version.py": "cuda = None\n"})
    build_wheel(folder, "krfakedep", "1.0", {"krfakedep/__init__.py": "VALUE = 42\n"})
    fake_open_clip_wheel(folder)
    return folder


def test_install_from_a_tarball_then_status_and_verify(kr, standin, tmp_path):
    tarball = archive(standin["repo"], tmp_path / "sd-scripts.tar.gz", "tar.gz")
    installed = kr.json("vendor", "install", "--from", tarball)
    assert installed["tree"] == standin["tree"] and installed["commit"] == standin["commit"]
    assert installed["path"] == str(standin["dest"]) and (standin["dest"] / "networks" / "lora.py").is_file()
    assert installed["schema"] == "kr.vendor-install/1"

    status = kr.json("vendor", "status")
    assert status["pin"]["commit"] == standin["commit"]
    assert status["sd_scripts"]["installed"] and status["sd_scripts"]["verified"] is True
    assert status["sd_scripts"]["from"] == "default" and status["trainer"]["python"] is None
    text = kr("vendor", "status", ok=True).output
    assert "✓ matches the pin" in text and "no trainer environment" in text

    assert "is sd-scripts" in kr("vendor", "verify", ok=True).output
    (standin["dest"] / "networks" / "lora.py").write_text("RANK = 8\n")
    (standin["dest"] / "library" / "__pycache__").mkdir()  # created by the trainer: ignored
    (standin["dest"] / "library" / "__pycache__" / "x.pyc").write_bytes(b"\0")
    failed = kr("vendor", "verify")
    assert failed.exit_code == 1 and "Changed: networks/lora.py." in failed.output and "Traceback" not in failed.output
    as_json = kr("vendor", "verify", "--json")
    assert as_json.exit_code == 1
    report = json.loads(as_json.stdout)
    assert report["changed"] == ["networks/lora.py"] and report["extra"] == ["library/__pycache__/"]
    assert report["schema"] == "kr.vendor-verify/1"
    assert kr.json("vendor", "status")["sd_scripts"]["verified"] is False

    again = kr("vendor", "install", "--from", tarball)
    assert again.exit_code == 2 and "already exists" in again.output
    assert kr.json("vendor", "install", "--from", tarball, "--force")["replaced"] is True
    assert kr("vendor", "verify").exit_code == 0


def test_a_tarball_with_one_changed_byte_is_rejected_and_nothing_is_installed(kr, standin, tmp_path):
    good = archive(standin["repo"], tmp_path / "good.tar")
    bad = tamper_tar(good, tmp_path / "bad.tar", "networks/lora.py")
    result = kr("vendor", "install", "--from", bad)
    assert result.exit_code == 1, result.output
    assert "is not the pinned sd-scripts" in result.output and standin["tree"][:12] in result.output
    assert not standin["dest"].exists()
    assert kr("vendor", "verify").exit_code == 2  # nothing to verify: says to install first


def test_install_git_clones_the_pinned_commit(kr, standin):
    installed = kr.json("vendor", "install", "--git")
    assert installed["tree"] == standin["tree"] and (standin["dest"] / ".git").is_dir()
    assert kr("vendor", "verify").exit_code == 0
    assert kr("vendor", "install").exit_code == 2  # none of --from/--git/--bundle


def test_env_bundle_and_install_bundle_offline(kr, standin, wheels, tmp_path, monkeypatch):
    kr.json("vendor", "install", "--from", standin["repo"])
    made = kr.json("vendor", "env", "--wheelhouse", wheels, "--torch", "torch==0.0.1+cpu")
    assert made["offline"] and Path(made["python"]).is_file() and made["schema"] == "kr.vendor-env/1"
    trainer = kr.json("vendor", "status")["trainer"]
    assert trainer["torch"] == "0.0.1+cpu" and trainer["cuda"] is None and trainer["from"] == "default"

    bundle = tmp_path / "kr-bundle.tar"
    result = kr("vendor", "bundle", "-o", bundle, "--find-links", wheels, "--tokenizer-source", wheels,
                "--torch", "torch==0.0.1+cpu", ok=True)
    sha = hashlib.sha256(bundle.read_bytes()).hexdigest()
    assert f"sha256 {sha}" in result.output

    # "the air-gapped machine": another workspace and vendor folder, no index, no network
    other_home, other_vendor = tmp_path / "other-home", tmp_path / "other-vendor"
    monkeypatch.setenv("KR_VENDOR_DIR", str(other_vendor))
    kr.home = other_home
    done = kr.json("vendor", "install", "--bundle", bundle)
    assert done["sd_scripts"]["tree"] == standin["tree"] and done["schema"] == "kr.vendor-install-bundle/1"
    python = done["env"]["python"]
    assert subprocess.run([python, "-c", "import krfakedep, torch"]).returncode == 0
    assert [Path(p).parent for p in done["tokenizers"]] == [other_home / "tokenizers"] * 2
    status = kr.json("vendor", "status")
    assert status["sd_scripts"]["verified"] and status["tokenizers"]["complete"] and status["trainer"]["torch"] == "0.0.1+cpu"


def test_drift_reports_a_planted_option_change(kr, pinned_manifest, tmp_path, monkeypatch):  # noqa: F811
    _, manifest = pinned_manifest
    monkeypatch.setenv("KR_SD_PYTHON", sys.executable)
    clean = standin_checkout(tmp_path / "clean", manifest)
    monkeypatch.setenv("KR_SD_SCRIPTS", str(clean))
    assert "matches kr's manifest" in kr("vendor", "drift", ok=True).output

    planted = json.loads(json.dumps(manifest))
    planted["scripts"]["sdxl_train_network"]["learning_rate"]["default"] = 0.001
    monkeypatch.setenv("KR_SD_SCRIPTS", str(standin_checkout(tmp_path / "planted", planted)))
    result = kr("vendor", "drift")
    assert result.exit_code == 1
    assert "~ sdxl_train_network: --learning_rate default" in result.output and "0.001" in result.output
    report = json.loads(kr("vendor", "drift", "--json").stdout)
    assert report["schema"] == "kr.vendor-drift/1" and not report["ok"] and [(c["option"], c["attribute"], c["new"]) for c in report["changed"]] == [
        ("learning_rate", "default", 0.001)]

    monkeypatch.delenv("KR_SD_PYTHON")
    assert kr("vendor", "drift").exit_code == 2  # no trainer environment to import sd-scripts with


def test_tokenizers_fill_the_folder_rendered_configs_point_at(kr, home, wheels, tmp_path, base_file, dataset_dir):
    import toml

    result = kr.json("vendor", "tokenizers", "--source", wheels)
    assert result["cache_dir"] == str(home / "tokenizers") and result["schema"] == "kr.vendor-tokenizers/1"
    assert [Path(p).name for p in result["folders"]] == ["openai_clip-vit-large-patch14",
                                                          "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k"]
    kr("render", "marker", "--dataset", dataset_dir, "--base", base_file, "-o", tmp_path / "out", ok=True)
    flat = {}
    for table in toml.load(tmp_path / "out" / "config.toml").values():
        flat.update(table)
    assert flat["tokenizer_cache_dir"] == result["cache_dir"]
    assert kr.json("vendor", "status")["tokenizers"]["complete"]
    bad = kr("vendor", "tokenizers", "--source", tmp_path / "nothing-here")
    assert bad.exit_code == 2 and "pip download" in bad.output


def test_the_trainer_backend_finds_sd_scripts_where_kr_vendor_puts_it(home, tmp_path, base_file, monkeypatch):
    from PIL import Image

    images = tmp_path / "style"
    images.mkdir()
    for i in range(2):
        Image.new("RGB", (64, 64), (60 * i, 90, 200)).save(images / f"img{i}.png")
        (images / f"img{i}.txt").write_text(f"in the style of TOK, a shape {i}")
    vendor_dir = Path(os.environ["KR_VENDOR_DIR"])
    make_standin_checkout(vendor_dir / "sd-scripts", "fault")
    python = vendor_dir / "env" / "bin" / "python"  # "the trainer venv": kr's own interpreter behind a wrapper
    python.parent.mkdir(parents=True)
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    python.chmod(0o755)
    result = run_kr("run", "marker", "--dataset", images, "--base", base_file, "training.epochs=1", "--json")
    assert result.returncode == 0, result.stderr
    run_dir = Path(json.loads(result.stdout)["run_dir"])
    argv = json.loads((run_dir / "command.json").read_text())["argv"]
    assert argv[:2] == [str(vendor_dir / "env" / "bin" / "python"), str(vendor_dir / "sd-scripts" / "sdxl_train_network.py")]

    (vendor_dir / "sd-scripts" / "sdxl_train_network.py").unlink()
    broken = run_kr("run", "marker", "--dataset", images, "--base", base_file, "training.epochs=1")
    assert broken.returncode == 2 and "not a complete sd-scripts checkout" in broken.stderr
    monkeypatch.setenv("KR_SD_SCRIPTS", str(tmp_path / "missing"))
    assert "KR_SD_SCRIPTS" in run_kr("run", "marker", "--dataset", images, "--base", base_file).stderr
