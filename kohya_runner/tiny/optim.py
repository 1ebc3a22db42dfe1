"""Optimizer and learning-rate scheduler selection, following sd-scripts' get_optimizer and
get_scheduler_fix (library/train_util.py): the same names, argument parsing, log lines and
failures (a name without a dot is looked up in torch.optim, so an unknown one ends in
`AttributeError: module 'torch.optim' has no attribute 'X'`)."""

from __future__ import annotations

import ast
import importlib
import logging

logger = logging.getLogger(__name__)


def parse_kwargs(items) -> dict:
    """`key=value` items; values through ast.literal_eval (strings need quotes)."""
    kwargs = {}
    for item in items or []:
        key, value = item.split("=")
        kwargs[key] = ast.literal_eval(value)
    return kwargs


def get_optimizer(args, trainable_params):
    """(optimizer name for ss_optimizer, "k=v,..." args string, optimizer)."""
    import torch

    optimizer_type = args.optimizer_type
    if args.use_8bit_adam:
        assert not args.use_lion_optimizer, "both option use_8bit_adam and use_lion_optimizer are specified / use_8bit_adamとuse_lion_optimizerの両方のオプションが指定されています"
        assert optimizer_type is None or optimizer_type == "", "both option use_8bit_adam and optimizer_type are specified / use_8bit_adamとoptimizer_typeの両方のオプションが指定されています"
        optimizer_type = "AdamW8bit"
    elif args.use_lion_optimizer:
        assert optimizer_type is None or optimizer_type == "", "both option use_lion_optimizer and optimizer_type are specified / use_lion_optimizerとoptimizer_typeの両方のオプションが指定されています"
        optimizer_type = "Lion"
    if optimizer_type is None or optimizer_type == "":
        optimizer_type = "AdamW"
    lowered = optimizer_type.lower()

    if args.fused_backward_pass:
        assert lowered == "adafactor", "fused_backward_pass currently only works with optimizer_type Adafactor / fused_backward_passは現在optimizer_type Adafactorでのみ機能します"
        assert args.gradient_accumulation_steps == 1, "fused_backward_pass does not work with gradient_accumulation_steps > 1 / fused_backward_passはgradient_accumulation_steps>1では機能しません"

    kwargs = parse_kwargs(args.optimizer_args)
    lr = args.learning_rate
    optimizer_class = None
    extra: dict = {}

    if lowered == "lion":
        module = _require("lion_pytorch", "No lion_pytorch / lion_pytorch がインストールされていないようです")
        logger.info(f"use Lion optimizer | {kwargs}")
        optimizer_class = module.Lion
    elif lowered.endswith("8bit") or lowered in ("pagedadamw", "pagedadamw32bit"):
        optimizer_class = _bitsandbytes_class(lowered, kwargs)
        if lowered == "sgdnesterov8bit":
            extra["nesterov"] = True
    elif lowered == "sgdnesterov":
        logger.info(f"use SGD with Nesterov optimizer | {kwargs}")
        if "momentum" not in kwargs:
            logger.info("SGD with Nesterov must be with momentum, set momentum to 0.9 / SGD with Nesterovはmomentum指定が必須のため0.9に設定します")
            kwargs["momentum"] = 0.9
        optimizer_class = torch.optim.SGD
        extra["nesterov"] = True
    elif lowered.startswith("dadapt") or lowered == "prodigy":
        optimizer_class = _adaptive_class(lowered, kwargs, lr, trainable_params)
    elif lowered == "adafactor":
        optimizer_class, lr = _adafactor(args, kwargs, lr, trainable_params)
    elif lowered == "adamw":
        logger.info(f"use AdamW optimizer | {kwargs}")
        optimizer_class = torch.optim.AdamW
    elif lowered.endswith("schedulefree") and "." not in optimizer_type:
        _require("schedulefree", "No schedulefree / schedulefree がインストールされていないようです")
        raise NotImplementedError(f"kohya_runner.tiny does not implement schedule-free optimizers: {optimizer_type}")

    if optimizer_class is None:
        # any other optimizer: a torch.optim name, or module.path.ClassName
        logger.info(f"use {optimizer_type} | {kwargs}")
        if "." not in optimizer_type:
            module = torch.optim
            class_name = optimizer_type
        else:
            parts = optimizer_type.split(".")
            module = importlib.import_module(".".join(parts[:-1]))
            class_name = parts[-1]
        optimizer_class = getattr(module, class_name)

    optimizer = optimizer_class(trainable_params, lr=lr, **extra, **kwargs)
    name = optimizer_class.__module__ + "." + optimizer_class.__name__
    arg_text = ",".join(f"{k}={v}" for k, v in kwargs.items())
    return name, arg_text, optimizer


def _require(module_name: str, message: str):
    try:
        return importlib.import_module(module_name)
    except ImportError:
        raise ImportError(message)


