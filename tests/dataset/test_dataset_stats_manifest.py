"""dataset.stats() and dataset.manifest()."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("numpy")
pytest.importorskip("PIL.Image")

from dataset_helpers import CAPTION, make_image, make_dataset, settings  # noqa: E402
from kohya_runner.dataset import caption, manifest, stats  # noqa: E402


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
