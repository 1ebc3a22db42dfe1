"""sdscripts.validation: sd-scripts' validation split (train_util.split_train_val + glob_images at the pin),
the held-out images of a real folder, and the dataset check's warnings about the split's rounding."""

from __future__ import annotations

import glob
import logging
import math
import os
import random
from pathlib import Path
from typing import List, Optional, Tuple

import pytest

from kohya_runner.sdscripts import validation
from kohya_runner.tiny.dataset import glob_images as tiny_glob_images, split_train_val as tiny_split_train_val

# ---- copied from sd-scripts 48d368f, library/train_util.py (split_train_val, IMAGE_EXTENSIONS, glob_images) ----

IMAGE_EXTENSIONS = [".png", ".jpg", ".jpeg", ".webp", ".bmp", ".PNG", ".JPG", ".JPEG", ".WEBP", ".BMP"]


def split_train_val(
    paths: List[str],
    sizes: List[Optional[Tuple[int, int]]],
    is_training_dataset: bool,
    validation_split: float,
    validation_seed: int | None,
) -> Tuple[List[str], List[Optional[Tuple[int, int]]]]:
    dataset = list(zip(paths, sizes))
    if validation_seed is not None:
        logging.info(f"Using validation seed: {validation_seed}")
        prevstate = random.getstate()
        random.seed(validation_seed)
        random.shuffle(dataset)
        random.setstate(prevstate)
    else:
        random.shuffle(dataset)

    paths, sizes = zip(*dataset)
    paths = list(paths)
    sizes = list(sizes)
    # Split the dataset between training and validation
    if is_training_dataset:
        # Training dataset we split to the first part
        split = math.ceil(len(paths) * (1 - validation_split))
        return paths[0:split], sizes[0:split]
    else:
        # Validation dataset we split to the second part
        split = len(paths) - round(len(paths) * validation_split)
        return paths[split:], sizes[split:]


def glob_images(directory, base="*"):
    img_paths = []
    for ext in IMAGE_EXTENSIONS:
        if base == "*":
            img_paths.extend(glob.glob(os.path.join(glob.escape(directory), base + ext)))
        else:
            img_paths.extend(glob.glob(glob.escape(os.path.join(directory, base + ext))))
    img_paths = list(set(img_paths))  # 重複を排除
    img_paths.sort()
    return img_paths

# ---- end of the copy ----


def sd_scripts_parts(paths: list[str], split: float, seed: int | None) -> tuple[list[str], list[str]]:
    """What sd-scripts' training copy and validation copy of the dataset get (built one after the other)."""
    sizes = [None] * len(paths)
    return (split_train_val(paths, sizes, True, split, seed)[0], split_train_val(paths, sizes, False, split, seed)[0])


@pytest.mark.parametrize("count", [1, 2, 3, 5, 6, 7, 10, 16, 20, 33, 100, 257])
@pytest.mark.parametrize("split", [0.01, 0.1, 0.2, 0.25, 0.3, 0.33, 0.5, 0.7, 0.9, 0.99])
def test_split_matches_sd_scripts(count, split):
    paths = [f"/data/img{i:04d}.png" for i in range(count)]
    for seed in (0, 1, 42, 1234, 2**31 - 1, 2**32 - 1):
        state = random.getstate()
        expected = sd_scripts_parts(paths, split, seed)
        assert validation.split(paths, split, seed) == expected, (count, split, seed)
        assert validation.sizes(count, split) == tuple(len(part) for part in expected)
        assert random.getstate() == state  # neither sd-scripts (with a seed) nor kr moves the global state
        # the tiny trainer's own copy agrees too
        assert (tiny_split_train_val(paths, True, split, seed), tiny_split_train_val(paths, False, split, seed)) == expected


def test_a_local_random_shuffles_like_the_seeded_global_one():
    items = list(range(50))
    random.seed(7)
    global_order = items[:]
    random.shuffle(global_order)
    local_order = items[:]
    random.Random(7).shuffle(local_order)
    assert global_order == local_order != items


def test_the_two_parts_follow_sd_scripts_rounding():
    paths = [f"p{i}" for i in range(6)]
    train, held = validation.split(paths, 0.25, 42)
    assert (len(train), len(held)) == (5, 2) and len(set(train) & set(held)) == 1  # ceil(4.5) + round(1.5) > 6
    assert validation.sizes(3, 0.1) == (3, 0) and validation.split(paths[:3], 0.1, 1)[1] == []
    assert validation.sizes(16, 0.25) == (12, 4) and validation.sizes(0, 0.25) == (0, 0)
    assert validation.clean_split(6, 0.25) == 0.24 and validation.sizes(6, 0.24) == (5, 1)
    assert validation.clean_split(1, 0.5) is None


