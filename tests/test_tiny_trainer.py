"""The built-in tiny trainer: real subprocess runs from kr-style config files, checked at every seam
kr watches (files, keys, metadata, TensorBoard, log lines, exit codes), plus its helpers."""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tiny_fixtures import (  # noqa: F401  (fixtures are used by name)
    run_trainer, tiny_bases, tiny_demo_images, tiny_images, trainer_command, trainer_env, write_dataset_toml,
    write_prompts, write_training_toml,
)

EPOCHS = 6
BATCHES_PER_EPOCH = 8  # 16 images, batch 2, one 64x64 bucket


def sdxl_sections(base: Path, work: Path, dataset: Path, prompts: Path, **overrides) -> dict:
    sections = {
        "model": {"pretrained_model_name_or_path": str(base), "dataset_config": str(dataset)},
        "output": {"output_dir": str(work / "out"), "output_name": "marker", "save_model_as": "safetensors",
                   "save_precision": "fp16", "save_every_n_epochs": 1, "save_last_n_epochs": 2},
        "network": {"network_module": "networks.lora", "network_dim": 4, "network_alpha": 4.0,
                    "network_train_unet_only": True},
        "optimizer": {"optimizer_type": "AdamW", "learning_rate": 1.0e-2, "lr_scheduler": "constant",
                      "max_train_epochs": EPOCHS, "mixed_precision": "no", "seed": 42},
        "speed": {"sdpa": True, "gradient_checkpointing": True, "cache_latents": True},
        "logging": {"logging_dir": str(work / "tb"), "log_prefix": "r1_", "console_log_simple": True},
        "sample": {"sample_prompts": str(prompts), "sample_every_n_epochs": 3, "sample_at_first": True,
                   "sample_sampler": "euler_a"},
        "kr": {"metadata_kr_run_id": "run-0001", "training_comment": "tiny test"},
    }
    for key, value in overrides.items():
        for values in sections.values():
            if key in values:
                values[key] = value
                break
        else:
            sections["kr"][key] = value
    return sections


def start_sdxl_run(factory, bases, demo_images, name: str):
    import shutil

    work = factory.mktemp(name)
    images = work / "images"
    shutil.copytree(demo_images, images)
    dataset = write_dataset_toml(work / "dataset.toml", images)
    prompts = write_prompts(work / "sample_prompts.txt")
    config = write_training_toml(work / "args.toml", sdxl_sections(bases["sdxl"], work, dataset, prompts))
    return run_trainer("sdxl", work, "--config_file", str(config))


