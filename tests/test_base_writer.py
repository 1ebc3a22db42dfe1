"""`kr base random` uses the trainer environment's python when kr's own cannot import torch (issue 12).

How the two interpreters are played, honestly:
- kr's interpreter is this one, run as `python -m kohya_runner` with a folder on PYTHONPATH whose
  `torch` package raises ImportError: to kr, torch is simply not installed.
- the trainer's python (KR_SD_PYTHON) is a shell script that runs this same interpreter (so torch and
  diffusers are really there), logs that it ran, and adds a sitecustomize.py that shrinks the model
  configs (same topology as SD1.5, a few MB instead of 2 GB, as tests/test_bases.py does in-process).
  kr starts it with PYTHONPATH = a folder holding only kohya_runner, so the blocker does not reach it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import kohya_runner
from kohya_runner import bases

pytest.importorskip("diffusers")

KR_ROOT = Path(kohya_runner.__file__).resolve().parent.parent

# sitecustomize.py of the stand-in trainer python; the in-process writes below use the same SMALL_SD15.
SHRINK = '''
from kohya_runner import bases

_TE = {"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
       "num_attention_heads": 2, "max_position_embeddings": 77, "hidden_act": "gelu", "projection_dim": 32}
SMALL_SD15 = {
    "unet": {**bases.SD15_UNET_CONFIG, "block_out_channels": (32, 64, 64, 64), "cross_attention_dim": 32,
             "attention_head_dim": 2},
    "text_encoder": _TE, "vae": {**bases.VAE_CONFIG, "block_out_channels": (32, 32, 64, 64)},
}


def shrink(module):
    full = module.model_parts
    module.model_parts = lambda family, configs=None: full(family, SMALL_SD15)


if __name__ == "sitecustomize":
    shrink(bases)
'''


def shrink_here(monkeypatch) -> None:
    """The same small model for writes in this interpreter (undone after the test)."""
    namespace: dict = {"__name__": "shrink"}
    exec(compile(SHRINK, "shrink", "exec"), namespace)
    small = namespace["SMALL_SD15"]
    full = bases.model_parts
    monkeypatch.setattr(bases, "model_parts", lambda family, configs=None: full(family, small))


@pytest.fixture
def world(tmp_path, monkeypatch):
    blocker = tmp_path / "no-torch"
    (blocker / "torch").mkdir(parents=True)
    (blocker / "torch" / "__init__.py").write_text(
        "raise ImportError('torch is hidden from this interpreter by the test', name='torch')\n")
    shrink = tmp_path / "shrink"
    shrink.mkdir()
    (shrink / "sitecustomize.py").write_text(SHRINK)
    home = tmp_path / "home"
    monkeypatch.setenv("KR_HOME", str(home))
    monkeypatch.setenv("KR_VENDOR_DIR", str(tmp_path / "vendor"))  # no trainer environment there
    monkeypatch.delenv("KR_SD_PYTHON", raising=False)
    return {"tmp": tmp_path, "blocker": blocker, "shrink": shrink, "log": tmp_path / "trainer-python.log"}


def trainer_python(world, *, with_torch: bool = True) -> Path:
    """The stand-in trainer python: this interpreter, logged, with the shrinking sitecustomize (and maybe no torch)."""
    extra = [str(world["shrink"])] + ([] if with_torch else [str(world["blocker"])])
    script = world["tmp"] / "trainer-python"
    script.write_text(
        "#!/bin/sh\n"
        f"echo \"$PYTHONPATH $*\" >> '{world['log']}'\n"
        f"PYTHONPATH=\"$PYTHONPATH:{':'.join(extra)}\" exec '{sys.executable}' \"$@\"\n")
    script.chmod(0o755)
    return script


def kr_without_torch(world, *args: str, **env: str) -> subprocess.CompletedProcess:
    """`kr` in an interpreter that cannot import torch."""
    full = {**os.environ, "PYTHONPATH": f"{KR_ROOT}{os.pathsep}{world['blocker']}", **env}
    return subprocess.run([sys.executable, "-m", "kohya_runner", *args], capture_output=True, text=True, env=full,
                          timeout=600)


def test_without_torch_kr_writes_the_base_with_the_trainer_python(world, tmp_path, monkeypatch):
    out = tmp_path / "random.safetensors"
    done = kr_without_torch(world, "base", "random", "sd15", "--seed", "3", "-o", str(out),
                            KR_SD_PYTHON=str(trainer_python(world)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "kr's python has no torch: writing with the trainer environment's python" in done.stdout
    assert "  building and writing unet" in done.stdout  # its progress lines reach kr's output
    assert f"wrote {out}" in done.stdout
    ran = world["log"].read_text()
    assert "-m kohya_runner.base_writer sd15" in ran and str(world["blocker"]) not in ran.split(" -m ")[0]
    assert bases.detect_architecture(out).family == "sd15"
    assert out.stat().st_size < 50 * 2**20  # the shrunk model: the sitecustomize did run in the trainer python

    # The same base, byte for byte, as kr writes in its own interpreter when torch is there.
    shrink_here(monkeypatch)
    here = bases.write_random_base("sd15", tmp_path / "here.safetensors", seed=3)
    assert here.read_bytes() == out.read_bytes()


def test_with_torch_kr_writes_in_its_own_interpreter(kr, world, tmp_path, monkeypatch):
    shrink_here(monkeypatch)
    monkeypatch.setenv("KR_SD_PYTHON", str(trainer_python(world)))
    result = kr("base", "random", "sd15", "-o", tmp_path / "own.safetensors", ok=True)
    assert "trainer environment" not in result.output and (tmp_path / "own.safetensors").is_file()
    assert not world["log"].exists()


def test_neither_python_has_torch_is_a_clear_error(world, tmp_path):
    out = tmp_path / "random.safetensors"
    failed = kr_without_torch(world, "base", "random", "sd15", "-o", str(out),
                              KR_SD_PYTHON=str(trainer_python(world, with_torch=False)))
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert "kr's python" in failed.stderr and "cannot import torch" in failed.stderr
    assert "neither can the trainer environment's" in failed.stderr and "kr vendor env --force" in failed.stderr
    assert not out.exists()

    alone = kr_without_torch(world, "base", "random", "sd15", "-o", str(out))  # no trainer environment at all
    assert alone.returncode == 1 and "there is no trainer environment" in alone.stderr
    assert "`kr vendor env`" in alone.stderr and "pip install 'kohya-runner[demo]'" in alone.stderr


def test_bad_arguments_are_refused_before_any_python_starts(world, tmp_path):
    refused = kr_without_torch(world, "base", "random", "sd15", "-o", str(tmp_path / "base.ckpt"),
                               KR_SD_PYTHON=str(trainer_python(world)))
    assert refused.returncode == 2 and "must end in .safetensors" in refused.stderr
    assert not world["log"].exists()
