"""The safetensors header sd-scripts writes into a LoRA: `ss_*` training metadata (or the minimal
set with --no_metadata) and the SAI `modelspec.*` keys, all as strings."""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import time

MINIMUM_KEYS = ["ss_v2", "ss_base_model_version", "ss_network_module", "ss_network_dim", "ss_network_alpha",
                "ss_network_args"]

# No git checkout of sd-scripts here: the values sd-scripts itself falls back to.
COMMIT_HASH_FALLBACK = "(unknown)"
IMPLEMENTATION_VERSION_FALLBACK = "sd-scripts/unknown"


def training_metadata(args, *, session_id: int, started_at: float, model_version: str, text_encoder_lr,
                      dataset_group, num_batches_per_epoch: int, num_train_epochs: int, optimizer_name: str,
                      optimizer_args: str, net_kwargs: dict, use_user_config: bool, total_batch_size: int) -> dict:
    """Every ss_* key sd-scripts' train_network.py fills before training, already str()-ed."""
    metadata = {
        "ss_session_id": session_id,
        "ss_training_started_at": started_at,
        "ss_output_name": args.output_name,
        "ss_learning_rate": args.learning_rate,
        "ss_text_encoder_lr": text_encoder_lr,
        "ss_unet_lr": args.unet_lr,
        "ss_num_train_images": dataset_group.num_train_images,
        "ss_num_validation_images": 0,
        "ss_num_reg_images": dataset_group.num_reg_images,
        "ss_num_batches_per_epoch": num_batches_per_epoch,
        "ss_num_epochs": num_train_epochs,
        "ss_gradient_checkpointing": args.gradient_checkpointing,
        "ss_gradient_accumulation_steps": args.gradient_accumulation_steps,
        "ss_max_train_steps": args.max_train_steps,
        "ss_lr_warmup_steps": args.lr_warmup_steps,
        "ss_lr_scheduler": args.lr_scheduler,
        "ss_network_module": args.network_module,
        "ss_network_dim": args.network_dim,
        "ss_network_alpha": args.network_alpha,
        "ss_network_dropout": args.network_dropout,
        "ss_mixed_precision": args.mixed_precision,
        "ss_full_fp16": bool(args.full_fp16),
        "ss_v2": bool(args.v2),
        "ss_base_model_version": model_version,
        "ss_clip_skip": args.clip_skip,
        "ss_max_token_length": args.max_token_length,
        "ss_cache_latents": bool(args.cache_latents),
        "ss_seed": args.seed,
        "ss_lowram": args.lowram,
        "ss_noise_offset": args.noise_offset,
        "ss_multires_noise_iterations": args.multires_noise_iterations,
        "ss_multires_noise_discount": args.multires_noise_discount,
        "ss_adaptive_noise_scale": args.adaptive_noise_scale,
        "ss_zero_terminal_snr": args.zero_terminal_snr,
        "ss_training_comment": args.training_comment,
        "ss_sd_scripts_commit_hash": COMMIT_HASH_FALLBACK,
        "ss_optimizer": optimizer_name + (f"({optimizer_args})" if len(optimizer_args) > 0 else ""),
        "ss_max_grad_norm": args.max_grad_norm,
        "ss_caption_dropout_rate": args.caption_dropout_rate,
        "ss_caption_dropout_every_n_epochs": args.caption_dropout_every_n_epochs,
        "ss_caption_tag_dropout_rate": args.caption_tag_dropout_rate,
        "ss_face_crop_aug_range": args.face_crop_aug_range,
        "ss_prior_loss_weight": args.prior_loss_weight,
        "ss_min_snr_gamma": args.min_snr_gamma,
        "ss_scale_weight_norms": args.scale_weight_norms,
        "ss_ip_noise_gamma": args.ip_noise_gamma,
        "ss_debiased_estimation": bool(args.debiased_estimation_loss),
        "ss_noise_offset_random_strength": args.noise_offset_random_strength,
        "ss_ip_noise_gamma_random_strength": args.ip_noise_gamma_random_strength,
        "ss_loss_type": args.loss_type,
        "ss_huber_schedule": args.huber_schedule,
        "ss_huber_scale": args.huber_scale,
        "ss_huber_c": args.huber_c,
        "ss_fp8_base": bool(args.fp8_base),
        "ss_fp8_base_unet": bool(args.fp8_base_unet),
        "ss_validation_seed": args.validation_seed,
        "ss_validation_split": args.validation_split,
        "ss_max_validation_steps": args.max_validation_steps,
        "ss_validate_every_n_epochs": args.validate_every_n_epochs,
        "ss_validate_every_n_steps": args.validate_every_n_steps,
        "ss_resize_interpolation": args.resize_interpolation,
    }
    metadata.update(_dataset_metadata(args, dataset_group, use_user_config, total_batch_size))
    if args.network_args:
        metadata["ss_network_args"] = json.dumps(net_kwargs)
    metadata.update(_model_names(args))
    return {k: str(v) for k, v in metadata.items()}


