"""`kr demo --style S`, as a new user runs it: over the pretrained tiny base, each style's LoRA draws
the shapes in its style with the trigger, stays close to the base without it, the styles are told
apart, and the report (looked at in a real browser) says what it shows."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import run_kr

pytestmark = [pytest.mark.slow]

STYLES = ("marker", "zine", "editorial-cartoon")
SUBJECTS = ("a red circle", "a blue square", "a yellow star", "a green tree", "a purple house", "an orange triangle")
SEEDS = (1, 2)


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    """One workspace, one `kr demo` per style (the first in plain text, as a person sees it)."""
    root = tmp_path_factory.mktemp("demo")
    env = {"KR_HOME": str(root / "home"), "KR_VENDOR_DIR": str(root / "vendor")}
    runs, text = {}, ""
    for style in STYLES:
        plain = style == STYLES[0]
        result = run_kr("demo", "--style", style, *([] if plain else ["--json"]), env=env, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        if plain:
            text = result.stdout
            runs[style] = json.loads(run_kr("runs", "show", "tiny-demo-0001", "--json", env=env).stdout)["run"]
        else:
            runs[style] = json.loads(result.stdout)
    return {"root": root, "env": env, "runs": runs, "text": text}


def _samples(base: Path, lora: Path | None, trigger: bool) -> list:
    from kohya_runner.tiny.infer import generate, load_pipeline

    pipe = load_pipeline(base, lora)
    prefix = "in the style of TOK, " if trigger else ""
    return [generate(pipe, prefix + subject, seed=seed, steps=20, cfg=3.0, sampler="euler_a", negative="")
            for subject in SUBJECTS for seed in SEEDS]


@pytest.fixture(scope="module")
def looks(demos):
    """Samples of the base and of every style's LoRA at the same seeds, and renderings of the styles."""
    from kohya_runner import workspace
    from kohya_runner.tiny.styles import render_style, style_scenes
    from kohya_runner.tiny.world import render_plain

    base = workspace.tiny_base_dir(Path(demos["env"]["KR_HOME"]), "sdxl")
    scenes = style_scenes(24, seed=5)
    drawn = {"base": {True: _samples(base, None, True), False: _samples(base, None, False)}}
    for style, row in demos["runs"].items():
        lora = Path(row["result_path"])
        drawn[style] = {True: _samples(base, lora, True), False: _samples(base, lora, False)}
    references = {style: [render_style(scene, style, 64, 500 + i) for i, scene in enumerate(scenes)]
                  for style in STYLES}
    return {"drawn": drawn, "plain": [render_plain(scene, 64) for scene in scenes], "styled": references}


@pytest.mark.parametrize("style", STYLES)
def test_the_trigger_brings_the_style_and_its_absence_mostly_does_not(looks, style):
    from kohya_runner.tiny.measure import style_progress

    drawn, base = looks["drawn"][style], looks["drawn"]["base"]
    with_trigger = style_progress(base[True], drawn[True], looks["plain"], looks["styled"][style])
    without = style_progress(base[False], drawn[False], looks["plain"], looks["styled"][style])
    assert with_trigger >= 0.3, f"{style}: with the trigger only {with_trigger:.2f} of the way to the style"
    assert with_trigger >= 2 * max(without, 0.05), f"{style}: {with_trigger:.2f} with the trigger, {without:.2f} without"


@pytest.mark.parametrize("style", STYLES)
def test_each_lora_moves_toward_its_own_style_not_the_others(looks, style):
    from kohya_runner.tiny.measure import style_direction

    base, drawn = looks["drawn"]["base"][True], looks["drawn"][style][True]
    toward = {other: style_direction(base, drawn, looks["plain"], looks["styled"][other]) for other in STYLES}
    assert max(toward, key=toward.get) == style, toward


def test_terminal_and_report_say_what_the_demo_shows(demos, tmp_path):
    from browser import missing_reason
    from test_report import browser_check

    assert "trains a marker style LoRA" in demos["text"] and "base model" in demos["text"]
    assert "kr report tiny-demo-0001" in demos["text"]
    out = tmp_path / "report"
    result = run_kr("report", "tiny-demo-0001", "--out", out, "--json", env=demos["env"])
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "trains a marker style LoRA" in page and "in the style of TOK, a red circle" in page
    # base column + one per saved epoch, four subjects with and without the trigger
    assert report["images"] == len(report["columns"]) * 8 and report["missing"] == 0
    if missing_reason() is None:
        browser_check(out / "index.html", tmp_path / "demo-report.png", expected_images=report["images"] + 2)


def test_write_dataset_writes_a_new_folder_and_never_over_one(tmp_path):
    env = {"KR_HOME": str(tmp_path / "home")}
    dest = tmp_path / "zine-data"
    result = run_kr("demo", "--write-dataset", dest, "--style", "zine", env=env)
    assert result.returncode == 0, result.stderr
    captions = sorted(dest.glob("*.txt"))
    assert len(list(dest.glob("*.png"))) == len(captions) == 32
    texts = [c.read_text(encoding="utf-8") for c in captions]
    assert sum(t.startswith("in the style of TOK, ") for t in texts) == 24
    assert "kr run tiny-style --dataset" in result.stdout
    before = {p.name: p.stat().st_mtime_ns for p in dest.iterdir()}
    again = run_kr("demo", "--write-dataset", dest, "--style", "marker", env=env)
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in dest.iterdir()} == before
    refused = run_kr("demo", "--write-dataset", tmp_path / "other", "training.epochs=2", env=env)
    assert refused.returncode == 2 and not (tmp_path / "other").exists()
    assert not (tmp_path / "home").exists()  # writing a dataset touches no workspace
    unknown = run_kr("demo", "--style", "watercolour", env=env)
    assert unknown.returncode == 2 and "marker" in unknown.stderr


def test_bad_override_is_refused_before_anything_is_built(tmp_path):
    env = {"KR_HOME": str(tmp_path / "home")}
    result = run_kr("demo", "--style", "zine", "optimizer.lr=-1", env=env)
    assert result.returncode == 2 and "optimizer.lr" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "home" / "demo").exists() and not list((tmp_path / "home").glob("bases/*"))


def test_demo_images_are_deterministic(tmp_path):
    from kohya_runner.demo import write_dataset

    first, second = write_dataset(tmp_path / "a", "marker"), write_dataset(tmp_path / "b", "marker")
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert all((first / n).read_bytes() == (second / n).read_bytes() for n in names)
    assert os.path.getsize(first / names[0]) > 0