@pytest.fixture(scope="module")
def sdxl_run(tmp_path_factory, tiny_bases, tiny_demo_images):
    result = start_sdxl_run(tmp_path_factory, tiny_bases, tiny_demo_images, "sdxl_run")
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def sdxl_rerun(tmp_path_factory, tiny_bases, tiny_demo_images):
    result = start_sdxl_run(tmp_path_factory, tiny_bases, tiny_demo_images, "sdxl_rerun")
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def scalars(run, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folders = glob.glob(str(run.workdir / "tb" / "*" / "network_train"))
    assert len(folders) == 1, folders
    accumulator = EventAccumulator(folders[0], size_guidance={"scalars": 0})
    accumulator.Reload()
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def tags(run) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = glob.glob(str(run.workdir / "tb" / "*" / "network_train"))[0]
    accumulator = EventAccumulator(folder)
    accumulator.Reload()
    return set(accumulator.Tags()["scalars"])


# ---------------------------------------------------------------------------------------------
# SDXL run: files, keys, metadata, TensorBoard, logs, learning
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_sdxl_output_files_and_rotation(sdxl_run):
    out = sdxl_run.workdir / "out"
    files = sorted(p.name for p in out.glob("*.safetensors"))
    # epochs 1..5 saved as epoch files (the last epoch is the final file), keep the last 2
    assert files == ["marker-000004.safetensors", "marker-000005.safetensors", "marker.safetensors"]
    for epoch in (1, 2, 3):
        assert f"removing old checkpoint: {out / f'marker-{epoch:06d}.safetensors'}" in sdxl_run.stdout
    assert not list(out.glob("*.tmp*"))


@pytest.mark.slow
def test_sdxl_tensor_keys_shapes_and_precision(sdxl_run):
    from kohya_runner import lorafile

    index, _ = lorafile.read_header(sdxl_run.workdir / "out" / "marker.safetensors")
    assert all(k.startswith("lora_unet_") for k in index)  # network_train_unet_only
    names = {lorafile.split_lora_key(k)[0] for k in index}
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k" in names
    assert "lora_unet_middle_block_1_proj_out" in names
    assert "lora_unet_output_blocks_0_1_transformer_blocks_0_ff_net_2" in names
    assert "lora_unet_output_blocks_3_1_transformer_blocks_0_attn1_to_out_0" in names
    assert len(index) == 3 * len(names)
    for name in names:
        down, up, alpha = (index[name + s] for s in (".lora_down.weight", ".lora_up.weight", ".alpha"))
        assert down["shape"][0] == 4 and up["shape"][1] == 4 and alpha["shape"] == []
        assert down["dtype"] == up["dtype"] == alpha["dtype"] == "F16"  # save_precision fp16


@pytest.mark.slow
def test_sdxl_metadata(sdxl_run):
    from kohya_runner import lorafile

    out = sdxl_run.workdir / "out"
    meta = lorafile.read_metadata(out / "marker.safetensors")
    assert meta["ss_network_dim"] == "4" and meta["ss_network_alpha"] == "4.0"
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert meta["modelspec.kr_run_id"] == "run-0001"
    assert meta["modelspec.title"] == "marker" and meta["modelspec.resolution"] == "1024x1024"
    assert meta["ss_training_comment"] == "tiny test" and meta["ss_seed"] == "42"
    assert meta["ss_steps"] == str(EPOCHS * BATCHES_PER_EPOCH) and meta["ss_epoch"] == str(EPOCHS)
    assert meta["ss_optimizer"] == "torch.optim.adamw.AdamW"
    datasets = json.loads(meta["ss_datasets"])
    assert datasets[0]["subsets"][0]["image_dir"] == "images" and datasets[0]["resolution"] == [64, 64]
    assert (meta["sshs_model_hash"], meta["sshs_legacy_hash"]) == lorafile.sshs_hashes(out / "marker.safetensors")
    epoch_meta = lorafile.read_metadata(out / "marker-000004.safetensors")
    assert epoch_meta["ss_epoch"] == "4" and epoch_meta["ss_steps"] == str(4 * BATCHES_PER_EPOCH)


@pytest.mark.slow
def test_sdxl_tensorboard_layout_and_tags(sdxl_run):
    runs = os.listdir(sdxl_run.workdir / "tb")
    assert len(runs) == 1 and re.fullmatch(r"r1_\d{14}", runs[0])
    assert tags(sdxl_run) == {"loss/current", "loss/average", "loss/epoch_average", "lr/unet", "lr/group0"}
    steps = [step for step, _ in scalars(sdxl_run, "loss/current")]
    assert steps == list(range(1, EPOCHS * BATCHES_PER_EPOCH + 1))
    epochs = scalars(sdxl_run, "loss/epoch_average")
    assert [step for step, _ in epochs] == list(range(1, EPOCHS + 1))
    # loss/average is the moving average over one epoch's batches; at epoch end it is the epoch average
    average = dict(scalars(sdxl_run, "loss/average"))
    for epoch, value in epochs:
        assert average[epoch * BATCHES_PER_EPOCH] == pytest.approx(value)
    current = [v for _, v in scalars(sdxl_run, "loss/current")]
    assert epochs[-1][1] == pytest.approx(sum(current[-BATCHES_PER_EPOCH:]) / BATCHES_PER_EPOCH, rel=1e-5)
    assert all(v == pytest.approx(1e-2) for _, v in scalars(sdxl_run, "lr/unet"))


def denoising_loss(base: Path, lora: Path | None, images: Path) -> float:
    """The noise-prediction error on the training images at fixed noise and timesteps (so a LoRA's
    effect is not hidden by the step-to-step noise of the training loss)."""
    import numpy as np
    import torch
    from PIL import Image

    from kohya_runner.tiny.infer import load_pipeline

    models = load_pipeline(base, lora).models
    pictures = [np.asarray(Image.open(p).convert("RGB"), dtype=np.float32) for p in sorted(images.glob("*.png"))]
    x = torch.from_numpy(np.stack(pictures)).permute(0, 3, 1, 2) / 127.5 - 1
    captions = [p.with_suffix(".txt").read_text(encoding="utf-8").strip() for p in sorted(images.glob("*.png"))]
    generator = torch.Generator().manual_seed(0)
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    alphas = torch.cumprod(1 - betas, 0).float()
    with torch.no_grad():
        latents = models.vae.encode(x).latent_dist.mean * models.family.vae_scale_factor
        context, pooled = models.encode_text(models.tokenize(captions))
        sizes = ([(64, 64)] * len(x), [(0, 0)] * len(x), [(64, 64)] * len(x))
        errors = []
        for t in (50, 150, 300, 500):
            noise = torch.randn(latents.shape, generator=generator)
            a = alphas[t]
            noisy = a.sqrt() * latents + (1 - a).sqrt() * noise
            predicted = models.predict_noise(noisy, torch.full((len(x),), t), context, pooled, sizes)
            errors.append(((predicted - noise) ** 2).mean().item())
    return sum(errors) / len(errors)


@pytest.mark.slow
def test_sdxl_lora_lowers_the_denoising_loss_of_its_images(sdxl_run, tiny_bases):
    images = sdxl_run.workdir / "images"
    before = denoising_loss(tiny_bases["sdxl"], None, images)
    after = denoising_loss(tiny_bases["sdxl"], sdxl_run.workdir / "out" / "marker.safetensors", images)
    assert after < 0.9 * before, (before, after)


@pytest.mark.slow
def test_sdxl_log_lines(sdxl_run):
    stdout = sdxl_run.stdout
    total = EPOCHS * BATCHES_PER_EPOCH
    block = ["running training / 学習開始",
             "  num train images * repeats / 学習画像の数×繰り返し回数: 16",
             f"  num batches per epoch / 1epochのバッチ数: {BATCHES_PER_EPOCH}",
             f"  num epochs / epoch数: {EPOCHS}",
             "  batch size per device / バッチサイズ: 2",
             "  gradient accumulation steps / 勾配を合計するステップ数 = 1",
             f"  total optimization steps / 学習ステップ数: {total}"]
    for line in block:
        assert line + "\n" in stdout
    assert f"override steps. steps for {EPOCHS} epochs is / 指定エポックまでのステップ数: {total}" in stdout
    for epoch in range(1, EPOCHS + 1):
        assert f"\nepoch {epoch}/{EPOCHS}\n\n" in stdout
    assert f"\nsaving checkpoint: {sdxl_run.workdir / 'out' / 'marker.safetensors'}\n" in stdout
    assert "generating sample images at step / サンプル画像生成 ステップ: 0" in stdout
    assert "kohya_runner.tiny accepts but does not honour: --sdpa, --gradient_checkpointing" in stdout
    assert sdxl_run.stdout_lines()[-1] == "model saved."
    # stderr: the Rich record from before the arguments were read, and the tqdm bar
    assert "Loading settings from" in sdxl_run.stderr
    bars = [part for part in re.split(r"[\r\n]", sdxl_run.stderr) if part.startswith("steps:")]
    assert bars and f"{total}/{total}" in bars[-1] and "avr_loss=" in bars[-1]


@pytest.mark.slow
def test_sdxl_sample_images(sdxl_run):
    from PIL import Image

    names = sorted(os.listdir(sdxl_run.workdir / "out" / "sample"))
    # at first (e000000) and at epochs 3 and 6; prompt 0 has a seed (suffix), prompt 1 not
    assert len(names) == 6
    for epoch in (0, 3, 6):
        assert any(re.fullmatch(rf"marker_e{epoch:06d}_00_\d{{14}}_7\.png", n) for n in names)
        assert any(re.fullmatch(rf"marker_e{epoch:06d}_01_\d{{14}}\.png", n) for n in names)
    with Image.open(sdxl_run.workdir / "out" / "sample" / names[0]) as image:
        assert image.size == (64, 64)


@pytest.mark.slow
def test_determinism_same_seed(sdxl_run, sdxl_rerun):
    from kohya_runner import lorafile

    assert scalars(sdxl_run, "loss/current") == scalars(sdxl_rerun, "loss/current")
    first = lorafile.read_metadata(sdxl_run.workdir / "out" / "marker.safetensors")
    second = lorafile.read_metadata(sdxl_rerun.workdir / "out" / "marker.safetensors")
    assert first["sshs_model_hash"] == second["sshs_model_hash"]  # identical tensor bytes


@pytest.mark.slow
def test_saved_lora_loads_back_and_changes_output(sdxl_run, tiny_bases):
    import numpy as np

    from kohya_runner.tiny.infer import generate, load_pipeline

    lora = sdxl_run.workdir / "out" / "marker.safetensors"
    prompt = "in the style of TOK, a lighthouse"
    plain = np.asarray(generate(load_pipeline(tiny_bases["sdxl"]), prompt, seed=3, steps=6), dtype=float)
    styled = generate(load_pipeline(tiny_bases["sdxl"], lora), prompt, seed=3, steps=6)
    again = generate(load_pipeline(tiny_bases["sdxl"], lora), prompt, seed=3, steps=6)
    off = generate(load_pipeline(tiny_bases["sdxl"], lora, multiplier=0.0), prompt, seed=3, steps=6)
    assert np.abs(plain - np.asarray(styled, dtype=float)).mean() > 1.0
    assert np.array_equal(np.asarray(styled), np.asarray(again))
    assert np.array_equal(plain.astype(np.uint8), np.asarray(off))


# ---------------------------------------------------------------------------------------------
# SD 1.5 run: text encoder LoRA, step saves, no_metadata, states, caches
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_sd15_text_encoder_steps_state_and_no_metadata(tiny_bases, tiny_images, tmp_path):
    import numpy as np

    from kohya_runner import lorafile

    dataset = write_dataset_toml(tmp_path / "dataset.toml", tiny_images, bucket_steps=64)
    sections = {
        "model": {"pretrained_model_name_or_path": str(tiny_bases["sd15"]), "dataset_config": str(dataset)},
        "output": {"output_dir": str(tmp_path / "out"), "output_name": "sd", "save_every_n_steps": 3,
                   "save_last_n_steps": 4, "save_state": True, "no_metadata": True},
        "train": {"network_module": "networks.lora", "network_dim": 2, "learning_rate": 1.0e-2,
                  "text_encoder_lr": 5.0e-3, "max_train_steps": 10, "gradient_accumulation_steps": 2,
                  "mixed_precision": "bf16", "lr_scheduler": "cosine", "lr_warmup_steps": 0.2, "seed": 1,
                  "cache_latents_to_disk": True, "metadata_kr_run_id": "sd-1"},
        "logging": {"logging_dir": str(tmp_path / "tb")},
    }
    config = write_training_toml(tmp_path / "args.toml", sections)
    result = run_trainer("sd15", tmp_path, "--config_file", str(config))
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.glob("*.safetensors")) == \
        ["sd-step00000006.safetensors", "sd-step00000009.safetensors", "sd.safetensors"]
    assert sorted(p.name for p in out.glob("*-state")) == ["sd-state", "sd-step00000006-state", "sd-step00000009-state"]
    assert json.loads((out / "sd-state" / "train_state.json").read_text()) == {"current_epoch": 3, "current_step": 10}
    assert "model saved." in result.stderr.splitlines()[-1]  # Rich logging on stderr

    index, meta = lorafile.read_header(out / "sd.safetensors")
    names = {lorafile.split_lora_key(k)[0] for k in index}
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj" in names
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q" in names
    assert "lora_unet_mid_block_attentions_0_proj_in" in names
    assert index["lora_unet_mid_block_attentions_0_proj_in.lora_down.weight"]["shape"][2:] == [1, 1]  # 1x1 conv
    assert index["lora_unet_mid_block_attentions_0_proj_in.alpha"]["dtype"] == "I64"  # default alpha 1 (int)
    assert {k for k in meta if k.startswith("ss_")} == {"ss_v2", "ss_base_model_version", "ss_network_module",
                                                     "ss_network_dim", "ss_network_alpha"}
    assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_network_alpha"] == "1"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora" and meta["modelspec.kr_run_id"] == "sd-1"
    assert "sshs_model_hash" in meta and "sshs_legacy_hash" in meta

    caches = sorted(tiny_images.glob("*_sd.npz"))
    assert len(caches) == 16 and caches[0].name.endswith("_0064x0064_sd.npz")
    with np.load(caches[0]) as data:
        assert set(data.files) == {"latents", "original_size", "crop_ltrb"}
        assert data["latents"].shape == (4, 8, 8)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = glob.glob(str(tmp_path / "tb" / "*" / "network_train"))[0]
    accumulator = EventAccumulator(folder)
    accumulator.Reload()
    assert set(accumulator.Tags()["scalars"]) == {"loss/current", "loss/average", "loss/epoch_average",
                                                 "lr/textencoder", "lr/unet", "lr/group1"}


