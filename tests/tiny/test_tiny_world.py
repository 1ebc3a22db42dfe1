"""The tiny world, its three styles and the measurements on them (Pillow and numpy only: fast)."""

from __future__ import annotations

import random

import pytest


def test_scenes_are_deterministic_and_captions_name_the_things():
    from kohya_runner.tiny.world import KINDS, sample_scene

    first = [sample_scene(random.Random(seed)) for seed in range(40)]
    assert first == [sample_scene(random.Random(seed)) for seed in range(40)]
    assert {len(scene.things) for scene in first} == {1, 2, 3}
    for scene in first:
        caption = scene.caption()
        for thing in scene.things:
            assert f"{thing.colour} {thing.kind}" in caption and thing.kind in KINDS
    pinned = sample_scene(random.Random(1), objects=1, kind="star", colour="orange")
    assert pinned.caption() == "an orange star"


def test_every_kind_and_style_renders_at_native_size():
    from kohya_runner.tiny.styles import STYLES, render_style
    from kohya_runner.tiny.world import KINDS, render_plain, sample_scene

    for kind in KINDS:
        scene = sample_scene(random.Random(2), objects=1, kind=kind)
        assert render_plain(scene, 64).size == (64, 64)
        for style in STYLES:
            assert render_style(scene, style, 64, seed=3).size == (64, 64)
    with pytest.raises(ValueError):
        render_style(scene, "watercolour")


def test_style_dataset_is_atomic_deterministic_and_captioned(tmp_path):
    from kohya_runner.tiny.styles import MARKER, write_style_dataset

    first = write_style_dataset(tmp_path / "a", "zine", count=6, seed=2)
    second = write_style_dataset(tmp_path / "b", "zine", count=6, seed=2)
    names = sorted(p.name for p in first.iterdir())
    assert len([n for n in names if n.endswith(".png")]) == 6 and MARKER in names
    assert names == sorted(p.name for p in second.iterdir())
    for name in names:
        if name != MARKER:
            assert (first / name).read_bytes() == (second / name).read_bytes()
    captions = [p.read_text(encoding="utf-8") for p in sorted(first.glob("*.txt"))]
    assert all(c.startswith("in the style of TOK, a") and c.endswith("\n") for c in captions)
    assert write_style_dataset(tmp_path / "a", "zine", count=6, seed=2) == first  # idempotent
    assert not list(tmp_path.glob(".*.tmp"))
    with pytest.raises(FileExistsError):
        write_style_dataset(tmp_path / "a", "marker", count=6, seed=2)
    with pytest.raises(ValueError):
        write_style_dataset(tmp_path / "c", "oil")


def test_measurements_read_the_plain_world_correctly():
    from kohya_runner.tiny.measure import SHAPE_FILL, largest_blob
    from kohya_runner.tiny.world import COLOURS, render_plain, sample_scene

    rng = random.Random(11)
    hits = total = 0
    for kind in SHAPE_FILL:
        for colour in COLOURS:
            blob = largest_blob(render_plain(sample_scene(rng, objects=1, kind=kind, colour=colour), 64))
            hits += (blob.colour == colour) + (blob.shape == kind)
            total += 2
    assert hits >= 0.95 * total


def test_styles_are_told_apart_by_the_statistics():
    """Each style's images are nearer to another draw of the same style than to any other look."""
    from kohya_runner.tiny.measure import style_distance
    from kohya_runner.tiny.styles import STYLES, render_style, style_scenes
    from kohya_runner.tiny.world import render_plain

    def looks(seed):
        scenes = style_scenes(16, seed)
        groups = {"plain": [render_plain(scene) for scene in scenes]}
        groups.update({style: [render_style(scene, style, 64, seed * 100 + i) for i, scene in enumerate(scenes)]
                       for style in STYLES})
        return groups

    a, b = looks(1), looks(2)
    for name in a:
        own = style_distance(a[name], b[name])
        others = [style_distance(a[name], b[other]) for other in b if other != name]
        assert own * 3 < min(others), (name, own, others)


def test_style_progress_and_direction_measure_the_way_from_plain_to_a_style():
    from kohya_runner.tiny.measure import style_direction, style_progress
    from kohya_runner.tiny.styles import STYLES, render_style, style_scenes
    from kohya_runner.tiny.world import render_plain

    scenes, others = style_scenes(12, seed=3), style_scenes(12, seed=4)
    plain = [render_plain(scene) for scene in scenes]
    for style in STYLES:
        styled = [render_style(scene, style, 64, i) for i, scene in enumerate(scenes)]
        # other scenes and seeds, drawn plainly then in the style: most of the way, in the style's direction
        before = [render_plain(scene) for scene in others]
        after = [render_style(scene, style, 64, 50 + i) for i, scene in enumerate(others)]
        assert 0.8 < style_progress(before, after, plain, styled) < 1.2, style
        assert style_direction(before, after, plain, styled) > 0.95, style
        assert abs(style_progress(before, before, plain, styled)) < 1e-9
        for other in STYLES:
            if other != style:
                toward_other = [render_style(scene, other, 64, i) for i, scene in enumerate(scenes)]
                assert style_direction(before, after, plain, toward_other) < 0.8, (style, other)


def test_style_dataset_with_plain_contrast_pictures(tmp_path):
    from kohya_runner.tiny.styles import dataset_facts, write_style_dataset

    folder = write_style_dataset(tmp_path / "d", "marker", count=4, plain=2, seed=1)
    captions = {p.name: p.read_text(encoding="utf-8") for p in folder.glob("*.txt")}
    plain = {n: c for n, c in captions.items() if n.startswith("plain_")}
    assert len(captions) == 6 and len(plain) == 2
    assert all("TOK" not in c and c.startswith("a") for c in plain.values())
    assert dataset_facts(folder)["plain"] == 2 and dataset_facts(tmp_path) is None
