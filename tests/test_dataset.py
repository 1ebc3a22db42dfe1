"""kohya_runner.dataset: real datasets on disk with one defect each, hand-worked buckets and step math,
caption writing, stats and the manifest."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
Image = pytest.importorskip("PIL.Image")

from kohya_runner.dataset import (  # noqa: E402
    FINDING_CODES,
    DatasetSettings,
    TrainingPlan,
    bucket_resolutions,
    bucket_table,
    caption,
    caption_from_filename,
    check,
    estimate_clip_tokens,
    lora_file_size,
    manifest,
    scan,
    stats,
    step_math,
)
from kohya_runner.errors import BadInput, Failed  # noqa: E402

CAPTION = "in the style of TOK, a man thinking"


# --------------------------------------------------------------------------------------------------
# helpers: small, distinct, real images
# --------------------------------------------------------------------------------------------------


def pixels(seed: int, size=(128, 128)) -> np.ndarray:
    """A smooth random field: distinct seeds give unrelated perceptual hashes."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray((rng.random((12, 12, 3)) * 255).astype(np.uint8))
    return np.asarray(coarse.resize(size, Image.Resampling.BILINEAR))


def make_image(path: Path, seed: int = 0, size=(128, 128), fmt: str | None = None, **save) -> Path:
    Image.fromarray(pixels(seed, size)).save(path, format=fmt, **save)
    return path


def make_dataset(root: Path, n: int = 3, caption_text: str = CAPTION, size=(128, 128)) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        make_image(root / f"img{i}.png", seed=100 + i, size=size)
        (root / f"img{i}.txt").write_text(f"{caption_text} {i}", encoding="utf-8")
    return root


def settings(root: Path, **overrides) -> DatasetSettings:
    values = dict(
        dir=root, family="sd15", trigger="TOK", resolution=128, min_bucket_reso=64, max_bucket_reso=256, bucket_reso_steps=64
    )
    values.update(overrides)
    return DatasetSettings(**values)


def findings(report, code: str) -> list[str | None]:
    return [f.file for f in report.findings if f.code == code]


def only(report, code: str):
    matches = report.find(code)
    assert len(matches) == 1, [f.to_dict() for f in report.findings]
    return matches[0]


# --------------------------------------------------------------------------------------------------
# a clean dataset, the report shape, the import cost
# --------------------------------------------------------------------------------------------------


def test_clean_dataset_has_no_findings(tmp_path):
    root = make_dataset(tmp_path / "style")
    report = check(settings(root))
    assert report.findings == []
    assert report.ok and report.images == 3 and report.captions == 3


def test_report_json_shape_is_stable(tmp_path):
    root = make_dataset(tmp_path / "style")
    (root / "img0.txt").write_text("a man thinking")
    data = json.loads(check(settings(root), TrainingPlan(max_train_epochs=2, family="sd15")).to_json())
    assert list(data) == ["schema", "dir", "ok", "counts", "errors", "warnings", "tokens", "buckets", "steps"]
    assert data["schema"] == "kr.dataset-check/1" and data["ok"] is False
    assert list(data["errors"][0]) == ["code", "severity", "file", "message", "fix"]
    assert data["errors"][0]["code"] == "trigger-missing"
    assert set(data["counts"]) == {"images", "captions", "errors", "warnings"}
    assert data["steps"]["total_steps"] == 6 and data["buckets"]["items"] == 3


def test_every_finding_code_has_a_severity():
    assert all(sev in ("error", "warning") for sev, _ in FINDING_CODES.values())


def test_import_is_cheap_and_lazy():
    code = "import sys, kohya_runner.dataset; print(sorted(m for m in ('PIL', 'numpy', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_missing_folder_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="not found"):
        check(settings(tmp_path / "nope"))


def test_raise_for_errors_is_failed(tmp_path):
    root = make_dataset(tmp_path / "style")
    (root / "img1.txt").write_bytes(b"")
    with pytest.raises(Failed, match="img1.txt"):
        check(settings(root)).raise_for_errors()


