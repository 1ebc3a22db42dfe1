"""Shared fixtures: an isolated workspace, and `kr` driven both in-process (CliRunner) and as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner



@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "kr-home"
    monkeypatch.setenv("KR_HOME", str(root))
    monkeypatch.delenv("KR_SD_SCRIPTS", raising=False)
    monkeypatch.delenv("KR_SD_PYTHON", raising=False)
    # sd-scripts and its trainer env: never the repository's own vendor/ folder during tests
    monkeypatch.setenv("KR_VENDOR_DIR", str(tmp_path / "kr-vendor"))
    return root


@pytest.fixture
def dataset_dir(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    return folder


@pytest.fixture
def style_images(tmp_path) -> Path:
    """Three small captioned images: enough for the fault stand-in, which does not read them."""
    from PIL import Image

    folder = tmp_path / "style"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (64, 64), (40 * i, 90, 200)).save(folder / f"img{i}.png")
        (folder / f"img{i}.txt").write_text(f"in the style of TOK, a shape {i}")
    return folder


@pytest.fixture
def base_file(tmp_path) -> Path:
    """An SDXL base as kr's base check sees it (a header with real SDXL key names, no weights): what the
    fault stand-in "trains" and `kr render` points configs at."""
    return _header_base(tmp_path / "base.safetensors", SDXL_KEYS)


# header-only base files with real SD key names and zero-size tensors: detected as their family, no gigabytes
def _header_base(path, keys):
    import json, struct
    header = {name: {"dtype": "F16", "shape": [0, *shape[1:]], "data_offsets": [0, 0]} for name, shape in keys.items()}
    data = json.dumps(header).encode()
    data += b" " * (-len(data) % 8)
    path.write_bytes(struct.pack("<Q", len(data)) + data)
    return path

_U = "model.diffusion_model."
_VAE = {"first_stage_model.encoder.conv_in.weight": [8, 3, 3, 3]}
SDXL_KEYS = {_U + "input_blocks.0.0.weight": [8, 4, 3, 3], _U + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": [8, 2048],
             _U + "label_emb.0.0.weight": [8, 2816],
             "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": [768],
             "conditioner.embedders.1.model.ln_final.weight": [1280], **_VAE}
SD15_KEYS = {_U + "input_blocks.0.0.weight": [8, 4, 3, 3], _U + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": [8, 768],
             "cond_stage_model.transformer.text_model.final_layer_norm.weight": [768], **_VAE}

@pytest.fixture
def sdxl_header_base(tmp_path):
    return _header_base(tmp_path / "sdxl-header.safetensors", SDXL_KEYS)

@pytest.fixture
def sd15_header_base(tmp_path):
    return _header_base(tmp_path / "sd15-header.safetensors", SD15_KEYS)


class Kr:
    """`kr` in-process through click's CliRunner; errors come back as exit codes and text, like a user sees them."""

    def __init__(self, home: Path):
        self.home = home

    def __call__(self, *args: str, ok: bool | None = None):
        runner = CliRunner()
        result = runner.invoke(_Main(), [str(a) for a in args], catch_exceptions=False, env={"KR_HOME": str(self.home)})
        if ok is True:
            assert result.exit_code == 0, result.output
        return result

    def json(self, *args: str):
        result = self(*args, "--json", ok=True)
        return json.loads(result.stdout)


class _Main:
    """Adapter so CliRunner calls kr's main() (which turns KrError into exit codes), not the bare group."""

    name = "kr"

    def main(self, args=None, prog_name=None, **extra):
        from kohya_runner.cli import main

        main(list(args or []))
        raise SystemExit(0)


@pytest.fixture
def kr(home) -> Kr:
    return Kr(home)


def run_kr(*args: str, env: dict | None = None, timeout: float = 120, cwd: str | None = None) -> subprocess.CompletedProcess:
    """`kr` as a real subprocess of this interpreter."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "kohya_runner", *map(str, args)], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=cwd)


STANDIN_FAULT = '''import runpy, sys
sys.argv[0] = __file__
runpy.run_path({script!r}, run_name="__main__")
'''
STANDIN_TINY = '''import runpy, sys
runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
'''


def make_standin_checkout(folder: Path, kind: str) -> Path:
    """A stand-in sd-scripts checkout: its entry scripts run the fault stand-in or kr's tiny trainer."""
    folder.mkdir(parents=True, exist_ok=True)
    for script, tiny_module in (("sdxl_train_network.py", "kohya_runner.tiny"), ("train_network.py", "kohya_runner.tiny.sd15")):
        if kind == "fault":
            text = STANDIN_FAULT.format(script=str(Path(__file__).with_name("fault_trainer.py")))
        else:
            text = STANDIN_TINY.format(module=tiny_module)
        (folder / script).write_text(text)
    return folder


@pytest.fixture
def fault_checkout(tmp_path, monkeypatch, home) -> Path:
    checkout = make_standin_checkout(tmp_path / "standin-sd-scripts", "fault")
    monkeypatch.setenv("KR_SD_SCRIPTS", str(checkout))
    monkeypatch.setenv("KR_SD_PYTHON", sys.executable)
    return checkout


def no_process_left(marker: str) -> list[str]:
    """Command lines of live processes that mention `marker` (a run folder or checkout path)."""
    import psutil

    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            cmd = " ".join(proc.info["cmdline"] or [])
        except psutil.Error:
            continue
        if marker in cmd and proc.pid != os.getpid():
            found.append(cmd)
    return found


def write_tiny_clip_tokenizer(folder: Path) -> None:
    """A byte-level CLIP vocabulary without merges (every character is one token): loads fast, counts exactly."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, extra = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    symbols = [chr(c) for c in cs]
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
