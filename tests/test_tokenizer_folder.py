"""The one tokenizer-folder rule: `model.tokenizer_cache_dir` (with `~` expanded) else the workspace's folder.

Regression tests for the drift found in issue 11: the rule existed 4x, `kr dataset stats` ignored
model.tokenizer_cache_dir, and the pre-launch dataset check (run.check_dataset, also behind
`kr dataset check`) did not expand `~`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import write_tiny_clip_tokenizer

pytest.importorskip("transformers")

LONG_CAPTION = "TOK, " + "a man thinking by the window " * 4  # over 75 tokens: the real tokenizer is loaded


@pytest.fixture
def user_home(tmp_path, monkeypatch) -> Path:
    """$HOME for `~`, holding a CLIP tokenizer folder outside the workspace."""
    folder = tmp_path / "user"
    write_tiny_clip_tokenizer(folder / "my-tokenizers" / "openai_clip-vit-large-patch14")
    monkeypatch.setenv("HOME", str(folder))
    return folder


@pytest.fixture
def long_captions(style_images) -> Path:
    (style_images / "img0.txt").write_text(LONG_CAPTION)
    return style_images


@pytest.mark.parametrize("folder", ["absolute", "~/my-tokenizers"])
def test_dataset_check_counts_with_the_specs_tokenizer_folder(kr, user_home, long_captions, folder):
    where = str(user_home / "my-tokenizers") if folder == "absolute" else folder
    result = kr("dataset", "check", long_captions, f"model.tokenizer_cache_dir={where}", "--json")
    assert result.exit_code in (0, 1), result.output
    import json

    assert json.loads(result.stdout)["tokens"]["method"] == "clip"


def test_dataset_stats_counts_with_the_specs_tokenizer_folder(kr, user_home, long_captions):
    data = kr.json("dataset", "stats", long_captions, "model.tokenizer_cache_dir=~/my-tokenizers")
    assert data["caption_tokens"]["method"] == "clip"


def test_the_pre_launch_dataset_check_expands_home(home, user_home, long_captions):
    from kohya_runner import preset
    from kohya_runner.run import check_dataset

    spec = preset.resolve("sdxl-lora", home, ["model.tokenizer_cache_dir=~/my-tokenizers"],
                          {"dataset.dir": str(long_captions)}).spec
    assert check_dataset(home, spec).token_method == "clip"


def test_folder_for_is_the_one_rule(tmp_path, user_home):
    from kohya_runner import preset, tokenizers

    workspace_home = tmp_path / "ws"
    assert tokenizers.folder_for(workspace_home) == workspace_home.resolve() / "tokenizers"
    assert tokenizers.folder_for(workspace_home, "~/my-tokenizers") == user_home / "my-tokenizers"
    spec = preset.resolve("sdxl-lora", workspace_home, ["model.tokenizer_cache_dir=~/t"], {}).spec
    assert tokenizers.folder_for(workspace_home, spec) == user_home / "t"
    default = preset.resolve("sdxl-lora", workspace_home, [], {}).spec
    assert tokenizers.folder_for(workspace_home, default) == workspace_home.resolve() / "tokenizers"