# --------------------------------------------------------------------------------------------------
# images
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# captions
# --------------------------------------------------------------------------------------------------


def test_missing_caption_and_class_tokens(tmp_path):
    root = make_dataset(tmp_path / "style")
    (root / "img1.txt").unlink()
    assert findings(check(settings(root)), "caption-missing") == ["img1.png"]
    report = check(settings(root, class_tokens="TOK style"))
    assert findings(report, "caption-class-tokens") == ["img1.png"] and report.ok


def test_empty_caption(tmp_path):
    root = make_dataset(tmp_path / "style")
    (root / "img0.txt").write_bytes(b"")
    finding = only(check(settings(root)), "caption-empty")
    assert finding.file == "img0.txt" and finding.severity == "error"


def test_blank_first_line_and_multiline(tmp_path):
    root = make_dataset(tmp_path / "style")
    (root / "img0.txt").write_text("\n" + CAPTION + "\n")
    (root / "img1.txt").write_text(CAPTION + "\nsecond line\n")
    report = check(settings(root))
    assert findings(report, "caption-blank") == ["img0.txt"]
    assert findings(report, "caption-multiline") == ["img0.txt", "img1.txt"]
    assert "caption-multiline" not in check(settings(root, enable_wildcard=True)).codes()


def test_latin1_caption_names_the_byte_offset(tmp_path):
    root = make_dataset(tmp_path / "style")
    (root / "img2.txt").write_bytes("in the style of TOK, café".encode("latin-1"))
    finding = only(check(settings(root)), "caption-not-utf8")
    assert finding.file == "img2.txt" and "byte offset 24" in finding.message and "0xe9" in finding.message


def test_bom_and_orphan_caption(tmp_path):
    root = make_dataset(tmp_path / "style")
    (root / "img0.txt").write_bytes(b"\xef\xbb\xbf" + CAPTION.encode())
    (root / "gone.txt").write_text(CAPTION)
    report = check(settings(root))
    assert findings(report, "caption-bom") == ["img0.txt"]
    assert findings(report, "caption-orphan") == ["gone.txt"]
    assert report.ok


def test_caption_files_with_another_extension(tmp_path):
    root = make_dataset(tmp_path / "style")
    for i in range(3):
        (root / f"img{i}.txt").rename(root / f"img{i}.caption")
    report = check(settings(root))
    assert findings(report, "caption-other-extension") == ["img0.png", "img1.png", "img2.png"]
    assert "caption_extension='.caption'" in report.errors[0].fix
    assert "caption-missing" not in report.codes()
    assert check(settings(root, caption_extension="caption")).ok  # the dot is added, as sd-scripts does


def test_caption_named_after_the_whole_image_name(tmp_path):
    root = make_dataset(tmp_path / "style")
    (root / "img1.txt").rename(root / "img1.png.txt")  # some taggers write this; sd-scripts never reads it
    report = check(settings(root))
    finding = only(report, "caption-other-extension")
    assert finding.file == "img1.png" and "rename img1.png.txt to img1.txt" in finding.fix
    assert "caption-orphan" not in report.codes()


def test_wildcard_lines_each_need_the_trigger(tmp_path):
    root = make_dataset(tmp_path / "style", n=1)
    (root / "img0.txt").write_text("a man thinking\nTOK, a man reading\n")
    wild = settings(root, enable_wildcard=True, caption_prefix="TOK,")
    # the prefix is added before a random line is picked, so only the first line gets it
    assert check(wild).ok
    (root / "img0.txt").write_text("TOK, a man reading\na man thinking\n")
    assert findings(check(wild), "trigger-missing") == ["img0.txt"]


def test_face_crop_fallback_caption_name(tmp_path):
    """sd-scripts also tries the stem without its last four `_` parts (face-crop file names)."""
    root = tmp_path / "style"
    root.mkdir()
    make_image(root / "portrait_10_20_30_40.png", seed=1)
    (root / "portrait.txt").write_text(CAPTION)
    assert scan(settings(root)).images[0].caption_rel == "portrait.txt"


