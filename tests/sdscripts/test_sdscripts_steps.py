"""sdscripts.steps and lora_size: step math, saves and rotation, samples, LoRA size, disk estimate."""

from __future__ import annotations

from kohya_runner.sdscripts.lora_size import lora_file_size
from kohya_runner.sdscripts.steps import TrainingPlan, step_math


def test_contract_example_20_images_10_repeats():
    steps = step_math([200], 2, TrainingPlan(max_train_epochs=10))
    assert (steps.items_per_epoch, steps.steps_per_epoch, steps.total_steps, steps.epochs) == (200, 100, 1000, 10)
    assert steps.files_kept == ("last.safetensors",)


def test_steps_only_gives_epochs_and_a_partial_last_epoch():
    steps = step_math([200], 2, TrainingPlan(max_train_steps=250))
    assert (steps.epochs, steps.last_epoch_steps, steps.steps_source) == (3, 50, "steps")
    assert step_math([200], 2, TrainingPlan()).total_steps == 1600  # sd-scripts' default


def test_processes_and_accumulation_divide_the_batches():
    steps = step_math([15, 9, 6], 2, TrainingPlan(max_train_epochs=1, num_processes=2, gradient_accumulation_steps=2))
    assert steps.batches_per_epoch == 16 and steps.steps_per_epoch == 4
    assert step_math([15], 2, TrainingPlan(max_train_epochs=1, num_processes=3)).steps_per_epoch == 3  # ceil(8 / 3)


def test_epoch_saves_skip_the_last_epoch_and_rotate():
    plan = TrainingPlan(max_train_epochs=10, save_every_n_epochs=2, save_last_n_epochs=2, output_name="mrk")
    steps = step_math([20], 2, plan)
    assert steps.files_written == tuple(f"mrk-{e:06d}.safetensors" for e in (2, 4, 6, 8)) + ("mrk.safetensors",)
    # at epoch 6, epoch 6 - 2*2 = 2 is removed; at epoch 8, epoch 4
    assert steps.files_kept == ("mrk-000006.safetensors", "mrk-000008.safetensors", "mrk.safetensors")
    assert steps.peak_files == 3


def test_step_saves_rotate_by_steps_not_files():
    # every 10 steps, save_last_n_steps=30: at step 50, 50-30-1 = 19 -> 10 is removed (sd-scripts' own example)
    plan = TrainingPlan(max_train_steps=50, save_every_n_steps=10, save_last_n_steps=30)
    steps = step_math([10], 1, plan)
    assert steps.files_kept == tuple(f"at-step{s:08d}.safetensors" for s in (20, 30, 40, 50)) + ("last.safetensors",)
    assert len(steps.files_written) == 6


def test_sample_rounds():
    epochs = step_math([20], 2, TrainingPlan(max_train_epochs=10, sample_every_n_epochs=2, sample_at_first=True, sample_prompts=3))
    assert (epochs.sample_rounds, epochs.sample_images) == (6, 18)
    by_steps = step_math([20], 2, TrainingPlan(max_train_steps=100, sample_every_n_steps=25, sample_prompts=2))
    assert (by_steps.sample_rounds, by_steps.sample_images) == (4, 8)
    both = TrainingPlan(max_train_epochs=4, sample_every_n_epochs=4, sample_every_n_steps=1, sample_prompts=1)
    assert step_math([20], 2, both).sample_rounds == 1  # epochs win; steps are ignored


def test_lora_sizes_match_the_measured_files():
    sdxl = lora_file_size("sdxl", 4, unet_only=True, save_precision="fp16")
    assert sdxl.tensors == 2166 and round(sdxl.bytes / 1e6, 1) == 21.6
    sd15 = lora_file_size("sd15", 4, unet_only=False, save_precision="fp16")
    assert sd15.tensors == 792 and round(sd15.bytes / 1e6, 1) == 4.8
    # SD1.5 by hand: U-Net 16 transformers, sum over C of (32C + 2*768) = 423,936; TE 12 x 13,824 = 165,888
    assert sd15.parameters == 4 * (423_936 + 165_888)
    assert lora_file_size("sd15", 32).parameters == 8 * sd15.parameters


def test_disk_estimate_counts_kept_files_and_samples():
    plan = TrainingPlan(max_train_epochs=4, save_every_n_epochs=1, family="sd15", sample_every_n_epochs=1, sample_prompts=2)
    steps = step_math([20], 2, plan)
    assert len(steps.files_kept) == 4
    assert steps.sample_bytes == 8 * 512 * 512 * 1.5
    assert steps.disk_bytes == 4 * steps.lora.bytes + steps.sample_bytes
