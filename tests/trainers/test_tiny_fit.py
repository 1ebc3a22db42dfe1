"""The tiny backend fits a shipped preset to the tiny model (issue 12, "the first hour"): native 64 px,
short 64 px samples, fp32 on the CPU, and a CPU optimizer when its package is missing, each with a note;
the warmup warning; the optimizer packages a trainer python lacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kohya_runner import preset, workspace
from kohya_runner.trainers import packages
from kohya_runner.trainers.notes import fit, warmup_notes
from kohya_runner.trainers.tiny import adapt


@pytest.fixture
def built(home):
    """A tiny base marked as built (adapt only looks for model_index.json), so no model is made here."""
    folder = workspace.tiny_base_dir(home, "sdxl")
    folder.mkdir(parents=True)
    (folder / "model_index.json").write_text("{}")
    return home


def images(folder: Path, count: int) -> Path:
    from PIL import Image

    folder.mkdir()
    for i in range(count):
        Image.new("RGB", (64, 64), (i * 20, 0, 0)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text(f"in the style of TOK, thing {i}")
    return folder


@pytest.mark.skipif(packages.available_here("bitsandbytes"), reason="bitsandbytes is installed here")
def test_the_marker_preset_is_fitted_to_the_tiny_model_with_notes(built):
    spec = preset.resolve("marker", built, [], {"model.base": "tiny"}).spec
    fitted, notes = adapt(built, spec)
    assert fitted.dataset.resolution == (64, 64) and fitted.dataset.max_bucket_reso == 128
    assert fitted.sample_size == (64, 64) and fitted.sampling.steps == 20 and fitted.sampling.cfg_scale == 3.0
    assert fitted.precision.mixed_precision == "no" and fitted.training.data_loader_workers == 0
    assert fitted.optimizer.type == "AdamW" and fitted.optimizer.args == {"weight_decay": 0.01}
    assert fitted.optimizer.lr == spec.optimizer.lr and fitted.network.dim == spec.network.dim  # the rest as written
    text = "\n".join(notes)
    assert "64 px (preset: 1024)" in text and "20 steps (preset: 28)" in text and "CFG 3 (preset: 7)" in text
    assert "AdamW instead of AdamW8bit" in text and "bitsandbytes" in text


@pytest.mark.skipif(packages.available_here("prodigyopt"), reason="prodigyopt is installed here")
def test_an_adaptive_optimizer_becomes_adamw_at_a_learning_rate_and_keeps_only_adamw_arguments(built):
    spec = preset.resolve("prodigy", built, [], {"model.base": "tiny"}).spec
    fitted, notes = adapt(built, spec)
    assert (fitted.optimizer.type, fitted.optimizer.lr) == ("AdamW", 1e-4)
    assert fitted.optimizer.args == {"weight_decay": 0.01}  # no d_coef, decouple, … for AdamW
    assert any("instead of Prodigy" in note for note in notes)


def test_a_preset_already_at_the_tiny_scale_is_left_alone(built):
    spec = preset.resolve("tiny-demo", built).spec
    assert adapt(built, spec) == (spec, [])


def test_the_tiny_base_is_built_on_first_use(home, monkeypatch):
    made = []
    monkeypatch.setattr("kohya_runner.tiny.build_tiny_base", lambda dest, family: made.append((dest, family)) or dest)
    spec = preset.resolve("tiny-demo", home).spec
    _, notes = adapt(home, spec)
    assert made == [(workspace.tiny_base_dir(home, "sdxl"), "sdxl")] and "built kr's tiny sdxl base" in notes[0]


def test_warmup_longer_than_the_run_is_a_warning(built, tmp_path):
    folder = images(tmp_path / "imgs", 4)
    # 4 images × 4 repeats / batch 2 = 8 steps an epoch; 2 epochs = 16 steps; the preset warms up for 100
    spec = preset.resolve("marker", built, ["training.epochs=2"], {"model.base": "tiny", "dataset.dir": str(folder)}).spec
    [note] = warmup_notes(spec)
    assert "warmup_steps = 100" in note and "(16 steps)" in note and "Fix: scheduler.warmup_steps=1" in note
    assert warmup_notes(spec.model_copy(update={"scheduler": spec.scheduler.model_copy(update={"warmup_steps": 15})})) == []
    steps_run = preset.resolve("marker", built, ["training.steps=50", "training.epochs=none"], {"model.base": "tiny"}).spec
    assert "(50 steps)" in warmup_notes(steps_run)[0]
    _, notes = fit(built, spec, "tiny")
    assert notes[-1] == note


def test_missing_optimizer_packages_are_found_in_a_real_trainer_python(tmp_path):
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "env")], check=True)
    python = str(tmp_path / "env" / "bin" / "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "bitsandbytes").mkdir()
    (Path(site) / "bitsandbytes" / "__init__.py").write_text("")
    assert packages.missing_modules(python, ["bitsandbytes", "prodigyopt"]) == ["prodigyopt"]
    assert packages.missing_modules(str(tmp_path / "nothing"), ["bitsandbytes"]) is None
    assert [packages.module_for(n) for n in ("AdamW8bit", "PagedAdamW", "Prodigy", "DAdaptAdam", "Lion",
                                             "AdamWScheduleFree", "AdamW", "Adafactor", "pytorch_optimizer.CAME")] == \
        ["bitsandbytes", "bitsandbytes", "prodigyopt", "dadaptation", "lion_pytorch", "schedulefree", None, None,
         "pytorch_optimizer"]


def test_a_missing_optimizer_package_gets_an_english_hint_naming_the_override(home):
    from kohya_runner.monitor import Progress, classify

    spec = preset.resolve("marker", home).spec
    progress = Progress(failure="missing_package",
                        exception="ImportError: No bitsandbytes / bitsandbytesがインストールされていないようです")
    outcome = classify(progress, 1, False, stop_requested=False, diverged=False, spec=spec)
    assert "needs bitsandbytes" in outcome.hint and "optimizer.type=AdamW" in outcome.hint
    progress.exception = "ModuleNotFoundError: No module named 'xformers'"  # not the optimizer's package
    assert "bitsandbytes" not in classify(progress, 1, False, stop_requested=False, diverged=False, spec=spec).hint
