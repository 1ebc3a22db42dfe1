"""`kr run --base tiny` with dataset.validation_split: the tiny trainer splits like sd-scripts (and like kr's
sdscripts.validation), trains on the training part only, and logs sd-scripts' validation tags every epoch
and every validate_every_n_steps."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import toml

from conftest import run_kr

from kohya_runner import workspace
from kohya_runner.lorafile import read_metadata
from kohya_runner.sdscripts import validation


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory):
    from kohya_runner.tiny import build_tiny_base, write_style_dataset

    root = tmp_path_factory.mktemp("tiny-validation")
    home = root / "home"
    (home / "bases").mkdir(parents=True)
    workspace.tiny_base_dir(home, "sdxl").symlink_to(build_tiny_base(root / "tiny-sdxl", "sdxl"))
    return home, write_style_dataset(root / "images", count=16, size=64)


def test_a_validation_split_trains_on_the_rest_and_logs_the_validation_loss(tiny_home):
    home, images = tiny_home
    result = run_kr("run", "tiny-demo", "--dataset", images, "--base", "tiny", "training.epochs=2", "sampling.prompts=[]",
                    "dataset.validation_split=0.25", "privacy.metadata=keep", "sd_scripts.validate_every_n_steps=5",
                    "--json", env={"KR_HOME": str(home)}, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    run = json.loads(result.stdout)
    run_dir = Path(run["run_dir"])
    assert run["status"] == "succeeded"
    assert run["steps_total"] == 12  # 16 images: ceil(16 × 0.75) = 12 train, 2 a batch, 2 epochs

    [ds] = toml.loads((run_dir / "dataset.toml").read_text())["datasets"]
    assert ds["validation_split"] == 0.25 and ds["validation_seed"] == 42  # the preset's training.seed
    log = (run_dir / "trainer.log").read_text()
    assert "num train images * repeats / 学習画像の数×繰り返し回数: 12" in log
    assert "num validation images * repeats / 学習画像の数×繰り返し回数: 4" in log

    # exactly the images kr's library says sd-scripts trains on: their captions' tags are the ones counted
    image_dir = Path(ds["subsets"][0]["image_dir"])
    trained, held = validation.split(validation.glob_images(image_dir, ()), 0.25, 42)
    assert [p.name for p in validation.held_out(images, 0.25, 42, ())] == [Path(p).name for p in held]
    expected: dict[str, int] = {}
    for path in trained:
        for tag in Path(path).with_suffix(".txt").read_text().split(","):
            expected[tag.strip().lower()] = expected.get(tag.strip().lower(), 0) + 1
    header = read_metadata(run_dir / "output" / "tiny-demo.safetensors")
    assert (header["ss_num_train_images"], header["ss_num_validation_images"]) == ("12", "4")
    assert json.loads(header["ss_tag_frequency"]) == {image_dir.name: expected}

    with open(run_dir / "archive" / "loss.csv") as f:
        rows = list(csv.DictReader(f))
    validated = {r["tag"]: sorted(int(s["step"]) for s in rows if s["tag"] == r["tag"])
                 for r in rows if r["tag"].startswith("loss/validation/")}
    assert validated == {  # every epoch (x = epoch), and every validate_every_n_steps (x = global step)
        "loss/validation/epoch_average": [1, 2], "loss/validation/epoch_divergence": [1, 2],
        "loss/validation/step_average": [5, 10], "loss/validation/step_divergence": [5, 10]}
