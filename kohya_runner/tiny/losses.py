"""Noise, timesteps and loss weighting, following sd-scripts' train_util / custom_train_functions."""

from __future__ import annotations

import math
import random


def noise_scheduler(args):
    """The DDPM schedule every SD/SDXL network trainer trains with (epsilon or v target)."""
    import torch
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              num_train_timesteps=1000, clip_sample=False,
                              prediction_type="v_prediction" if args.v_parameterization else "epsilon")
    alphas_cumprod = scheduler.alphas_cumprod
    scheduler.all_snr = (torch.sqrt(alphas_cumprod) / torch.sqrt(1.0 - alphas_cumprod)) ** 2
    return scheduler


def noise_noisy_latents_and_timesteps(args, scheduler, latents):
    import torch

    noise = torch.randn_like(latents)
    if args.noise_offset:
        offset = args.noise_offset
        if args.noise_offset_random_strength:
            offset = torch.rand(1) * args.noise_offset
        noise = apply_noise_offset(latents, noise, offset, args.adaptive_noise_scale)
    if args.multires_noise_iterations:
        noise = pyramid_noise_like(noise, args.multires_noise_iterations, args.multires_noise_discount)

    batch = latents.shape[0]
    low = 0 if args.min_timestep is None else args.min_timestep
    high = scheduler.config.num_train_timesteps if args.max_timestep is None else args.max_timestep
    timesteps, huber_c = timesteps_and_huber_c(args, low, high, scheduler, batch)

    if args.ip_noise_gamma:
        strength = args.ip_noise_gamma
        if args.ip_noise_gamma_random_strength:
            strength = torch.rand(1) * args.ip_noise_gamma
        noisy = scheduler.add_noise(latents, noise + strength * torch.randn_like(latents), timesteps)
    else:
        noisy = scheduler.add_noise(latents, noise, timesteps)
    return noise, noisy, timesteps, huber_c


def timesteps_and_huber_c(args, low: int, high: int, scheduler, batch: int):
    if args.loss_type in ("huber", "smooth_l1"):
        timesteps = get_timesteps(low, high, 1)
        step = timesteps.item()
        if args.huber_schedule == "exponential":
            alpha = -math.log(args.huber_c) / scheduler.config.num_train_timesteps
            huber_c = math.exp(-alpha * step)
        elif args.huber_schedule == "snr":
            alpha_cumprod = scheduler.alphas_cumprod[step]
            sigma = ((1.0 - alpha_cumprod) / alpha_cumprod) ** 0.5
            huber_c = (1 - args.huber_c) / (1 + sigma) ** 2 + args.huber_c
        elif args.huber_schedule == "constant":
            huber_c = args.huber_c
        else:
            raise NotImplementedError(f"Unknown Huber loss schedule {args.huber_schedule}!")
        huber_c = huber_c * args.huber_scale
        timesteps = timesteps.repeat(batch)
    elif args.loss_type in ("l2", "l1"):
        timesteps = get_timesteps(low, high, batch)
        huber_c = 1  # unused
    else:
        raise NotImplementedError(f"Unknown loss type {args.loss_type}")
    return timesteps.long(), huber_c


def get_timesteps(low: int, high: int, batch: int):
    """sd-scripts' get_timesteps: uniform in [low, high), or all `high` when low >= high (validation fixes
    min_timestep = max_timestep to each of its timesteps)."""
    import torch

    if low < high:
        return torch.randint(low, high, (batch,))
    return torch.full((batch,), high)


def conditional_loss(prediction, target, loss_type: str, huber_c):
    import torch

    if loss_type == "l2":
        return torch.nn.functional.mse_loss(prediction, target, reduction="none")
    if loss_type == "l1":
        return torch.nn.functional.l1_loss(prediction, target, reduction="none")
    if loss_type == "huber":
        return 2 * huber_c * (torch.sqrt((prediction - target) ** 2 + huber_c**2) - huber_c)
    if loss_type == "smooth_l1":
        return 2 * (torch.sqrt((prediction - target) ** 2 + huber_c**2) - huber_c)
    raise NotImplementedError(f"Unsupported Loss Type {loss_type}")


def apply_noise_offset(latents, noise, offset, adaptive_noise_scale):
    import torch

    if adaptive_noise_scale is not None:
        latent_mean = torch.abs(latents.mean(dim=(2, 3), keepdim=True))
        offset = torch.clamp(offset + adaptive_noise_scale * latent_mean, 0.0, None)
    return noise + offset * torch.randn((latents.shape[0], latents.shape[1], 1, 1))


def pyramid_noise_like(noise, iterations: int = 6, discount: float = 0.4):
    import torch

    batch, channels, width, height = noise.shape
    upsample = torch.nn.Upsample(size=(width, height), mode="bilinear")
    for i in range(iterations):
        r = random.random() * 2 + 2
        w, h = max(1, int(width / (r**i))), max(1, int(height / (r**i)))
        noise = noise + upsample(torch.randn(batch, channels, w, h)) * discount**i
        if w == 1 or h == 1:
            break
    return noise / noise.std()


def _snr(timesteps, scheduler):
    import torch

    return torch.stack([scheduler.all_snr[t] for t in timesteps])


def post_process_loss(loss, args, timesteps, scheduler):
    """min-SNR weighting, v-pred scaling and debiased estimation (per sample)."""
    import torch

    if args.min_snr_gamma:
        snr = _snr(timesteps, scheduler)
        clipped = torch.minimum(snr, torch.full_like(snr, args.min_snr_gamma))
        weight = clipped / (snr + 1) if args.v_parameterization else clipped / snr
        loss = loss * weight.float()
    if args.scale_v_pred_loss_like_noise_pred:
        snr = torch.minimum(_snr(timesteps, scheduler), torch.ones_like(timesteps, dtype=torch.float32) * 1000)
        loss = loss * (snr / (snr + 1))
    if args.v_pred_like_loss:
        snr = torch.minimum(_snr(timesteps, scheduler), torch.ones_like(timesteps, dtype=torch.float32) * 1000)
        loss = loss + loss / (snr / (snr + 1)) * args.v_pred_like_loss
    if args.debiased_estimation_loss:
        snr = torch.minimum(_snr(timesteps, scheduler), torch.ones_like(timesteps, dtype=torch.float32) * 1000)
        weight = 1 / torch.sqrt(snr + 1 if args.v_parameterization else snr)
        loss = loss * weight
    return loss


class LossRecorder:
    """Moving average over one epoch's worth of batches (the buffer is filled in epoch 0 and then
    overwritten position by position) — sd-scripts' avr_loss / loss/average."""

    def __init__(self):
        self.loss_list: list[float] = []
        self.loss_total = 0.0

    def add(self, *, epoch: int, step: int, loss: float) -> None:
        if epoch == 0:
            self.loss_list.append(loss)
        else:
            while len(self.loss_list) <= step:
                self.loss_list.append(0.0)
            self.loss_total -= self.loss_list[step]
            self.loss_list[step] = loss
        self.loss_total += loss

    @property
    def moving_average(self) -> float:
        if not self.loss_list:
            return 0  # sd-scripts: an empty recorder (e.g. max_validation_steps=0) averages to 0
        return self.loss_total / len(self.loss_list)
