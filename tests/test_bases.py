"""Base-model detection and random full-size bases (kohya_runner.bases).

The key/shape checks use an independent reference: diffusers' own LDM -> diffusers converters
(diffusers.loaders.single_file_utils) must map kr's single-file names back onto exactly the keys
and shapes of the diffusers / transformers models. Full-size maps are built on the `meta` device,
so no multi-GB file is written unless KR_TEST_FULL_BASES=1.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
from diffusers.loaders import single_file_utils as sfu  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from kohya_runner import bases  # noqa: E402
from kohya_runner.hashing import sha256_file  # noqa: E402
from kohya_runner.errors import BadInput  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

# sd-scripts-contract.md §11: parameters of random full-size bases, in millions (one decimal).
EXPECTED_MILLIONS = {
    "sd15": {"unet": 859.5, "text_encoder": 123.1, "vae": 83.7},
    "sdxl": {"unet": 2567.5, "text_encoder": 123.1, "text_encoder_2": 694.7, "vae": 83.7},
}

# Small configs with the same topology as the full-size ones (levels, block types, layers per
# block, attention/linear projection, addition embedding, q/k/v fusing), for real-weight writes.
_SMALL_TE = {"vocab_size": 49408, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 2, "max_position_embeddings": 77, "hidden_act": "gelu", "projection_dim": 32}
_SMALL_VAE = {**bases.VAE_CONFIG, "block_out_channels": (32, 32, 64, 64)}
SMALL_CONFIGS = {
    "sd15": {
        "unet": {**bases.SD15_UNET_CONFIG, "block_out_channels": (32, 64, 64, 64), "cross_attention_dim": 32,
                 "attention_head_dim": 2},
        "text_encoder": _SMALL_TE, "vae": _SMALL_VAE,
    },
    "sdxl": {
        "unet": {**bases.SDXL_UNET_CONFIG, "block_out_channels": (32, 64, 64), "cross_attention_dim": 64,
                 "attention_head_dim": (1, 2, 2), "transformer_layers_per_block": (1, 2, 3),
                 "addition_time_embed_dim": 8, "projection_class_embeddings_input_dim": 32 + 6 * 8},
        "text_encoder": _SMALL_TE, "text_encoder_2": _SMALL_TE, "vae": _SMALL_VAE,
    },
}


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

def _meta_module(part: bases.ModelPart):
    with torch.device("meta"):
        return bases.build_module(part)


def _canonical_state(part: bases.ModelPart, module) -> dict:
    """The module's state dict under the names single files and sd-scripts' transformers 4.x use."""
    rename = bases._hf_text_model_key if part.name.startswith("text_encoder") else (lambda key: key)
    return {rename(key): value for key, value in module.state_dict().items()}


def _diffusers_convert(part: bases.ModelPart, module, checkpoint: dict) -> dict:
    """diffusers' own single-file converter for this part, applied to the whole checkpoint."""
    if part.name == "unet":
        return sfu.convert_ldm_unet_checkpoint(dict(checkpoint), module.config)
    if part.name == "vae":
        return sfu.convert_ldm_vae_checkpoint(dict(checkpoint), module.config)
    if part.name == "text_encoder":
        return sfu.convert_ldm_clip_checkpoint(dict(checkpoint))
    return sfu.convert_open_clip_checkpoint(module, dict(checkpoint), prefix=part.ldm_prefix)


def _write_safetensors(path: Path, shapes: dict[str, list[int]], metadata: dict | None = None) -> Path:
    save_file({name: torch.zeros(shape, dtype=torch.float16) for name, shape in shapes.items()}, str(path), metadata)
    return path


@pytest.fixture(scope="module")
def full_shapes():
    return {family: bases.ldm_shapes(family) for family in bases.RANDOM_FAMILIES}


