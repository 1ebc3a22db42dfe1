"""Score saved LoRA checkpoints with U-Net passes, in the trainer's own environment (kr.score-job/1).

Run by the *trainer* environment's python with the sd-scripts checkout as the working directory:

    python score_probe.py JOB.json OUT.json

It must not import kohya_runner (the trainer environment does not have it). It loads the base with
sd-scripts' own code (model_util / sdxl_model_util), encodes text with the strategies train_network.py
/ sdxl_train_network.py use (SdTokenizeStrategy + SdTextEncodingStrategy, clip_skip; SDXL: both
encoders' penultimate states + TE2's EOS-pooled projection), builds the noise scheduler and calls the
U-Net through the trainer class itself (`get_noise_scheduler`, `call_unet`: SDXL size embeddings via
sdxl_train_util.get_size_embeddings), and puts each LoRA on with networks.lora
(create_network_from_weights + apply_to + load_state_dict + set_multiplier), taking it off again
after its passes. kohya_runner.tiny.score runs the same contract (this module's `main`, `score`)
over the tiny models.

Definitions (fp32 throughout, no classifier-free guidance):
- images: RGB, resized so the shorter side fits and centre-cropped to `resolution` = [width, height];
  latents: each image encoded once by the base's VAE, latent *mean* times the scaling factor.
- noise of image i at timestep t: torch.randn from Generator().manual_seed(seed * 100003 + i * 1009 + t),
  on the CPU; noisy = scheduler.add_noise(latents, noise, t) with the trainer's DDPMScheduler
  (scaled_linear 0.00085-0.012, 1000 steps). target = noise, or the velocity with v_parameterization.
- train_loss / held_out_loss: mean MSE between the U-Net's prediction (conditioned on the image's
  caption) and the target over the images with held_out false / true and every timestep; null
  when there are no such images. `base` = no LoRA.
- change_with / change_without: for every pair p and timestep t, with x_t = the noisy latent of image
  p mod len(images): RMS(pred_lora - pred_base) / RMS(pred_base) with the pair's `with` / `without`
  prompt, averaged over pairs and timesteps; null without pairs. Base predictions are made once.
- SDXL size conditioning: original = crop size = (height, width), crop top-left (0, 0), target = the same.
- every network is first run at multiplier 0 on one sample and must reproduce the base prediction
  (else exit 1); then at multiplier 1. Non-finite figures are written as null.
- passes: U-Net forward passes counted per sample (a batch of 4 counts 4); seconds: wall time
  (per network: putting it on, text encoding, its passes, taking it off). An optional job key
  `batch_size` (default 4) sets the samples per U-Net call; it does not change the figures' meaning.
- the probe sets HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE=1 itself: tokenizers come from tokenizer_cache_dir.

Exit codes: 0 ok; 2 with one line on stderr for a bad job (a missing file, a wrong family, an image
that will not open, a LoRA that does not fit the base); anything else is a bug (1, traceback).
"""

from __future__ import annotations

import json
import math
import os
import struct
import sys
import time

JOB_SCHEMA = "kr.score-job/1"
RESULT_SCHEMA = "kr.score-result/1"
FAMILIES = ("sdxl", "sd15")
NUM_TRAIN_TIMESTEPS = 1000
DEFAULT_BATCH = 4  # samples per U-Net call; the job may say "batch_size"
TEXT_BATCH = 16
CHECK_RTOL, CHECK_ATOL = 1e-5, 1e-6
OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY")


class BadJob(Exception):
    """A job kr (or a person) got wrong: exit 2 with this one-line message."""


# ---------------------------------------------------------------------------------------------
# the job
# ---------------------------------------------------------------------------------------------

