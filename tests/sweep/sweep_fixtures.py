"""Fixtures shared by the sweep tests: the tiny SDXL base and demo images, built once per module."""

from __future__ import annotations

from kohya_runner import workspace

import pytest

QUICK = ["training.epochs=2", "sampling.at_first=false", "sampling.every_n_epochs=100", "saving.every_n_epochs=100",
         "saving.state=false"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    from kohya_runner.tiny import build_tiny_base, write_style_dataset

    folder = tmp_path_factory.mktemp("sweep-shared")
    return {"sdxl": build_tiny_base(folder / "tiny-sdxl", "sdxl"),
            "images": write_style_dataset(folder / "images", count=16, size=64)}


@pytest.fixture
def tiny_home(home, shared):
    """A workspace with the tiny SDXL base, and the demo images at 64 px (read through kr's cache folders,
    so they stay untouched and can be shared)."""
    (home / "bases").mkdir(parents=True)
    workspace.tiny_base_dir(home, "sdxl").symlink_to(shared["sdxl"])
    return {"home": home, "images": shared["images"]}