def test_missing_trigger(tmp_path):
    root = make_dataset(tmp_path / "style")
    (root / "img1.txt").write_text("a man thinking, TOKYO at night")
    report = check(settings(root))
    assert findings(report, "trigger-missing") == ["img1.txt"]
    assert check(settings(root, caption_prefix="TOK,")).ok  # prefix is applied before the check


def test_trigger_outside_keep_tokens_with_shuffle(tmp_path):
    root = make_dataset(tmp_path / "style", n=2)
    (root / "img0.txt").write_text("a man thinking, oil paint, TOK")
    (root / "img1.txt").write_text("TOK, a woman reading, ink")
    report = check(settings(root, shuffle_caption=True, keep_tokens=1))
    finding = only(report, "trigger-shuffled")
    assert finding.file == "img0.txt" and "tag 3" in finding.message and "keep_tokens=3" in finding.fix
    assert "trigger-shuffled" not in check(settings(root, shuffle_caption=False)).codes()
    assert findings(check(settings(root, shuffle_caption=True, keep_tokens=0)), "trigger-shuffled") == ["img0.txt", "img1.txt"]


def test_keep_tokens_separator_protects_the_trigger(tmp_path):
    root = make_dataset(tmp_path / "style", n=1)
    (root / "img0.txt").write_text("a man, TOK ||| oil paint, ink")
    assert check(settings(root, shuffle_caption=True, keep_tokens_separator="|||")).ok
    (root / "img0.txt").write_text("a man ||| oil paint, TOK, ink")
    assert findings(check(settings(root, shuffle_caption=True, keep_tokens_separator="|||")), "trigger-shuffled") == ["img0.txt"]


def test_long_caption_is_estimated_without_a_tokenizer(tmp_path):
    root = make_dataset(tmp_path / "style", n=1)
    (root / "img0.txt").write_text("TOK, " + ", ".join(["soft light"] * 30))  # TOK , + 30 x 2 words + 29 commas
    report = check(settings(root))
    finding = only(report, "caption-too-long")
    assert report.max_tokens == 91
    assert "estimated" in finding.message and report.token_method == "estimate"
    assert "caption-too-long" not in check(settings(root, max_token_length=225)).codes()


def write_tiny_clip_tokenizer(folder: Path) -> None:
    """A byte-level CLIP vocabulary without merges: every character is one token."""
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


def test_long_caption_is_counted_with_the_clip_tokenizer(tmp_path):
    pytest.importorskip("transformers")
    write_tiny_clip_tokenizer(tmp_path / "tok" / "openai_clip-vit-large-patch14")
    root = make_dataset(tmp_path / "style", n=2)
    (root / "img0.txt").write_text("TOK, a man thinking by the window at dusk")  # ~36 characters -> 36 tokens here
    report = check(settings(root), tokenizer_dir=tmp_path / "tok")
    assert report.token_method == "estimate" and report.ok  # nothing could exceed 75: tokenizer not even loaded
    (root / "img0.txt").write_text("TOK, " + "a man thinking by the window " * 4)
    report = check(settings(root), tokenizer_dir=tmp_path / "tok")
    finding = only(report, "caption-too-long")
    assert report.token_method == "clip" and "estimated" not in finding.message
    assert report.max_tokens == len("TOK,") + len(("a man thinking by the window " * 4).replace(" ", ""))


def test_tokenizer_folder_missing_falls_back_to_estimates(tmp_path):
    root = make_dataset(tmp_path / "style", n=1)
    (root / "img0.txt").write_text("TOK, " + ", ".join(f"detail{i}" for i in range(60)))
    report = check(settings(root), tokenizer_dir=tmp_path / "nowhere")
    assert {"tokenizer-unavailable", "caption-too-long"} <= report.codes()


def test_estimate_is_close_for_plain_english():
    assert estimate_clip_tokens("in the style of TOK, a man thinking") == 9
    assert estimate_clip_tokens("1girl, 2024") == 1 + 1 + 1 + 4


