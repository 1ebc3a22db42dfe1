"""`python -m kohya_runner.tiny.score`: per-checkpoint score probes over a real tiny style run trained
with `kr run tiny-style` (the demo's recipe, shortened): deterministic, a later checkpoint fits its
own training pictures better than the base, the trigger changes the U-Net more than its absence,
and a bad job is refused with exit 2 and one line."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tiny_fixtures
from conftest import run_kr

tiny_bases = tiny_fixtures.tiny_bases  # the session fixture, used here by name

REPO = Path(__file__).resolve().parents[2]
PROBE = REPO / "kohya_runner" / "sdscripts" / "score_probe.py"
TIMESTEPS = [100, 300, 500, 700, 900]
PAIRS = [{"with": "in the style of TOK, a red circle", "without": "a red circle"},
         {"with": "in the style of TOK, a blue house", "without": "a blue house"}]
SHORT = ["training.epochs=8", "saving.every_n_epochs=4", "sampling.every_n_epochs=8", "sampling.at_first=false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bases):
    """A tiny-style marker LoRA (24 styled + 8 plain pictures, 64 steps) with checkpoints at epochs 4 and 8."""
    from kohya_runner import workspace
    from kohya_runner.tiny.styles import write_style_dataset

    root = tmp_path_factory.mktemp("score")
    home = root / "home"
    (home / "bases").mkdir(parents=True)
    workspace.tiny_base_dir(home, "sdxl").symlink_to(tiny_bases["sdxl"])
    images = write_style_dataset(root / "images", "marker", count=24, plain=8, seed=0, size=64)
    held = write_style_dataset(root / "held", "marker", count=2, seed=7, size=64)
    env = {"KR_HOME": str(home), "OMP_NUM_THREADS": "1"}
    result = run_kr("run", "tiny-style", "--dataset", images, "--base", "tiny", *SHORT, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    row = json.loads(run_kr("runs", "ls", "--json", env=env).stdout)["runs"][0]
    output = Path(row["run_dir"]) / "output"
    networks = {"e000004": output / "tiny-style-000004.safetensors", "last": output / "tiny-style.safetensors"}
    assert all(path.is_file() for path in networks.values()), sorted(p.name for p in output.iterdir())
    return {"root": root, "base": tiny_bases["sdxl"], "images": images, "held": held, "networks": networks}


def _entries(folder: Path, held_out: bool, styled_only: bool = True, count: int = 6) -> list[dict]:
    pictures = sorted(p for p in folder.glob("*.png") if not (styled_only and p.name.startswith("plain_")))
    return [{"path": str(p), "caption": p.with_suffix(".txt").read_text(encoding="utf-8").strip(), "held_out": held_out}
            for p in pictures[:count]]


def _job(trained, **changes) -> dict:
    job = {"schema": "kr.score-job/1", "family": "sdxl", "base": str(trained["base"]), "v_parameterization": False,
           "clip_skip": None, "vae": None, "tokenizer_cache_dir": None, "resolution": [64, 64], "seed": 0,
           "timesteps": TIMESTEPS,
           "images": _entries(trained["images"], False) + _entries(trained["held"], True),
           "pairs": PAIRS,
           "networks": [{"id": name, "file": str(path)} for name, path in trained["networks"].items()],
           "device": "cpu"}
    job.update(changes)
    return job


def _score(tmp_path: Path, job: dict, name: str = "job", module: bool = True) -> tuple[subprocess.CompletedProcess, Path]:
    job_file, out = tmp_path / f"{name}.json", tmp_path / f"{name}-result.json"
    job_file.write_text(json.dumps(job), encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "kohya_runner.tiny.score"] if module else [sys.executable, "-I", str(PROBE)]
    result = subprocess.run([*command, str(job_file), str(out)], capture_output=True, text=True, env=env,
                            timeout=180, cwd=tmp_path)
    return result, out


def _figures(result: dict) -> dict:
    """The result without its wall-clock times."""
    figures = json.loads(json.dumps(result))
    figures.pop("seconds")
    for entry in figures["networks"].values():
        entry.pop("seconds")
    return figures


@pytest.fixture(scope="module")
def scored(trained, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scored")
    result, out = _score(tmp, _job(trained))
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text(encoding="utf-8"))


def test_result_has_the_contract_shape(scored):
    assert scored["schema"] == "kr.score-result/1"
    assert set(scored["networks"]) == {"e000004", "last"}
    for entry in [scored["base"], *scored["networks"].values()]:
        assert entry["train_loss"] > 0 and entry["held_out_loss"] > 0
    for entry in scored["networks"].values():
        assert set(entry) == {"train_loss", "held_out_loss", "change_with", "change_without", "seconds"}
        assert entry["change_with"] > 0 and entry["change_without"] > 0 and entry["seconds"] > 0
    images, pairs, steps = 8, len(PAIRS), len(TIMESTEPS)
    per_pass_set = images * steps + 2 * pairs * steps  # losses, then both prompts of every pair
    assert scored["passes"] == (1 + 2) * per_pass_set + 1 + 2  # base + 2 networks, one multiplier-0 check each
    assert scored["seconds"] >= sum(e["seconds"] for e in scored["networks"].values())


def test_the_same_job_gives_the_same_figures_in_any_network_order(trained, scored, tmp_path):
    job = _job(trained)
    job["networks"] = job["networks"][::-1]
    result, out = _score(tmp_path, job)
    assert result.returncode == 0, result.stderr[-3000:]
    again = json.loads(out.read_text(encoding="utf-8"))
    assert list(again["networks"]) == ["last", "e000004"]
    assert _figures(again) == _figures(scored)


def test_later_checkpoints_fit_their_training_pictures_better_than_the_base(scored):
    base = scored["base"]["train_loss"]
    for name in ("e000004", "last"):
        assert scored["networks"][name]["train_loss"] < 0.9 * base, (name, scored["networks"][name], base)


def test_the_trigger_changes_the_unet_more_than_its_absence(scored):
    entry = scored["networks"]["last"]  # (epoch 8; epoch 4 is only ~1.2x selective yet)
    assert entry["change_with"] > 1.3 * entry["change_without"], entry


def test_sd15_base_alone_with_clip_skip(trained, tiny_bases, tmp_path):
    job = _job(trained, family="sd15", base=str(tiny_bases["sd15"]), clip_skip=1, networks=[], timesteps=[500],
               v_parameterization=True, resolution=[64, 48])
    result, out = _score(tmp_path, job)
    assert result.returncode == 0, result.stderr[-3000:]
    scored = json.loads(out.read_text(encoding="utf-8"))
    assert scored["networks"] == {} and scored["base"]["train_loss"] > 0 and scored["passes"] == 8 + 2 * 2 + 1


def _bad_jobs(trained, tiny_bases, tmp_path):
    not_an_image = tmp_path / "broken.png"
    not_an_image.write_text("not a picture", encoding="utf-8")
    good = _job(trained)
    last = str(trained["networks"]["last"])
    return {
        "missing image": (_job(trained, images=[{"path": str(tmp_path / "gone.png"), "caption": "x"}]), "gone.png"),
        "not an image": (_job(trained, images=[{"path": str(not_an_image), "caption": "x"}]), "cannot open"),
        "missing lora": (_job(trained, networks=[{"id": "e1", "file": str(tmp_path / "gone.safetensors")}]), "e1"),
        "wrong base family": (_job(trained, family="sd15", networks=[]), "tiny sdxl base"),
        "wrong lora family": (_job(trained, family="sd15", base=str(tiny_bases["sd15"]),
                                   networks=[{"id": "e9", "file": last}]), "LoRA for sdxl"),
        "wrong schema": (dict(good, schema="kr.score-job/0"), "kr.score-job/1"),
        "odd resolution": (_job(trained, resolution=[64, 60]), "multiples of 8"),
        "unknown family": (_job(trained, family="sd3"), "family"),
    }


def test_bad_jobs_exit_2_with_one_line(trained, tiny_bases, tmp_path):
    for name, (job, words) in _bad_jobs(trained, tiny_bases, tmp_path).items():
        result, out = _score(tmp_path, job, name.replace(" ", "-"))
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (name, result.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith("score: bad job: ") and words in lines[0], (name, lines)
        assert not out.exists() and not list(tmp_path.glob("*.tmp-*")), name


def test_the_sd_scripts_probe_refuses_bad_jobs_before_touching_sd_scripts(trained, tiny_bases, tmp_path):
    """Run by path in isolated mode, from a folder that is no sd-scripts checkout."""
    for name in ("missing image", "wrong lora family"):
        job, words = _bad_jobs(trained, tiny_bases, tmp_path)[name]
        result, out = _score(tmp_path, job, name.replace(" ", "-"), module=False)
        assert result.returncode == 2 and words in result.stderr and "Traceback" not in result.stderr, result.stderr
    job = _job(trained, base=str(trained["networks"]["last"]), networks=[])  # a file, but no SDXL checkpoint
    result, out = _score(tmp_path, job, "not-a-checkpoint", module=False)
    assert result.returncode == 2 and "not an SD 1.5 / SDXL checkpoint" in result.stderr, result.stderr


def test_the_sd_scripts_probe_imports_nothing_of_kr():
    tree = ast.parse(PROBE.read_text(encoding="utf-8"))
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += ["." * node.level + (node.module or "") for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [name for name in imported if name.startswith("kohya_runner") or name.startswith(".")], imported
