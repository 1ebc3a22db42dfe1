"""dataset.check() on images: unreadable, wrong extension, ignored formats, duplicates, EXIF, alpha."""

from __future__ import annotations

import pytest

np = pytest.importorskip("numpy")
Image = pytest.importorskip("PIL.Image")

from dataset_helpers import CAPTION, pixels, make_image, make_dataset, settings, findings, only  # noqa: E402
from kohya_runner.dataset import check, scan  # noqa: E402


def test_truncated_png(tmp_path):
    root = make_dataset(tmp_path / "style")
    data = (root / "img1.png").read_bytes()
    (root / "img1.png").write_bytes(data[: len(data) // 2])
    report = check(settings(root))
    assert findings(report, "image-truncated") == ["img1.png"]
    assert not report.ok


def test_garbage_file_with_image_extension(tmp_path):
    root = make_dataset(tmp_path / "style")
    (root / "img2.png").write_bytes(b"not an image at all")
    assert findings(check(settings(root)), "image-unreadable") == ["img2.png"]


def test_jpeg_saved_as_png(tmp_path):
    root = make_dataset(tmp_path / "style")
    make_image(root / "img1.png", seed=101, fmt="JPEG", quality=92)
    finding = only(check(settings(root)), "image-wrong-extension")
    assert finding.file == "img1.png" and "JPEG" in finding.message and "img1.jpg" in finding.fix


def test_gif_and_mixed_case_extensions_are_ignored(tmp_path):
    root = make_dataset(tmp_path / "style")
    make_image(root / "anim.gif", seed=7, fmt="GIF")
    make_image(root / "Photo.Png", seed=8, fmt="PNG")
    make_image(root / "UPPER.PNG", seed=9, fmt="PNG")  # all-upper is read
    (root / "UPPER.txt").write_text(CAPTION)
    report = check(settings(root))
    assert findings(report, "image-ignored-format") == ["Photo.Png", "anim.gif"]
    assert "ignored by sd-scripts" in report.find("image-ignored-format")[0].message
    assert report.images == 4
    assert [img.rel for img in scan(settings(root)).images] == ["UPPER.PNG", "img0.png", "img1.png", "img2.png"]


def test_tiny_image_is_upscaled_and_says_by_how_much(tmp_path):
    root = make_dataset(tmp_path / "style")
    make_image(root / "img2.png", seed=102, size=(32, 32))
    finding = only(check(settings(root)), "image-upscaled")
    assert finding.file == "img2.png" and "4.00x" in finding.message and "128x128" in finding.message


def test_duplicate_and_near_duplicate(tmp_path):
    root = make_dataset(tmp_path / "style", n=4)
    (root / "img3.png").write_bytes((root / "img0.png").read_bytes())
    brighter = np.clip(pixels(101).astype(int) + 6, 0, 255).astype(np.uint8)
    Image.fromarray(brighter).save(root / "img9.jpg", quality=90)
    (root / "img9.txt").write_text(CAPTION)
    report = check(settings(root))
    assert findings(report, "image-duplicate") == ["img3.png"]
    assert "img0.png" in report.find("image-duplicate")[0].message
    assert findings(report, "image-near-duplicate") == ["img9.jpg"]
    assert "img1.png" in report.find("image-near-duplicate")[0].message


def test_exif_rotation_and_transparency(tmp_path):
    root = make_dataset(tmp_path / "style")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels(101)).save(root / "img1.jpg", exif=exif)
    (root / "img1.png").unlink()
    rgba = np.dstack([pixels(102), np.full((128, 128), 255, np.uint8)])
    rgba[:10, :10, 3] = 0
    Image.fromarray(rgba, "RGBA").save(root / "img2.png")
    report = check(settings(root))
    assert findings(report, "image-exif-rotated") == ["img1.jpg"]
    assert findings(report, "image-transparent") == ["img2.png"]


def test_decode_runs_in_parallel_processes_with_the_same_result(tmp_path):
    root = make_dataset(tmp_path / "style", n=6)
    data = (root / "img1.png").read_bytes()
    (root / "img1.png").write_bytes(data[:300])
    serial = check(settings(root), workers=1)
    parallel = check(settings(root), workers=2)
    assert serial.to_dict() == parallel.to_dict()