# ---------------------------------------------------------------------------------------------
# failures and edge cases
# ---------------------------------------------------------------------------------------------

def quick_sections(base: Path, work: Path, dataset: Path, **extra) -> dict:
    values = {"pretrained_model_name_or_path": str(base), "dataset_config": str(dataset),
              "output_dir": str(work / "out"), "output_name": "x", "network_module": "networks.lora",
              "max_train_steps": 2, "seed": 1, "console_log_simple": True}
    values.update(extra)
    return {"args": values}


def test_missing_config_file_exits_1(tmp_path):
    result = run_trainer("sdxl", tmp_path, "--config_file", str(tmp_path / "nope"))
    assert result.returncode == 1
    assert f"{tmp_path / 'nope'}.toml not found." in result.stderr


def test_argparse_errors_exit_2(tmp_path):
    result = run_trainer("sdxl", tmp_path, "--no_such_option")
    assert result.returncode == 2 and "unrecognized arguments: --no_such_option" in result.stderr
    result = run_trainer("sd15", tmp_path, "--sample_sampler", "dpm++_2m_karras")
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_bad_dataset_key_exits_1(tiny_bases, tiny_images, tmp_path):
    dataset = write_dataset_toml(tmp_path / "dataset.toml", tiny_images)
    dataset.write_text(dataset.read_text().replace("image_dir", "imagedir"))
    config = write_training_toml(tmp_path / "args.toml", quick_sections(tiny_bases["sdxl"], tmp_path, dataset))
    result = run_trainer("sdxl", tmp_path, "--config_file", str(config))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == \
        "voluptuous.error.MultipleInvalid: extra keys not allowed @ data['datasets'][0]['subsets'][0]['imagedir']"


