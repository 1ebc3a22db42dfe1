"""Peak memory of a training run, estimated from a table, refined by what kr measured on similar runs.

The table (GPU memory of sd-scripts' LoRA training; the tiny trainer's host memory on the CPU):

| part | how it is counted | source |
|---|---|---|
| base weights | parameters × bytes: 2 in bf16/fp16, 4 in fp32 (mixed_precision = no), 1 for the U-Net and text encoders with fp8_base; text encoders off the GPU when their outputs are cached and the U-Net alone trains; the VAE off the GPU when latents are cached | parameter counts of the architectures (SDXL U-Net 2,567 M, CLIP-L 123 M + OpenCLIP-bigG 695 M, VAE 84 M; SD1.5 U-Net 860 M, CLIP-L 123 M) |
| LoRA | its parameters (exactly: sdscripts.lora_size for the rank) × (4 weight + 4 gradient + optimizer state: AdamW 8, 8-bit optimizers 2, Adafactor 1, Lion 4, Prodigy / DAdapt 16, SGD 4) | PyTorch / bitsandbytes state sizes |
| activations | per image at the family's native size, × batch × (pixels / native pixels): SDXL 2.0 GiB with gradient checkpointing, 10 GiB without; SD1.5 0.6 / 3.0 GiB | calibrated so SDXL LoRA with U-Net only, checkpointing, cached TE outputs and latents, an 8-bit optimizer and rank 8 lands near 8 GiB: sd-scripts' docs/train_SDXL-en.md ("LoRA training can be done with 8GB GPU memory (10GB recommended)") |
| runtime | CUDA context 0.6 GiB + 8 % allocator slack; on the CPU the Python + PyTorch process, 0.35 GiB | measured: kr's tiny runs |

An exact match among measured runs (same family, resolution, batch, rank, precision, fp8, checkpointing,
caches, optimizer) gives its measured peak; otherwise the table's figure is scaled by the median ratio of
measured to estimated over this family's measured runs (GPU: peak_vram from NVML; tiny: peak PSS).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median
from typing import Any

GIB = 2**30
PARAMETERS = {  # U-Net, text encoders, VAE
    "sdxl": (2_567_463_684, 123_060_480 + 694_659_841, 83_653_863),
    "sd15": (859_520_964, 123_060_480, 83_653_863),
    "tiny": (1_604_708, 36_064 + 37_088, 316_695),  # kohya_runner/tiny/weights (fp32 on the CPU)
}
NATIVE_PIXELS = {"sdxl": 1024 * 1024, "sd15": 512 * 512, "tiny": 64 * 64}
ACTIVATIONS = {"sdxl": (2.0 * GIB, 10.0 * GIB), "sd15": (0.6 * GIB, 3.0 * GIB), "tiny": (0.02 * GIB, 0.05 * GIB)}
RUNTIME = {"gpu": 0.6 * GIB, "cpu": 0.35 * GIB}
SLACK = 1.08
OPTIMIZER_STATE = {"adamw": 8, "adam": 8, "lion": 4, "sgdnesterov": 4, "sgd": 4, "adafactor": 1, "prodigy": 16,
                   "dadaptation": 16, "dadaptadam": 16, "dadaptlion": 8}


@dataclass
class Estimate:
    total: int  # bytes at peak
    parts: dict[str, int]
    device: str  # "gpu" | "cpu" (the tiny trainer: host memory)
    basis: str  # "table", "table × 1.07 (3 measured runs)", "measured: marker-0004 peaked at …"
    table_total: int = 0
    measured: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"bytes": self.total, "gib": round(self.total / GIB, 2), "device": self.device, "basis": self.basis,
                "parts": self.parts, "table_bytes": self.table_total, "measured_runs": self.measured}

    def text(self) -> str:
        parts = ", ".join(f"{name} {size / GIB:.1f}" for name, size in self.parts.items())
        where = "GPU memory" if self.device == "gpu" else "host memory (the tiny trainer runs on the CPU)"
        return f"about {self.total / GIB:.1f} GiB of {where} ({parts} GiB; {self.basis})"


def family_of(spec) -> str:
    return "tiny" if spec.model.base == "tiny" else spec.model.family


def memory_key(spec) -> tuple:
    """What decides a run's peak memory; runs with the same key are the same case."""
    p, d, n = spec.precision, spec.dataset, spec.network
    return (family_of(spec), tuple(d.resolution), d.batch_size, n.dim, n.unet_only, p.mixed_precision, p.fp8_base,
            p.full_bf16, p.gradient_checkpointing, bool(p.cache_latents or p.cache_latents_to_disk),
            bool(p.cache_text_encoder_outputs), spec.optimizer.type.lower())


