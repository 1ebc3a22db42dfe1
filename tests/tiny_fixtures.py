"""Fixtures and helpers for the built-in tiny trainer's tests (namespaced `tiny_*` so they cannot
clash with other fixtures). Import the fixtures into a test module to use them."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TRAINER_TIMEOUT = 240  # seconds; a hung trainer is killed with its whole process group


@dataclass
class TrainerResult:
    returncode: int
    stdout: str
    stderr: str
    workdir: Path

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def stdout_lines(self) -> list[str]:
        return [line for line in self.stdout.splitlines() if line.strip()]


def trainer_env() -> dict:
    env = dict(os.environ)
    env.update(PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
               WANDB_MODE="disabled", COLUMNS="200")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def trainer_command(family: str, *args: str) -> list[str]:
    module = "kohya_runner.tiny" if family == "sdxl" else "kohya_runner.tiny.sd15"
    return [sys.executable, "-m", module, *args]


def run_trainer(family: str, workdir: Path, *args: str, timeout: int = TRAINER_TIMEOUT) -> TrainerResult:
    """Run the trainer as kr would: its own session, offline env, cwd = workdir."""
    process = subprocess.Popen(trainer_command(family, *args), cwd=workdir, env=trainer_env(),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return TrainerResult(process.returncode, stdout, stderr, workdir)


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)  # floats keep their point or exponent, as contract §2.1 asks
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_training_toml(path: Path, sections: dict[str, dict]) -> Path:
    """A flat training TOML the way kr renders it (contract §8): cosmetic [sections], flat keys."""
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {toml_value(value)}" for key, value in values.items() if value is not None]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_dataset_toml(path: Path, image_dir: Path, resolution=64, batch_size=2, num_repeats=1,
                       bucket_steps=32, extra_subset: str = "") -> Path:
    """A dataset TOML like contract §2.3.5 (int resolution, bucketing on)."""
    path.write_text(textwrap.dedent(f"""\
        [general]
        caption_extension = ".txt"
        shuffle_caption = false
        keep_tokens = 1

        [[datasets]]
        resolution = {resolution}
        batch_size = {batch_size}
        enable_bucket = true
        min_bucket_reso = {bucket_steps}
        max_bucket_reso = 128
        bucket_reso_steps = {bucket_steps}

          [[datasets.subsets]]
          image_dir = "{image_dir}"
          num_repeats = {num_repeats}
          class_tokens = "mrkstyle"
        """) + extra_subset, encoding="utf-8")
    return path


def write_prompts(path: Path) -> Path:
    path.write_text(textwrap.dedent("""\
        # sample prompts: comment lines and blank lines are skipped

        in the style of TOK, a cup of coffee --w 64 --h 64 --d 7 --s 6 --l 4.0
        in the style of TOK, an hourglass --n blurry, low quality --w 64 --h 64 --s 6
        """), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_bases(tmp_path_factory) -> dict[str, Path]:
    """Both tiny bases, built once per session."""
    from kohya_runner.tiny.base import build_tiny_base

    root = tmp_path_factory.mktemp("tiny_bases")
    return {family: build_tiny_base(root / family, family, seed=0) for family in ("sdxl", "sd15")}


@pytest.fixture(scope="session")
def tiny_demo_images(tmp_path_factory) -> Path:
    """The demo dataset at 64 px (a read-only master; copy it before caches get written)."""
    from kohya_runner.tiny.styles import write_style_dataset

    return write_style_dataset(tmp_path_factory.mktemp("tiny_demo") / "images", count=16, size=64, seed=0)


@pytest.fixture
def tiny_images(tiny_demo_images, tmp_path) -> Path:
    """A private copy of the demo images (caches land next to images)."""
    target = tmp_path / "images"
    shutil.copytree(tiny_demo_images, target)
    return target