def _bitsandbytes_class(lowered: str, kwargs: dict):
    bnb = _require("bitsandbytes", "No bitsandbytes / bitsandbytesがインストールされていないようです")
    names = {"adamw8bit": ("AdamW8bit", "8-bit AdamW"), "sgdnesterov8bit": ("SGD8bit", "8-bit SGD with Nesterov"),
             "lion8bit": ("Lion8bit", "8-bit Lion"), "pagedadamw8bit": ("PagedAdamW8bit", "8-bit PagedAdamW"),
             "pagedlion8bit": ("PagedLion8bit", "8-bit Paged Lion"), "pagedadamw": ("PagedAdamW", "PagedAdamW"),
             "pagedadamw32bit": ("PagedAdamW32bit", "32-bit PagedAdamW")}
    if lowered not in names:
        return None
    class_name, label = names[lowered]
    logger.info(f"use {label} optimizer | {kwargs}")
    if lowered == "sgdnesterov8bit" and "momentum" not in kwargs:
        logger.warning("8-bit SGD with Nesterov must be with momentum, set momentum to 0.9 / 8-bit SGD with Nesterovはmomentum指定が必須のため0.9に設定します")
        kwargs["momentum"] = 0.9
    return getattr(bnb.optim, class_name)


def _adaptive_class(lowered: str, kwargs: dict, lr, trainable_params):
    actual_lr = lr
    lr_count = 1
    if isinstance(trainable_params, list) and trainable_params and isinstance(trainable_params[0], dict):
        actual_lr = trainable_params[0].get("lr", actual_lr)
        lr_count = len({group.get("lr", actual_lr) for group in trainable_params})
    if actual_lr <= 0.1:
        logger.warning(f"learning rate is too low. If using D-Adaptation or Prodigy, set learning rate around 1.0 / 学習率が低すぎるようです。D-AdaptationまたはProdigyの使用時は1.0前後の値を指定してください: lr={actual_lr}")
        logger.warning("recommend option: lr=1.0 / 推奨は1.0です")
    if lr_count > 1:
        logger.warning(f"when multiple learning rates are specified with dadaptation (e.g. for Text Encoder and U-Net), only the first one will take effect / D-AdaptationまたはProdigyで複数の学習率を指定した場合（Text EncoderとU-Netなど）、最初の学習率のみが有効になります: lr={actual_lr}")
    if lowered == "prodigy":
        module = _require("prodigyopt", "No Prodigy / Prodigy がインストールされていないようです")
        logger.info(f"use Prodigy optimizer | {kwargs}")
        return module.Prodigy
    dadaptation = _require("dadaptation", "No dadaptation / dadaptation がインストールされていないようです")
    experimental = importlib.import_module("dadaptation.experimental")
    classes = {"dadaptation": (experimental, "DAdaptAdamPreprint"), "dadaptadampreprint": (experimental, "DAdaptAdamPreprint"),
               "dadaptadagrad": (dadaptation, "DAdaptAdaGrad"), "dadaptadam": (dadaptation, "DAdaptAdam"),
               "dadaptadan": (dadaptation, "DAdaptAdan"), "dadaptadanip": (experimental, "DAdaptAdanIP"),
               "dadaptlion": (dadaptation, "DAdaptLion"), "dadaptsgd": (dadaptation, "DAdaptSGD")}
    if lowered not in classes:
        raise ValueError(f"Unknown optimizer type: {lowered}")
    module, class_name = classes[lowered]
    logger.info(f"use D-Adaptation {class_name[len('DAdapt'):]} optimizer | {kwargs}")
    return getattr(module, class_name)


def _adafactor(args, kwargs: dict, lr, trainable_params):
    import transformers.optimization

    kwargs.setdefault("relative_step", True)
    if not kwargs["relative_step"] and kwargs.get("warmup_init", False):
        logger.info("set relative_step to True because warmup_init is True / warmup_initがTrueのためrelative_stepをTrueにします")
        kwargs["relative_step"] = True
    logger.info(f"use Adafactor optimizer | {kwargs}")
    if kwargs["relative_step"]:
        logger.info("relative_step is true / relative_stepがtrueです")
        if lr != 0.0:
            logger.warning("learning rate is used as initial_lr / 指定したlearning rateはinitial_lrとして使用されます")
        args.learning_rate = None
        if isinstance(trainable_params, list) and trainable_params and isinstance(trainable_params[0], dict):
            had_group_lr = False
            for group in trainable_params:
                had_group_lr = group.pop("lr", None) is not None or had_group_lr
            if had_group_lr:
                logger.warning("unet_lr and text_encoder_lr are ignored / unet_lrとtext_encoder_lrは無視されます")
                args.unet_lr = None
                args.text_encoder_lr = None
        if args.lr_scheduler != "adafactor":
            logger.info("use adafactor_scheduler / スケジューラにadafactor_schedulerを使用します")
        args.lr_scheduler = f"adafactor:{lr}"
        lr = None
    else:
        if args.max_grad_norm != 0.0:
            logger.warning("because max_grad_norm is set, clip_grad_norm is enabled. consider set to 0 / max_grad_normが設定されているためclip_grad_normが有効になります。0に設定して無効にしたほうがいいかもしれません")
        if args.lr_scheduler != "constant_with_warmup":
            logger.warning("constant_with_warmup will be good / スケジューラはconstant_with_warmupが良いかもしれません")
        if kwargs.get("clip_threshold", 1.0) != 1.0:
            logger.warning("clip_threshold=1.0 will be good / clip_thresholdは1.0が良いかもしれません")
    return transformers.optimization.Adafactor, lr


