"""Stand-ins for the vendoring tests (and doctor's): git repositories, archives, wheels, a fake open_clip
wheel and an sd-scripts stand-in built from an option manifest. Import what a test module needs."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from kohya_runner.resources import data_dir

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "kr test",
    "GIT_AUTHOR_EMAIL": "kr@example.invalid",
    "GIT_COMMITTER_NAME": "kr test",
    "GIT_COMMITTER_EMAIL": "kr@example.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": "/nonexistent",
}

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="the git CLI is needed to produce reference tree ids")

def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True, text=True).stdout.strip()

def write(path: Path, text: str | bytes, executable: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    path.chmod(0o755 if executable else 0o644)
    return path

def make_repo(root: Path, files: dict[str, str], executables=(), links: dict[str, str] | None = None) -> tuple[str, str]:
    """A committed git repository; returns (commit, tree) as the git CLI reports them."""
    root.mkdir(parents=True)
    git("init", "-q", cwd=root)
    for rel, text in files.items():
        write(root / rel, text, rel in executables)
    for rel, target in (links or {}).items():
        os.symlink(target, root / rel)
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "snapshot", cwd=root)
    return git("rev-parse", "HEAD", cwd=root), git("rev-parse", "HEAD^{tree}", cwd=root)

def archive(repo: Path, out: Path, fmt: str = "tar") -> Path:
    git("archive", f"--format={fmt}", "--prefix=sd-scripts-x/", "-o", str(out), "HEAD", cwd=repo)
    return out

def tamper_tar(source: Path, out: Path, member_suffix: str) -> Path:
    """Copy a tar, changing one byte of the member whose name ends with member_suffix."""
    with tarfile.open(source) as old, tarfile.open(out, "w") as new:
        for info in old:
            data = old.extractfile(info).read() if info.isfile() else None
            if data is not None and info.name.endswith(member_suffix):
                data = bytes([data[0] ^ 1]) + data[1:]
            new.addfile(info, io.BytesIO(data) if data is not None else None)
    return out

def build_wheel(folder: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """A minimal, valid pure-Python wheel (pip checks METADATA, WHEEL and RECORD)."""
    dist = f"{name.replace('-', '_')}-{version}.dist-info"
    contents = {
        **files,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: kr-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [f"{path},sha256={_urlsafe_sha(text.encode())},{len(text.encode())}" for path, text in contents.items()]
    contents[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    path = folder / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for rel, text in contents.items():
            wheel.writestr(rel, text)
    return path

def _urlsafe_sha(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()

def fake_open_clip_wheel(folder: Path) -> Path:
    """An open_clip_torch wheel whose BPE file has CLIP's shape (48,894 distinct merges), built offline."""
    from kohya_runner.tokenizers import MERGE_COUNT, byte_symbols

    symbols = byte_symbols()
    merges = [f"{first} {second}" for first in symbols for second in symbols][:MERGE_COUNT]
    gz = gzip.compress(("#version: 0.2\n" + "\n".join(merges) + "\n").encode())
    path = folder / "open_clip_torch-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr("open_clip/bpe_simple_vocab_16e6.txt.gz", gz)
    return path

STANDIN_BUILDER = '''
"""Stand-in for sd-scripts: an argparse parser built from an option manifest (options.json)."""
import argparse, json, os, pathlib

def int_or_float(value):
    number = float(value)
    return int(number) if number.is_integer() else number

TYPES = {"int": int, "float": float, "str": str, "int_or_float": int_or_float, "Path": pathlib.Path, None: None}
ACTIONS = {"storetrue": "store_true", "storefalse": "store_false"}

def build(script):
    options = json.load(open(os.path.join(os.path.dirname(__file__), "options.json")))["scripts"][script]
    parser = argparse.ArgumentParser()
    for dest, spec in options.items():
        kwargs = {"dest": dest, "default": spec["default"], "required": spec["required"]}
        if spec["action"] == "store":
            kwargs.update(type=TYPES[spec["type"]], choices=spec["choices"], nargs=spec["nargs"])
        else:
            kwargs["action"] = ACTIONS[spec["action"]]
        parser.add_argument(*spec["flags"], **kwargs)
    return parser
'''

def standin_checkout(folder: Path, manifest: dict) -> Path:
    write(folder / "standin.py", STANDIN_BUILDER)
    write(folder / "options.json", json.dumps(manifest))
    for script in ("train_network", "sdxl_train_network"):
        write(
            folder / f"{script}.py",
            f"import standin\nprint('noise on stdout at import')\n\ndef setup_parser():\n    return standin.build({script!r})\n",
        )
    return folder

@pytest.fixture
def pinned_manifest() -> tuple[Path, dict]:
    path = data_dir("vendor") / "sd-scripts-args.json"
    return path, json.loads(path.read_text())
