"""The tiny trainer's training run: sd-scripts' NetworkTrainer.train, step by step, on the tiny base.

Everything kr watches is the same as sd-scripts': the stdout lines (`running training / 学習開始`
block, `epoch e/E`, `saving checkpoint:`, `removing old checkpoint:`), logging (Rich on stderr or
bare on stdout with --console_log_simple, last line `model saved.`), the tqdm `steps` bar, the
output names and rotation, the LoRA keys and header, the TensorBoard folder and tags, the state
folders, the sample image names, and the exit codes (0 also for "No data found", 1 with a
traceback on errors, signals untouched). With a validation split it validates like sd-scripts: the
held-out images at 4 fixed timesteps with reseeded noise, every epoch (or --validate_every_n_epochs)
and every --validate_every_n_steps, logged as loss/validation/{epoch,step}_{average,divergence}.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import sys
import time

from kohya_runner.tiny import logs
from kohya_runner.tiny.args import non_default_options, parse_args
from kohya_runner.tiny.dataset import TE_OUTPUTS_SUFFIX, build_dataset_group
from kohya_runner.tiny.models import FAMILIES, limit_threads

logger = logging.getLogger(__name__)

NETWORK_MODULE = "networks.lora"
EPOCH_FILE_NAME, STEP_FILE_NAME = "{}-{:06d}", "{}-step{:08d}"
EPOCH_STATE_NAME, STEP_STATE_NAME, LAST_STATE_NAME = "{}-{:06d}-state", "{}-step{:08d}-state", "{}-state"

# Accepted (so configs written for sd-scripts run) but without effect in the tiny trainer.
NOT_HONOURED = [
    "sdpa", "xformers", "mem_eff_attn", "gradient_checkpointing", "cpu_offload_checkpointing", "fp8_base",
    "fp8_base_unet", "full_fp16", "lowram", "highvram", "torch_compile", "deepspeed", "zero_terminal_snr",
    "color_aug", "face_crop_aug_range", "alpha_mask", "masked_loss", "weighted_captions", "max_token_length",
    "network_dropout", "network_args", "scale_weight_norms", "base_weights", "base_weights_multiplier",
    "dim_from_weights", "tokenizer_cache_dir", "vae", "log_config", "log_tracker_config", "debug_dataset",
    "disable_mmap_load_safetensors",
    "huggingface_repo_id", "save_state_to_huggingface", "resume_from_huggingface", "async_upload", "wandb_run_name",
    "ddp_timeout", "ddp_gradient_as_bucket_view", "ddp_static_graph", "fused_backward_pass", "dataset_class",
]


def main(family: str, argv: list[str] | None = None) -> None:
    logs.setup_logging()
    limit_threads()
    args = parse_args(family, argv)
    train(args, family)


# ---------------------------------------------------------------------------------------------
# argument checks (sd-scripts' verify_training_args / prepare_dataset_args / SDXL checks)
# ---------------------------------------------------------------------------------------------

def verify_training_args(args, family) -> None:
    if args.v_parameterization and args.v_pred_like_loss:
        raise ValueError("v_pred_like_loss cannot be enabled with v_parameterization / v_pred_like_lossはv_parameterizationが有効なときには有効にできません")
    if args.scale_v_pred_loss_like_noise_pred and not args.v_parameterization:
        raise ValueError("scale_v_pred_loss_like_noise_pred can be enabled only with v_parameterization / scale_v_pred_loss_like_noise_predはv_parameterizationが有効なときのみ有効にできます")
    if args.adaptive_noise_scale is not None and args.noise_offset is None:
        raise ValueError("adaptive_noise_scale requires noise_offset / adaptive_noise_scaleを使用するにはnoise_offsetが必要です")
    if args.cache_latents_to_disk and not args.cache_latents:
        args.cache_latents = True
        logger.warning("cache_latents_to_disk is enabled, so cache_latents is also enabled / cache_latents_to_diskが有効なため、cache_latentsを有効にします")
    if args.zero_terminal_snr and not args.v_parameterization:
        logger.warning("zero_terminal_snr is enabled, but v_parameterization is not enabled. training will be unexpected / zero_terminal_snrが有効ですが、v_parameterizationが有効ではありません。学習結果は想定外になる可能性があります")
    if args.sample_every_n_epochs is not None and args.sample_every_n_epochs <= 0:
        logger.warning("sample_every_n_epochs is less than or equal to 0, so it will be disabled / sample_every_n_epochsに0以下の値が指定されたため無効になります")
        args.sample_every_n_epochs = None
    if args.sample_every_n_steps is not None and args.sample_every_n_steps <= 0:
        logger.warning("sample_every_n_steps is less than or equal to 0, so it will be disabled / sample_every_n_stepsに0以下の値が指定されたため無効になります")
        args.sample_every_n_steps = None
    if family.is_sdxl:
        _verify_sdxl_args(args)


def _verify_sdxl_args(args) -> None:
    assert not args.v2, "v2 cannot be enabled in SDXL training / SDXL学習ではv2を有効にすることはできません"
    if args.clip_skip is not None:
        logger.warning("clip_skip will be unexpected / SDXL学習ではclip_skipは動作しません")
    if args.cache_text_encoder_outputs_to_disk and not args.cache_text_encoder_outputs:
        logger.warning("cache_text_encoder_outputs_to_disk is enabled, so cache_text_encoder_outputs is also enabled / cache_text_encoder_outputs_to_diskが有効になっているため、cache_text_encoder_outputsも有効になります")
        args.cache_text_encoder_outputs = True


def prepare_dataset_args(args) -> None:
    if args.caption_extention is not None:  # the old misspelt option
        args.caption_extension = args.caption_extention
        args.caption_extention = None
    if args.resolution is not None:
        # a TOML int here fails like sd-scripts (AttributeError: 'int' object has no attribute 'split')
        args.resolution = tuple(int(r) for r in args.resolution.split(","))
        if len(args.resolution) == 1:
            args.resolution = (args.resolution[0], args.resolution[0])
        assert len(args.resolution) == 2, f"resolution must be 'size' or 'width,height' / resolution（解像度）は'サイズ'または'幅','高さ'で指定してください: {args.resolution}"
    if args.face_crop_aug_range is not None:
        args.face_crop_aug_range = tuple(float(r) for r in args.face_crop_aug_range.split(","))
        assert len(args.face_crop_aug_range) == 2 and args.face_crop_aug_range[0] <= args.face_crop_aug_range[1], \
            f"face_crop_aug_range must be two floats / face_crop_aug_rangeは'下限,上限'で指定してください: {args.face_crop_aug_range}"


def warn_not_honoured(args, family) -> None:
    names = non_default_options(args, family.name, NOT_HONOURED)
    flags = [f"--{name}" for name in names]
    if args.mixed_precision == "fp16":
        flags.append("--mixed_precision fp16 (trains in fp32 on CPU)")
    if flags:
        logger.warning("kohya_runner.tiny accepts but does not honour: " + ", ".join(flags))


def set_seed(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_mixed_precision(value) -> None:
    allowed = ["no", "fp8", "fp16", "bf16"]
    if value is not None and str(value) not in allowed:
        raise ValueError(f"Unknown mixed_precision mode: {value}. Choose between {allowed}")


def prepare_dtype(args):
    import torch

    weight = {"fp16": torch.float32, "bf16": torch.bfloat16}.get(args.mixed_precision, torch.float32)
    save = {"fp16": torch.float16, "bf16": torch.bfloat16, "float": torch.float32}.get(args.save_precision)
    return weight, save


# ---------------------------------------------------------------------------------------------
# the run
# ---------------------------------------------------------------------------------------------

class Run:
    """State shared by the steps of one training run."""

    def __init__(self, args, family_name: str):
        self.args = args
        self.family = FAMILIES[family_name]
        self.session_id = random.randint(0, 2**32)
        self.started_at = time.time()
        self.current_epoch = 0
        self.current_step = 0
        self.writer = None


def train(args, family_name: str) -> None:
    run = Run(args, family_name)
    family = run.family
    verify_training_args(args, family)
    prepare_dataset_args(args)
    logs.setup_logging(args, reset=True)
    warn_not_honoured(args, family)

    if args.seed is None:
        args.seed = random.randint(0, 2**32)
    set_seed(args.seed)

    group, val_group = build_dataset_group(args)
    run.val_group = val_group
    if len(group) == 0:
        logger.error("No data found. Please verify arguments (train_data_dir must be the parent of folders with images) / 画像がありません。引数指定を確認してください（train_data_dirには画像があるフォルダではなく、画像があるフォルダの親フォルダを指定する必要があります）")
        return
    if args.cache_latents:
        assert group.is_latent_cacheable(), "when caching latents, either color_aug or random_crop cannot be used / latentをキャッシュするときはcolor_augとrandom_cropは使えません"
        if val_group is not None:
            assert val_group.is_latent_cacheable(), "when caching latents, either color_aug or random_crop cannot be used / latentをキャッシュするときはcolor_augとrandom_cropは使えません"
    _assert_extra_args(args, group, family)
    if val_group is not None:
        _assert_extra_args(args, val_group, family)

    logger.info("preparing accelerator")
    run.logging_dir = _logging_dir(args)
    check_mixed_precision(args.mixed_precision)
    print("accelerator device:", "cpu")
    run.weight_dtype, run.save_dtype = prepare_dtype(args)

    import torch

    run.vae_dtype = torch.float32 if args.no_half_vae else run.weight_dtype
    from kohya_runner.tiny.models import load_models

    models = load_models(args, family)
    run.models = models
    for cached in [group] + ([val_group] if val_group is not None else []):
        if args.cache_latents:
            _cache_latents(run, cached)
        if family.is_sdxl and args.cache_text_encoder_outputs:
            _cache_text_encoder_outputs(run, cached)

    print("import network module:", args.network_module)
    _check_network_module(args.network_module)
    network = _create_network(run)
    run.network = network

    print("prepare optimizer, data loader etc.")
    _prepare_optimizer(run)
    num_batches = len(group)
    if args.max_train_epochs is not None:
        args.max_train_steps = args.max_train_epochs * math.ceil(num_batches / args.gradient_accumulation_steps)
        print(f"override steps. steps for {args.max_train_epochs} epochs is / 指定エポックまでのステップ数: {args.max_train_steps}")
    from kohya_runner.tiny.optim import get_scheduler_fix

    run.lr_scheduler = get_scheduler_fix(args, run.optimizer, 1)
    _set_training_dtypes(run)
    steps_from_state = _resume_if_requested(run)

    num_update_steps_per_epoch = math.ceil(num_batches / args.gradient_accumulation_steps)
    run.num_train_epochs = math.ceil(args.max_train_steps / num_update_steps_per_epoch)
    if args.save_n_epoch_ratio is not None and args.save_n_epoch_ratio > 0:
        args.save_every_n_epochs = math.floor(run.num_train_epochs / args.save_n_epoch_ratio) or 1
    _print_training_block(args, group, num_batches, run.num_train_epochs, val_group)
    _build_metadata(run, group, num_batches)
    run.metadata["ss_num_validation_images"] = str(val_group.num_train_images if val_group is not None else 0)

    initial_step, epoch_to_start = _initial_step(args, steps_from_state, num_batches)
    run.initial_step = initial_step
    run.epoch_to_start = epoch_to_start
    from kohya_runner.tiny.losses import noise_scheduler

    run.noise_scheduler = noise_scheduler(args)
    run.writer = _init_tracker(args, run.logging_dir)
    try:
        _training_loop(run, group)
    finally:
        if run.writer is not None:
            run.writer.close()


def _assert_extra_args(args, group, family) -> None:
    group.verify_bucket_reso_steps(family.bucket_steps_divisor)
    if not family.is_sdxl:
        return
    if args.cache_text_encoder_outputs:
        assert group.is_text_encoder_output_cacheable(), "when caching Text Encoder output, either caption_dropout_rate, shuffle_caption, token_warmup_step or caption_tag_dropout_rate cannot be used / Text Encoderの出力をキャッシュするときはcaption_dropout_rate, shuffle_caption, token_warmup_step, caption_tag_dropout_rateは使えません"
    assert args.network_train_unet_only or not args.cache_text_encoder_outputs, "network for Text Encoder cannot be trained with caching Text Encoder outputs / Text Encoderの出力をキャッシュしながらText Encoderのネットワークを学習することはできません"


def _logging_dir(args):
    if args.log_with in ("wandb", "all"):
        try:
            import wandb  # noqa: F401
        except ImportError:
            raise ImportError("No wandb / wandb がインストールされていないようです")
    if args.logging_dir is None:
        if args.log_with in ("tensorboard", "all"):
            raise ValueError("logging_dir is required when log_with is tensorboard / Tensorboardを使う場合、logging_dirを指定してください")
        return None
    prefix = "" if args.log_prefix is None else args.log_prefix
    return args.logging_dir + "/" + prefix + time.strftime("%Y%m%d%H%M%S", time.localtime())


def _check_network_module(name) -> None:
    if name == NETWORK_MODULE:
        return
    import importlib

    importlib.import_module(name)  # None or a missing module fails like sd-scripts
    raise NotImplementedError(f"kohya_runner.tiny implements only --network_module {NETWORK_MODULE}, not {name}")


def _create_network(run: Run):
    from kohya_runner.tiny.network import LoRANetwork, read_kohya_file

    args = run.args
    train_unet = not args.network_train_text_encoder_only
    train_text_encoder = not args.network_train_unet_only
    network = LoRANetwork(run.models, args.network_dim, args.network_alpha, train_unet=train_unet,
                          train_text_encoder=train_text_encoder)
    if args.network_weights is not None:
        info = network.load_kohya_state_dict(read_kohya_file(args.network_weights))
        print(f"load network weights from {args.network_weights}: {info}")
    return network


def _prepare_optimizer(run: Run) -> None:
    from kohya_runner.tiny.optim import get_optimizer

    args = run.args
    # backward compatibility: text_encoder_lr may be a float (TOML) or a list (CLI nargs="*")
    if args.text_encoder_lr is None or isinstance(args.text_encoder_lr, (float, int)):
        text_encoder_lr = args.text_encoder_lr
    else:
        text_encoder_lr = None if len(args.text_encoder_lr) == 0 else args.text_encoder_lr[0]
    run.text_encoder_lr = text_encoder_lr
    params, run.lr_descriptions = run.network.prepare_optimizer_params(text_encoder_lr, args.unet_lr,
                                                                        args.learning_rate)
    run.optimizer_name, run.optimizer_args, run.optimizer = get_optimizer(args, params)


def _set_training_dtypes(run: Run) -> None:
    import torch

    args = run.args
    if args.full_fp16:
        assert args.mixed_precision == "fp16", "full_fp16 requires mixed precision='fp16' / full_fp16を使う場合はmixed_precision='fp16'を指定してください。"
        print("enable full fp16 training.")
    elif args.full_bf16:
        assert args.mixed_precision == "bf16", "full_bf16 requires mixed precision='bf16' / full_bf16を使う場合はmixed_precision='bf16'を指定してください。"
        print("enable full bf16 training.")
        run.network.to(run.weight_dtype)
    if args.fp8_base or args.fp8_base_unet:
        assert args.mixed_precision != "no", "fp8_base requires mixed precision='fp16' or 'bf16' / fp8を使う場合はmixed_precision='fp16'または'bf16'が必要です。"
    # sd-scripts casts the U-Net (not the LoRA) to the training dtype; text encoders stay fp32 on CPU
    for name, param in run.models.unet.named_parameters():
        if "lora_" not in name:
            param.data = param.data.to(run.weight_dtype)
    _cast_parameters(run.models.vae, run.vae_dtype)
    run.autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if args.mixed_precision == "bf16" \
        else contextlib.nullcontext


def _cast_parameters(model, dtype) -> None:
    # parameter by parameter: diffusers' Module.to(dtype) warns about fp32-only modules on every call
    for param in model.parameters():
        param.data = param.data.to(dtype)


def _print_training_block(args, group, num_batches: int, num_train_epochs: int, val_group=None) -> None:
    print("running training / 学習開始")
    print(f"  num train images * repeats / 学習画像の数×繰り返し回数: {group.num_train_images}")
    print(f"  num validation images * repeats / 学習画像の数×繰り返し回数: {val_group.num_train_images if val_group is not None else 0}")
    print(f"  num reg images / 正則化画像の数: {group.num_reg_images}")
    print(f"  num batches per epoch / 1epochのバッチ数: {num_batches}")
    print(f"  num epochs / epoch数: {num_train_epochs}")
    print(f"  batch size per device / バッチサイズ: {', '.join(str(d.batch_size) for d in group.datasets)}")
    print(f"  gradient accumulation steps / 勾配を合計するステップ数 = {args.gradient_accumulation_steps}")
    print(f"  total optimization steps / 学習ステップ数: {args.max_train_steps}")


def _build_metadata(run: Run, group, num_batches: int) -> None:
    from kohya_runner.tiny import metadata

    args = run.args
    net_kwargs = {}
    for item in args.network_args or []:
        key, value = item.split("=", 1)
        net_kwargs[key] = value
    run.metadata = metadata.training_metadata(
        args, session_id=run.session_id, started_at=run.started_at, model_version=run.family.model_version(args),
        text_encoder_lr=run.text_encoder_lr, dataset_group=group, num_batches_per_epoch=num_batches,
        num_train_epochs=run.num_train_epochs, optimizer_name=run.optimizer_name, optimizer_args=run.optimizer_args,
        net_kwargs=net_kwargs, use_user_config=args.dataset_config is not None,
        total_batch_size=args.train_batch_size * args.gradient_accumulation_steps)
    run.minimum_metadata = metadata.minimum_metadata(run.metadata)


def _initial_step(args, steps_from_state, num_batches: int) -> tuple[int, int]:
    initial_step = 0
    if args.initial_epoch is not None or args.initial_step is not None:
        if steps_from_state is not None:
            logger.warning("steps from the state is ignored because initial_step is specified / initial_stepが指定されているため、stateからのステップ数は無視されます")
        if args.initial_step is not None:
            initial_step = args.initial_step
        else:
            initial_step = (args.initial_epoch - 1) * math.ceil(num_batches / args.gradient_accumulation_steps)
    elif steps_from_state is not None:
        initial_step = steps_from_state
    if initial_step > 0:
        assert args.max_train_steps > initial_step, f"max_train_steps should be greater than initial step / max_train_stepsは初期ステップより大きい必要があります: {args.max_train_steps} vs {initial_step}"
    epoch_to_start = 0
    if initial_step > 0:
        per_epoch = math.ceil(num_batches / args.gradient_accumulation_steps)
        if args.skip_until_initial_step:
            if not args.resume:
                logger.info("initial_step is specified but not resuming. lr scheduler will be started from the beginning / initial_stepが指定されていますがresumeしていないため、lr schedulerは最初から始まります")
            logger.info(f"skipping {initial_step} steps / {initial_step}ステップをスキップします")
            initial_step *= args.gradient_accumulation_steps
            epoch_to_start = initial_step // per_epoch
        else:
            epoch_to_start = initial_step // per_epoch
            initial_step = 0
    return initial_step, epoch_to_start


def _init_tracker(args, logging_dir):
    if logging_dir is None:
        return None
    from torch.utils.tensorboard import SummaryWriter

    name = "network_train" if args.log_tracker_name is None else args.log_tracker_name
    return SummaryWriter(os.path.join(logging_dir, name))


# ---------------------------------------------------------------------------------------------
# training loop
# ---------------------------------------------------------------------------------------------

def _training_loop(run: Run, group) -> None:
    import torch
    from tqdm import tqdm

    from kohya_runner.tiny.losses import LossRecorder
    from kohya_runner.tiny.sampling import sample_images

    args = run.args
    loss_recorder = LossRecorder()
    global_step = 0
    initial_step = run.initial_step
    num_batches = len(group)

    sample_images(args, run.models, 0, global_step, run.autocast)  # --sample_at_first

    if initial_step > 0:
        for skip_epoch in range(run.epoch_to_start):
            logger.info(f"skipping epoch {skip_epoch+1} because initial_step (multiplied) is {initial_step}")
            initial_step -= num_batches
        global_step = initial_step

    logger.info(f"unet dtype: {run.weight_dtype}, device: cpu")
    for i, encoder in enumerate(run.models.text_encoders):
        logger.info(f"text_encoder [{i}] dtype: {next(encoder.parameters()).dtype}, device: cpu")

    progress_bar = tqdm(range(args.max_train_steps - initial_step), smoothing=0, disable=False, desc="steps")
    validation = _Validation(run, loss_recorder)
    for epoch in range(run.epoch_to_start, run.num_train_epochs):
        print(f"\nepoch {epoch+1}/{run.num_train_epochs}\n")
        run.current_epoch = epoch + 1
        run.metadata["ss_epoch"] = str(epoch + 1)
        group.set_current_epoch(epoch + 1)
        order = torch.randperm(num_batches).tolist()  # the DataLoader's shuffle

        for step, index in enumerate(order):
            run.current_step = global_step
            if initial_step > 0:
                initial_step -= 1
                continue
            loss = _train_step(run, group, index, step, num_batches)
            if run.synced:
                progress_bar.update(1)
                global_step += 1
                sample_images(args, run.models, None, global_step, run.autocast)
                if args.save_every_n_steps is not None and global_step % args.save_every_n_steps == 0:
                    _save_step_checkpoint(run, global_step, epoch)

            current_loss = loss.detach().item()
            loss_recorder.add(epoch=epoch, step=step, loss=current_loss)
            average = loss_recorder.moving_average
            progress_bar.set_postfix(**{"avr_loss": average})
            if run.writer is not None:
                _log_scalars(run.writer, _step_logs(run, current_loss, average), global_step)
            # validation per step: global_step is already incremented (validate_every_n_steps=100: 100, 200, ...)
            if args.validate_every_n_steps is not None and global_step % args.validate_every_n_steps == 0:
                if run.synced and validation.steps > 0:
                    validation.run_step(epoch, global_step)
                    progress_bar.unpause()
            if global_step >= args.max_train_steps:
                break

        if args.validate_every_n_epochs is None or (epoch + 1) % args.validate_every_n_epochs == 0:
            if validation.batches > 0:
                validation.run_epoch(epoch, global_step)
                progress_bar.unpause()
        if run.writer is not None:
            _log_scalars(run.writer, {"loss/epoch_average": loss_recorder.moving_average}, epoch + 1)
        if args.save_every_n_epochs is not None:
            if (epoch + 1) % args.save_every_n_epochs == 0 and (epoch + 1) < run.num_train_epochs:
                _save_epoch_checkpoint(run, global_step, epoch + 1)
        sample_images(args, run.models, epoch + 1, global_step, run.autocast)

    run.metadata["ss_training_finished_at"] = str(time.time())
    progress_bar.close()
    if args.save_state or args.save_state_on_train_end:
        _save_state_on_train_end(run, global_step)
    _save_model(run, _ckpt_name(args, None, None), global_step, run.num_train_epochs)
    logger.info("model saved.")


NUM_VALIDATION_TIMESTEPS = 4  # sd-scripts: 200, 400, 600, 800 of 1000, not configurable


class _Validation:
    """sd-scripts' validation passes over the held-out images (train_network.py at the pin): the network
    unchanged, the Python and torch RNGs switched to validation_seed (else seed) and restored afterwards,
    each validation batch at NUM_VALIDATION_TIMESTEPS fixed timesteps spread over [min_timestep,
    max_timestep], the loss averaged by its own LossRecorder (moving over the latest pass) and logged with
    its divergence from the training loss/average."""

    def __init__(self, run: Run, loss_recorder):
        import numpy as np

        from kohya_runner.tiny.losses import LossRecorder

        self.run, self.train_recorder = run, loss_recorder
        args = run.args
        self.group = getattr(run, "val_group", None)
        self.batches = len(self.group) if self.group is not None else 0  # len(val_dataloader)
        self.steps = min(args.max_validation_steps, self.batches) if args.max_validation_steps is not None \
            else self.batches
        low = 0 if args.min_timestep is None else args.min_timestep
        high = run.noise_scheduler.config.num_train_timesteps if args.max_timestep is None else args.max_timestep
        self.timesteps = np.linspace(low, high, NUM_VALIDATION_TIMESTEPS + 2, dtype=int)[1:-1]
        self.step_recorder, self.epoch_recorder = LossRecorder(), LossRecorder()

    def run_step(self, epoch: int, global_step: int) -> None:
        self._log("step", self._pass(self.step_recorder, epoch, "validation steps", "val_avg_loss"), global_step)

    def run_epoch(self, epoch: int, global_step: int) -> None:
        self._log("epoch", self._pass(self.epoch_recorder, epoch, "epoch validation steps", "val_epoch_avg_loss"),
                  epoch + 1)

    def _log(self, scope: str, average: float, x: int) -> None:
        """loss/validation/{step|epoch}_{average|divergence}, as sd-scripts logs them."""
        if self.run.writer is not None:
            _log_scalars(self.run.writer, {
                f"loss/validation/{scope}_average": average,
                f"loss/validation/{scope}_divergence": average - self.train_recorder.moving_average,
            }, x)

    def _pass(self, recorder, epoch: int, desc: str, postfix: str) -> float:
        import torch
        from tqdm import tqdm

        run, args = self.run, self.run.args
        states = (torch.get_rng_state(), random.getstate())
        seed = args.validation_seed if args.validation_seed is not None else args.seed
        torch.manual_seed(seed)
        random.seed(seed)
        original = (args.min_timestep, args.max_timestep)
        self.group.set_current_epoch(run.current_epoch)  # as the data loader's collator does
        bar = tqdm(range(self.steps * len(self.timesteps)), smoothing=0, disable=False, desc=desc)
        try:
            val_timesteps_step = 0
            for val_step in range(self.batches):  # the validation data loader does not shuffle
                if val_step >= self.steps:
                    break
                dataset, local_index = self.group.locate(val_step)
                batch = dataset.load_batch(local_index, run.current_step, args.max_train_steps)
                for timestep in self.timesteps:
                    args.min_timestep = args.max_timestep = int(timestep)  # sd-scripts' "dirty hack"
                    with torch.no_grad():
                        loss = _process_batch(run, batch, is_train=False)
                    recorder.add(epoch=epoch, step=val_timesteps_step, loss=loss.detach().item())
                    bar.update(1)
                    bar.set_postfix({postfix: recorder.moving_average, "timestep": int(timestep)})
                    val_timesteps_step += 1
        finally:
            torch.set_rng_state(states[0])
            random.setstate(states[1])
            args.min_timestep, args.max_timestep = original
            bar.close()
        return recorder.moving_average


def _train_step(run: Run, group, index: int, step: int, num_batches: int):
    """One micro-batch: forward, backward, and (every GA micro-batches) an optimizer step."""
    import torch

    args, network = run.args, run.network
    dataset, local_index = group.locate(index)
    batch = dataset.load_batch(local_index, run.current_step, args.max_train_steps)
    if batch["network_multiplier"] != getattr(run, "multiplier", 1.0):
        network.set_multiplier(batch["network_multiplier"])
        run.multiplier = batch["network_multiplier"]

    loss = _process_batch(run, batch)
    (loss / args.gradient_accumulation_steps).backward()
    run.synced = (step + 1) % args.gradient_accumulation_steps == 0 or step + 1 == num_batches
    if run.synced:
        if args.max_grad_norm != 0.0:
            torch.nn.utils.clip_grad_norm_(list(network.parameters()), args.max_grad_norm)
        run.optimizer.step()
        run.lr_scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
    return loss


def _process_batch(run: Run, batch: dict, is_train: bool = True):
    import torch

    from kohya_runner.tiny.losses import conditional_loss, noise_noisy_latents_and_timesteps, post_process_loss

    args, models = run.args, run.models
    with torch.no_grad():
        if batch["latents"] is not None:
            latents = torch.stack(batch["latents"]).float()
        else:
            images = _images_to_tensor(batch["images"]).to(run.vae_dtype)
            with run.autocast():
                latents = models.encode_images(images).float()
            if torch.any(torch.isnan(latents)):
                print("NaN found in latents, replacing with zeros")
                latents = torch.nan_to_num(latents, 0, out=latents)
        latents = latents * models.family.vae_scale_factor

    train_text_encoder = not args.network_train_unet_only
    if batch["te_outputs"] is not None:
        context = torch.stack([torch.cat([h1, h2], dim=-1) for h1, h2, _ in batch["te_outputs"]])
        pooled = torch.stack([p for _, _, p in batch["te_outputs"]])
    else:
        with torch.set_grad_enabled(is_train and train_text_encoder), run.autocast():
            context, pooled = models.encode_text(models.tokenize(batch["captions"]), args.clip_skip)

    noise, noisy, timesteps, huber_c = noise_noisy_latents_and_timesteps(args, run.noise_scheduler, latents)
    size_conds = (batch["original_sizes_hw"], batch["crop_top_lefts"], batch["target_sizes_hw"])
    with run.autocast():
        prediction = models.predict_noise(noisy, timesteps, context, pooled, size_conds)
    if args.v_parameterization:
        target = run.noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    loss = conditional_loss(prediction.float(), target.float(), args.loss_type, huber_c)
    loss = loss.mean(dim=list(range(1, loss.ndim)))
    loss = loss * torch.tensor(batch["loss_weights"], dtype=torch.float32)
    loss = post_process_loss(loss, args, timesteps, run.noise_scheduler)
    return loss.mean()


def _images_to_tensor(images):
    """HWC uint8 arrays -> NCHW float in [-1, 1] (ToTensor + Normalize(0.5, 0.5))."""
    import numpy as np
    import torch

    array = np.stack([np.ascontiguousarray(image[:, :, :3]) for image in images]).astype(np.float32) / 255.0
    return torch.from_numpy(array).permute(0, 3, 1, 2) * 2.0 - 1.0


def _step_logs(run: Run, current_loss: float, average: float) -> dict:
    args = run.args
    logs_ = {"loss/current": current_loss, "loss/average": average}
    lrs = run.lr_scheduler.get_last_lr()
    adaptive = args.optimizer_type.lower().startswith("dadapt") or args.optimizer_type.lower() == "prodigy"
    for i, lr in enumerate(lrs):
        description = run.lr_descriptions[i]
        logs_[f"lr/{description}"] = lr
        if adaptive:
            group = run.optimizer.param_groups[i]
            logs_[f"lr/d*lr/{description}"] = group["d"] * group["lr"]
    # sd-scripts' for...else always adds these too (the lr/textencoder + lr/group<i> quirk)
    first = 0
    if not args.network_train_unet_only:
        logs_["lr/textencoder"] = float(lrs[0])
        first = 1
    for i in range(first, len(lrs)):
        logs_[f"lr/group{i}"] = float(lrs[i])
        if adaptive:
            group = run.optimizer.param_groups[i]
            logs_[f"lr/d*lr/group{i}"] = group["d"] * group["lr"]
    return logs_


def _log_scalars(writer, values: dict, step: int) -> None:
    for tag, value in values.items():
        writer.add_scalar(tag, value, global_step=step)
    writer.flush()  # sd-scripts' tracker flushes after every log call, so the file can be tailed


# ---------------------------------------------------------------------------------------------
# checkpoints and states
# ---------------------------------------------------------------------------------------------

def _ckpt_name(args, epoch_no, step_no) -> str:
    ext = "." + args.save_model_as
    if epoch_no is not None:
        return EPOCH_FILE_NAME.format(args.output_name if args.output_name is not None else "epoch", epoch_no) + ext
    if step_no is not None:
        return STEP_FILE_NAME.format(args.output_name if args.output_name is not None else "at", step_no) + ext
    return (args.output_name if args.output_name is not None else "last") + ext


def _save_model(run: Run, ckpt_name: str, steps: int, epoch_no: int) -> None:
    from kohya_runner.tiny import metadata as metadata_module

    args = run.args
    os.makedirs(args.output_dir, exist_ok=True)
    ckpt_file = os.path.join(args.output_dir, ckpt_name)
    print(f"\nsaving checkpoint: {ckpt_file}")
    run.metadata["ss_training_finished_at"] = str(time.time())
    run.metadata["ss_steps"] = str(steps)
    run.metadata["ss_epoch"] = str(epoch_no)
    to_save = run.minimum_metadata if args.no_metadata else run.metadata
    to_save.update(metadata_module.modelspec(args, run.family.is_sdxl))
    run.network.save_weights(ckpt_file, run.save_dtype, to_save)


def _remove_model(run: Run, old_name: str) -> None:
    old_file = os.path.join(run.args.output_dir, old_name)
    if os.path.exists(old_file):
        print(f"removing old checkpoint: {old_file}")
        os.remove(old_file)


def _save_step_checkpoint(run: Run, global_step: int, epoch: int) -> None:
    args = run.args
    _save_model(run, _ckpt_name(args, None, global_step), global_step, epoch)
    if args.save_state:
        _save_state_stepwise(run, global_step)
    if args.save_last_n_steps is not None:
        remove = global_step - args.save_last_n_steps - 1
        remove = remove - (remove % args.save_every_n_steps)
        if remove >= 0:
            _remove_model(run, _ckpt_name(args, None, remove))


def _save_epoch_checkpoint(run: Run, global_step: int, epoch_no: int) -> None:
    args = run.args
    _save_model(run, _ckpt_name(args, epoch_no, None), global_step, epoch_no)
    if args.save_last_n_epochs is not None:
        remove = epoch_no - args.save_every_n_epochs * args.save_last_n_epochs
        if remove >= 0:
            _remove_model(run, _ckpt_name(args, remove, None))
    if args.save_state:
        _save_state_on_epoch_end(run, epoch_no)


def _state_model_name(args, default: str) -> str:
    return args.output_name if args.output_name is not None else default


def _save_state_on_epoch_end(run: Run, epoch_no: int) -> None:
    args = run.args
    name = _state_model_name(args, "epoch")
    logger.info("")
    logger.info(f"saving state at epoch {epoch_no}")
    os.makedirs(args.output_dir, exist_ok=True)
    _save_state(run, os.path.join(args.output_dir, EPOCH_STATE_NAME.format(name, epoch_no)))
    last_n = args.save_last_n_epochs_state if args.save_last_n_epochs_state else args.save_last_n_epochs
    if last_n is not None:
        old = os.path.join(args.output_dir, EPOCH_STATE_NAME.format(name, epoch_no - args.save_every_n_epochs * last_n))
        if os.path.exists(old):
            logger.info(f"removing old state: {old}")
            shutil.rmtree(old)


def _save_state_stepwise(run: Run, step_no: int) -> None:
    args = run.args
    name = _state_model_name(args, "at")
    logger.info("")
    logger.info(f"saving state at step {step_no}")
    os.makedirs(args.output_dir, exist_ok=True)
    _save_state(run, os.path.join(args.output_dir, STEP_STATE_NAME.format(name, step_no)))
    last_n = args.save_last_n_steps_state if args.save_last_n_steps_state else args.save_last_n_steps
    if last_n is not None:
        remove = step_no - last_n - 1
        remove = remove - (remove % args.save_every_n_steps)
        if remove > 0:
            old = os.path.join(args.output_dir, STEP_STATE_NAME.format(name, remove))
            if os.path.exists(old):
                logger.info(f"removing old state: {old}")
                shutil.rmtree(old)


def _save_state_on_train_end(run: Run, global_step: int) -> None:
    args = run.args
    logger.info("")
    logger.info("saving last state.")
    os.makedirs(args.output_dir, exist_ok=True)
    _save_state(run, os.path.join(args.output_dir, LAST_STATE_NAME.format(_state_model_name(args, "last"))))


def _save_state(run: Run, state_dir: str) -> None:
    """An accelerate-style state folder: network weights, optimizer, scheduler, RNG, train_state.json.
    Written next to its final place and renamed in, so an interrupted save leaves no half folder."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    tmp = f"{state_dir}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    save_file(run.network.kohya_state_dict(), os.path.join(tmp, "model.safetensors"))
    torch.save(run.optimizer.state_dict(), os.path.join(tmp, "optimizer.bin"))
    torch.save(run.lr_scheduler.state_dict(), os.path.join(tmp, "scheduler.bin"))
    torch.save({"step": run.current_step, "random_state": random.getstate(),
                "numpy_random_seed": np.random.get_state(), "torch_manual_seed": torch.get_rng_state()},
               os.path.join(tmp, "random_states_0.pkl"))
    train_state_file = os.path.join(state_dir, "train_state.json")
    logger.info(f"save train state to {train_state_file} at epoch {run.current_epoch} step {run.current_step + 1}")
    with open(os.path.join(tmp, "train_state.json"), "w", encoding="utf-8") as handle:
        json.dump({"current_epoch": run.current_epoch, "current_step": run.current_step + 1}, handle)
    if os.path.exists(state_dir):
        shutil.rmtree(state_dir)
    os.rename(tmp, state_dir)