def read_job(path: str) -> dict:
    """The job, checked: files exist, values have their types. Raises BadJob."""
    try:
        with open(path, "r", encoding="utf-8") as handle:
            job = json.load(handle)
    except OSError as exc:
        raise BadJob(f"cannot read the job {path}: {exc.strerror or exc}")
    except ValueError as exc:
        raise BadJob(f"the job {path} is not JSON: {exc}")
    if not isinstance(job, dict) or job.get("schema") != JOB_SCHEMA:
        found = job.get("schema") if isinstance(job, dict) else type(job).__name__
        raise BadJob(f"the job {path} is not a {JOB_SCHEMA} job (schema: {found!r})")
    if job.get("family") not in FAMILIES:
        raise BadJob(f"family must be one of {', '.join(FAMILIES)}, not {job.get('family')!r}")
    _need_path(job, "base")
    job["v_parameterization"] = job.get("v_parameterization", False)
    if not isinstance(job["v_parameterization"], bool):
        raise BadJob(f"v_parameterization must be true or false, not {job['v_parameterization']!r}")
    clip_skip = job.get("clip_skip")
    if clip_skip is not None and (not _is_int(clip_skip) or clip_skip < 1):
        raise BadJob(f"clip_skip must be null or an integer >= 1, not {clip_skip!r}")
    if job.get("vae") is not None:
        _need_path(job, "vae")
    cache = job.get("tokenizer_cache_dir")
    if cache is not None and (not isinstance(cache, str) or not os.path.isdir(cache)):
        raise BadJob(f"tokenizer_cache_dir {cache!r} is not a folder")
    resolution = job.get("resolution")
    if not (isinstance(resolution, list) and len(resolution) == 2 and all(_is_int(v) and v >= 8 and v % 8 == 0
                                                                           for v in resolution)):
        raise BadJob(f"resolution must be [width, height], multiples of 8, not {resolution!r}")
    if not _is_int(job.get("seed")) or job["seed"] < 0:
        raise BadJob(f"seed must be an integer >= 0, not {job.get('seed')!r}")
    timesteps = job.get("timesteps")
    if not (isinstance(timesteps, list) and timesteps
            and all(_is_int(t) and 0 <= t < NUM_TRAIN_TIMESTEPS for t in timesteps)):
        raise BadJob(f"timesteps must be a non-empty list of integers in 0..{NUM_TRAIN_TIMESTEPS - 1}, "
                     f"not {timesteps!r}")
    images = job.get("images")
    if not isinstance(images, list) or not images:
        raise BadJob("images must be a non-empty list of {path, caption, held_out}")
    for index, image in enumerate(images):
        if not isinstance(image, dict) or not isinstance(image.get("caption"), str):
            raise BadJob(f"images[{index}] needs a path and a caption (a string)")
        _need_path(image, "path", f"images[{index}].path")
        image["held_out"] = image.get("held_out", False)
        if not isinstance(image["held_out"], bool):
            raise BadJob(f"images[{index}].held_out must be true or false, not {image['held_out']!r}")
    pairs = job.get("pairs", [])
    if not isinstance(pairs, list) or not all(isinstance(p, dict) and isinstance(p.get("with"), str)
                                              and isinstance(p.get("without"), str) for p in pairs):
        raise BadJob("pairs must be a list of {with, without} prompts (strings)")
    job["pairs"] = pairs
    networks = job.get("networks", [])
    if not isinstance(networks, list):
        raise BadJob("networks must be a list of {id, file}")
    seen = set()
    for index, network in enumerate(networks):
        if not isinstance(network, dict) or not isinstance(network.get("id"), str) or not network["id"]:
            raise BadJob(f"networks[{index}] needs an id (a string) and a file")
        if network["id"] in seen:
            raise BadJob(f"network id {network['id']!r} appears twice")
        seen.add(network["id"])
        _need_path(network, "file", f"networks[{index}].file ({network['id']})")
    job["networks"] = networks
    device = job.get("device", "cpu")
    if not isinstance(device, str) or not (device == "cpu" or device.startswith("cuda")):
        raise BadJob(f"device must be cpu or cuda, not {device!r}")
    job["device"] = device
    batch = job.get("batch_size", DEFAULT_BATCH)
    if not _is_int(batch) or batch < 1:
        raise BadJob(f"batch_size must be an integer >= 1, not {batch!r}")
    job["batch_size"] = batch
    return job


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _need_path(holder: dict, key: str, label: str | None = None) -> None:
    value = holder.get(key)
    if not isinstance(value, str) or not value or not os.path.exists(value):
        raise BadJob(f"{label or key}: no such file: {value!r}")


