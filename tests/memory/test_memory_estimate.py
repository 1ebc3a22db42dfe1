"""The memory estimate (its table, refined by measured runs), `kr run --fit` and `kr run --dry-run`."""

from __future__ import annotations

import json

import pytest

from kohya_runner.errors import BadInput
from kohya_runner.memory import estimate, fit, table_estimate
from kohya_runner.spec import build_spec

GIB = 2**30


def _sdxl(**groups):
    return build_spec({"model": {"family": "sdxl"}, "dataset": {"resolution": 1024}, **groups})


def test_the_table_follows_each_memory_setting():
    base = table_estimate(_sdxl(precision={"gradient_checkpointing": True})).total
    assert table_estimate(_sdxl(precision={"gradient_checkpointing": False})).total > base + 6 * GIB
    assert table_estimate(_sdxl(precision={"gradient_checkpointing": True, "fp8_base": True})).total < base - 2 * GIB
    assert table_estimate(_sdxl(precision={"gradient_checkpointing": True}, dataset={"resolution": 1024,
                                                                                      "batch_size": 2})).total > base
    assert table_estimate(build_spec({"model": {"family": "sd15"}, "dataset": {"resolution": 512}})).total < base / 2
    fp32 = table_estimate(_sdxl(precision={"gradient_checkpointing": True, "mixed_precision": "no"}))
    assert fp32.parts["weights"] > 1.9 * table_estimate(_sdxl(precision={"gradient_checkpointing": True})).parts["weights"]


def test_sd_scripts_8_gb_recipe_lands_near_8_gib():
    """docs/train_SDXL-en.md at the pin: SDXL LoRA "can be done with 8GB GPU memory (10GB recommended)" with the
    U-Net alone, gradient checkpointing, cached TE outputs and latents, an 8-bit optimizer and dim 4 to 8."""
    spec = _sdxl(network={"dim": 8, "alpha": 4, "unet_only": True}, optimizer={"type": "AdamW8bit"},
                 precision={"gradient_checkpointing": True, "cache_text_encoder_outputs": True, "cache_latents": True})
    assert 7 * GIB < table_estimate(spec).total < 10 * GIB


def test_measured_runs_refine_the_table():
    spec = _sdxl(precision={"gradient_checkpointing": True})
    table = table_estimate(spec).total
    same = estimate(spec, [(spec, 9 * GIB)])
    assert same.total == 9 * GIB and same.basis.startswith("measured: 1 run")
    other = _sdxl(precision={"gradient_checkpointing": True}, network={"dim": 64, "alpha": 32})
    scaled = estimate(spec, [(other, int(table_estimate(other).total * 1.2))])
    assert scaled.total == pytest.approx(table * 1.2, rel=0.01) and "table × 1.20" in scaled.basis
    assert estimate(spec, [(build_spec({"model": {"family": "sd15"}}), 3 * GIB)]).total == table  # not the same family


def test_fit_takes_the_fastest_setting_that_fits():
    spec = _sdxl(dataset={"resolution": 1024, "batch_size": 2}, precision={"gradient_checkpointing": True})
    roomy = fit(spec, 48 * GIB)
    assert [(k, a) for k, _, a in roomy.changes] == [("precision.gradient_checkpointing", False)]  # faster
    assert fit(spec, 16 * GIB).changes == []  # it fits as asked: never made slower
    tight = fit(spec, 8 * GIB)
    assert tight.estimate.total <= 8 * GIB * 0.92 and ("dataset.batch_size", 2, 1) in tight.changes
    with pytest.raises(BadInput, match="even with every memory setting"):
        fit(spec, 3 * GIB)


def test_dry_run_checks_and_estimates_and_writes_nothing(kr, home, style_images, sdxl_header_base, fault_checkout):
    result = kr("run", "marker", "--dataset", style_images, "--base", sdxl_header_base, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "dry run: every check passed; nothing launched, nothing written" in result.stdout
    assert "peak memory: about" in result.stdout and "GiB of GPU memory" in result.stdout
    assert not (home / "runs").exists() or not any((home / "runs").iterdir())
    data = json.loads(kr("run", "marker", "--dataset", style_images, "--base", sdxl_header_base, "--dry-run",
                         "--json").stdout)
    assert data["schema"] == "kr.run-plan/1" and data["memory"]["device"] == "gpu" and data["memory"]["gib"] > 5
    refused = kr("run", "marker", "--dataset", style_images, "--base", sdxl_header_base, "--dry-run", "network.dim=0")
    assert refused.exit_code == 2


def test_fit_chooses_for_the_gpu_and_says_so(kr, home, style_images, sdxl_header_base, fault_checkout, monkeypatch):
    from kohya_runner import doctor

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # kr may use GPU 0 …
    monkeypatch.setattr(doctor, "gpu_inventory", lambda: [doctor.Gpu(0, "a 48 GB card", 48 * GIB, 46 * GIB)])
    result = kr("run", "marker", "--dataset", style_images, "--base", sdxl_header_base, "--gpu", "0", "--fit",
                "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    assert "fit: precision.gradient_checkpointing=false" in result.stderr
    assert json.loads(result.stdout)["memory"]["gib"] > 20  # the plan is the fitted spec's
    monkeypatch.setattr(doctor, "gpu_inventory", lambda: [doctor.Gpu(0, "an 8 GB card", 8 * GIB, 7 * GIB)])
    small = kr("run", "marker", "--dataset", style_images, "--base", sdxl_header_base, "--gpu", "0", "--fit",
               "--dry-run")
    assert small.exit_code == 0 and "fit: dataset.batch_size=1" in small.stderr and "precision.fp8_base=true" in small.stderr
