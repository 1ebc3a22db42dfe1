"""Score saved LoRA checkpoints of a tiny-trainer run with U-Net passes (kr.score-job/1 -> kr.score-result/1).

    python -m kohya_runner.tiny.score JOB.json OUT.json

The tiny trainer's counterpart of kohya_runner/sdscripts/score_probe.py, which owns the contract (job
checks, images, fixed noise, the figures, the result file, exit codes) and runs it here over the
tiny models: the base folder's VAE, text encoder(s) and U-Net (kohya_runner.tiny.models: SDXL
context + pooled output and size conditioning, SD clip_skip), the trainer's noise scheduler
(kohya_runner.tiny.losses), and each LoRA put on a copy of the base with kohya_runner.tiny.infer.apply_lora.

Definitions (as in score_probe.py; fp32, no classifier-free guidance):
- latents: each image (resized on its shorter side, centre-cropped to resolution = [width, height])
  encoded once by the base's VAE: latent mean times the scaling factor.
- noise of image i at timestep t: Generator().manual_seed(seed * 100003 + i * 1009 + t) on the CPU;
  noisy = scheduler.add_noise(latents, noise, t); target = noise (velocity with v_parameterization).
- train_loss / held_out_loss: mean MSE of the caption-conditioned prediction against the target over
  the images with held_out false / true and every timestep (null without such images); base = no LoRA.
- change_with / change_without: RMS(pred_lora - pred_base) / RMS(pred_base) for each pair (image =
  pair index mod images) and timestep with its `with` / `without` prompt, averaged.
- each network must reproduce the base at multiplier 0 before it is scored at 1.
- passes: U-Net forward passes counted per sample; seconds: wall time.

The tiny base ignores `vae` and `tokenizer_cache_dir` (it carries its own), like the tiny trainer.
Exit codes: 0 ok; 2 with one line on stderr for a bad job; 1 with a traceback for a bug.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from types import SimpleNamespace

from kohya_runner.sdscripts.score_probe import BadJob, main as probe_main


class TinyBackend:
    """The contract's backend over a tiny base folder (see score_probe.score for the interface)."""

    def __init__(self, job: dict):
        import torch

        from kohya_runner.tiny.base import read_marker
        from kohya_runner.tiny.losses import noise_scheduler
        from kohya_runner.tiny.models import FAMILIES, limit_threads, load_base

        base = Path(job["base"])
        marker = read_marker(base) if base.is_dir() else None
        if marker is None:
            raise BadJob(f"base {base} is not a tiny base folder (no kr_tiny.json)")
        if marker.get("family") != job["family"]:
            raise BadJob(f"base {base} is a tiny {marker.get('family')} base, the job is {job['family']}")
        limit_threads()
        self.torch = torch
        self.job = job
        self.device = torch.device(job["device"])
        self.base_models = load_base(base, FAMILIES[job["family"]])
        for model in [self.base_models.unet, self.base_models.vae, *self.base_models.text_encoders]:
            model.to(self.device)
        self.models = self.base_models
        self.scheduler = noise_scheduler(SimpleNamespace(v_parameterization=job["v_parameterization"]))
        # SDXL only reads this; sd-scripts ignores clip_skip for SDXL too
        self.clip_skip = None if self.base_models.family.is_sdxl else job.get("clip_skip")
        width, height = job["resolution"]
        self.size_hw = (height, width)

    def encode_latents(self, pixels):
        family = self.base_models.family
        chunks = []
        for start in range(0, pixels.shape[0], self.job["batch_size"]):
            chunk = pixels[start:start + self.job["batch_size"]].to(self.device)
            chunks.append(self.base_models.vae.encode(chunk).latent_dist.mean.float().cpu())
        return self.torch.cat(chunks) * family.vae_scale_factor

    def encode(self, prompts):
        ids = [tokens.to(self.device) for tokens in self.models.tokenize(prompts)]
        context, pooled = self.models.encode_text(ids, self.clip_skip)
        return (context,) if pooled is None else (context, pooled)

    def predict(self, x, timesteps, conds):
        count = x.shape[0]
        size_conds = ([self.size_hw] * count, [(0, 0)] * count, [self.size_hw] * count)
        pooled = conds[1] if len(conds) > 1 else None
        return self.models.predict_noise(x.to(self.device), timesteps.to(self.device), conds[0], pooled, size_conds)

    def apply(self, file):
        from kohya_runner.tiny.infer import apply_lora

        # peft adapters cannot be taken off cleanly: each network goes on its own copy of the base
        # (a few MB), so no two networks ever meet
        models = copy.deepcopy(self.base_models)
        try:
            network = apply_lora(models, str(file), 1.0)
        except (ValueError, RuntimeError) as exc:
            raise BadJob(f"{file}: {str(exc).splitlines()[0]}")
        self.models = models
        return network

    def set_multiplier(self, handle, multiplier: float) -> None:
        handle.set_multiplier(multiplier)

    def remove(self, handle) -> None:
        self.models = self.base_models


def main(argv: list[str] | None = None) -> int:
    return probe_main(sys.argv[1:] if argv is None else argv, TinyBackend, prog="python -m kohya_runner.tiny.score")


if __name__ == "__main__":
    sys.exit(main())
