"""The pinned tree's file list kr ships beside pin.toml (vendor/sd-scripts-files.gz, issue 12): `kr vendor
verify` / `status` name the missing, changed and extra files of a checkout that has neither an install
record nor a .git, as a hand-exported sd-scripts has.

The real list is checked against the real pin (its tree id must be the pinned tree's). The behaviour is
checked on a stand-in: a git repository plays the pinned commit through KR_PIN_FILE, with its own
`git ls-tree -r -z | gzip` beside that pin.toml, exactly as kr's vendor/ folder holds the real one.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess

import pytest

from vendor_fixtures import GIT_ENV, make_repo, needs_git, write

from kohya_runner.gittree import tree_id
from kohya_runner.resources import data_dir
from kohya_runner.vendoring import SHIPPED_FILE_LIST, load_pin
from kohya_runner.vendoring.trees import parse_ls_tree

FILES = {
    "train_network.py": "print('stand-in')\n",
    "requirements.txt": "# none\n",
    "library/__init__.py": "",
    "library/train_util.py": "STEPS = 1\n",
    "bitsandbytes_windows/libbitsandbytes_cuda116.dll": "MZ not really\n",
    "configs/tokenizer.json": "{}\n",
}


def test_the_shipped_list_is_the_pinned_tree_and_small(monkeypatch):
    monkeypatch.delenv("KR_PIN_FILE", raising=False)
    path = data_dir("vendor") / SHIPPED_FILE_LIST
    entries = parse_ls_tree(gzip.decompress(path.read_bytes()))
    assert tree_id(entries) == load_pin().tree  # kr trusts a list only when this holds
    assert len(entries) == 227 and "train_network.py" in entries and "sdxl_train_network.py" in entries
    assert path.stat().st_size < 10_000


@pytest.fixture
def exported(tmp_path, monkeypatch, home):
    """A stand-in pinned commit, its file list beside its pin.toml, and a plain copy of its files (KR_SD_SCRIPTS)."""
    repo = tmp_path / "upstream"
    commit, tree = make_repo(repo, FILES)
    pin = tmp_path / "pin" / "pin.toml"
    write(pin, f'repository = "file://{repo}"\ncommit = "{commit}"\ntree = "{tree}"\nversion = "0.0-test"\n')
    listing = git_bytes(repo, "ls-tree", "-r", "-z", commit)
    (pin.parent / SHIPPED_FILE_LIST).write_bytes(gzip.compress(listing, mtime=0))
    checkout = tmp_path / "exported"
    shutil.copytree(repo, checkout, ignore=shutil.ignore_patterns(".git"))
    monkeypatch.setenv("KR_PIN_FILE", str(pin))
    monkeypatch.setenv("KR_SD_SCRIPTS", str(checkout))
    return {"pin": pin, "checkout": checkout, "tree": tree}


def git_bytes(repo, *args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=repo, env=GIT_ENV, check=True, capture_output=True).stdout


@needs_git
def test_a_partial_checkout_names_missing_changed_and_extra_files(kr, exported):
    checkout = exported["checkout"]
    assert kr("vendor", "verify").exit_code == 0  # the plain copy is the pinned tree
    (checkout / "bitsandbytes_windows" / "libbitsandbytes_cuda116.dll").unlink()
    (checkout / "configs" / "tokenizer.json").unlink()
    write(checkout / "library" / "train_util.py", "STEPS = 2\n")
    write(checkout / "my_notes.txt", "mine\n")
    write(checkout / "library" / "__pycache__" / "train_util.cpython-311.pyc", b"\0")  # the trainer's: ignored

    failed = kr("vendor", "verify")
    assert failed.exit_code == 1 and "Traceback" not in failed.output
    assert "2 missing, 1 changed, 1 extra." in failed.output
    assert ("Missing: bitsandbytes_windows/libbitsandbytes_cuda116.dll, configs/tokenizer.json. "
            "Changed: library/train_util.py. Extra: my_notes.txt.") in failed.output

    row = next(line for line in kr("vendor", "status", ok=True).output.splitlines() if line.startswith("sd-scripts"))
    assert "✗ does not match the pin: 2 missing, 1 changed, 1 extra (" in row
    assert "bitsandbytes_windows/libbitsandbytes_cuda116.dll (missing), configs/tokenizer.json (missing), " \
           "library/train_util.py (changed) and 1 more" in row
    assert "0 files differ" not in row

    status = kr.json("vendor", "status")["sd_scripts"]
    assert status["named"] is True and status["missing"] == ["bitsandbytes_windows/libbitsandbytes_cuda116.dll",
                                                             "configs/tokenizer.json"]
    report = json.loads(kr("vendor", "verify", "--json").stdout)
    assert (report["named"], report["changed"], report["added"]) == (True, ["library/train_util.py"], ["my_notes.txt"])
    assert report["extra"] == ["library/__pycache__/"]


@needs_git
@pytest.mark.parametrize("damage", ["absent", "foreign", "corrupt"])
def test_without_a_trusted_list_kr_says_it_cannot_name_the_files(kr, exported, damage, tmp_path):
    listing = exported["pin"].parent / SHIPPED_FILE_LIST
    if damage == "absent":
        listing.unlink()
    elif damage == "foreign":  # another tree's list: its tree id is not the pin's, so it would name wrong files
        other = tmp_path / "other"
        commit, _ = make_repo(other, {"x.py": "x\n"})
        listing.write_bytes(gzip.compress(git_bytes(other, "ls-tree", "-r", "-z", commit)))
    else:
        listing.write_bytes(b"not gzip")
    (exported["checkout"] / "train_network.py").unlink()

    failed = kr("vendor", "verify")
    assert failed.exit_code == 1 and "cannot name the files that differ" in failed.output
    row = next(line for line in kr("vendor", "status", ok=True).output.splitlines() if line.startswith("sd-scripts"))
    assert "kr has no file list of the pinned tree to name the files that differ" in row
    assert kr.json("vendor", "status")["sd_scripts"]["named"] is False