def get_scheduler_fix(args, optimizer, num_processes: int = 1):
    """The learning-rate scheduler named by --lr_scheduler (or --lr_scheduler_type)."""
    import torch
    from transformers.optimization import TYPE_TO_SCHEDULER_FUNCTION, SchedulerType

    name = args.lr_scheduler
    num_training_steps = args.max_train_steps * num_processes
    num_warmup_steps = _steps(args.lr_warmup_steps, num_training_steps)
    num_decay_steps = _steps(args.lr_decay_steps, num_training_steps)
    num_stable_steps = num_training_steps - (num_warmup_steps or 0) - (num_decay_steps or 0)
    kwargs = parse_kwargs(args.lr_scheduler_args)

    def no_warmup(scheduler):
        if num_warmup_steps is not None and num_warmup_steps != 0:
            raise ValueError(f"{name} does not require `num_warmup_steps`. Set None or 0.")
        return scheduler

    if args.lr_scheduler_type:
        scheduler_type = args.lr_scheduler_type
        logger.info(f"use {scheduler_type} | {kwargs} as lr_scheduler")
        if "." not in scheduler_type:
            module = torch.optim.lr_scheduler
        else:
            parts = scheduler_type.split(".")
            module = importlib.import_module(".".join(parts[:-1]))
            scheduler_type = parts[-1]
        return no_warmup(getattr(module, scheduler_type)(optimizer, **kwargs))

    if name.startswith("adafactor"):
        import transformers.optimization

        assert type(optimizer) == transformers.optimization.Adafactor, "adafactor scheduler must be used with Adafactor optimizer / adafactor schedulerはAdafactorオプティマイザと同時に使ってください"
        initial_lr = float(name.split(":")[1])
        return no_warmup(transformers.optimization.AdafactorSchedule(optimizer, initial_lr))

    if name == "piecewise_constant":
        from diffusers.optimization import get_piecewise_constant_schedule

        return get_piecewise_constant_schedule(optimizer, **kwargs)

    kind = SchedulerType(name)
    schedule = TYPE_TO_SCHEDULER_FUNCTION[kind]
    if kind == SchedulerType.CONSTANT:
        return no_warmup(schedule(optimizer, **kwargs))
    if num_warmup_steps is None:
        raise ValueError(f"{name} requires `num_warmup_steps`, please provide that argument.")
    if kind == SchedulerType.CONSTANT_WITH_WARMUP:
        return schedule(optimizer, num_warmup_steps=num_warmup_steps, **kwargs)
    if kind == SchedulerType.INVERSE_SQRT:
        return schedule(optimizer, num_warmup_steps=num_warmup_steps, timescale=args.lr_scheduler_timescale, **kwargs)
    if kind == SchedulerType.COSINE_WITH_RESTARTS:
        return schedule(optimizer, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps,
                        num_cycles=args.lr_scheduler_num_cycles, **kwargs)
    if kind == SchedulerType.POLYNOMIAL:
        return schedule(optimizer, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps,
                        power=args.lr_scheduler_power, **kwargs)
    if kind == SchedulerType.COSINE_WITH_MIN_LR:
        return schedule(optimizer, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps,
                        num_cycles=args.lr_scheduler_num_cycles / 2, min_lr_rate=args.lr_scheduler_min_lr_ratio,
                        **kwargs)
    if kind == SchedulerType.WARMUP_STABLE_DECAY:
        return schedule(optimizer, num_warmup_steps=num_warmup_steps, num_stable_steps=num_stable_steps,
                        num_decay_steps=num_decay_steps, num_cycles=args.lr_scheduler_num_cycles / 2,
                        min_lr_ratio=args.lr_scheduler_min_lr_ratio if args.lr_scheduler_min_lr_ratio is not None else 0.0,
                        **kwargs)
    return schedule(optimizer, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps, **kwargs)


def _steps(value, total: int):
    """An int is a step count; a float (from a TOML file, or < 1 on the CLI) is a ratio of the run."""
    if isinstance(value, float):
        return int(value * total)
    return value
