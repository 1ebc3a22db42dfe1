"""dataset.caption(): the one writer into a dataset folder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

pytest.importorskip("numpy")
pytest.importorskip("PIL.Image")

from dataset_helpers import make_image, make_dataset, settings  # noqa: E402
from kohya_runner.dataset import caption, caption_from_filename, check  # noqa: E402
from kohya_runner.errors import Failed  # noqa: E402


def image_hashes(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.iterdir() if p.suffix in (".png", ".jpg")}


def test_caption_dry_run_writes_nothing(tmp_path):
    root = make_dataset(tmp_path / "style", caption_text="a man thinking")
    before = {p.name: p.read_bytes() for p in root.iterdir()}
    plan = caption(root, prefix="in the style of TOK", dry_run=True)
    assert {p.name: p.read_bytes() for p in root.iterdir()} == before
    assert not plan.written and len(plan.changes) == 3
    assert "-a man thinking 0\n+in the style of TOK, a man thinking 0\n" in plan.diff
    assert "--- a/img0.txt" in plan.diff


def test_caption_backs_up_writes_atomically_and_never_double_prefixes(tmp_path):
    root = make_dataset(tmp_path / "style", caption_text="a man thinking")
    (root / "img1.txt").write_text("in the style of TOK, already done\n")
    images = image_hashes(root)
    plan = caption(root, prefix="in the style of TOK")
    assert plan.written and [c.caption for c in plan.changes] == ["img0.txt", "img2.txt"] and plan.unchanged == 1
    assert (root / "img0.txt").read_text() == "in the style of TOK, a man thinking 0"
    assert (plan.backup_dir / "img0.txt").read_text() == "a man thinking 0"
    assert plan.backup_dir.parent.name == ".kr-caption-backup"
    assert image_hashes(root) == images
    assert not list(root.glob(".*kr-tmp*"))
    again = caption(root, prefix="in the style of TOK")
    assert again.changes == [] and again.backup_dir is None
    assert check(settings(root)).ok  # the backup folder is hidden from sd-scripts


def test_caption_from_filename_and_replace(tmp_path):
    root = tmp_path / "style"
    root.mkdir()
    make_image(root / "a_man_thinking-01.png", seed=1)
    make_image(root / "02_woman-reading.png", seed=2)
    (root / "02_woman-reading.txt").write_text("old text\n")
    plan = caption(root, prefix="in the style of TOK,", from_filename=True)
    assert (root / "a_man_thinking-01.txt").read_text() == "in the style of TOK, a man thinking"
    assert (root / "02_woman-reading.txt").read_text() == "in the style of TOK, woman reading\n"  # newline kept
    assert "+++ b/a_man_thinking-01.txt" in plan.diff and "--- /dev/null" in plan.diff
    caption(root, replace=("woman", "person"))
    assert (root / "02_woman-reading.txt").read_text() == "in the style of TOK, person reading\n"
    assert caption_from_filename("photo (2).jpg") == "photo"


def test_caption_skips_what_it_cannot_edit(tmp_path):
    root = make_dataset(tmp_path / "style")
    (root / "img0.txt").unlink()
    (root / "img1.txt").write_bytes("café".encode("latin-1"))
    plan = caption(root, prefix="TOK,", dry_run=True)
    assert [f for f, _ in plan.skipped] == ["img0.png", "img1.txt"]


def test_caption_apply_refuses_when_a_file_changed(tmp_path):
    root = make_dataset(tmp_path / "style", caption_text="a man")
    plan = caption(root, prefix="TOK", dry_run=True)
    (root / "img1.txt").write_text("edited meanwhile")
    with pytest.raises(Failed, match="changed since"):
        plan.apply()
    assert (root / "img0.txt").read_text() == "a man 0"