def _dataset_metadata(args, group, use_user_config: bool, total_batch_size: int) -> dict:
    if use_user_config:
        datasets, tag_frequency, dirs = [], {}, {}
        for dataset in group.datasets:
            datasets.append(dataset.metadata())
            for subset in dataset.subsets:
                if subset.is_reg:
                    continue
                key = name = os.path.basename(subset.image_dir)
                index = 2
                while key in dirs:  # the same folder may appear in several datasets
                    key = f"{name} ({index})"
                    index += 1
                dirs[key] = {"n_repeats": subset.num_repeats, "img_count": subset.img_count}
            for dir_name, frequency in dataset.tag_frequency.items():
                tag_frequency.setdefault(dir_name, frequency)
        return {"ss_datasets": json.dumps(datasets), "ss_tag_frequency": json.dumps(tag_frequency),
                "ss_dataset_dirs": json.dumps(dirs)}

    dataset = group.datasets[0]
    dirs, reg_dirs = {}, {}
    for subset in dataset.subsets:
        target = reg_dirs if subset.is_reg else dirs
        target[os.path.basename(subset.image_dir)] = {"n_repeats": subset.num_repeats, "img_count": subset.img_count}
    return {
        "ss_batch_size_per_device": args.train_batch_size,
        "ss_total_batch_size": total_batch_size,
        "ss_resolution": args.resolution,
        "ss_color_aug": bool(args.color_aug),
        "ss_flip_aug": bool(args.flip_aug),
        "ss_random_crop": bool(args.random_crop),
        "ss_shuffle_caption": bool(args.shuffle_caption),
        "ss_enable_bucket": bool(dataset.enable_bucket),
        "ss_bucket_no_upscale": bool(dataset.bucket_no_upscale),
        "ss_min_bucket_reso": dataset.min_bucket_reso,
        "ss_max_bucket_reso": dataset.max_bucket_reso,
        "ss_keep_tokens": args.keep_tokens,
        "ss_dataset_dirs": json.dumps(dirs),
        "ss_reg_dataset_dirs": json.dumps(reg_dirs),
        "ss_tag_frequency": json.dumps(dataset.tag_frequency),
        "ss_bucket_info": json.dumps(dataset.bucket_info),
    }


def _model_names(args) -> dict:
    found = {}
    if args.pretrained_model_name_or_path is not None:
        name = args.pretrained_model_name_or_path
        if os.path.exists(name):
            found["ss_sd_model_hash"] = legacy_file_hash(name)
            found["ss_new_sd_model_hash"] = file_sha256(name)
            name = os.path.basename(name)
        found["ss_sd_model_name"] = name
    if args.vae is not None:
        name = args.vae
        if os.path.exists(name):
            found["ss_vae_hash"] = legacy_file_hash(name)
            found["ss_new_vae_hash"] = file_sha256(name)
            name = os.path.basename(name)
        found["ss_vae_name"] = name
    return found