def safetensors_keys(path: str) -> list[str] | None:
    """Tensor names from a .safetensors header (no weights read); None for other files."""
    if not path.endswith(".safetensors") or not os.path.isfile(path):
        return None
    try:
        with open(path, "rb") as handle:
            size = struct.unpack("<Q", handle.read(8))[0]
            if size > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(handle.read(size))
    except (OSError, ValueError, struct.error) as exc:
        raise BadJob(f"{path} is not a readable .safetensors file ({exc})")
    return [key for key in header if key != "__metadata__"]


def lora_family(keys: list[str]) -> str | None:
    """sdxl / sd15 from kohya LoRA key names; None when the names do not tell (Diffusers-named U-Net only)."""
    names = {key.split(".", 1)[0] for key in keys}
    if any(n.startswith(("lora_te1_", "lora_te2_", "lora_unet_input_blocks_", "lora_unet_middle_block_",
                         "lora_unet_output_blocks_")) for n in names):
        return "sdxl"
    if any(n.startswith("lora_te_") for n in names):
        return "sd15"
    return None


def check_lora_family(job: dict) -> None:
    for network in job["networks"]:
        keys = safetensors_keys(network["file"])
        if keys is None:
            continue
        if not any(key.startswith("lora_") for key in keys):
            raise BadJob(f"network {network['id']}: {network['file']} holds no kohya LoRA weights")
        found = lora_family(keys)
        if found is not None and found != job["family"]:
            raise BadJob(f"network {network['id']}: {network['file']} is a LoRA for {found}, the job's family is "
                         f"{job['family']}")


def load_pixels(job: dict):
    """NCHW float32 tensor in [-1, 1]: every image resized (shorter side) and centre-cropped."""
    import numpy as np
    import torch
    from PIL import Image

    width, height = job["resolution"]
    arrays = []
    for index, entry in enumerate(job["images"]):
        try:
            with Image.open(entry["path"]) as opened:
                image = opened.convert("RGB")
        except Exception as exc:  # PIL raises several kinds for a file that is not an image
            raise BadJob(f"images[{index}]: cannot open {entry['path']} as an image ({type(exc).__name__}: {exc})")
        image = resize_and_crop(image, width, height)
        arrays.append(np.asarray(image, dtype=np.float32) / 255.0)
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return pixels * 2.0 - 1.0


def resize_and_crop(image, width: int, height: int):
    from PIL import Image

    scale = max(width / image.width, height / image.height)
    size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    if size != image.size:
        image = image.resize(size, Image.LANCZOS)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    return image.crop((left, top, left + width, top + height))


def noise_seed(seed: int, image_index: int, timestep: int) -> int:
    return seed * 100003 + image_index * 1009 + timestep


# ---------------------------------------------------------------------------------------------
# scoring, over a backend
# ---------------------------------------------------------------------------------------------
#
# A backend holds the loaded base and offers:
#   scheduler                         the trainer's DDPMScheduler
#   encode_latents(pixels) -> latents (N,4,h,w) fp32 on CPU: VAE mean times the scaling factor
#   encode(prompts) -> conds          a tuple of tensors whose first dimension is the prompt
#   predict(x, timesteps, conds)      the U-Net's output (fp32, CPU) for rows of conds
#   apply(file) -> handle; set_multiplier(handle, m); remove(handle)