# --------------------------------------------------------------------------------------------------
# layout: caches, legacy folders, subfolders, settings
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# buckets, hand-worked
# --------------------------------------------------------------------------------------------------


def test_sd15_buckets_512_from_256_to_1024():
    # area 512*512 = 262144. For each width, height = min(1024, floor(262144 / w / 64) * 64), kept if >= 256:
    # 256->1024, 320->768, 384->640, 448->576, 512->512, 576->448, 640->384, 704->320, 768->320,
    # 832..1024->256; plus all of them transposed.
    expected = sorted({
        (256, 1024), (320, 768), (384, 640), (448, 576), (512, 512), (576, 448), (640, 384), (704, 320), (768, 320),
        (832, 256), (896, 256), (960, 256), (1024, 256),
        (1024, 256), (768, 320), (640, 384), (576, 448), (320, 704), (320, 768), (256, 832), (256, 896), (256, 960),
        (256, 1024),
    })
    buckets = bucket_resolutions((512, 512), 256, 1024, 64)
    assert buckets == expected
    # 13 widths + 4 transposes not already there ((256,832), (256,896), (256,960), (320,704)) = 17 (contract §2.6)
    assert len(buckets) == 17 and (256, 1024) in buckets and (512, 512) in buckets and buckets[-1] == (1024, 256)


def test_sdxl_buckets_1024_from_512_to_2048():
    # area 1048576: 512->2048, 576->1792, 640->1600, 704->1472, 768->1344, 832->1216, 896->1152, 960->1088,
    # 1024->1024, 1088->960, 1152->896, 1216->832, 1280->768, 1344->768, 1408->704, 1472->704, 1536->640,
    # 1600->640, 1664->576, 1728->576, 1792->576, 1856->512, 1920->512, 1984->512, 2048->512
    half = [
        (512, 2048), (576, 1792), (640, 1600), (704, 1472), (768, 1344), (832, 1216), (896, 1152), (960, 1088),
        (1024, 1024), (1088, 960), (1152, 896), (1216, 832), (1280, 768), (1344, 768), (1408, 704), (1472, 704),
        (1536, 640), (1600, 640), (1664, 576), (1728, 576), (1792, 576), (1856, 512), (1920, 512), (1984, 512),
        (2048, 512),
    ]
    expected = sorted(set(half) | {(h, w) for w, h in half})
    assert bucket_resolutions((1024, 1024), 512, 2048, 64) == expected
    # 25 widths + 8 transposes not already listed: (768,1280), (704,1408), (640,1536), (576,1664), (576,1728),
    # (512,1856), (512,1920), (512,1984)
    assert len(expected) == 33


def test_nearest_aspect_ratio_and_exact_size():
    table = bucket_table([(768, 512), (512, 512), (640, 384), (1000, 1000)], resolution=512)
    got = [(a.bucket, a.resized) for a in table.assignments]
    # 1.5 is nearer 640x384 (1.667, off by 0.167) than 576x448 (1.286, off by 0.214). The bucket is wider than
    # the image, so the width is matched (640/768) and the height cropped: 640x427 -> centre crop 640x384.
    assert got[0] == ((640, 384), (640, 427))
    assert got[1] == ((512, 512), (512, 512))
    assert got[2] == ((640, 384), (640, 384))  # an exact bucket size keeps its bucket
    assert got[3] == ((512, 512), (512, 512))  # downscaled 0.512x


def test_no_upscale_bucket_hand_worked():
    # 1600x900 at 1024x1024, step 64: ar 1.7778, fits the area at 1365.3x768. Rounding the width
    # gives 1344x704 (ar 1.909), rounding the height gives 1344x768 (ar 1.75): the height wins.
    (a,) = bucket_table([(1600, 900)], resolution=1024, bucket_no_upscale=True).assignments
    assert a.resized == (1365, 768) and a.bucket == (1344, 768)
    (small,) = bucket_table([(300, 200)], resolution=1024, bucket_no_upscale=True).assignments
    assert small.resized == (300, 200) and small.bucket == (256, 192)