# ---------------------------------------------------------------------------------------------
# full-size key maps
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", bases.RANDOM_FAMILIES)
def test_full_size_names_round_trip_through_diffusers_converters(family, full_shapes):
    checkpoint = {name: torch.empty(shape, device="meta")
                  for part_shapes in full_shapes[family].values() for name, shape in part_shapes.items()}
    for part in bases.model_parts(family):
        module = _meta_module(part)
        expected = {key: tuple(value.shape) for key, value in _canonical_state(part, module).items()}
        converted = {key: tuple(value.shape) for key, value in _diffusers_convert(part, module, checkpoint).items()}
        assert converted == expected, f"{family} {part.name}: {sorted(set(converted) ^ set(expected))[:5]}"
        # One single-file tensor per diffusers tensor, so none is extra (sd-scripts loads strictly);
        # OpenCLIP fuses q/k/v (3 -> 1, weight and bias) and adds logit_scale.
        fused = 4 * part.config["num_hidden_layers"] - 1 if part.name == "text_encoder_2" else 0
        assert len(full_shapes[family][part.name]) == len(expected) - fused


@pytest.mark.parametrize("family", bases.RANDOM_FAMILIES)
def test_full_size_parameter_counts_match_the_contract(family, full_shapes):
    millions = {part: round(sum(torch.Size(shape).numel() for shape in shapes.values()) / 1e6, 1)
                for part, shapes in full_shapes[family].items()}
    assert millions == EXPECTED_MILLIONS[family]


def test_full_size_maps_have_the_single_file_names_sd_scripts_reads(full_shapes):
    sd15 = {name: shape for shapes in full_shapes["sd15"].values() for name, shape in shapes.items()}
    sdxl = {name: shape for shapes in full_shapes["sdxl"].values() for name, shape in shapes.items()}
    assert sd15["model.diffusion_model.input_blocks.1.1.proj_in.weight"] == (320, 320, 1, 1)  # SD1: 1x1 conv
    assert sd15["model.diffusion_model.output_blocks.2.1.conv.weight"] == (1280, 1280, 3, 3)  # upsampler w/o attn
    assert sd15["model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"] == (320, 768)
    assert sd15["cond_stage_model.transformer.text_model.embeddings.position_embedding.weight"] == (77, 768)
    assert sd15["first_stage_model.encoder.mid.attn_1.q.weight"] == (512, 512, 1, 1)  # VAE attn as 1x1 conv
    assert sd15["first_stage_model.decoder.up.3.upsample.conv.weight"] == (512, 512, 3, 3)
    assert sdxl["model.diffusion_model.label_emb.0.0.weight"] == (1280, 2816)
    assert sdxl["model.diffusion_model.input_blocks.4.1.proj_in.weight"] == (640, 640)  # SDXL: linear
    assert sdxl["model.diffusion_model.input_blocks.7.1.transformer_blocks.9.attn2.to_k.weight"] == (1280, 2048)
    assert sdxl["model.diffusion_model.output_blocks.2.2.conv.weight"] == (1280, 1280, 3, 3)
    assert sdxl["conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"] == (768,)
    te2 = "conditioner.embedders.1.model."
    assert sdxl[te2 + "transformer.resblocks.31.attn.in_proj_weight"] == (3840, 1280)
    assert sdxl[te2 + "text_projection"] == (1280, 1280)
    assert sdxl[te2 + "positional_embedding"] == (77, 1280)
    assert sdxl[te2 + "logit_scale"] == ()
    # Left out on purpose: sd-scripts drops position_ids, and nothing reads EMA/schedule tensors.
    for names in (sd15, sdxl):
        assert not [n for n in names if "position_ids" in n or n.startswith(("model_ema", "alphas_cumprod"))]