def score(job: dict, backend, pixels, clock=time.perf_counter) -> dict:
    import torch

    started = clock()
    counter = {"passes": 0}
    timesteps = list(job["timesteps"])
    images, pairs = job["images"], job["pairs"]
    with torch.no_grad():
        latents = backend.encode_latents(pixels).float().cpu()
        noisy, targets = {}, {}
        for i in range(len(images)):
            for t in timesteps:
                generator = torch.Generator().manual_seed(noise_seed(job["seed"], i, t))
                noise = torch.randn(latents[i:i + 1].shape, generator=generator, dtype=torch.float32)
                step = torch.tensor([t], dtype=torch.long)
                noisy[i, t] = backend.scheduler.add_noise(latents[i:i + 1], noise, step)
                targets[i, t] = (backend.scheduler.get_velocity(latents[i:i + 1], noise, step)
                                 if job["v_parameterization"] else noise)

        prompts = _unique([image["caption"] for image in images] + [p["with"] for p in pairs]
                          + [p["without"] for p in pairs])
        loss_items = [(i, t, image["caption"]) for i, image in enumerate(images) for t in timesteps]
        pair_items = {kind: [(p % len(images), t, pair[kind]) for p, pair in enumerate(pairs) for t in timesteps]
                      for kind in ("with", "without")}

        def run(items, conds, prompt_list):
            return _predict(backend, items, noisy, conds, prompt_list, job["batch_size"], counter)

        conds = _encode(backend, prompts)
        base_loss = run(loss_items, conds, prompts)
        base_pairs = {kind: run(items, conds, prompts) for kind, items in pair_items.items()}
        check_item = loss_items[:1]
        check_conds = _encode(backend, [check_item[0][2]])
        reference = run(check_item, check_conds, [check_item[0][2]])[0]
        result = {"schema": RESULT_SCHEMA, "base": _losses(images, loss_items, base_loss, targets), "networks": {}}

        for network in job["networks"]:
            network_started = clock()
            handle = backend.apply(network["file"])
            try:
                backend.set_multiplier(handle, 0.0)
                at_zero = run(check_item, _encode(backend, [check_item[0][2]]), [check_item[0][2]])[0]
                if not torch.allclose(at_zero, reference, rtol=CHECK_RTOL, atol=CHECK_ATOL):
                    raise RuntimeError(f"network {network['id']} at multiplier 0 changed the base prediction by up to "
                                       f"{(at_zero - reference).abs().max().item():.3g}")
                backend.set_multiplier(handle, 1.0)
                conds = _encode(backend, prompts)
                losses = _losses(images, loss_items, run(loss_items, conds, prompts), targets)
                for kind, items in pair_items.items():
                    losses[f"change_{kind}"] = _change(run(items, conds, prompts), base_pairs[kind])
            finally:
                backend.remove(handle)
            losses["seconds"] = round(clock() - network_started, 3)
            result["networks"][network["id"]] = losses
    result["seconds"] = round(clock() - started, 3)
    result["passes"] = counter["passes"]
    return result


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _encode(backend, prompts: list[str]):
    chunks = [backend.encode(prompts[i:i + TEXT_BATCH]) for i in range(0, len(prompts), TEXT_BATCH)]
    if len(chunks) == 1:
        return chunks[0]
    import torch

    return tuple(torch.cat(parts) for parts in zip(*chunks))


def _predict(backend, items, noisy, conds, prompt_list, batch_size: int, counter: dict) -> list:
    import torch

    index_of = {prompt: i for i, prompt in enumerate(prompt_list)}
    out = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        x = torch.cat([noisy[i, t] for i, t, _ in chunk])
        steps = torch.tensor([t for _, t, _ in chunk], dtype=torch.long)
        rows = torch.tensor([index_of[prompt] for _, _, prompt in chunk], dtype=torch.long)
        selected = tuple(c[rows.to(c.device)] for c in conds)
        prediction = backend.predict(x, steps, selected).float().cpu()
        counter["passes"] += len(chunk)
        out.extend(prediction[k:k + 1] for k in range(len(chunk)))
    return out


def _finite(value: float):
    return value if math.isfinite(value) else None


def _losses(images, loss_items, predictions, targets) -> dict:
    sums = {False: [], True: []}
    for (i, t, _), prediction in zip(loss_items, predictions):
        sums[images[i]["held_out"]].append(((prediction - targets[i, t]) ** 2).mean().item())
    return {"train_loss": _finite(sum(sums[False]) / len(sums[False])) if sums[False] else None,
            "held_out_loss": _finite(sum(sums[True]) / len(sums[True])) if sums[True] else None}


def _change(predictions, base_predictions):
    if not predictions:
        return None
    ratios = []
    for prediction, base in zip(predictions, base_predictions):
        moved, size = _rms(prediction - base), _rms(base)
        ratios.append(moved / size if size > 0 else (0.0 if moved == 0 else math.inf))
    return _finite(sum(ratios) / len(ratios))