def test_mixed_sizes_partial_batches_hand_worked():
    # 5 squares, 3 landscape 3:2 (-> 640x384), 2 portrait 2:3 (-> 384x640); 3 repeats, batch 2.
    sizes = [(512, 512)] * 5 + [(768, 512)] * 3 + [(512, 768)] * 2
    table = bucket_table(sizes, resolution=512, num_repeats=3, batch_size=2)
    assert [(b.resolution, b.items, b.batches, b.last_batch) for b in table.buckets] == [
        ((384, 640), 6, 3, 2),
        ((512, 512), 15, 8, 1),
        ((640, 384), 9, 5, 1),
    ]
    assert table.items == 30 and table.batches == 16 and table.partial_batches == 2
    # GA 2 on one GPU: ceil(16 / 2) = 8 steps per epoch; 5 epochs = 40 steps
    steps = step_math(table.bucket_items, 2, TrainingPlan(max_train_epochs=5, gradient_accumulation_steps=2))
    assert (steps.batches_per_epoch, steps.steps_per_epoch, steps.total_steps) == (16, 8, 40)
    # an unbucketed count of ceil(30 / 2) = 15 batches would be wrong: each bucket rounds up on its own


def test_bucket_bounds_sd_scripts_asserts_on():
    with pytest.raises(BadInput, match="min_bucket_reso"):
        bucket_table([(512, 512)], resolution=512, min_bucket_reso=576)
    with pytest.raises(BadInput, match="max_bucket_reso"):
        bucket_table([(512, 512)], resolution=1024, max_bucket_reso=960)


# --------------------------------------------------------------------------------------------------
# step math, saves, samples, LoRA size
# --------------------------------------------------------------------------------------------------


def test_contract_example_20_images_10_repeats():
    steps = step_math([200], 2, TrainingPlan(max_train_epochs=10))
    assert (steps.items_per_epoch, steps.steps_per_epoch, steps.total_steps, steps.epochs) == (200, 100, 1000, 10)
    assert steps.files_kept == ("last.safetensors",)


def test_steps_only_gives_epochs_and_a_partial_last_epoch():
    steps = step_math([200], 2, TrainingPlan(max_train_steps=250))
    assert (steps.epochs, steps.last_epoch_steps, steps.steps_source) == (3, 50, "steps")
    assert step_math([200], 2, TrainingPlan()).total_steps == 1600  # sd-scripts' default


def test_processes_and_accumulation_divide_the_batches():
    steps = step_math([15, 9, 6], 2, TrainingPlan(max_train_epochs=1, num_processes=2, gradient_accumulation_steps=2))
    assert steps.batches_per_epoch == 16 and steps.steps_per_epoch == 4
    assert step_math([15], 2, TrainingPlan(max_train_epochs=1, num_processes=3)).steps_per_epoch == 3  # ceil(8 / 3)


def test_epoch_saves_skip_the_last_epoch_and_rotate():
    plan = TrainingPlan(max_train_epochs=10, save_every_n_epochs=2, save_last_n_epochs=2, output_name="mrk")
    steps = step_math([20], 2, plan)
    assert steps.files_written == tuple(f"mrk-{e:06d}.safetensors" for e in (2, 4, 6, 8)) + ("mrk.safetensors",)
    # at epoch 6, epoch 6 - 2*2 = 2 is removed; at epoch 8, epoch 4
    assert steps.files_kept == ("mrk-000006.safetensors", "mrk-000008.safetensors", "mrk.safetensors")
    assert steps.peak_files == 3


def test_step_saves_rotate_by_steps_not_files():
    # every 10 steps, save_last_n_steps=30: at step 50, 50-30-1 = 19 -> 10 is removed (sd-scripts' own example)
    plan = TrainingPlan(max_train_steps=50, save_every_n_steps=10, save_last_n_steps=30)
    steps = step_math([10], 1, plan)
    assert steps.files_kept == tuple(f"at-step{s:08d}.safetensors" for s in (20, 30, 40, 50)) + ("last.safetensors",)
    assert len(steps.files_written) == 6