def test_without_a_seed_sd_scripts_shuffles_the_two_copies_apart():
    """Why kr always writes validation_seed: with none, both copies shuffle the global state in turn."""
    paths = [f"p{i:02d}" for i in range(20)]
    random.seed(42)  # sd-scripts' set_seed(args.seed) before building the datasets
    train, held = sd_scripts_parts(paths, 0.25, None)
    assert set(train) & set(held)
    train, held = sd_scripts_parts(paths, 0.25, 42)
    assert not set(train) & set(held) and sorted(train + held) == paths


def test_an_empty_subset_fails_like_sd_scripts():
    with pytest.raises(ValueError) as theirs:
        split_train_val([], [], True, 0.2, 1)
    with pytest.raises(ValueError) as ours:
        validation.split([], 0.2, 1)
    assert str(ours.value) == str(theirs.value)


def _folder(root: Path) -> Path:
    root.mkdir()
    names = [f"img{i:02d}.png" for i in range(9)] + ["a.JPG", "b.jpeg", "c.webp", "d.bmp", "e.JPEG", "[x].png"]
    for name in names:
        (root / name).write_bytes(b"not decoded")
        (root / name).with_suffix(".txt").write_text("caption")
    for skipped in ("f.Png", "g.gif", ".hidden.png", "h.tiff"):
        (root / skipped).write_bytes(b"x")
    (root / "sub").mkdir()
    (root / "sub" / "deep.png").write_bytes(b"x")
    return root


def test_held_out_on_a_real_folder(tmp_path):
    root = _folder(tmp_path / "my [style] set")  # glob characters in the folder name are escaped
    listed = glob_images(str(root), "*")
    assert len(listed) == 15 and validation.glob_images(root, ()) == listed == tiny_glob_images(root)
    for split, seed in ((0.2, 42), (0.25, 0), (0.5, 2**32 - 1)):
        expected = sd_scripts_parts(listed, split, seed)[1]
        held = validation.held_out(root, split, seed, extra_extensions=())
        assert held == [Path(p) for p in expected] and held
        assert all(p.parent == root and p.is_file() for p in held)
    assert validation.held_out(root, 0.0, 42, ()) == []
    (tmp_path / "empty").mkdir()
    assert validation.held_out(tmp_path / "empty", 0.25, 42, ()) == []


def test_held_out_names_do_not_depend_on_the_folder(tmp_path):
    root = _folder(tmp_path / "images")
    links = tmp_path / "cache"
    links.mkdir()
    for path in root.iterdir():
        if path.is_file():
            (links / path.name).symlink_to(path)
    names = [p.name for p in validation.held_out(root, 0.3, 5, ())]
    assert names == [p.name for p in validation.held_out(links, 0.3, 5, ())]


def test_plugin_extensions_count_only_when_the_trainer_has_them(tmp_path):
    root = _folder(tmp_path / "images")
    (root / "z.avif").write_bytes(b"x")
    assert len(validation.glob_images(root, ())) == 15
    assert len(validation.glob_images(root, (".avif",))) == 16


@pytest.mark.parametrize("count, split, code", [(6, 0.25, "validation-overlap"), (3, 0.1, "validation-empty"),
                                                (6, 0.24, None), (3, 0.0, None)])
def test_the_dataset_check_warns_about_the_rounding(tmp_path, count, split, code):
    pytest.importorskip("PIL.Image")
    from PIL import Image

    from kohya_runner.dataset import DatasetSettings, check

    root = tmp_path / "set"
    root.mkdir()
    for i in range(count):
        Image.new("RGB", (128, 128), (40 * i, 90, 200 - 30 * i)).save(root / f"img{i}.png")
        (root / f"img{i}.txt").write_text(f"TOK, a picture {i}")
    report = check(DatasetSettings(dir=root, family="sd15", trigger="TOK", resolution=128, min_bucket_reso=64,
                                   max_bucket_reso=256, validation_split=split))
    found = [f for f in report.findings if f.code.startswith("validation-")]
    assert [f.code for f in found] == ([code] if code else [])
    if code:
        assert found[0].severity == "warning" and found[0].fix.startswith("set dataset.validation_split=0.")


def test_kr_run_notes_the_rounding_before_launch(tmp_path):
    from kohya_runner.spec import build_spec
    from kohya_runner.trainers.notes import validation_notes

    root = _folder(tmp_path / "images")  # 15 images
    spec = build_spec({"dataset": {"dir": str(root), "validation_split": 0.02}})
    [note] = validation_notes(spec)
    assert note.startswith("warning: validation_split 0.02 of 15 images holds out none") and "Fix: set dataset." in note
    assert validation_notes(spec.model_copy(update={"dataset": spec.dataset.model_copy(update={"validation_split": 0.2})})) == []
    assert validation_notes(build_spec({"dataset": {"dir": str(root)}})) == []