def test_no_data_found_exits_0_and_writes_nothing(tiny_bases, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    dataset = write_dataset_toml(tmp_path / "dataset.toml", empty)
    config = write_training_toml(tmp_path / "args.toml",
                                 quick_sections(tiny_bases["sdxl"], tmp_path, dataset, logging_dir=str(tmp_path / "tb")))
    result = run_trainer("sdxl", tmp_path, "--config_file", str(config))
    assert result.returncode == 0
    assert f"ignore subset with image_dir='{empty}': no images found" in result.stdout
    assert "0 train images with repeats." in result.stdout
    assert "No data found. Please verify arguments (train_data_dir must be the parent of folders with images)" \
        in result.stdout
    assert not (tmp_path / "out").exists() and not (tmp_path / "tb").exists()


@pytest.mark.slow
def test_unknown_optimizer_exits_1(tiny_bases, tiny_images, tmp_path):
    dataset = write_dataset_toml(tmp_path / "dataset.toml", tiny_images)
    config = write_training_toml(tmp_path / "args.toml", quick_sections(tiny_bases["sdxl"], tmp_path, dataset))
    result = run_trainer("sdxl", tmp_path, "--config_file", str(config), "--optimizer_type", "NoSuchOptimizer")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == "AttributeError: module 'torch.optim' has no attribute 'NoSuchOptimizer'"
    assert "Traceback (most recent call last)" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_constant_scheduler_with_warmup_exits_1(tiny_bases, tiny_images, tmp_path):
    dataset = write_dataset_toml(tmp_path / "dataset.toml", tiny_images)
    sections = quick_sections(tiny_bases["sdxl"], tmp_path, dataset, lr_scheduler="constant", lr_warmup_steps=5)
    config = write_training_toml(tmp_path / "args.toml", sections)
    result = run_trainer("sdxl", tmp_path, "--config_file", str(config))
    assert result.returncode == 1
    assert "ValueError: constant does not require `num_warmup_steps`. Set None or 0." in result.stderr


@pytest.mark.slow
def test_te_output_cache_requires_unet_only(tiny_bases, tiny_images, tmp_path):
    dataset = write_dataset_toml(tmp_path / "dataset.toml", tiny_images)
    sections = quick_sections(tiny_bases["sdxl"], tmp_path, dataset, cache_text_encoder_outputs=True)
    config = write_training_toml(tmp_path / "args.toml", sections)
    result = run_trainer("sdxl", tmp_path, "--config_file", str(config))
    assert result.returncode == 1
    assert "AssertionError: network for Text Encoder cannot be trained with caching Text Encoder outputs" in result.stderr


@pytest.mark.slow
def test_te_output_cache_to_disk(tiny_bases, tiny_images, tmp_path):
    import numpy as np

    dataset = write_dataset_toml(tmp_path / "dataset.toml", tiny_images)
    sections = quick_sections(tiny_bases["sdxl"], tmp_path, dataset, network_train_unet_only=True,
                              cache_text_encoder_outputs_to_disk=True, cache_latents_to_disk=True)
    config = write_training_toml(tmp_path / "args.toml", sections)
    result = run_trainer("sdxl", tmp_path, "--config_file", str(config))
    assert result.returncode == 0, result.stderr[-2000:]
    te_caches = sorted(tiny_images.glob("*_te_outputs.npz"))
    assert len(te_caches) == 16
    with np.load(te_caches[0]) as data:
        assert set(data.files) == {"hidden_state1", "hidden_state2", "pool2"}
    assert len(list(tiny_images.glob("*_0064x0064_sdxl.npz"))) == 16


@pytest.mark.slow
def test_sigint_interrupts_without_saving(tiny_bases, tiny_images, tmp_path):
    import threading

    dataset = write_dataset_toml(tmp_path / "dataset.toml", tiny_images)
    sections = quick_sections(tiny_bases["sdxl"], tmp_path, dataset, max_train_steps=100000)
    config = write_training_toml(tmp_path / "args.toml", sections)
    process = subprocess.Popen(trainer_command("sdxl", "--config_file", str(config)), cwd=tmp_path,
                               env=trainer_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    # A reader thread drains stderr and flags the steps bar: SIGINT goes out the moment the training loop
    # runs, however long a loaded machine takes to get there (the limits only end a stuck trainer).
    seen, in_loop = bytearray(), threading.Event()

    def read() -> None:
        for chunk in iter(lambda: os.read(process.stderr.fileno(), 65536), b""):
            seen.extend(chunk)
            if b"steps:" in seen:
                in_loop.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 900
        while not in_loop.wait(timeout=0.2):
            assert process.poll() is None and time.monotonic() < deadline, bytes(seen[-2000:])
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=600)
        reader.join(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == -signal.SIGINT, bytes(seen[-2000:])
    assert b"KeyboardInterrupt" in seen
    assert not (tmp_path / "out" / "x.safetensors").exists()


# ---------------------------------------------------------------------------------------------
# helpers (in-process, fast)
# ---------------------------------------------------------------------------------------------

def test_config_file_semantics(tmp_path):
    from kohya_runner.tiny.args import parse_args

    config = tmp_path / "cfg.toml"
    config.write_text('learning_rat = 1.0\nseed = 5\n[training]\nlearning_rate = 1.0e-4\nnetwork_dim = "8"\n'
                      '[again]\nlearning_rate = 3.0e-4\n')
    args = parse_args("sdxl", ["--config_file", str(tmp_path / "cfg"), "--seed", "9"])
    assert args.learning_rate == 3.0e-4  # sections flattened, the later one wins
    assert args.network_dim == "8"  # TOML values are not type-checked
    assert args.learning_rat == 1.0  # unknown keys are kept silently
    assert args.seed == 9  # the command line wins
    assert args.caption_extension == ".caption" and args.network_alpha == 1 and args.max_train_steps == 1600
    assert args.config_file == str(tmp_path / "cfg")


def test_int_or_float():
    import argparse

    from kohya_runner.tiny.args import int_or_float

    assert int_or_float("100") == 100 and int_or_float("0.1") == 0.1 and int_or_float("10%") == 0.1
    with pytest.raises(argparse.ArgumentTypeError):
        int_or_float("1.5")


def test_dataset_schema_messages():
    from kohya_runner.tiny.schema import MultipleInvalid, dataset_config_validator

    validate = dataset_config_validator(False)

    def message(config):
        with pytest.raises(MultipleInvalid) as info:
            validate(config, [])
        return str(info.value)

    subsets = [{"image_dir": "a"}]
    assert message({"datasets": [{"batch_size": 2.0, "subsets": subsets}]}) == \
        "expected int for dictionary value @ data['datasets'][0]['batch_size']"
    assert message({"datasets": [{"network_multiplier": 1, "subsets": subsets}]}) == \
        "expected float for dictionary value @ data['datasets'][0]['network_multiplier']"
    assert message({"datasets": [{"subsets": [{"num_repeats": 1}]}]}) == \
        "required key not provided @ data['datasets'][0]['subsets'][0]['image_dir']"
    assert message({"datasets": [{"prior_loss_weight": 1.0, "subsets": subsets}]}) == \
        "extra keys not allowed @ data['datasets'][0]['prior_loss_weight']"
    assert validate({"general": {"resolution": [64, 32]}, "datasets": [{"subsets": subsets}]}, [])["general"] == \
        {"resolution": (64, 32)}


def test_bucket_resolutions_and_choice():
    from kohya_runner.tiny.dataset import BucketManager, make_bucket_resolutions

    buckets = make_bucket_resolutions((512, 512), 256, 1024, 64)
    assert len(buckets) == 17 and (256, 1024) in buckets and (1024, 256) in buckets and (512, 512) in buckets
    manager = BucketManager(False, (512, 512), 256, 1024, 64)
    manager.make_buckets()
    reso, resized, _ = manager.select_bucket(1000, 600)
    assert reso == (640, 384) and resized == (640, 384)
    no_upscale = BucketManager(True, (512, 512), None, None, 64)
    assert no_upscale.select_bucket(300, 200)[0] == (256, 192)


def test_prompt_line_parsing(tmp_path):
    from kohya_runner.tiny.sampling import line_to_prompt_dict, load_prompts

    entry = line_to_prompt_dict("a cat, sitting --n ugly, blurry --W 100 --h 72 --d 5 --s 2000 --l 3.5 --ss euler_a")
    assert entry == {"prompt": "a cat, sitting", "negative_prompt": "ugly, blurry", "width": 100, "height": 72,
                     "seed": 5, "sample_steps": 1000, "scale": 3.5, "sample_sampler": "euler_a"}
    path = write_prompts(tmp_path / "p.txt")
    prompts = load_prompts(str(path))
    assert [p["enum"] for p in prompts] == [0, 1] and prompts[1]["negative_prompt"] == "blurry, low quality"
    toml_file = tmp_path / "p.toml"
    toml_file.write_text('[prompt]\nwidth = 64\n[[prompt.subset]]\nprompt = "a"\n[[prompt.subset]]\nprompt = "b"\n')
    assert [(p["prompt"], p["width"]) for p in load_prompts(str(toml_file))] == [("a", 64), ("b", 64)]


def test_lorafile_names_and_hashes(tmp_path):
    import torch
    from safetensors.torch import save, save_file

    from kohya_runner import lorafile

    assert lorafile.kohya_lora_name("down_blocks.1.attentions.1.transformer_blocks.0.attn2.to_k", "unet") == \
        "lora_unet_input_blocks_5_1_transformer_blocks_0_attn2_to_k"
    assert lorafile.kohya_lora_name("up_blocks.0.attentions.2.proj_out", "unet") == "lora_unet_output_blocks_2_1_proj_out"
    assert lorafile.kohya_lora_name("mid_block.attentions.0.proj_in", "unet") == "lora_unet_middle_block_1_proj_in"
    assert lorafile.kohya_lora_name("up_blocks.1.attentions.0.proj_in", "unet", "sd15") == \
        "lora_unet_up_blocks_1_attentions_0_proj_in"
    assert lorafile.kohya_lora_name("text_model.encoder.layers.0.mlp.fc1", "te2") == \
        "lora_te2_text_model_encoder_layers_0_mlp_fc1"
    paths = ["text_model.encoder.layers.1.self_attn.q_proj", "text_model.encoder.layers.1.mlp.fc2"]
    assert lorafile.kohya_name_map(paths, "te")["lora_te_text_model_encoder_layers_1_mlp_fc2"] == paths[1]

    # above 1 MiB the legacy hash depends on the ss_-only header length; both must match sd-scripts' way
    tensors = {f"lora_unet_m{i}.lora_down.weight": torch.randn(4, 160, dtype=torch.float16) for i in range(900)}
    tensors.update({f"lora_unet_m{i}.alpha": torch.tensor(1) for i in range(900)})
    metadata = {"ss_network_dim": "4", "ss_tags": "日本, x", "modelspec.title": "t" * 5000}
    expected = lorafile.hashes_from_serialized(save(tensors, {k: v for k, v in metadata.items() if k.startswith("ss_")}))
    save_file(tensors, tmp_path / "x.safetensors", metadata)
    assert lorafile.sshs_hashes(tmp_path / "x.safetensors") == expected
    assert expected[1] != "e3b0c442"


def test_lorafile_imports_without_torch():
    code = ("import sys, time; t = time.perf_counter(); import kohya_runner.lorafile; "
            "print(time.perf_counter() - t, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=trainer_env(), check=True)
    seconds, has_torch = out.stdout.split()
    assert has_torch == "False" and float(seconds) < 0.1


def test_demo_dataset_is_deterministic(tmp_path):
    from kohya_runner.tiny.styles import write_style_dataset

    first = write_style_dataset(tmp_path / "a", count=4, size=48, seed=3)
    second = write_style_dataset(tmp_path / "b", count=4, size=48, seed=3)
    names = sorted(p.name for p in first.iterdir())
    assert len([n for n in names if n.endswith(".png")]) == 4
    assert names == sorted(p.name for p in second.iterdir())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes()
    captions = [(first / n).read_text(encoding="utf-8") for n in names if n.endswith(".txt")]
    assert all(c.startswith("in the style of TOK, a") and c.endswith("\n") for c in captions), captions
    assert write_style_dataset(tmp_path / "a", count=4, size=48, seed=3) == first  # idempotent


def test_tiny_base_is_complete_and_reused(tiny_bases):
    from kohya_runner.tiny.base import build_tiny_base, read_marker

    base = tiny_bases["sdxl"]
    for part in ("model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
                 "text_encoder_2/config.json", "tokenizer/vocab.json", "tokenizer_2/tokenizer_config.json",
                 "scheduler/scheduler_config.json"):
        assert (base / part).is_file(), part
    assert json.loads((base / "vae" / "config.json").read_text())["scaling_factor"] == 0.13025
    assert read_marker(base)["family"] == "sdxl"
    before = (base / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert build_tiny_base(base, "sdxl", seed=0) == base  # built once
    assert (base / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == before
    assert not list(base.parent.glob(".*.tmp"))