def legacy_file_hash(path: str) -> str:
    """stable-diffusion-webui's old model hash (a Diffusers folder gives "IsADirectory", as in sd-scripts)."""
    try:
        with open(path, "rb") as handle:
            digest = hashlib.sha256()
            handle.seek(0x100000)
            digest.update(handle.read(0x10000))
            return digest.hexdigest()[0:8]
    except FileNotFoundError:
        return "NOFILE"
    except (IsADirectoryError, PermissionError):
        return "IsADirectory"


def file_sha256(path: str) -> str:
    try:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1024 * 1024), b""):
                digest.update(block)
        return digest.hexdigest()
    except FileNotFoundError:
        return "NOFILE"
    except (IsADirectoryError, PermissionError):
        return "IsADirectory"


def minimum_metadata(metadata: dict) -> dict:
    return {key: metadata[key] for key in MINIMUM_KEYS if key in metadata}


def modelspec(args, is_sdxl: bool) -> dict:
    """SAI model spec 1.0.1 keys for a LoRA (sd-scripts' get_sai_model_spec), plus every
    `metadata_*` argument (including unknown config-file keys) as `modelspec.<rest>`."""
    timestamp = time.time()
    if is_sdxl:
        architecture, implementation = "stable-diffusion-xl-v1-base", "https://github.com/Stability-AI/generative-models"
    elif args.v2:
        architecture = "stable-diffusion-v2-768-v" if args.v_parameterization else "stable-diffusion-v2-512"
        implementation = "diffusers"
    else:
        architecture, implementation = "stable-diffusion-v1", "diffusers"
    title = args.metadata_title if args.metadata_title is not None else args.output_name
    if title is None:
        title = f"LoRA@{timestamp}"
    spec = {
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": architecture + "/lora",
        "modelspec.implementation": implementation,
        "modelspec.title": title,
        "modelspec.resolution": _resolution(args, is_sdxl),
        "modelspec.date": datetime.datetime.fromtimestamp(int(timestamp)).isoformat(),
        "modelspec.prediction_type": "v" if args.v_parameterization else "epsilon",
    }
    for key, value in (("author", args.metadata_author), ("description", args.metadata_description),
                       ("license", args.metadata_license), ("tags", args.metadata_tags)):
        if value is not None:
            spec[f"modelspec.{key}"] = value
    if args.min_timestep is not None or args.max_timestep is not None:
        low = args.min_timestep if args.min_timestep is not None else 0
        high = args.max_timestep if args.max_timestep is not None else 1000
        spec["modelspec.timestep_range"] = f"{low},{high}"
    if args.clip_skip is not None:
        spec["modelspec.encoder_layer"] = f"{args.clip_skip}"
    extras = {"implementation_version": IMPLEMENTATION_VERSION_FALLBACK}
    for name in sorted(vars(args)):
        if name.startswith("metadata_") and name[len("metadata_"):] not in ("author", "description", "license", "tags"):
            value = getattr(args, name)
            if value is not None:
                extras[name[len("metadata_"):]] = value
    if "thumbnail" in extras:
        extras["thumbnail"] = _thumbnail(extras["thumbnail"])
        if extras["thumbnail"] is None:
            del extras["thumbnail"]
    for key, value in extras.items():
        spec[f"modelspec.{key}"] = value  # not str()-ed: a non-string fails the save, as in sd-scripts
    return spec


def _resolution(args, is_sdxl: bool) -> str:
    reso = args.resolution
    if reso is None:
        if is_sdxl:
            reso = (1024, 1024)
        elif args.v2 and args.v_parameterization:
            reso = (768, 768)
        else:
            reso = (512, 512)
    if isinstance(reso, str):
        reso = tuple(int(r) for r in reso.split(","))
    if isinstance(reso, int):
        reso = (reso, reso)
    if len(reso) == 1:
        reso = (reso[0], reso[0])
    return f"{reso[0]}x{reso[1]}"


def _thumbnail(value: str):
    import base64
    import mimetypes

    if value.startswith("data:"):
        return value
    if not os.path.exists(value):
        return None
    mime = mimetypes.guess_type(value)[0] or "application/octet-stream"
    with open(value, "rb") as handle:
        return f"data:{mime};base64,{base64.b64encode(handle.read()).decode('ascii')}"
