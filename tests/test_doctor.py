"""`kr doctor`: every check, made to fail. Real trainer environments (small venvs), real files, real
subprocesses; only what no CI machine has (an NVIDIA GPU) is passed to the check functions as facts.

The smoke run goes through kr's real run pipeline against a stand-in sd-scripts checkout whose entry
scripts run kr's tiny trainer (or the fault-injecting stand-in, to make it fail).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_standin_checkout, no_process_left, run_kr
from vendor_fixtures import fake_open_clip_wheel
from tiny_fixtures import tiny_bases  # noqa: F401  (session fixture)

from kohya_runner import doctor, workspace
from kohya_runner.doctor import FAIL, OK, WARN, Gpu, TrainerInfo

GIB = 2**30


@pytest.fixture
def env(home, tmp_path, monkeypatch):
    """No accelerate config, no stray HF tokens: each test adds what it needs."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    return home


def doctor_json(kr, *args) -> tuple[int, dict]:
    result = kr("doctor", *args, "--json")
    return result.exit_code, json.loads(result.stdout)


def check(report: dict, name: str) -> dict:
    found = [c for c in report["checks"] if c["name"] == name]
    assert found, f"no {name!r} check in {[c['name'] for c in report['checks']]}"
    return found[0]


def make_venv(path: Path, startup: str | None = None) -> Path:
    """A real venv without pip (and without torch); `startup` goes into a .pth file that runs at start-up."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    if startup:
        site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
        Path(site, "kr_test_startup.pth").write_text(startup + "\n")
    return python


@pytest.fixture
def tokenizers(env, tmp_path, kr):
    folder = tmp_path / "wheels"
    folder.mkdir()
    fake_open_clip_wheel(folder)
    kr("vendor", "tokenizers", "--source", folder, ok=True)
    return env / "tokenizers"


# --- the trainer environment -------------------------------------------------------------------------------


def test_trainer_python_fails_when_kr_sd_python_points_nowhere(kr, env, monkeypatch, tmp_path):
    monkeypatch.setenv("KR_SD_PYTHON", str(tmp_path / "no-python"))
    code, report = doctor_json(kr)
    assert code == 1 and not report["ok"]
    assert check(report, "trainer python")["status"] == FAIL and "KR_SD_PYTHON" in check(report, "trainer python")["detail"]
    monkeypatch.delenv("KR_SD_PYTHON")
    assert check(doctor_json(kr)[1], "trainer python")["fix"].startswith("`kr vendor env`")  # none at all


def test_torch_fails_in_an_environment_without_torch(kr, env, monkeypatch, tmp_path):
    monkeypatch.setenv("KR_SD_PYTHON", str(make_venv(tmp_path / "venv")))
    code, report = doctor_json(kr)
    assert check(report, "trainer python")["status"] == OK
    torch = check(report, "torch")
    assert code == 1 and torch["status"] == FAIL and "not installed" in torch["detail"] and "kr vendor env" in torch["fix"]
    assert check(report, "offline")["status"] == OK  # the same python, asked with kr's environment


def test_optimizer_fails_when_the_trainer_python_lacks_its_package(kr, env, monkeypatch, tmp_path):
    python = make_venv(tmp_path / "venv")
    monkeypatch.setenv("KR_SD_PYTHON", str(python))
    code, report = doctor_json(kr, "marker")  # AdamW8bit
    optimizer = check(report, "optimizer")
    assert code == 1 and optimizer["status"] == FAIL and "bitsandbytes" in optimizer["detail"]
    assert "pip install bitsandbytes" in optimizer["fix"] and "optimizer.type=AdamW" in optimizer["fix"]
    assert check(doctor_json(kr, "prodigy")[1], "optimizer")["detail"].count("prodigyopt") == 1
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "bitsandbytes").mkdir()
    Path(site, "bitsandbytes", "__init__.py").write_text("")
    assert check(doctor_json(kr, "marker")[1], "optimizer")["status"] == OK
    listing = check(doctor_json(kr)[1], "optimizer")  # no preset: which optional packages are there
    assert listing["status"] == OK and "bitsandbytes installed" in listing["detail"]


def test_on_the_tiny_backend_only_what_the_tiny_trainer_uses_is_checked(kr, env):
    code, report = doctor_json(kr, "marker", "--base", "tiny")
    names = [c["name"] for c in report["checks"]]
    assert code == 0 and report["ok"], report
    assert "tiny trainer" in names and "base model" in names and "optimizer" in names
    assert not {"trainer python", "torch", "CUDA", "GPU", "sd-scripts", "tokenizers", "accelerate config"} & set(names)
    assert "not built yet" in check(report, "base model")["detail"]  # `kr run --base tiny` builds it
    assert "uses AdamW instead" in check(report, "optimizer")["detail"] or "installed" in check(report, "optimizer")["detail"]


def test_torch_too_old_fails():
    result = doctor.check_torch(TrainerInfo("/p", "3.10.12", "2.4.1+cu121", "12.1"))
    assert result.status == FAIL and ">= 2.6" in result.detail


def test_cuda_fails_for_a_cpu_torch_on_a_gpu_machine(kr, env):
    info = TrainerInfo("/venv/bin/python", "3.10.12", "2.14.1+cpu", None)
    gpu = [Gpu(0, "NVIDIA GeForce RTX 4090", 24 * GIB, 23 * GIB)]
    report = doctor.run_checks(env, doctor.Plan(), gpus=gpu, info=info)
    cuda = next(c for c in report.checks if c.name == "CUDA")
    assert cuda.status == FAIL and "CPU build" in cuda.detail and not report.ok
    assert doctor.check_cuda(TrainerInfo("/p", "3.10.12", "2.14.1+cu128", "12.8"), gpu).status == OK
    assert doctor.check_cuda(TrainerInfo("/p", "3.10.12", "2.14.1+cpu", None), []).status == WARN
    assert doctor.check_cuda(TrainerInfo("/p", "3.10.12", None, None), gpu) is None  # torch already failed


def test_gpu_fails_without_enough_free_vram_or_without_that_gpu():
    small = [Gpu(0, "NVIDIA GeForce RTX 3060", 12 * GIB, 3 * GIB)]
    tight = doctor.check_gpus(small, need=doctor.parse_vram("12 GB"))
    assert tight.status == FAIL and "3.0 GiB free" in tight.detail and "sdxl-8gb" in tight.fix
    assert doctor.check_gpus(small, need=None, gpu=1).status == FAIL
    assert doctor.check_gpus(small, need=doctor.parse_vram("none (CPU)")).status == OK
    assert doctor.check_gpus([]).status == WARN
    assert doctor.parse_vram("24 GB") == 24 * GIB


# --- sd-scripts, tokenizers, base, dataset ------------------------------------------------------------------


def test_sd_scripts_fails_when_missing_or_not_the_pinned_tree(kr, env, tmp_path, monkeypatch):
    report = doctor_json(kr)[1]
    assert check(report, "sd-scripts")["status"] == FAIL and "kr vendor install" in check(report, "sd-scripts")["fix"]

    installed = Path(__import__("os").environ["KR_VENDOR_DIR"]) / "sd-scripts"
    make_standin_checkout(installed, "tiny")
    sd = check(doctor_json(kr)[1], "sd-scripts")
    assert sd["status"] == FAIL and "not the pinned tree 9eccd8bdf6ca" in sd["detail"] and "kr vendor verify" in sd["fix"]

    monkeypatch.setenv("KR_SD_SCRIPTS", str(installed))  # a checkout the user chose: a warning
    assert check(doctor_json(kr)[1], "sd-scripts")["status"] == WARN


def test_tokenizers_fail_when_missing_or_padding_with_an_exclamation_mark(kr, env, tokenizers):
    assert check(doctor_json(kr)[1], "tokenizers")["status"] == OK
    big_g = tokenizers / "laion_CLIP-ViT-bigG-14-laion2B-39B-b160k"
    special = json.loads((big_g / "special_tokens_map.json").read_text())
    (big_g / "special_tokens_map.json").write_text(json.dumps({**special, "pad_token": "!"}))
    old = check(doctor_json(kr)[1], "tokenizers")
    assert old["status"] == FAIL and "'!'" in old["detail"]
    assert doctor.check_tokenizers(tokenizers, "sd15").status == OK  # SD1.5 reads only CLIP-L
    shutil.rmtree(tokenizers)
    missing = check(doctor_json(kr)[1], "tokenizers")
    assert missing["status"] == FAIL and "kr vendor tokenizers" in missing["fix"]


def sd15_file(path: Path) -> Path:
    import numpy as np
    from safetensors.numpy import save_file

    unet = "model.diffusion_model."
    shapes = {unet + "input_blocks.0.0.weight": (8, 4, 3, 3), unet + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (8, 768),
              "cond_stage_model.transformer.text_model.final_layer_norm.weight": (768,),
              "first_stage_model.encoder.conv_in.weight": (8, 3, 3, 3)}
    save_file({name: np.zeros(shape, dtype=np.float16) for name, shape in shapes.items()}, str(path))
    return path


def test_base_fails_for_an_architecture_the_preset_does_not_train(kr, env, tmp_path):
    base = sd15_file(tmp_path / "sd15-finetune.safetensors")
    code, report = doctor_json(kr, "sdxl-lora", "--base", base)
    result = check(report, "base model")
    assert code == 1 and result["status"] == FAIL and "is SD 1.x" in result["detail"] and "trains SDXL" in result["detail"]
    assert check(doctor_json(kr, "sd15-lora", "--base", base)[1], "base model")["status"] == OK
    assert check(doctor_json(kr, "--base", tmp_path / "nope.safetensors")[1], "base model")["status"] == FAIL


def test_dataset_fails_with_an_empty_caption(kr, env, tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (64, 64)).save(folder / "a.png")
    (folder / "a.txt").write_text("")
    result = check(doctor_json(kr, "--dataset", folder)[1], "dataset")
    assert result["status"] == FAIL and "kr dataset check" in result["fix"]
    (folder / "a.txt").write_text("in the style of TOK, a square")
    assert check(doctor_json(kr, "--dataset", folder)[1], "dataset")["status"] in (OK, WARN)


# --- disk, offline, accelerate, preset -----------------------------------------------------------------------


def test_disk_fails_when_the_planned_outputs_do_not_fit(kr, env):
    fits = check(doctor_json(kr, "sdxl-lora")[1], "disk space")
    assert fits["status"] == OK and "LoRA file(s)" in fits["detail"]
    # 2,000 rank-1024 SDXL checkpoints (~5 GiB each) fit on no disk
    huge = check(doctor_json(kr, "sdxl-lora", "training.epochs=2000", "saving.every_n_epochs=1", "network.dim=1024")[1],
                 "disk space")
    assert huge["status"] == FAIL and "2000 LoRA file(s)" in huge["detail"]
    assert doctor.check_disk(Path("/"), needed=10 * GIB, what="x", free=11 * GIB).status == WARN


def test_offline_fails_when_the_trainer_python_switches_the_hub_back_on(kr, env, tmp_path, monkeypatch):
    python = make_venv(tmp_path / "venv", startup="import os; os.environ['HF_HUB_OFFLINE'] = '0'")
    monkeypatch.setenv("KR_SD_PYTHON", str(python))
    offline = check(doctor_json(kr)[1], "offline")
    assert offline["status"] == FAIL and "HF_HUB_OFFLINE='0'" in offline["detail"] and "sitecustomize" in offline["fix"]


def test_accelerate_config_fails_when_it_would_change_devices(kr, env, tmp_path):
    folder = tmp_path / "hf-home" / "accelerate"
    folder.mkdir(parents=True)
    config = folder / "default_config.yaml"
    config.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\nuse_cpu: true\nnum_processes: 1\n")
    result = check(doctor_json(kr)[1], "accelerate config")
    assert result["status"] == FAIL and "use_cpu: true" in result["detail"] and str(config) in result["fix"]
    config.write_text("distributed_type: MULTI_GPU\ngpu_ids: 1,2\nnum_processes: 2\nmixed_precision: fp16\n")
    assert check(doctor_json(kr)[1], "accelerate config")["status"] == WARN
    config.write_text("distributed_type: DEEPSPEED\ndeepspeed_config:\n  zero_stage: 2\n")
    assert check(doctor_json(kr)[1], "accelerate config")["status"] == FAIL
    config.unlink()
    assert check(doctor_json(kr)[1], "accelerate config")["status"] == OK


def test_an_unknown_preset_fails_and_the_table_shows_fixes(kr, env):
    code, report = doctor_json(kr, "markr")
    assert code == 1 and check(report, "preset")["status"] == FAIL and "Did you mean 'marker'" in check(report, "preset")["detail"]
    text = kr("doctor", "markr")
    assert text.exit_code == 1 and "✗ preset" in text.output and "fix: " in text.output and "Traceback" not in text.output
    assert "check(s) failed" in text.output


# --- the smoke run -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["sdxl-lora", "sd15-lora", "marker", "zine", "editorial-cartoon", "sdxl-12gb",
                                    "sdxl-8gb", "prodigy", "adafactor"])
def test_smoke_overrides_resolve_for_every_sd_scripts_preset(env, preset):
    from kohya_runner import preset as preset_mod

    for on_cpu in (True, False):
        spec = preset_mod.resolve(preset, env).spec
        family = spec.model.family
        smoke = preset_mod.resolve(preset, env, doctor.smoke_overrides(family, on_cpu, spec)).spec
        assert smoke.training.steps == doctor.SMOKE_STEPS and smoke.training.epochs is None
        assert smoke.dataset.resolution == (64, 64) and smoke.sampling.prompts == []
        if on_cpu:
            assert "8bit" not in smoke.optimizer.type and smoke.precision.mixed_precision == "no"


@pytest.fixture
def smoke_world(env, tiny_bases, tokenizers, tmp_path, monkeypatch):  # noqa: F811
    def make(kind: str) -> Path:
        checkout = make_standin_checkout(tmp_path / f"standin-{kind}", kind)
        monkeypatch.setenv("KR_SD_SCRIPTS", str(checkout))
        monkeypatch.setenv("KR_SD_PYTHON", sys.executable)
        base = workspace.tiny_base_dir(env, "sdxl")
        if not base.exists():
            shutil.copytree(tiny_bases["sdxl"], base)
        return base

    yield make
    leftovers = no_process_left(str(tmp_path))
    assert not leftovers, leftovers


def test_smoke_trains_four_steps_through_kr_run_and_reports_speed_and_memory(smoke_world):
    base = smoke_world("tiny")
    result = run_kr("doctor", "--smoke", "--base", base, "--gpu", "cpu", "--json", timeout=300)
    report = json.loads(result.stdout)
    smoke = check(report, "smoke run")
    assert smoke["status"] == OK, smoke
    data = report["smoke"]
    assert data["status"] == "succeeded" and data["steps"] == doctor.SMOKE_STEPS and data["family"] == "sdxl"
    assert data["it_per_s"] > 0 and data["peak_rss"] > 0 and data["device"] == "cpu"
    assert check(report, "sd-scripts")["status"] == WARN  # a stand-in chosen through KR_SD_SCRIPTS
    assert result.returncode == 0 and report["ok"], [c for c in report["checks"] if c["status"] == FAIL]
    shown = run_kr("runs", "show", data["run_id"], "--json")
    row = json.loads(shown.stdout)["run"]
    assert row["status"] == "succeeded" and row["it_per_s"] == data["it_per_s"] and row["peak_rss"] == data["peak_rss"]
    config = (Path(row["run_dir"]) / "config.toml").read_text()
    assert "max_train_steps = 4" in config and 'resolution = "64,64"' in config


def test_smoke_fails_when_the_trainer_crashes_and_names_the_run(smoke_world):
    base = smoke_world("fault")
    result = run_kr("doctor", "--smoke", "--base", base, "--gpu", "cpu", env={"KR_FAULT": "crash"}, timeout=300)
    assert result.returncode == 1
    line = next(line for line in result.stdout.splitlines() if line.startswith("✗ smoke run"))
    assert "doctor-smoke-0001 failed: " in line and "stand-in crash" in line, line
    assert "trainer.log" in result.stdout and "Traceback" not in result.stderr


def test_smoke_does_not_start_while_an_essential_check_fails(kr, env, tiny_bases, monkeypatch, tmp_path):  # noqa: F811
    monkeypatch.setenv("KR_SD_PYTHON", sys.executable)
    monkeypatch.setenv("KR_SD_SCRIPTS", str(make_standin_checkout(tmp_path / "standin", "tiny")))
    code, report = doctor_json(kr, "--smoke", "--base", tiny_bases["sdxl"])
    smoke = check(report, "smoke run")
    assert code == 1 and smoke["status"] == FAIL and "tokenizers" in smoke["detail"] and report["smoke"] is None


def test_a_ledger_from_an_older_kr_gains_the_peak_vram_column(tmp_path):
    import sqlite3

    from kohya_runner.ledger import SCHEMA, open_ledger

    old = SCHEMA.replace(",\n    peak_vram     INTEGER", "")
    assert old != SCHEMA
    db = sqlite3.connect(tmp_path / "ledger.sqlite")
    db.executescript(old)
    db.execute("INSERT INTO runs (run_id, name, status, created_at, run_dir) VALUES ('old-0001', 'old', 'succeeded', 1.0, '/x')")
    db.commit()
    db.close()
    ledger = open_ledger(tmp_path)
    assert ledger.get("old-0001").peak_vram is None
    ledger.update("old-0001", peak_vram=3 * GIB)
    assert open_ledger(tmp_path).get("old-0001").peak_vram == 3 * GIB