# ---------------------------------------------------------------------------------------------
# writing (small configs, same topology)
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", bases.RANDOM_FAMILIES)
def test_written_base_holds_the_seeded_weights_under_diffusers_names(family, tmp_path):
    parts = bases.model_parts(family, SMALL_CONFIGS[family])
    metadata = {"kr_random_base": family, "seed": "7"}
    first = bases.write_parts(parts, tmp_path / "a.safetensors", seed=7, dtype="fp16", metadata=metadata)
    second = bases.write_parts(parts, tmp_path / "b.safetensors", seed=7, dtype="fp16", metadata=metadata)
    assert sha256_file(first) == sha256_file(second)
    assert not list(tmp_path.glob(".*.tmp"))

    checkpoint = load_file(str(first))  # safetensors validates the offsets we laid out
    assert all(tensor.dtype == torch.float16 and torch.isfinite(tensor.float()).all() for tensor in checkpoint.values())
    for part in parts:
        reference = bases._build_seeded(part, torch.float16, seed=7)
        expected = _canonical_state(part, reference)
        converted = _diffusers_convert(part, reference, checkpoint)
        # Same keys and values as the seeded model, i.e. a strict load would reproduce it exactly.
        assert converted.keys() == expected.keys(), part.name
        assert all(torch.equal(converted[key], expected[key]) for key in expected), part.name
    seed7, seed8 = (bases._build_seeded(parts[0], torch.float16, seed=seed).state_dict() for seed in (7, 8))
    assert not all(torch.equal(seed7[key], seed8[key]) for key in seed7)


def test_write_random_base_header_and_atomic_write(tmp_path, monkeypatch):
    small = bases.model_parts("sd15", SMALL_CONFIGS["sd15"])
    monkeypatch.setattr(bases, "model_parts", lambda family, configs=None: small)
    path = bases.write_random_base("sd15", tmp_path, seed=3)
    assert path == tmp_path / "kr-random-sd15-seed3.safetensors"
    from kohya_runner.lorafile import read_header
    assert read_header(path)[1] == {"kr_random_base": "sd15", "seed": "3"}

    before = path.read_bytes()
    with pytest.raises(BadInput, match="already exists"):
        bases.write_random_base("sd15", path, seed=4)
    # A file that appears while the base is being built is not replaced either.
    with pytest.raises(BadInput, match="appeared"):
        bases.write_parts(small, path, seed=4, dtype="fp16", metadata={})
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*.tmp"))


@pytest.mark.parametrize("kwargs, message", [
    ({"family": "sd2"}, "random bases for sd15 and sdxl"),
    ({"dtype": "int8"}, "dtype"),
    ({"seed": -1}, "seed"),
    ({"seed": "0"}, "seed"),
])
def test_write_random_base_rejects_bad_arguments(tmp_path, kwargs, message):
    args = {"family": "sd15", "dest": tmp_path / "x.safetensors", **kwargs}
    with pytest.raises(BadInput, match=message):
        bases.write_random_base(**args)
    assert not list(tmp_path.iterdir())


def test_write_random_base_rejects_bad_destinations(tmp_path):
    with pytest.raises(BadInput, match=r"\.safetensors"):
        bases.write_random_base("sd15", tmp_path / "base.ckpt")
    with pytest.raises(BadInput, match="does not exist"):
        bases.write_random_base("sd15", tmp_path / "missing" / "base.safetensors")


# ---------------------------------------------------------------------------------------------
# detection: single files
# ---------------------------------------------------------------------------------------------

_U = "model.diffusion_model."
_VAE_KEY = {"first_stage_model.encoder.conv_in.weight": [8, 3, 3, 3]}


