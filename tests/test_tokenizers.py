"""Offline tokenizer folders, checked with transformers' CLIPTokenizer and open_clip's own tokenizer.

The real open-clip-torch wheel comes from $KR_TEST_WHEELS (CI pre-downloads it there) or, failing
that, one `pip download` per session; without either the tests that need it are skipped.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from kohya_runner.errors import BadInput
from kohya_runner.tokenizers import (
    BPE_MEMBER,
    CLIP_BIGG,
    CLIP_L,
    FILES,
    VOCAB_SIZE,
    build_tokenizer_cache,
    tokenizer_status,
)

OPEN_CLIP_VERSION = "3.3.0"  # any release works; this one is pinned so a run is reproducible
CAT_IDS = [49406, 320, 1125, 539, 320, 2368, 49407]  # "a photo of a cat" (contract §11)

CAPTIONS = [
    "a photo of a cat",
    "A PHOTO OF A CAT",
    "1girl, solo, long hair, looking at viewer, smile",
    "masterpiece, best quality, (red dress:1.2), [blurry]",
    "score_9, score_8_up, rating_safe",
    "don't stop; it's 3:45 p.m.",
    "she'll say we've done it, they're sure I'm right",
    "café naïve résumé façade",
    "Ünïcödé ÀÉÎÕÜ",
    "東京タワーの夜景",
    "Привет мир",
    "١٢٣ arabic digits",
    "emoji 🐱🐶 and ❤️",
    "tab\tand\nnewline   spaces",
    "  leading and trailing  ",
    "newline\r\nwindows",
    "URL https://example.com/a_b?c=d&e=f",
    "email me@example.org",
    "price $12.50 (50% off)",
    "snake_case and kebab-case and CamelCase",
    "math: x^2 + y^2 = z^2",
    "quotes “curly” and ‘single’ — dash",
    "ellipsis… and ... dots",
    "hashtags #sunset #beach",
    "a&amp;b <tag> html &lt;b&gt;",
    "ﬁne ligature and ｆｕｌｌｗｉｄｔｈ",
    "mixed 123abc456 and 2024-01-31",
    "multiple,,,commas..",
    "zero\u200bwidth",
    "the quick brown fox jumps over the lazy dog " * 8,
    "",
    "Hello, World! What's up?",
    "wow!!! so good !",
]


@pytest.fixture(scope="session")
def open_clip_wheel(tmp_path_factory) -> Path:
    folder = os.environ.get("KR_TEST_WHEELS")
    if folder:
        found = sorted(Path(folder).glob("open_clip_torch-*.whl"))
        if found:
            return found[-1]
    target = tmp_path_factory.mktemp("wheels")
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
        "-q",
        f"open-clip-torch=={OPEN_CLIP_VERSION}",
        "-d",
        str(target),
    ]
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=180)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
        pytest.skip(f"no open_clip_torch wheel: $KR_TEST_WHEELS has none and `pip download` failed ({exc})")
    return next(target.glob("open_clip_torch-*.whl"))


@pytest.fixture(scope="session")
def cache(open_clip_wheel, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tokenizers")
    build_tokenizer_cache(folder, source=open_clip_wheel)
    return folder


@pytest.fixture(scope="session")
def hf(cache):
    transformers = pytest.importorskip("transformers")
    return {spec.folder: transformers.CLIPTokenizer.from_pretrained(str(cache / spec.folder)) for spec in (CLIP_L, CLIP_BIGG)}


@pytest.fixture(scope="session")
def open_clip_tokenizer(open_clip_wheel, tmp_path_factory):
    """open_clip's SimpleTokenizer, loaded from its one file in the wheel (not the whole package)."""
    pytest.importorskip("ftfy", reason="open_clip's tokenizer needs ftfy (pip install ftfy)")
    pytest.importorskip("regex", reason="open_clip's tokenizer needs regex (pip install regex)")
    pytest.importorskip("torch", reason="open_clip's tokenizer module imports torch")
    folder = tmp_path_factory.mktemp("open_clip")
    with zipfile.ZipFile(open_clip_wheel) as wheel:
        wheel.extract("open_clip/tokenizer.py", folder)
        wheel.extract(BPE_MEMBER, folder)
    spec = importlib.util.spec_from_file_location("kr_test_open_clip_tokenizer", folder / "open_clip" / "tokenizer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_builds_the_two_sdxl_folders_with_the_hub_files(cache):
    for spec in (CLIP_L, CLIP_BIGG):
        folder = cache / spec.folder
        assert sorted(path.name for path in folder.iterdir()) == sorted(FILES)
        config = json.loads((folder / "tokenizer_config.json").read_text())
        assert config["model_max_length"] == 77 and config["do_lower_case"] and config["tokenizer_class"] == "CLIPTokenizer"
        assert config["pad_token"] == spec.pad_token
        assert (config["bos_token"]["content"], config["eos_token"]["content"], config["unk_token"]["content"]) == (
            "<|startoftext|>",
            "<|endoftext|>",
            "<|endoftext|>",
        )
        vocab = json.loads((folder / "vocab.json").read_text())
        assert len(vocab) == VOCAB_SIZE and vocab["<|endoftext|>"] == 49407 and vocab["!"] == 0
        merges = (folder / "merges.txt").read_text().splitlines()
        assert merges[0] == "#version: 0.2" and len(merges) == 1 + 48894
    status = tokenizer_status(cache)
    assert status["complete"] and status["folders"][CLIP_BIGG.folder]["pad_token"] == "<|endoftext|>"


def test_transformers_loads_them_and_gives_the_known_ids(hf):
    clip_l, big_g = hf[CLIP_L.folder], hf[CLIP_BIGG.folder]
    for tokenizer in (clip_l, big_g):
        assert tokenizer("a photo of a cat").input_ids == CAT_IDS
        assert tokenizer.model_max_length == 77 and len(tokenizer) == VOCAB_SIZE
        assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (49406, 49407)
    assert (clip_l.pad_token, clip_l.pad_token_id) == ("<|endoftext|>", 49407)
    assert (big_g.pad_token, big_g.pad_token_id) == ("<|endoftext|>", 49407)  # as the Hub folder says


def test_sd_scripts_sdxl_padding_gives_pad_id_0_and_keeps_exclamation_marks(cache):
    from transformers import CLIPTokenizer

    # What sd-scripts' SdxlTokenizeStrategy does with the bigG folder (library/strategy_sdxl.py).
    big_g = CLIPTokenizer.from_pretrained(cache / CLIP_BIGG.folder)
    big_g.pad_token_id = 0
    padded = big_g("a photo of a cat", padding="max_length", truncation=True, max_length=77).input_ids
    assert padded[:7] == CAT_IDS and set(padded[7:]) == {0}  # sd-scripts' SDXL padding for text encoder 2
    # "!" is text, not the pad token: the same ids as CLIP-L's folder (no bare id 0 inside the caption)
    clip_l = CLIPTokenizer.from_pretrained(cache / CLIP_L.folder)
    for caption in ("wow!!! so good !", "Hello, World! What's up?"):
        ids = big_g(caption, padding="max_length", truncation=True, max_length=77).input_ids
        content = ids[: ids.index(49407) + 1]
        assert 0 not in content and content == clip_l(caption).input_ids


@pytest.fixture(scope="session")
def simple(open_clip_tokenizer):
    return open_clip_tokenizer.SimpleTokenizer()


def test_vocabulary_equals_open_clips_table(cache, simple):
    expected = dict(simple.encoder)
    expected["<|startoftext|>"] = expected.pop("<start_of_text>")  # open_clip spells the specials differently
    expected["<|endoftext|>"] = expected.pop("<end_of_text>")
    for spec in (CLIP_L, CLIP_BIGG):
        assert json.loads((cache / spec.folder / "vocab.json").read_text()) == expected
        merges = (cache / spec.folder / "merges.txt").read_text().splitlines()[1:]
        assert [tuple(line.split()) for line in merges] == sorted(simple.bpe_ranks, key=simple.bpe_ranks.get)


@pytest.mark.parametrize("caption", CAPTIONS, ids=range(len(CAPTIONS)))
def test_token_ids_agree_with_open_clip(hf, open_clip_tokenizer, simple, caption):
    expected = simple.encode(caption)
    # open_clip cleans text with ftfy + html.unescape before BPE; transformers' CLIPTokenizer does its own,
    # different normalisation (curly quotes, ligatures, entities differ). Feeding both the open_clip-cleaned
    # text compares what this module built: the vocabulary and the merges.
    cleaned = open_clip_tokenizer._clean_lower(caption)
    assert hf[CLIP_L.folder](cleaned).input_ids[1:-1] == expected
    # "!" included: the bigG folder does not declare "!" as its pad token (see kohya_runner.tokenizers)
    assert hf[CLIP_BIGG.folder](cleaned).input_ids[1:-1] == expected


def test_sources_folder_wheel_and_bpe_file_give_identical_files(open_clip_wheel, cache, tmp_path):
    bpe = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    with zipfile.ZipFile(open_clip_wheel) as wheel:
        bpe.write_bytes(wheel.read(BPE_MEMBER))
    for source in (open_clip_wheel.parent, bpe):
        out = tmp_path / f"from-{source.name}"
        build_tokenizer_cache(out, source=source)
        for spec in (CLIP_L, CLIP_BIGG):
            for name in FILES:
                assert (out / spec.folder / name).read_bytes() == (cache / spec.folder / name).read_bytes()


def test_rebuilding_replaces_atomically(open_clip_wheel, tmp_path):
    first = build_tokenizer_cache(tmp_path, source=open_clip_wheel)
    (first[0] / "vocab.json").write_text("{}")
    assert not tokenizer_status(tmp_path)["complete"]
    build_tokenizer_cache(tmp_path, source=open_clip_wheel)
    assert tokenizer_status(tmp_path)["complete"]
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(spec.folder for spec in (CLIP_L, CLIP_BIGG))


# --- without the real wheel -------------------------------------------------------------------------


def test_status_of_an_empty_cache(tmp_path):
    status = tokenizer_status(tmp_path / "none")
    assert status == {
        "cache_dir": str(tmp_path / "none"),
        "complete": False,
        "folders": {
            spec.folder: {"present": False, "missing_files": [], "vocab_size": None, "pad_token": None}
            for spec in (CLIP_L, CLIP_BIGG)
        },
    }


def test_bad_sources_are_bad_input_with_a_way_out(tmp_path, monkeypatch):
    not_clip = tmp_path / "other.whl"
    with zipfile.ZipFile(not_clip, "w") as wheel:
        wheel.writestr("other/__init__.py", "")
    short = tmp_path / "short" / "bpe_simple_vocab_16e6.txt.gz"
    short.parent.mkdir()
    short.write_bytes(gzip.compress(b"#version: 0.2\na b\n"))
    empty = tmp_path / "empty"
    empty.mkdir()
    for source, message in [
        (tmp_path / "missing", "does not exist"),
        (not_clip, "not an open-clip-torch wheel"),
        (empty, "holds no open_clip_torch"),
        (short, "does not hold CLIP's 48894 BPE merges"),
    ]:
        with pytest.raises(BadInput, match=message) as error:
            build_tokenizer_cache(tmp_path / "out", source=source)
        assert "pip download --no-deps open-clip-torch" in str(error.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