def _rms(tensor) -> float:
    return tensor.pow(2).mean().sqrt().item()


def write_result(path: str, result: dict) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=1, allow_nan=False)
            handle.write("\n")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def main(argv: list[str], make_backend, prog: str = "score_probe.py") -> int:
    """Read JOB.json, score, write OUT.json. `make_backend(job)` loads the base (raises BadJob)."""
    if len(argv) != 2:
        print(f"usage: {prog} JOB.json OUT.json", file=sys.stderr)
        return 2
    job_path, out_path = argv
    for key in OFFLINE_ENV:  # no network, ever: before anything imports huggingface_hub
        os.environ[key] = "1"
    try:
        out_dir = os.path.dirname(os.path.abspath(out_path))
        if not os.path.isdir(out_dir):
            raise BadJob(f"the result's folder {out_dir} does not exist")
        job = read_job(job_path)
        check_lora_family(job)
        pixels = load_pixels(job)
        if job["device"].startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise BadJob(f"device {job['device']}: this environment's torch sees no CUDA device")
        backend = make_backend(job)
        result = score(job, backend, pixels.to(job["device"]))
    except BadJob as exc:
        print(f"score: bad job: {exc}", file=sys.stderr)
        return 2
    write_result(out_path, result)
    return 0


# ---------------------------------------------------------------------------------------------
# sd-scripts (48d368f)
# ---------------------------------------------------------------------------------------------

def checkpoint_family(keys: list[str]) -> str | None:
    """sdxl / sd15 / sd2 / None from an original-layout checkpoint's tensor names (and the context width)."""
    if any(key.startswith("conditioner.embedders.1.") for key in keys):
        return "sdxl"
    if any(key.startswith("cond_stage_model.model.") for key in keys):
        return "sd2"
    if any(key.startswith("cond_stage_model.transformer.") for key in keys):
        return "sd15"
    return None