def _unet_keys(context_dim: int, in_channels: int = 4) -> dict[str, list[int]]:
    return {_U + "input_blocks.0.0.weight": [8, in_channels, 3, 3],
            _U + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": [8, context_dim]}


SD15_KEYS = {**_unet_keys(768), "cond_stage_model.transformer.text_model.final_layer_norm.weight": [768], **_VAE_KEY}
SD2_KEYS = {**_unet_keys(1024), "cond_stage_model.model.ln_final.weight": [1024], **_VAE_KEY}
SDXL_KEYS = {**_unet_keys(2048), _U + "label_emb.0.0.weight": [8, 2816],
             "conditioner.embedders.0.transformer.text_model.final_layer_norm.weight": [768],
             "conditioner.embedders.1.model.ln_final.weight": [1280], **_VAE_KEY}


@pytest.mark.parametrize("keys, family", [(SD15_KEYS, "sd15"), (SD2_KEYS, "sd2"), (SDXL_KEYS, "sdxl")])
def test_detects_single_file_families(tmp_path, keys, family):
    path = _write_safetensors(tmp_path / "model.safetensors", keys)
    info = bases.detect_architecture(path)
    assert (info.family, info.format, info.tensor_count) == (family, "single-file", len(keys))
    assert info.size_bytes == path.stat().st_size and info.is_v_pred is None


@pytest.mark.parametrize("keys, reason", [
    ({**_unet_keys(2048), "conditioner.embedders.0.model.ln_final.weight": [1280], **_VAE_KEY}, "refiner"),
    ({**_unet_keys(2048), _U + "label_emb.0.0.weight": [8, 2816]}, "without conditioner.embedders.0.transformer.*"),
    ({**SD15_KEYS, **_unet_keys(768, in_channels=9)}, "9 input channels"),
    ({**_unet_keys(512), **_VAE_KEY}, "cross-attention width 512"),
    ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": [4, 320]}, "LoRA"),
    ({"unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": [4, 320]}, "LoRA"),
    ({"down_blocks.0.resnets.0.conv1.weight": [4, 4, 3, 3]}, "Diffusers component"),
    ({"encoder.down.0.block.0.conv1.weight": [4, 4, 3, 3]}, "standalone VAE"),
    ({"embedding": [3, 4]}, "no Stable Diffusion U-Net keys"),
    ({}, "no tensors"),
])
def test_non_base_files_are_unknown_with_a_reason(tmp_path, keys, reason):
    info = bases.detect_architecture(_write_safetensors(tmp_path / "file.safetensors", keys))
    assert info.family == "unknown"
    assert reason in info.reason


@pytest.mark.parametrize("family", bases.RANDOM_FAMILIES)
def test_random_base_header_detects_as_its_family(tmp_path, family, full_shapes):
    # Zero-length leading dimension: the real names and trailing shapes, without the gigabytes.
    shapes = {name: [0, *shape[1:]] if shape else [0]
              for part_shapes in full_shapes[family].values() for name, shape in part_shapes.items()}
    path = _write_safetensors(tmp_path / "random.safetensors", shapes, {"kr_random_base": family, "seed": "0"})
    info = bases.detect_architecture(path)
    assert (info.family, info.format, info.tensor_count) == (family, "single-file", len(shapes))
    assert "kr random base" in info.reason


@pytest.mark.parametrize("prediction, expected", [("v", True), ("epsilon", False), (None, None)])
def test_v_prediction_from_modelspec_metadata(tmp_path, prediction, expected):
    metadata = {"modelspec.prediction_type": prediction} if prediction else None
    info = bases.detect_architecture(_write_safetensors(tmp_path / "m.safetensors", SD2_KEYS, metadata))
    assert info.is_v_pred is expected


def test_missing_path_and_broken_safetensors_are_bad_input(tmp_path):
    with pytest.raises(BadInput, match="not found"):
        bases.detect_architecture(tmp_path / "nope.safetensors")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\xff" * 64)  # reads as a header length of ~1.8e19 bytes
    with pytest.raises(BadInput, match="not a valid safetensors"):
        bases.detect_architecture(garbage)
    (tmp_path / "short.safetensors").write_bytes(b"abc")
    with pytest.raises(BadInput, match="not a valid safetensors"):
        bases.detect_architecture(tmp_path / "short.safetensors")


def test_detection_reads_only_the_header(tmp_path, monkeypatch):
    path = _write_safetensors(tmp_path / "m.safetensors", SD15_KEYS)
    header_end = 8 + int.from_bytes(path.read_bytes()[:8], "little")
    read_sizes = []
    real_open = open

    class CountingFile:
        def __init__(self, handle):
            self._handle = handle

        def read(self, size=-1):
            read_sizes.append(size)
            return self._handle.read(size)

        def __getattr__(self, name):
            return getattr(self._handle, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self._handle.close()

    monkeypatch.setattr("builtins.open", lambda *a, **k: CountingFile(real_open(*a, **k)))
    bases.detect_architecture(path)
    assert all(size not in (-1, None) for size in read_sizes)  # never "read everything"
    assert sum(read_sizes) <= 8 + header_end < path.stat().st_size  # the length prefix twice, the header once


def test_detection_works_without_torch(tmp_path):
    path = _write_safetensors(tmp_path / "m.safetensors", SDXL_KEYS)
    code = ("import sys\n"
            "for name in ('torch', 'diffusers', 'transformers', 'safetensors', 'numpy'): sys.modules[name] = None\n"
            "from kohya_runner import bases\n"
            f"print(bases.detect_architecture({str(path)!r}).family)\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "sdxl"


# ---------------------------------------------------------------------------------------------
# detection: pickled checkpoints are never unpickled
# ---------------------------------------------------------------------------------------------

class _TouchOnUnpickle:
    """Unpickling this creates `marker`: proof that a file was (or was not) unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _evil_pickle(marker: Path, keys) -> bytes:
    payload = pickle.dumps({"state_dict": {key: _TouchOnUnpickle(marker) for key in keys}})
    probe = marker.with_name("probe")
    pickle.loads(pickle.dumps(_TouchOnUnpickle(probe)))  # the payload really runs when unpickled
    assert probe.exists()
    return payload


def test_ckpt_legacy_pickle_is_not_unpickled(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "model.ckpt"
    path.write_bytes(_evil_pickle(marker, SD15_KEYS))
    info = bases.detect_architecture(path)
    assert (info.family, info.format, info.tensor_count) == ("unknown", "ckpt", None)
    assert "never unpickles" in info.reason
    assert not marker.exists()


def test_ckpt_zip_family_from_key_names_without_unpickling(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "model.ckpt"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", _evil_pickle(marker, SDXL_KEYS))
    info = bases.detect_architecture(path)
    assert (info.family, info.format) == ("sdxl", "ckpt")
    assert "without running it" in info.reason
    assert not marker.exists()


def test_ckpt_written_by_torch_save(tmp_path):
    path = tmp_path / "model.ckpt"
    torch.save({"state_dict": {name: torch.zeros(1) for name in SD2_KEYS}}, path)
    assert bases.detect_architecture(path).family == "sd2"


# ---------------------------------------------------------------------------------------------
# detection: Diffusers folders
# ---------------------------------------------------------------------------------------------

def _diffusers_folder(root: Path, class_name: str, components, unet_config=None, scheduler=None) -> Path:
    root.mkdir()
    (root / "model_index.json").write_text(json.dumps({"_class_name": class_name}))
    for component in components:
        (root / component).mkdir()
    if "unet" in components:
        (root / "unet" / "config.json").write_text(json.dumps(unet_config or {}))
        _write_safetensors(root / "unet" / "diffusion_pytorch_model.safetensors", {"conv_in.weight": [4, 4, 3, 3]})
    if scheduler:
        (root / "scheduler").mkdir()
        (root / "scheduler" / "scheduler_config.json").write_text(json.dumps(scheduler))
    return root


def test_diffusers_sdxl_folder(tmp_path):
    folder = _diffusers_folder(tmp_path / "xl", "StableDiffusionXLPipeline",
                               ["unet", "vae", "text_encoder", "text_encoder_2"], scheduler={"prediction_type": "epsilon"})
    info = bases.detect_architecture(folder)
    assert (info.family, info.format, info.tensor_count, info.is_v_pred) == ("sdxl", "diffusers", 1, False)
    assert info.size_bytes > 0


def test_diffusers_sd2_folder_is_told_apart_by_cross_attention(tmp_path):
    folder = _diffusers_folder(tmp_path / "sd2", "StableDiffusionPipeline", ["unet", "vae", "text_encoder"],
                               unet_config={"cross_attention_dim": 1024}, scheduler={"prediction_type": "v_prediction"})
    info = bases.detect_architecture(folder)
    assert (info.family, info.is_v_pred) == ("sd2", True)


@pytest.mark.parametrize("class_name, components, reason", [
    ("StableDiffusionXLPipeline", ["unet", "vae", "text_encoder"], "text_encoder_2"),
    ("FluxPipeline", ["transformer"], "FluxPipeline"),
])
def test_unusable_diffusers_folders_are_unknown(tmp_path, class_name, components, reason):
    info = bases.detect_architecture(_diffusers_folder(tmp_path / "m", class_name, components))
    assert info.family == "unknown" and reason in info.reason


def test_folder_without_model_index_is_unknown(tmp_path):
    info = bases.detect_architecture(tmp_path)
    assert (info.family, info.format) == ("unknown", "diffusers")
    assert "model_index.json" in info.reason


@pytest.mark.parametrize("family", bases.RANDOM_FAMILIES)
def test_tiny_bases_kr_builds_are_detected_as_their_family(tmp_path, family):
    from kohya_runner.tiny.base import build_tiny_base

    info = bases.detect_architecture(build_tiny_base(tmp_path / "tiny", family))
    assert (info.family, info.format, info.kr_tiny) == (family, "diffusers", True)
    assert info.tensor_count and info.size_bytes


def test_kr_tiny_marker_without_family_falls_back_to_model_index(tmp_path):
    folder = _diffusers_folder(tmp_path / "tiny", "StableDiffusionXLPipeline", ["unet"])
    (folder / "kr_tiny.json").write_text("{}")
    info = bases.detect_architecture(folder)
    assert (info.family, info.format, info.kr_tiny) == ("sdxl", "diffusers", True)


# ---------------------------------------------------------------------------------------------
# check_base_matches
# ---------------------------------------------------------------------------------------------

def test_check_base_matches(tmp_path):
    info = bases.detect_architecture(_write_safetensors(tmp_path / "xl.safetensors", SDXL_KEYS))
    bases.check_base_matches(info, "sdxl")
    with pytest.raises(BadInput) as error:
        bases.check_base_matches(info, "sd15")
    message = str(error.value)
    assert str(info.path) in message and "is SDXL" in message and "trains SD 1.x" in message and "Fix:" in message
    assert error.value.exit_code == 2

    lora = bases.detect_architecture(_write_safetensors(tmp_path / "l.safetensors", {"lora_unet_x.alpha": [1]}))
    with pytest.raises(BadInput, match="LoRA") as error:
        bases.check_base_matches(lora, "sdxl")
    assert "not recognisable as an SDXL base" in str(error.value)


# ---------------------------------------------------------------------------------------------
# one real full-size base (≈2 GiB, ~30 s per write)
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("KR_TEST_FULL_BASES") != "1", reason="set KR_TEST_FULL_BASES=1 to write a 2 GiB base")
def test_full_size_sd15_base_end_to_end(tmp_path):
    first = bases.write_random_base("sd15", tmp_path / "a.safetensors", seed=1)
    second = bases.write_random_base("sd15", tmp_path / "b.safetensors", seed=1)
    assert sha256_file(first) == sha256_file(second)
    info = bases.detect_architecture(first)
    assert (info.family, info.format, info.tensor_count) == ("sd15", "single-file", 1130)
    assert round(info.size_bytes / 2**30, 2) == 1.99