def table_estimate(spec) -> Estimate:
    from ..sdscripts.lora_size import lora_file_size

    family = family_of(spec)
    p, d, n = spec.precision, spec.dataset, spec.network
    unet, encoders, vae = PARAMETERS[family]
    width = 4 if (p.mixed_precision == "no" or family == "tiny") else 2
    base_width = 1 if p.fp8_base else width
    weights = unet * base_width
    if not (p.cache_text_encoder_outputs and n.unet_only):
        weights += encoders * base_width
    if not (p.cache_latents or p.cache_latents_to_disk):
        weights += vae * (4 if p.no_half_vae else width)
    lora = lora_file_size("sdxl" if family == "tiny" else family, n.dim, unet_only=n.unet_only).parameters
    if family == "tiny":
        lora = max(1, lora * unet // PARAMETERS["sdxl"][0])  # the tiny U-Net's share of the same layers
    optimizer = spec.optimizer.type.lower()
    state = 2 if "8bit" in optimizer else OPTIMIZER_STATE.get(optimizer.replace("paged", ""), 8)
    training = lora * (8 + state)
    with_checkpointing, without = ACTIVATIONS[family]
    pixels = NATIVE_PIXELS["tiny"] if family == "tiny" else d.resolution[0] * d.resolution[1]  # the tiny trainer trains at 64 px
    activations = (with_checkpointing if p.gradient_checkpointing else without) * d.batch_size * pixels / NATIVE_PIXELS[family]
    device = "cpu" if family == "tiny" else "gpu"
    work = int((weights + training + activations) * SLACK)
    parts = {"weights": int(weights), "LoRA + optimizer": int(training), "activations": int(activations),
             "runtime": int(RUNTIME[device] + work - weights - training - activations)}
    total = sum(parts.values())
    return Estimate(total, parts, device, "table", total)


def estimate(spec, measured_runs: list[tuple[Any, int]] | None = None) -> Estimate:
    """The table's estimate, refined by measured runs: (their spec, their peak bytes) pairs."""
    found = table_estimate(spec)
    family, key = family_of(spec), memory_key(spec)
    same = [(s, peak) for s, peak in measured_runs or [] if peak and memory_key(s) == key]
    if same:
        peak = max(p for _, p in same)
        found.basis = f"measured: {len(same)} run(s) with the same memory settings peaked at {peak / GIB:.1f} GiB"
        found.total, found.measured = peak, [getattr(s, "name", "?") for s, _ in same]
        return found
    ratios = [peak / table_estimate(s).total for s, peak in measured_runs or [] if peak and family_of(s) == family]
    if ratios:
        factor = median(ratios)
        found.total = int(found.total * factor)
        found.parts = {name: int(size * factor) for name, size in found.parts.items()}
        found.basis = f"table × {factor:.2f} (the median of {len(ratios)} measured {family} run(s))"
    return found


def measured(home, device: str) -> list[tuple[Any, int]]:
    """(spec, peak bytes) of the workspace's finished runs that measured their peak: VRAM on a GPU, PSS of
    the trainer's process tree for the tiny trainer."""
    from pathlib import Path

    from ..ledger import open_ledger
    from ..run import load_spec

    out = []
    for row in open_ledger(home).runs(status=["succeeded"]):
        peak = row.peak_vram if device == "gpu" else row.peak_rss
        if not peak:
            continue
        try:
            out.append((load_spec(Path(row.run_dir)), peak))
        except Exception:  # a run folder without a readable spec: not a measurement to learn from
            continue
    return out


def for_run(home, spec) -> Estimate:
    """The estimate for `spec`, refined by the workspace's measured runs."""
    device = "cpu" if family_of(spec) == "tiny" else "gpu"
    return estimate(spec, measured(home, device))