class SdScriptsBackend:
    """sd-scripts' own model loading, text encoding, U-Net call and networks.lora, with its cwd as the checkout."""

    def __init__(self, job: dict):
        base = job["base"]
        if not os.path.isfile(base):
            raise BadJob(f"base {base} is not a checkpoint file (.safetensors or .ckpt)")
        keys = safetensors_keys(base)
        if keys is not None:
            found = checkpoint_family(keys)
            if found is None:
                raise BadJob(f"base {base} is not an SD 1.5 / SDXL checkpoint")
            if found != job["family"]:
                raise BadJob(f"base {base} is a checkpoint for {found}, the job's family is {job['family']}")
        if not os.path.isfile(os.path.join(os.getcwd(), "train_network.py")):
            raise BadJob(f"run score_probe.py with the sd-scripts checkout as the working directory (not {os.getcwd()})")
        sys.path.insert(0, os.getcwd())

        import torch

        self.torch = torch
        self.job = job
        self.device = torch.device(job["device"])
        self.is_sdxl = job["family"] == "sdxl"
        from library import model_util, train_util

        if self.is_sdxl:
            import sdxl_train_network
            from library import sdxl_model_util

            self.trainer = sdxl_train_network.SdxlNetworkTrainer()
            parser = sdxl_train_network.setup_parser()
        else:
            import train_network

            self.trainer = train_network.NetworkTrainer()
            parser = train_network.setup_parser()
        argv = ["--pretrained_model_name_or_path", base, "--sdpa"]
        if job["v_parameterization"]:
            argv.append("--v_parameterization")
        if job.get("clip_skip") is not None:
            argv += ["--clip_skip", str(job["clip_skip"])]
        if job.get("tokenizer_cache_dir"):
            argv += ["--tokenizer_cache_dir", job["tokenizer_cache_dir"]]
        if job.get("vae"):
            argv += ["--vae", job["vae"]]
        self.args = parser.parse_args(argv)

        try:
            self.tokenize_strategy = self.trainer.get_tokenize_strategy(self.args)
        except OSError as exc:
            raise BadJob(f"cannot load the tokenizer offline ({str(exc).splitlines()[0]}); give tokenizer_cache_dir")
        self.text_encoding_strategy = self.trainer.get_text_encoding_strategy(self.args)

        if self.is_sdxl:
            te1, te2, vae, unet, _, _ = sdxl_model_util.load_models_from_sdxl_checkpoint(
                sdxl_model_util.MODEL_VERSION_SDXL_BASE_V1_0, base, "cpu")
            self.text_encoders = [te1, te2]
        else:
            te, vae, unet = model_util.load_models_from_stable_diffusion_checkpoint(False, base, "cpu")
            self.text_encoders = [te]
        if job.get("vae"):
            vae = model_util.load_vae(job["vae"], torch.float32)
        train_util.replace_unet_modules(unet, False, False, True)  # --sdpa, as kr renders every run
        self.vae, self.unet = vae, unet
        for model in [unet, vae, *self.text_encoders]:
            model.to(self.device, dtype=torch.float32)
            model.requires_grad_(False)
            model.eval()
        self.scheduler = self.trainer.get_noise_scheduler(self.args, "cpu")
        self.accelerator = _DeviceOnly(self.device)  # call_unet reads only accelerator.device
        height, width = job["resolution"][1], job["resolution"][0]
        self.size_hw = (height, width)

    def encode_latents(self, pixels):
        chunks = []
        for start in range(0, pixels.shape[0], self.job["batch_size"]):
            chunk = pixels[start:start + self.job["batch_size"]].to(self.device, dtype=self.torch.float32)
            chunks.append(self.vae.encode(chunk).latent_dist.mean.float().cpu())
        return self.trainer.shift_scale_latents(self.args, self.torch.cat(chunks))

    def encode(self, prompts):
        tokens = [ids.to(self.device) for ids in self.tokenize_strategy.tokenize(prompts)]
        return tuple(self.text_encoding_strategy.encode_tokens(self.tokenize_strategy, self.text_encoders, tokens))

    def predict(self, x, timesteps, conds):
        torch = self.torch
        batch = {}
        if self.is_sdxl:
            sizes = torch.tensor([list(self.size_hw)] * x.shape[0])
            batch = {"original_sizes_hw": sizes, "crop_top_lefts": torch.zeros_like(sizes), "target_sizes_hw": sizes}
        return self.trainer.call_unet(self.args, self.accelerator, self.unet, x.to(self.device), timesteps.to(self.device),
                                      list(conds), batch, torch.float32)

    def apply(self, file):
        from networks import lora

        text_encoder = self.text_encoders if self.is_sdxl else self.text_encoders[0]
        network, weights = lora.create_network_from_weights(1.0, file, self.vae, text_encoder, self.unet)
        modules = network.text_encoder_loras + network.unet_loras
        names = {key.split(".", 1)[0] for key in weights if "." in key}
        if len(modules) < len(names):
            raise BadJob(f"{file}: {len(names) - len(modules)} of {len(names)} LoRA modules match no module of this "
                         f"{self.job['family']} base (wrong family?)")
        # what apply_to replaces: each target module's forward (an instance attribute afterwards)
        saved = [(m.org_module, m.org_module.__dict__.get("forward")) for m in modules]
        network.apply_to(text_encoder, self.unet, True, True)
        try:
            info = network.load_state_dict(weights, False)
        except RuntimeError as exc:
            _restore(saved)
            raise BadJob(f"{file} does not fit this {self.job['family']} base: {str(exc).splitlines()[0]}")
        unexpected = [key for key in info.unexpected_keys if key.startswith("lora_")]
        if unexpected:
            _restore(saved)
            raise BadJob(f"{file}: {len(unexpected)} LoRA weights match no module of this base, e.g. {unexpected[0]}")
        network.to(self.device, dtype=self.torch.float32)
        network.requires_grad_(False)
        network.eval()
        return network, saved

    def set_multiplier(self, handle, multiplier: float) -> None:
        handle[0].set_multiplier(multiplier)

    def remove(self, handle) -> None:
        _restore(handle[1])


class _DeviceOnly:
    def __init__(self, device):
        self.device = device


def _restore(saved) -> None:
    """Undo LoRAModule.apply_to: give every module back the forward it had."""
    for module, forward in saved:
        if forward is None:
            module.__dict__.pop("forward", None)
        else:
            module.forward = forward


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], SdScriptsBackend))
