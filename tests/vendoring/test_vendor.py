"""kohya_runner.vendoring and kohya_runner.gittree against real git, real archives, real venvs and pip.

No network: wheels are built here, pip runs with --no-index, the "offline" git test uses a closed
loopback port.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from vendor_fixtures import (  # noqa: F401  (pinned_manifest is a fixture)
    archive,
    build_wheel,
    fake_open_clip_wheel,
    git,
    make_repo,
    needs_git,
    pinned_manifest,
    standin_checkout,
    tamper_tar,
    write,
)

from kohya_runner import vendoring as vendor
from kohya_runner.errors import BadInput, Failed
from kohya_runner.gittree import (
    directory_entries,
    entries_to_json,
    git_tree_hash,
    tarball_tree_hash,
)
from kohya_runner.resources import data_dir, source_checkout
from kohya_runner.vendoring import Pin
from kohya_runner.vendoring.bundles import _downloadable_requirements


# Names that exercise git's order: "a-b" < "a.txt" < "a/" (sorted as "a/") < "a0"; plus unicode,
# spaces, an empty file, an executable, a symlink and nesting.
SAMPLE_FILES = {
    "a.txt": "hello\n",
    "a/inner.py": "print('inner')\n",
    "a/b/c.py": "x = 1\n",
    "a-b": "dash\n",
    "a0": "zero\n",
    "empty": "",
    "sp ace/ünï.md": "# unicode\n",
    "run.sh": "#!/bin/sh\necho run\n",
    "requirements.txt": "# nothing\n",
}


@pytest.fixture
def sample(tmp_path) -> tuple[Path, str, str]:
    repo = tmp_path / "sample"
    commit, tree = make_repo(repo, SAMPLE_FILES, executables={"run.sh"}, links={"link": "a.txt", "dirlink": "a/b"})
    return repo, commit, tree


def reference_list(repo: Path) -> dict:
    listed = vendor.file_list(repo)
    assert listed["files"] == entries_to_json(directory_entries(repo))
    return listed["files"]


def no_leftovers(folder: Path) -> list[str]:
    """Staging folders kr failed to clean up (they are hidden: ".<name>.kr-new-XXXX")."""
    return [path.name for path in folder.iterdir() if path.name.startswith(".") and ".kr-" in path.name]


# --- git tree ids -----------------------------------------------------------------------------------


@needs_git
def test_tree_hash_of_a_working_tree_equals_git(sample):
    repo, _, tree = sample
    assert git_tree_hash(repo) == tree


@needs_git
def test_tree_hash_follows_edits_modes_and_deletions_like_git(sample):
    repo, _, tree = sample
    write(repo / "a/b/c.py", "x = 2\n")
    (repo / "a.txt").chmod(0o755)
    (repo / "a-b").unlink()
    write(repo / "a/new/deeper.txt", "new\n")
    git("add", "-A", cwd=repo)
    expected = git("write-tree", cwd=repo)
    assert expected != tree
    assert git_tree_hash(repo) == expected


@needs_git
@pytest.mark.parametrize("fmt", ["tar", "tar.gz", "zip"])
def test_archive_tree_hash_equals_git_without_extracting(sample, tmp_path, fmt):
    repo, _, tree = sample
    path = archive(repo, tmp_path / f"x.{fmt}", fmt)
    assert tarball_tree_hash(path) == tree


# --- install ----------------------------------------------------------------------------------------


@needs_git
def test_install_from_tarball_records_files_and_verifies(sample, tmp_path):
    repo, commit, tree = sample
    dest = tmp_path / "vendor" / "sd-scripts"
    result = vendor.install(archive(repo, tmp_path / "x.tar.gz", "tar.gz"), dest, expected_tree=tree, commit=commit)
    assert result.tree == tree and result.files == len(SAMPLE_FILES) + 2 and not result.replaced
    assert os.readlink(dest / "link") == "a.txt" and os.access(dest / "run.sh", os.X_OK)
    record = json.loads(vendor.record_path(dest).read_text())
    assert record["commit"] == commit and record["tree"] == tree and record["files"]["run.sh"][0] == "100755"
    assert vendor.record_path(dest) == tmp_path / "vendor" / "kr-vendor.json" and record["checkout"] == "sd-scripts"
    checked = vendor.verify(dest, expected_tree=tree)
    assert checked.ok and checked.commit == commit and not (checked.changed or checked.missing or checked.added or checked.extra)
    assert no_leftovers(dest.parent) == []
    shutil.copytree(dest, dest.parent / "sibling", symlinks=True)  # the record describes sd-scripts/, not its sibling
    assert vendor.verify(dest.parent / "sibling", expected_tree=tree).commit is None


@needs_git
def test_a_changed_byte_in_a_tarball_is_rejected_and_named(sample, tmp_path):
    repo, _, tree = sample
    bad = tamper_tar(archive(repo, tmp_path / "x.tar"), tmp_path / "bad.tar", "a/b/c.py")
    dest = tmp_path / "vendor" / "sd-scripts"
    with pytest.raises(Failed) as named:
        vendor.install(bad, dest, expected_tree=tree, expected_files=reference_list(repo))
    assert "Changed: a/b/c.py." in str(named.value) and tree[:12] in str(named.value)
    # without a trusted file list kr still refuses, and says it cannot name the file
    with pytest.raises(Failed, match="cannot name the files"):
        vendor.install(bad, dest, expected_tree=tree)
    assert not dest.exists() and no_leftovers(dest.parent) == []


@needs_git
def test_install_from_a_git_checkout_leaves_out_dot_git_and_trainer_files(sample, tmp_path):
    repo, _, tree = sample
    write(repo / "__pycache__/x.cpython-311.pyc", b"\0")
    write(repo / "library.egg-info/PKG-INFO", "Name: library\n")
    dest = tmp_path / "checkout"
    result = vendor.install(repo, dest, expected_tree=tree)
    assert result.tree == tree
    assert not (dest / ".git").exists() and not (dest / "__pycache__").exists() and not (dest / "library.egg-info").exists()


@needs_git
def test_a_modified_checkout_is_rejected_naming_the_file_through_git(sample, tmp_path):
    repo, _, tree = sample
    write(repo / "a.txt", "changed\n")
    with pytest.raises(Failed, match=r"Changed: a\.txt\."):
        vendor.install(repo, tmp_path / "checkout", expected_tree=tree)  # the list comes from `git ls-tree`


@needs_git
def test_verify_names_changed_missing_added_and_ignores_trainer_files(sample, tmp_path):
    repo, _, tree = sample
    dest = tmp_path / "checkout"
    vendor.install(archive(repo, tmp_path / "x.zip", "zip"), dest, expected_tree=tree)
    write(dest / "__pycache__/train_network.cpython-311.pyc", b"\0")
    write(dest / "a/stale.pyc", b"\0")
    write(dest / "library.egg-info/PKG-INFO", "x")
    write(dest / "venv/pyvenv.cfg", "home = /usr\n")
    write(dest / "venv/lib/site.py", "x")
    result = vendor.verify(dest, expected_tree=tree)
    assert result.ok and result.extra == ["__pycache__/", "a/stale.pyc", "library.egg-info/", "venv/"]

    write(dest / "a.txt", "edited\n")
    (dest / "a-b").unlink()
    write(dest / "notes.md", "mine\n")
    (dest / "run.sh").chmod(0o644)
    result = vendor.verify(dest, expected_tree=tree)
    assert not result.ok and result.named
    assert (result.changed, result.missing, result.added) == (["a.txt", "run.sh"], ["a-b"], ["notes.md"])
    assert "1 missing, 2 changed, 1 extra. Missing: a-b. Changed: a.txt, run.sh. Extra: notes.md." in result.message()
    assert json.loads(json.dumps(result.to_dict()))["changed"] == ["a.txt", "run.sh"]


@needs_git
def test_existing_install_is_refused_without_force_and_survives_a_failed_replacement(sample, tmp_path):
    repo, _, tree = sample
    good = archive(repo, tmp_path / "x.tar")
    dest = tmp_path / "checkout"
    vendor.install(good, dest, expected_tree=tree)
    with pytest.raises(BadInput, match="already exists"):
        vendor.install(good, dest, expected_tree=tree)
    with pytest.raises(Failed):
        vendor.install(tamper_tar(good, tmp_path / "bad.tar", "a.txt"), dest, expected_tree=tree, force=True)
    assert vendor.verify(dest, expected_tree=tree).ok and no_leftovers(tmp_path) == []
    assert vendor.install(good, dest, expected_tree=tree, force=True).replaced


def test_unsafe_or_unreadable_archives_are_bad_input(tmp_path):
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("top/../../escape.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(BadInput, match="unsafe path"):
        vendor.install(evil, tmp_path / "dest", expected_tree="0" * 40)
    not_archive = write(tmp_path / "notes.txt", "plain text")
    with pytest.raises(BadInput, match="neither a folder nor a tar/zip"):
        vendor.install(not_archive, tmp_path / "dest", expected_tree="0" * 40)
    with pytest.raises(BadInput, match="does not exist"):
        vendor.install(tmp_path / "missing.tar", tmp_path / "dest", expected_tree="0" * 40)
    assert not (tmp_path / "dest").exists() and not (tmp_path / "escape.txt").exists()


@needs_git
def test_install_git_fetches_the_commit_and_keeps_its_git_folder(sample, tmp_path):
    repo, commit, tree = sample
    dest = tmp_path / "checkout"
    result = vendor.install_git(dest, commit, repository=str(repo), expected_tree=tree)
    assert result.tree == tree and (dest / ".git").is_dir()
    assert git("rev-parse", "HEAD", cwd=dest) == commit
    assert vendor.verify(dest, expected_tree=tree).ok


@needs_git
def test_install_git_without_network_says_what_to_do_instead(tmp_path):
    dest = tmp_path / "checkout"
    with pytest.raises(Failed, match="offline") as error:
        vendor.install_git(dest, "a" * 40, repository="http://127.0.0.1:9/sd-scripts.git", timeout=60)
    assert "--from" in str(error.value) and not dest.exists() and no_leftovers(tmp_path) == []
    with pytest.raises(BadInput, match="40-character"):
        vendor.install_git(dest, "48d368f")


# --- pin and locations ------------------------------------------------------------------------------


def test_load_pin_reads_the_shipped_pin():
    pin = vendor.load_pin()
    assert pin.commit == "48d368fa557731ad0488c07304dfeba8c07910eb"
    assert pin.tree == "9eccd8bdf6ca3213976110a65e841302963b283c"
    assert pin.repository == "https://github.com/kohya-ss/sd-scripts" and pin.version
    assert json.loads((data_dir("vendor") / "sd-scripts-args.json").read_text())["commit"] == pin.commit


def test_locations_and_environment_overrides(tmp_path, monkeypatch):
    monkeypatch.delenv("KR_SD_SCRIPTS", raising=False)
    monkeypatch.delenv("KR_SD_PYTHON", raising=False)
    monkeypatch.delenv("KR_VENDOR_DIR", raising=False)
    home = tmp_path / "home"
    root = source_checkout()
    expected_root = root / "vendor" if root else home / "vendor"
    assert vendor.default_sd_scripts_dir(home) == expected_root / "sd-scripts"
    assert vendor.default_env_dir(home) == expected_root / "env"
    # the tokenizer cache is the workspace's, the folder rendered configs point at
    assert vendor.default_tokenizer_dir(home) == home / "tokenizers"
    monkeypatch.setenv("KR_VENDOR_DIR", str(tmp_path / "elsewhere"))
    assert vendor.default_sd_scripts_dir(home) == (tmp_path / "elsewhere" / "sd-scripts").resolve()
    assert vendor.default_env_dir(home) == (tmp_path / "elsewhere" / "env").resolve()
    monkeypatch.setenv("KR_SD_SCRIPTS", str(tmp_path))
    assert vendor.find_sd_scripts(home) == tmp_path
    monkeypatch.setenv("KR_SD_SCRIPTS", str(tmp_path / "nope"))
    with pytest.raises(BadInput, match="KR_SD_SCRIPTS"):
        vendor.find_sd_scripts(home)
    monkeypatch.setenv("KR_SD_PYTHON", sys.executable)
    assert vendor.find_trainer_python(home) == Path(sys.executable)
    monkeypatch.setenv("KR_SD_PYTHON", str(tmp_path / "python"))
    with pytest.raises(BadInput, match="KR_SD_PYTHON"):
        vendor.find_trainer_python(home)


def test_torch_spec_for_cpu_and_gpu_machines():
    cpu = vendor.choose_torch_spec(gpu=False)
    assert vendor.split_torch_spec(cpu) == (
        [f"torch=={vendor.TORCH_VERSION}+cpu", f"torchvision=={vendor.TORCHVISION_VERSION}+cpu"],
        ["--extra-index-url", vendor.TORCH_CPU_INDEX],
    )
    assert vendor.split_torch_spec(vendor.choose_torch_spec(gpu=True))[1] == []
    with pytest.raises(BadInput):
        vendor.split_torch_spec("--no-index")


def test_editable_lines_are_left_out_of_the_download(tmp_path):
    requirements = write(tmp_path / "requirements.txt", "accelerate==1.6.0\n# comment\n\ntoml==0.10.2  # pinned\n-e .\n")
    assert _downloadable_requirements(requirements) == (["accelerate==1.6.0", "toml==0.10.2"], True)


# --- trainer environment, bundle -------------------------------------------------------------------


@pytest.fixture(scope="module")
def offline_world(tmp_path_factory):
    """A stand-in sd-scripts checkout (git), its pin, and a wheelhouse with a fake torch and one requirement."""
    root = tmp_path_factory.mktemp("world")
    wheels = root / "wheels"
    wheels.mkdir()
    build_wheel(
        wheels,
        "torch",
        "0.0.1+cpu",
        {
            "torch/__init__.py": "__version__ = '0.0.1+cpu'\n",
            "torch/version.py": "from typing import Optional\ncuda: Optional[str] = '12.8'\n",
        },
    )
    build_wheel(wheels, "krfakedep", "1.0", {"krfakedep/__init__.py": "VALUE = 42\n"})
    checkout = root / "sd-scripts"
    commit, tree = (
        make_repo(
            checkout,
            {
                "requirements.txt": "# trainer requirements\nkrfakedep==1.0\n",
                "train_network.py": "print('trainer')\n",
                "library/__init__.py": "",
            },
        )
        if shutil.which("git")
        else (None, None)
    )
    if commit is None:
        pytest.skip("the git CLI is needed to build the stand-in checkout")
    pin = Pin("file://" + str(checkout), commit, tree, "test")
    return {"root": root, "wheels": wheels, "checkout": checkout, "pin": pin, "open_clip": fake_open_clip_wheel(root)}


def test_trainer_env_installs_torch_then_requirements_offline(offline_world, tmp_path, monkeypatch):
    env_dir = tmp_path / "env"
    env = vendor.create_trainer_env(
        offline_world["checkout"], env_dir, wheelhouse=offline_world["wheels"], torch_spec="torch==0.0.1+cpu"
    )
    assert env.offline and env.python == env_dir / "bin" / "python"
    out = subprocess.run(
        [str(env.python), "-c", "import torch, krfakedep; print(torch.__version__, krfakedep.VALUE)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.split() == ["0.0.1+cpu", "42"]
    assert json.loads((env_dir / vendor.ENV_RECORD).read_text())["torch_spec"] == "torch==0.0.1+cpu"

    with pytest.raises(BadInput, match="already exists"):
        vendor.create_trainer_env(offline_world["checkout"], env_dir, wheelhouse=offline_world["wheels"], torch_spec="torch")
    with pytest.raises(Failed, match="could not start"):  # a failed rebuild must bring the old env back
        vendor.create_trainer_env(
            offline_world["checkout"],
            env_dir,
            wheelhouse=offline_world["wheels"],
            torch_spec="torch",
            force=True,
            base_python=str(tmp_path / "no-python"),
        )
    assert subprocess.run([str(env.python), "-c", "import krfakedep"]).returncode == 0 and no_leftovers(tmp_path) == []

    monkeypatch.setenv("KR_SD_SCRIPTS", str(offline_world["checkout"]))
    monkeypatch.setenv("KR_SD_PYTHON", str(env.python))
    report = vendor.status(tmp_path / "home", tokenizer_dir=tmp_path / "tokenizers")
    assert set(report) == {"pin", "sd_scripts", "trainer", "tokenizers"}
    assert (
        report["trainer"]["torch"] == "0.0.1+cpu" and report["trainer"]["cuda"] == "12.8" and report["trainer"]["from"] == "env"
    )
    assert report["sd_scripts"]["installed"] and report["sd_scripts"]["verified"] is False  # a stand-in, not the pinned tree
    assert report["tokenizers"]["complete"] is False
    json.dumps(report)


def test_bundle_round_trip_installs_everything_without_network(offline_world, tmp_path):
    pin = offline_world["pin"]
    out = tmp_path / "kr-bundle.tar"
    made = vendor.bundle(
        out,
        offline_world["checkout"],
        torch_spec="torch==0.0.1+cpu",
        pin=pin,
        pip_options=["--no-index", "--find-links", str(offline_world["wheels"])],
        tokenizer_source=offline_world["open_clip"],
    )
    assert made.sha256 == hashlib.sha256(out.read_bytes()).hexdigest() and no_leftovers(tmp_path) == []
    with tarfile.open(out) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile("kr-bundle/manifest.json"))
    assert "kr-bundle/wheelhouse/krfakedep-1.0-py3-none-any.whl" in names and ".git" not in " ".join(names)
    assert manifest["pin"]["tree"] == pin.tree and set(manifest["members"]) >= {"sd-scripts/train_network.py", "pin.toml"}

    home = tmp_path / "home"
    done = vendor.install_bundle(
        out, home, pin=pin, sd_scripts_dir=home / "sd-scripts", env_dir=home / "env", tokenizer_dir=home / "tokenizers"
    )
    assert vendor.verify(home / "sd-scripts", expected_tree=pin.tree).ok and done.sd_scripts.commit == pin.commit
    assert subprocess.run([str(done.env.python), "-c", "import krfakedep"]).returncode == 0
    assert [path.name for path in done.tokenizers] == [
        "openai_clip-vit-large-patch14",
        "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k",
    ]
    assert sorted(path.name for path in home.iterdir()) == ["env", "env.kr-pip.log", "kr-vendor.json", "sd-scripts", "tokenizers"]


def test_a_tampered_or_foreign_bundle_installs_nothing(offline_world, tmp_path):
    pin = offline_world["pin"]
    out = vendor.bundle(
        tmp_path / "b.tar.gz",
        offline_world["checkout"],
        torch_spec="torch==0.0.1+cpu",
        pin=pin,
        pip_options=["--no-index", "--find-links", str(offline_world["wheels"])],
        tokenizer_source=offline_world["root"],
    ).path
    bad = tmp_path / "bad.tar"
    with tarfile.open(out) as old, tarfile.open(bad, "w") as new:
        for info in old:
            data = old.extractfile(info).read() if info.isfile() else None
            if info.name.endswith("krfakedep-1.0-py3-none-any.whl"):
                data = data[:-1] + bytes([data[-1] ^ 1])
            new.addfile(info, io.BytesIO(data) if data is not None else None)
    home = tmp_path / "home"
    targets = {"sd_scripts_dir": home / "sd-scripts", "env_dir": home / "env", "tokenizer_dir": home / "tok"}
    with pytest.raises(Failed, match="wheelhouse/krfakedep-1.0-py3-none-any.whl"):
        vendor.install_bundle(bad, home, pin=pin, **targets)
    other_python = tmp_path / "other-python.tar"
    with tarfile.open(out) as old, tarfile.open(other_python, "w") as new:
        for info in old:
            data = old.extractfile(info).read() if info.isfile() else None
            if info.name == "kr-bundle/manifest.json":
                data = json.dumps({**json.loads(data), "python": "2.7"}).encode()
                info.size = len(data)
            new.addfile(info, io.BytesIO(data) if data is not None else None)
    with pytest.raises(BadInput, match="made for Python 2.7"):
        vendor.install_bundle(other_python, home, pin=pin, **targets)
    other_pin = Pin(pin.repository, "b" * 40, "c" * 40, "other")
    with pytest.raises(BadInput, match="pinned to bbbbbbb"):
        vendor.install_bundle(out, home, pin=other_pin, **targets)
    assert sorted(path.name for path in home.iterdir()) == []


def test_bundle_refuses_a_checkout_that_is_not_the_pin(offline_world, tmp_path):
    wrong = Pin("x", "d" * 40, "e" * 40, "x")
    with pytest.raises(Failed, match="is not the pinned sd-scripts"):
        vendor.bundle(tmp_path / "b.tar", offline_world["checkout"], torch_spec="torch", pin=wrong)
    assert list(tmp_path.iterdir()) == []


# --- drift ------------------------------------------------------------------------------------------


def test_an_unmodified_checkout_shows_no_drift(tmp_path, pinned_manifest):
    path, manifest = pinned_manifest
    result = vendor.drift(standin_checkout(tmp_path / "sd", manifest), sys.executable, path)
    assert result.ok, result.to_dict()


def test_planted_changed_and_removed_options_are_reported_exactly(tmp_path, pinned_manifest):
    path, manifest = pinned_manifest
    changed = json.loads(json.dumps(manifest))
    sdxl, sd = changed["scripts"]["sdxl_train_network"], changed["scripts"]["train_network"]
    sdxl["kr_planted"] = {
        "action": "storetrue",
        "choices": None,
        "default": False,
        "flags": ["--kr_planted"],
        "nargs": 0,
        "required": False,
        "type": None,
    }
    sd["learning_rate"]["default"] = 1e-4
    sd["lr_warmup_steps"]["type"] = "float"
    del sd["network_dim"]
    result = vendor.drift(standin_checkout(tmp_path / "sd", changed), sys.executable, path)
    assert result.added == [("sdxl_train_network", "kr_planted")]
    assert result.removed == [("train_network", "network_dim")]
    assert [(c.script, c.option, c.attribute, c.old, c.new) for c in result.changed] == [
        ("train_network", "learning_rate", "default", manifest["scripts"]["train_network"]["learning_rate"]["default"], 1e-4),
        ("train_network", "lr_warmup_steps", "type", "int_or_float", "float"),
    ]
    assert not result.ok and json.loads(json.dumps(result.to_dict()))["removed"] == [
        {"script": "train_network", "option": "network_dim"}
    ]


def test_drift_on_something_that_is_not_sd_scripts_fails_clearly(tmp_path, pinned_manifest):
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(Failed, match="No module named 'train_network'"):
        vendor.drift(folder, sys.executable, pinned_manifest[0])


@needs_git
def test_verify_tells_an_unmodified_install_of_another_commit_apart(sample, tmp_path):
    repo, commit, tree = sample
    dest = tmp_path / "checkout"
    vendor.install(repo, dest, expected_tree=tree, commit=commit)
    result = vendor.verify(dest, expected_tree="f" * 40)  # as after kr's pin moved on
    assert not result.ok and result.named and not result.changed and result.recorded_tree == tree
    assert f"commit {commit}" in result.message() and "another sd-scripts version" in result.message()
