"""The pretrained tiny base draws what it is asked; the random-initialised one does not. Its weights
are checked against their sha256, and the pretraining script gives the same bytes for the same seed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

COLOURS = ("red", "blue", "green", "yellow")
SHAPES = ("circle", "square", "triangle", "star")
REPO = Path(__file__).resolve().parents[2]


def depiction_score(base_dir, seeds=(1,)) -> tuple[float, float]:
    """(share of samples whose largest blob has the asked colour, share with the asked shape)."""
    from kohya_runner.tiny.infer import generate, load_pipeline
    from kohya_runner.tiny.measure import largest_blob

    pipe = load_pipeline(base_dir)
    colour_hits = shape_hits = total = 0
    for colour in COLOURS:
        for shape in SHAPES:
            for seed in seeds:
                image = generate(pipe, f"a {colour} {shape}", seed=seed, steps=20, cfg=3.0, sampler="euler_a")
                blob = largest_blob(image)
                total += 1
                colour_hits += blob is not None and blob.colour == colour
                shape_hits += blob is not None and blob.shape == shape
    return colour_hits / total, shape_hits / total


@pytest.fixture(scope="module", params=["sdxl", "sd15"])
def pretrained_base(request, tmp_path_factory):
    from kohya_runner.tiny.base import build_tiny_base

    return build_tiny_base(tmp_path_factory.mktemp("pretrained") / request.param, request.param)


def test_pretrained_base_draws_the_asked_colour_and_shape(pretrained_base):
    colour, shape = depiction_score(pretrained_base, seeds=(1, 2))
    # the committed weights measured 1.00 / 0.97 (sdxl) and 1.00 / 1.00 (sd15); a random base 0.25 / 0.28
    assert colour >= 0.85 and shape >= 0.8, (colour, shape)


def test_random_base_fails_the_same_measurement(tmp_path):
    from kohya_runner.tiny.base import build_tiny_base, read_marker

    base = build_tiny_base(tmp_path / "random", "sdxl", pretrained=False)
    assert read_marker(base)["pretrained"] is False
    colour, shape = depiction_score(base)
    assert colour < 0.4, colour


def test_damaged_weights_are_refused_by_their_sha256(tmp_path):
    from kohya_runner.tiny import base

    weights = tmp_path / "weights"
    shutil.copytree(base.WEIGHTS_DIR, weights)
    target = weights / json.loads((weights / base.WEIGHTS_MANIFEST).read_text())["sdxl"]["file"]
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    code = ("import sys; from pathlib import Path; from kohya_runner.tiny.base import build_tiny_base\n"
            "build_tiny_base(Path(sys.argv[1]), 'sdxl')")
    env = {**os.environ, "KR_TINY_WEIGHTS": str(weights), "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "base")], capture_output=True, text=True,
                            env=env, timeout=120)
    assert result.returncode != 0 and "is damaged: sha256" in result.stderr
    assert not (tmp_path / "base").exists()


@pytest.mark.slow
def test_pretraining_is_reproducible_for_a_seed(tmp_path):
    def pretrain(out: Path) -> dict:
        command = [sys.executable, "-m", "kohya_runner.tiny.pretrain", "--out", str(out), "--steps", "3",
                   "--batch", "4", "--pool", "64", "--threads", "1"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=300,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        assert result.returncode == 0, result.stderr[-2000:]
        return json.loads((out / "manifest.json").read_text())

    first, second = pretrain(tmp_path / "a"), pretrain(tmp_path / "b")
    assert set(first) == {"sdxl", "sd15"}
    assert [first[f]["sha256"] for f in first] == [second[f]["sha256"] for f in first]