def _resume_if_requested(run: Run):
    """--resume: restore network, optimizer, scheduler and RNG; return the saved step (or None)."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    args = run.args
    if not args.resume:
        return None
    logger.info(f"resume training from local state: {args.resume}")
    run.network.load_kohya_state_dict(load_file(os.path.join(args.resume, "model.safetensors")))
    run.optimizer.load_state_dict(torch.load(os.path.join(args.resume, "optimizer.bin"), weights_only=False))
    run.lr_scheduler.load_state_dict(torch.load(os.path.join(args.resume, "scheduler.bin"), weights_only=False))
    states = torch.load(os.path.join(args.resume, "random_states_0.pkl"), weights_only=False)
    random.setstate(states["random_state"])
    np.random.set_state(states["numpy_random_seed"])
    torch.set_rng_state(states["torch_manual_seed"])
    train_state_file = os.path.join(args.resume, "train_state.json")
    if not os.path.exists(train_state_file):
        return None
    with open(train_state_file, "r", encoding="utf-8") as handle:
        data = json.load(handle)
    logger.info(f"load train state from {train_state_file}: {data}")
    return data["current_step"]


# ---------------------------------------------------------------------------------------------
# caches
# ---------------------------------------------------------------------------------------------

def _latent_cache_path(info, suffix: str) -> str:
    width, height = info.image_size
    return os.path.splitext(info.path)[0] + f"_{width:04d}x{height:04d}" + suffix


def _cache_latents(run: Run, group) -> None:
    import numpy as np
    import torch
    from tqdm import tqdm

    args, models = run.args, run.models
    logger.info("caching latents with caching strategy.")
    logger.info("caching latents...")
    _cast_parameters(models.vae, run.vae_dtype)
    infos = list(group.image_infos())
    for dataset, info in tqdm(infos):
        subset = dataset.image_to_subset[info.key]
        needed = ["latents", "original_size", "crop_ltrb"] + (["latents_flipped"] if subset.flip_aug else [])
        npz_path = _latent_cache_path(info, run.family.latent_cache_suffix) if args.cache_latents_to_disk else None
        if npz_path and os.path.exists(npz_path) and (args.skip_cache_check or _npz_has(npz_path, needed)):
            with np.load(npz_path) as data:
                info.latents = torch.from_numpy(data["latents"])
                info.latents_flipped = torch.from_numpy(data["latents_flipped"]) if subset.flip_aug else None
                info.latents_original_size = tuple(int(v) for v in data["original_size"])
                info.latents_crop_ltrb = tuple(data["crop_ltrb"].tolist())
            continue
        image, original_size, crop_ltrb = dataset.image_for_caching(info)
        batch = [image] + ([image[:, ::-1, :].copy()] if subset.flip_aug else [])
        with torch.no_grad():
            latents = models.encode_images(_images_to_tensor(batch).to(run.vae_dtype)).float()
        if torch.any(torch.isnan(latents)):
            print("NaN found in latents, replacing with zeros")
            latents = torch.nan_to_num(latents, 0)
        info.latents = latents[0]
        info.latents_flipped = latents[1] if subset.flip_aug else None
        info.latents_original_size, info.latents_crop_ltrb = tuple(original_size), tuple(crop_ltrb)
        if npz_path:
            extra = {"latents_flipped": latents[1].numpy()} if subset.flip_aug else {}
            _savez_atomic(npz_path, latents=latents[0].numpy(), original_size=np.array(original_size),
                          crop_ltrb=np.array(crop_ltrb), **extra)


def _cache_text_encoder_outputs(run: Run, group) -> None:
    import numpy as np
    import torch
    from tqdm import tqdm

    from kohya_runner.tiny.dataset import process_caption

    args, models = run.args, run.models
    logger.info("caching Text Encoder outputs...")
    needed = ["hidden_state1", "hidden_state2", "pool2"]
    for dataset, info in tqdm(list(group.image_infos())):
        npz_path = os.path.splitext(info.path)[0] + TE_OUTPUTS_SUFFIX if args.cache_text_encoder_outputs_to_disk else None
        if npz_path and os.path.exists(npz_path) and (args.skip_cache_check or _npz_has(npz_path, needed)):
            with np.load(npz_path) as data:
                info.te_outputs = tuple(torch.from_numpy(data[k]) for k in needed)
            continue
        subset = dataset.image_to_subset[info.key]
        caption = process_caption(subset, info.caption, 0, 0, args.max_train_steps)
        with torch.no_grad():
            context, pooled = models.encode_text(models.tokenize([caption]))
        width1 = models.text_encoders[0].config.hidden_size  # context = [TE1 | TE2] hidden states
        info.te_outputs = (context[0, :, :width1].float(), context[0, :, width1:].float(), pooled[0].float())
        if npz_path:
            _savez_atomic(npz_path, hidden_state1=info.te_outputs[0].numpy(),
                          hidden_state2=info.te_outputs[1].numpy(), pool2=info.te_outputs[2].numpy())


def _npz_has(path: str, keys: list[str]) -> bool:
    import numpy as np

    try:
        with np.load(path) as data:
            return all(key in data for key in keys)
    except Exception:
        logger.error(f"Error loading file: {path}")
        raise


def _savez_atomic(path: str, **arrays) -> None:
    import numpy as np

    tmp = f"{path}.tmp-{os.getpid()}.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


if __name__ == "__main__":  # pragma: no cover - use `python -m kohya_runner.tiny`
    main("sdxl", sys.argv[1:])