def test_sample_rounds():
    epochs = step_math([20], 2, TrainingPlan(max_train_epochs=10, sample_every_n_epochs=2, sample_at_first=True, sample_prompts=3))
    assert (epochs.sample_rounds, epochs.sample_images) == (6, 18)
    by_steps = step_math([20], 2, TrainingPlan(max_train_steps=100, sample_every_n_steps=25, sample_prompts=2))
    assert (by_steps.sample_rounds, by_steps.sample_images) == (4, 8)
    both = TrainingPlan(max_train_epochs=4, sample_every_n_epochs=4, sample_every_n_steps=1, sample_prompts=1)
    assert step_math([20], 2, both).sample_rounds == 1  # epochs win; steps are ignored


def test_lora_sizes_match_the_measured_files():
    sdxl = lora_file_size("sdxl", 4, unet_only=True, save_precision="fp16")
    assert sdxl.tensors == 2166 and round(sdxl.bytes / 1e6, 1) == 21.6
    sd15 = lora_file_size("sd15", 4, unet_only=False, save_precision="fp16")
    assert sd15.tensors == 792 and round(sd15.bytes / 1e6, 1) == 4.8
    # SD1.5 by hand: U-Net 16 transformers, sum over C of (32C + 2*768) = 423,936; TE 12 x 13,824 = 165,888
    assert sd15.parameters == 4 * (423_936 + 165_888)
    assert lora_file_size("sd15", 32).parameters == 8 * sd15.parameters


def test_disk_estimate_counts_kept_files_and_samples():
    plan = TrainingPlan(max_train_epochs=4, save_every_n_epochs=1, family="sd15", sample_every_n_epochs=1, sample_prompts=2)
    steps = step_math([20], 2, plan)
    assert len(steps.files_kept) == 4
    assert steps.sample_bytes == 8 * 512 * 512 * 1.5
    assert steps.disk_bytes == 4 * steps.lora.bytes + steps.sample_bytes


# --------------------------------------------------------------------------------------------------
# caption()
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# stats() and manifest()
# --------------------------------------------------------------------------------------------------


def test_stats(tmp_path):
    root = make_dataset(tmp_path / "style", n=3)
    make_image(root / "wide.jpg", seed=5, size=(192, 128))
    (root / "wide.txt").write_text("in the style of TOK, a harbour")
    result = stats(root, settings(root))
    data = json.loads(result.to_json())
    assert data["counts"] == {"images": 4, "captions": 4, "missing_captions": 0, "image_bytes": result.image_bytes}
    assert data["formats"] == {"PNG": 3, "JPEG": 1}
    assert data["resolutions"] == {"128x128": 3, "192x128": 1}
    assert data["orientations"] == {"square": 3, "landscape": 1}
    assert data["top_words"][:2] == [{"word": "style", "count": 4}, {"word": "tok", "count": 4}]
    assert data["caption_words"]["max"] == 9 and data["caption_tokens"]["method"] == "estimate"
    assert data["buckets"]["items"] == 4


def test_manifest_is_stable_and_private(tmp_path):
    first = make_dataset(tmp_path / "client-secret" / "marker")
    second = tmp_path / "copy"
    second.mkdir()
    for path in first.iterdir():
        (second / path.name).write_bytes(path.read_bytes())
    m1, m2 = manifest(first, settings(first)), manifest(second)
    assert m1 == m2 and m1["counts"]["images"] == 3 and m1["counts"]["captions"] == 3
    text = json.dumps(m1)
    assert "client-secret" not in text and str(tmp_path) not in text and "thinking" not in text
    assert {f["kind"] for f in m1["files"]} == {"image", "caption"}
    (second / "img1.txt").write_text(CAPTION + " 1 ")
    assert manifest(second)["manifest_sha256"] != m1["manifest_sha256"]
