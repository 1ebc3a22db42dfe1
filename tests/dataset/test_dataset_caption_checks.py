"""dataset.check() on captions: missing, empty, undecodable, trigger placement, token counts."""

from __future__ import annotations

import pytest

pytest.importorskip("numpy")
pytest.importorskip("PIL.Image")

from conftest import write_tiny_clip_tokenizer  # noqa: E402
from dataset_helpers import CAPTION, make_image, make_dataset, settings, findings, only  # noqa: E402
from kohya_runner.dataset import caption, check, estimate_clip_tokens, scan  # noqa: E402


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
    finding = only(report, "trigger-missing")
    # a warning: one caption without the trigger may be a plain contrast picture, or a slip
    assert finding.file == "img1.txt" and finding.severity == "warning" and report.ok
    assert "learned without it" in finding.message
    assert check(settings(root, caption_prefix="TOK,")).findings == []  # prefix is applied before the check


def test_trigger_in_no_caption_is_an_error(tmp_path):
    root = make_dataset(tmp_path / "style")
    for caption in root.glob("*.txt"):
        caption.write_text("a man thinking")
    report = check(settings(root))
    assert not report.ok and findings(report, "trigger-unused") == [None]
    assert "none of the 3 captions" in only(report, "trigger-unused").message


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
