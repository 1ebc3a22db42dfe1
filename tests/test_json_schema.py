"""Every `--json` output of the commands in cli/{base,dataset,doctor,presets,render,vendor}.py names its
versioned shape first: "schema": "kr.<thing>/1" (the vendor commands that install are checked in
test_vendor_cli.py, beside the tests that run them)."""

from __future__ import annotations

import json

import pytest

from tiny_fixtures import tiny_bases  # noqa: F401  (session fixture)

COMMANDS = {
    "dataset-check": ("dataset", "check", "{images}"),
    "dataset-caption": ("dataset", "caption", "{images}", "--prefix", "x, ", "--dry-run"),
    "dataset-stats": ("dataset", "stats", "{images}"),
    "preset": ("presets", "show", "marker"),
    "preset-explain": ("presets", "explain", "marker"),
    "preset-validate": ("presets", "validate", "{preset_file}"),
    "render": ("render", "marker", "--dataset", "{images}", "--base", "{base}", "--out", "{out}"),
    "vendor-status": ("vendor", "status"),
    "doctor": ("doctor",),
    "base-info": ("base", "info", "{base}"),
    "base-tiny": ("base", "tiny", "--family", "sd15"),
}


@pytest.fixture
def places(tmp_path, style_images, tiny_bases) -> dict:  # noqa: F811
    preset_file = tmp_path / "mine.toml"
    preset_file.write_text('[preset]\nextends = "sdxl-lora"\n[network]\ndim = 32\nalpha = 16.0\n')
    return {"images": style_images, "preset_file": preset_file, "base": tiny_bases["sdxl"], "out": tmp_path / "rendered"}


@pytest.mark.parametrize("schema", sorted(COMMANDS))
def test_json_output_names_its_schema(kr, places, schema):
    args = [arg.format(**places) for arg in COMMANDS[schema]]
    result = kr(*args, "--json")
    assert result.exit_code in (0, 1), result.output  # doctor and dataset check exit 1 on findings, still JSON
    data = json.loads(result.stdout)
    assert next(iter(data)) == "schema" and data["schema"] == f"kr.{schema}/1"
