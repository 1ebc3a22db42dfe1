"""dataset.check() on the layout and settings: caches, legacy folders, subfolders, sd-scripts' asserts."""

from __future__ import annotations

import pytest

pytest.importorskip("numpy")
pytest.importorskip("PIL.Image")

from dataset_helpers import make_image, make_dataset, settings, findings, only  # noqa: E402
from kohya_runner.dataset import TrainingPlan, check  # noqa: E402
from kohya_runner.errors import BadInput  # noqa: E402


def test_stale_cache_files(tmp_path):
    root = make_dataset(tmp_path / "style")
    (root / "img0_0128x0128_sd.npz").write_bytes(b"x")
    (root / "img1_0128x0128_sd.npz").write_bytes(b"x")
    (root / "img0_te_outputs.npz").write_bytes(b"x")
    (root / "img2.npz").write_bytes(b"x")
    (root / "metadata_cache.json").write_text("{}")
    report = check(settings(root))
    assert findings(report, "cache-stale") == ["img0_0128x0128_sd.npz", "img0_te_outputs.npz", "img2.npz", "metadata_cache.json"]
    sd = report.find("cache-stale")[0]
    assert "and 1 more" in sd.message and "reuses these silently" in sd.message and "kr keeps its own caches" in sd.message
    assert report.ok and "would load them" not in sd.message
    assert "would load them" in check(settings(root, cache_latents=True)).find("cache-stale")[0].message


def test_legacy_parent_folder(tmp_path):
    parent = tmp_path / "train"
    make_dataset(parent / "10_mystyle")
    finding = only(check(settings(parent)), "legacy-parent-dir")
    assert finding.file == "10_mystyle" and "No data found" in finding.message and "num_repeats=10" in finding.fix
    assert "no-images" not in check(settings(parent)).codes()


def test_folder_named_like_the_legacy_convention(tmp_path):
    root = make_dataset(tmp_path / "10_style")
    finding = only(check(settings(root)), "legacy-dir-name")
    assert finding.file is None and "num_repeats is 1" in finding.message and "num_repeats=10" in finding.fix


def test_empty_folder_and_plain_subfolder(tmp_path):
    (tmp_path / "empty").mkdir()
    assert findings(check(settings(tmp_path / "empty")), "no-images") == [None]
    make_dataset(tmp_path / "outer" / "inner")
    finding = only(check(settings(tmp_path / "outer")), "no-images")
    assert "inner" in finding.fix
    make_dataset(tmp_path / "outer")
    assert findings(check(settings(tmp_path / "outer")), "subfolders-ignored") == ["inner"]


def test_settings_sd_scripts_rejects(tmp_path):
    root = make_dataset(tmp_path / "style")
    report = check(settings(root, family="sdxl", bucket_reso_steps=48, min_bucket_reso=48, max_bucket_reso=240))
    assert findings(report, "bucket-settings") == [None]
    report = check(settings(root, min_bucket_reso=192))
    assert "min_bucket_reso 192" in only(report, "bucket-settings").message and report.buckets is None
    report = check(settings(root, min_bucket_reso=192, bucket_no_upscale=True))  # still asserted with no_upscale
    assert findings(report, "bucket-settings") == [None]
    report = check(settings(root, max_bucket_reso=250))
    assert "256" in only(report, "bucket-reso-adjusted").message
    report = check(settings(root, family="sdxl", cache_te_outputs=True, shuffle_caption=True, keep_tokens=1))
    assert findings(report, "settings-conflict") == [None]
    report = check(settings(root, family="sdxl", cache_te_outputs=True), TrainingPlan(family="sdxl", unet_only=False))
    assert "network_train_unet_only" in only(report, "settings-conflict").fix
    with pytest.raises(BadInput):
        settings(root, family="flux")


def test_bucketing_off_needs_exact_sizes(tmp_path):
    root = make_dataset(tmp_path / "style")
    make_image(root / "img1.png", seed=101, size=(128, 96))
    report = check(settings(root, enable_bucket=False))
    assert findings(report, "image-size-mismatch") == ["img1.png"]
    assert [b.resolution for b in report.buckets.buckets] == [(128, 128)]


def test_no_upscale_tiny_image_cannot_be_bucketed(tmp_path):
    root = make_dataset(tmp_path / "style")
    make_image(root / "img1.png", seed=101, size=(40, 40))
    make_image(root / "img2.png", seed=102, size=(64, 64))
    report = check(settings(root, bucket_no_upscale=True, resolution=192))
    assert findings(report, "image-too-small") == ["img1.png"]
    assert findings(report, "image-small-bucket") == ["img2.png"]
