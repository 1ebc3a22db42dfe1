"""Metadata policies (kohya_runner.privacy): keep | minimal | scrub, applied to copies of a run's LoRAs
when exporting, and the workspace config layer that sets the policy for every run of a workspace.

The end-to-end test trains with kr's tiny trainer (policy keep, so the raw LoRA really carries the
captions and the folder name), then exports with scrub and scans the exported LoRA files' raw bytes.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save, save_file

from conftest import run_kr
from tiny_fixtures import tiny_bases  # noqa: F401  (session fixture)

from kohya_runner import lorafile, privacy, workspace
from kohya_runner.errors import BadInput

FOLDER = "clientsecret-orchid-q7x"
# Distinctive words: a scan of binary tensor data for them cannot hit by chance.
CAPTIONS = [
    "in the style of TOK, zorblaxian quetzalcoatl riding",
    "in the style of TOK, vimbrellum lighthouse at dusk",
    "in the style of TOK, praxtonic heronwing teapot",
    "in the style of TOK, glimmerquartz skyferry",
]
SECRET_WORDS = ["zorblaxian", "quetzalcoatl", "vimbrellum", "praxtonic", "heronwing", "glimmerquartz", "skyferry"]


def data_section(path: Path) -> bytes:
    raw = path.read_bytes()
    return raw[8 + int.from_bytes(raw[:8], "little"):]


def assert_sshs_valid(path: Path) -> dict:
    metadata = lorafile.read_metadata(path)
    assert (metadata["sshs_model_hash"], metadata["sshs_legacy_hash"]) == lorafile.sshs_hashes(path)
    return metadata


# --- the policies on a synthetic LoRA --------------------------------------------------------------------


def full_metadata(folder: str = FOLDER) -> dict[str, str]:
    datasets = [{
        "is_dreambooth": True, "num_train_images": 4, "resolution": [64, 64],
        "tag_frequency": {folder: {"zorblaxian quetzalcoatl": 1}},
        "bucket_info": {"buckets": {"0": {"resolution": [64, 64], "count": 4}}},
        "subsets": [{"img_count": 4, "num_repeats": 1, "image_dir": folder, "class_tokens": "skyferry",
                     "caption_prefix": "praxtonic", "keep_tokens": 1, "is_reg": False}],
    }]
    return {
        "ss_network_module": "networks.lora", "ss_network_dim": "4", "ss_network_alpha": "2.0", "ss_v2": "False",
        "ss_base_model_version": "sdxl_base_v1-0", "ss_learning_rate": "0.0001", "ss_seed": "42",
        "ss_optimizer": "torch.optim.adamw.AdamW(weight_decay=0.01)",
        "ss_tag_frequency": json.dumps({folder: {"zorblaxian quetzalcoatl": 1}}),
        "ss_dataset_dirs": json.dumps({folder: {"n_repeats": 1, "img_count": 4}}),
        "ss_reg_dataset_dirs": json.dumps({}), "ss_datasets": json.dumps(datasets),
        "ss_output_name": "acme-secret-campaign", "ss_sd_model_name": "acme_finetune_v3.safetensors",
        "ss_vae_name": "acme_vae.safetensors", "ss_training_comment": "for ACME, glimmerquartz project",
        "ss_custom_path": "/data/clients/acme/heronwing",
        "modelspec.title": "acme-secret-campaign", "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
        "modelspec.kr_run_id": "acme-secret-campaign-0003", "modelspec.author": "studio",
    }


def synthetic_lora(path: Path, metadata: dict[str, str]) -> Path:
    rng = np.random.default_rng(0)
    tensors = {}
    for i in range(40):  # > 1 MiB of data, so the legacy hash window lies in the data section
        name = f"lora_unet_input_blocks_4_1_transformer_blocks_{i}_attn1_to_q"
        tensors[f"{name}.lora_down.weight"] = rng.standard_normal((8, 640)).astype(np.float16)
        tensors[f"{name}.lora_up.weight"] = rng.standard_normal((640, 8)).astype(np.float16)
        tensors[f"{name}.alpha"] = np.array(4.0, dtype=np.float16)
    ss_only = {k: v for k, v in metadata.items() if k.startswith("ss_")}
    model_hash, legacy_hash = lorafile.hashes_from_serialized(save(tensors, ss_only))  # what sd-scripts stores
    save_file(tensors, str(path), {**metadata, "sshs_model_hash": model_hash, "sshs_legacy_hash": legacy_hash})
    return path


def test_scrub_removes_captions_folders_names_and_comment_and_keeps_hyperparameters(tmp_path):
    source = synthetic_lora(tmp_path / "in.safetensors", full_metadata())
    before = source.read_bytes()
    report = privacy.apply_policy(source, tmp_path / "out" / "scrubbed.safetensors", "scrub")
    out = Path(report["dest"])
    raw = out.read_bytes()
    for secret in [*SECRET_WORDS, FOLDER, "acme", "ACME", "/data/clients"]:
        assert secret.encode() not in raw, secret
    metadata = assert_sshs_valid(out)
    assert metadata["sshs_model_hash"] == lorafile.read_metadata(source)["sshs_model_hash"]  # same tensor bytes
    assert data_section(out) == data_section(source)
    for key in ("ss_tag_frequency", "ss_dataset_dirs", "ss_reg_dataset_dirs", "ss_training_comment", "ss_custom_path",
                "modelspec.kr_run_id"):
        assert key not in metadata and key in report["removed"]
    assert metadata["ss_output_name"] == metadata["modelspec.title"] == "lora"
    assert (metadata["ss_sd_model_name"], metadata["ss_vae_name"]) == ("base-model", "vae")
    for key in ("ss_learning_rate", "ss_seed", "ss_optimizer", "ss_network_dim", "modelspec.architecture", "modelspec.author"):
        assert metadata[key] == full_metadata()[key]
    datasets = json.loads(metadata["ss_datasets"])
    assert "tag_frequency" not in datasets[0] and "bucket_info" not in datasets[0]
    assert datasets[0]["subsets"] == [{"img_count": 4, "num_repeats": 1, "keep_tokens": 1, "is_reg": False}]
    assert source.read_bytes() == before  # the source is never touched
    assert [p.name for p in out.parent.iterdir()] == ["scrubbed.safetensors"]  # no temp files left


def test_minimal_keeps_what_no_metadata_keeps_and_a_title(tmp_path):
    source = synthetic_lora(tmp_path / "in.safetensors", full_metadata())
    report = privacy.apply_policy(source, tmp_path / "minimal.safetensors", "minimal", title="marker-v1")
    metadata = assert_sshs_valid(Path(report["dest"]))
    assert sorted(k for k in metadata if k.startswith("ss_")) == sorted(
        ["ss_network_module", "ss_network_dim", "ss_network_alpha", "ss_v2", "ss_base_model_version"])
    assert metadata["modelspec.title"] == "marker-v1" and "modelspec.kr_run_id" not in metadata
    assert metadata["modelspec.author"] == "studio"
    assert data_section(Path(report["dest"])) == data_section(source)


def test_keep_copies_byte_for_byte_and_refuses_to_rewrite_the_source(tmp_path):
    source = synthetic_lora(tmp_path / "in.safetensors", full_metadata())
    privacy.apply_policy(source, tmp_path / "kept.safetensors", "keep")
    assert (tmp_path / "kept.safetensors").read_bytes() == source.read_bytes()
    titled = privacy.apply_policy(source, tmp_path / "titled.safetensors", "keep", title="marker-v1")
    metadata = assert_sshs_valid(Path(titled["dest"]))
    assert metadata["modelspec.title"] == "marker-v1" and metadata["ss_tag_frequency"]  # keep keeps the rest
    with pytest.raises(BadInput, match="never rewrites"):
        privacy.apply_policy(source, source, "scrub")
    with pytest.raises(BadInput, match="unknown metadata policy"):
        privacy.apply_policy(source, tmp_path / "x.safetensors", "redact")


# --- end to end: a tiny-trainer run, exported with scrub ---------------------------------------------


@pytest.fixture
def secret_dataset(tmp_path) -> Path:
    from kohya_runner.tiny.styles import write_style_dataset

    made = write_style_dataset(tmp_path / "made", count=len(CAPTIONS), size=64, seed=0)
    folder = tmp_path / FOLDER
    folder.mkdir()
    for image, caption in zip(sorted(made.glob("*.png")), CAPTIONS):
        shutil.copy(image, folder / image.name)
        (folder / image.with_suffix(".txt").name).write_text(caption, encoding="utf-8")
    return folder


def tiny_workspace(home: Path, bases: dict[str, Path]) -> None:
    target = workspace.tiny_base_dir(home, "sdxl")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(bases["sdxl"], target)


def exported_loras(tarball: Path, into: Path) -> dict[str, Path]:
    with tarfile.open(tarball) as tar:
        tar.extractall(into, filter="data")
    return {p.name: p for p in into.rglob("*.safetensors")}


def test_an_exported_run_carries_no_caption_word_and_no_dataset_path(home, tiny_bases, secret_dataset, tmp_path):  # noqa: F811
    tiny_workspace(home, tiny_bases)
    result = run_kr("run", "tiny-demo", "--dataset", secret_dataset, "--base", "tiny", "training.epochs=2",
                    "sampling.prompts=[]", "saving.every_n_epochs=1", "saving.state=false", "privacy.metadata=keep",
                    "--json", timeout=240)
    assert result.returncode == 0, result.stdout + result.stderr
    row = json.loads(result.stdout)
    run_dir = Path(row["run_dir"])
    raw_files = sorted((run_dir / "output").glob("*.safetensors"))
    assert len(raw_files) == 2  # an epoch checkpoint and the final LoRA
    digests = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in raw_files}

    # The raw LoRA (policy keep) does carry the captions and the image folder's name: the test can fail.
    # (kr trains from a folder of links named by the cache key when it isolates latent caches, else from
    # the dataset folder itself; either name is in the header.)
    raw_meta = lorafile.read_metadata(raw_files[-1])
    trained_from = list(json.loads(raw_meta["ss_dataset_dirs"]))
    assert trained_from and list(json.loads(raw_meta["ss_tag_frequency"])) == trained_from
    assert all(word.encode() in raw_files[-1].read_bytes() for word in SECRET_WORDS)
    assert all(folder.encode() in raw_files[-1].read_bytes() for folder in trained_from)

    out = tmp_path / "scrubbed.tar.gz"
    exported = run_kr("runs", "export", row["run_id"], "-o", out, "--metadata", "scrub", "--json")
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout)["metadata_policy"] == "scrub"
    loras = exported_loras(out, tmp_path / "unpacked")
    assert sorted(loras) == sorted(p.name for p in raw_files)
    secrets = [*SECRET_WORDS, FOLDER, str(secret_dataset), *trained_from]
    for name, path in loras.items():
        data = path.read_bytes()
        leaked = [secret for secret in secrets if secret.encode() in data or secret.lower().encode() in data]
        assert leaked == [], f"{name} still holds {leaked}"
        metadata = assert_sshs_valid(path)
        original = next(p for p in raw_files if p.name == name)
        assert data_section(path) == data_section(original)  # the weights are the run's, byte for byte
        assert metadata["sshs_model_hash"] == lorafile.read_metadata(original)["sshs_model_hash"]
        assert metadata["ss_learning_rate"] == lorafile.read_metadata(original)["ss_learning_rate"]
    manifest = json.loads(next((tmp_path / "unpacked").rglob("manifest.json")).read_text())
    assert manifest["privacy"]["policy"] == "scrub"
    for entry in manifest["loras"]:
        assert "ss_tag_frequency" not in entry["metadata"] and entry["sha256"] != entry["source_sha256"]
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in raw_files} == digests  # run files untouched

    # Without --metadata the run's own policy (keep here) applies: the LoRAs go out unchanged.
    kept = tmp_path / "kept.tar.gz"
    assert run_kr("runs", "export", row["run_id"], "-o", kept).returncode == 0
    for name, path in exported_loras(kept, tmp_path / "unpacked-kept").items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digests[run_dir / "output" / name]


# --- the workspace layer ---------------------------------------------------------------------------------


def test_workspace_config_sets_the_policy_below_presets_and_overrides(kr, home):
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text('[privacy]\nmetadata = "scrub"\n', encoding="utf-8")
    values = {v["key"]: v for v in kr.json("presets", "explain", "marker")["values"]}
    assert values["privacy.metadata"]["value"] == "scrub" and values["privacy.metadata"]["source"] == "workspace"
    values = {v["key"]: v for v in kr.json("presets", "explain", "marker", "privacy.metadata=keep")["values"]}
    assert values["privacy.metadata"]["value"] == "keep" and values["privacy.metadata"]["source"] == "override"

    (home / "config.toml").write_text('[privasy]\nmetadata = "scrub"\n', encoding="utf-8")
    result = kr("presets", "explain", "marker")
    assert result.exit_code == 2 and "config.toml" in result.output and "[privacy]" in result.output
    (home / "config.toml").write_text('[privacy]\nmetdata = "scrub"\n', encoding="utf-8")
    result = kr("presets", "explain", "marker")
    assert result.exit_code == 2 and "privacy.metadata" in result.output
