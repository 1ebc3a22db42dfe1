"""sdscripts/ is the one home of sd-scripts knowledge: option names appear nowhere else in code.

The spec's own field names are kr's vocabulary (some deliberately match sd-scripts' option names,
e.g. precision.cache_text_encoder_outputs): a spec field, its dotted path, or a field description naming
the option it maps to is not sd-scripts knowledge outside sdscripts/."""

from __future__ import annotations

import ast
import io
import json
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

from kohya_runner.sdscripts import architectures, environment, options, outputs

PACKAGE = Path(__file__).resolve().parents[2] / "kohya_runner"
OPTION_NAMES = ("network_dim", "max_train_steps", "save_every_n_", "sample_every_n_", "num_repeats",
                "cache_text_encoder_outputs")
ALLOWED_DIRS = ("sdscripts", "tiny")


def _spec_vocabulary() -> tuple[set[str], list[str]]:
    from kohya_runner.spec import leaf_paths

    paths = leaf_paths()
    return {path[-1] for path in paths}, sorted((".".join(path) for path in paths), key=len, reverse=True)


def _docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                lines.update(range(first.lineno, first.end_lineno + 1))
    return lines


def option_name_uses(path: Path) -> list[tuple[int, str]]:
    """(line, option name) for every use in code or string literals; comments, docstrings, spec field names,
    spec paths and `description=` texts excluded."""
    source = path.read_text(encoding="utf-8")
    docs = _docstring_lines(ast.parse(source))
    fields, dotted = _spec_vocabulary()
    found, previous, in_description = [], [], False
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        # a description= text (implicitly joined strings across lines) documents the field
        in_description = previous == ["description", "="] or (in_description and token.type in
                                                             (tokenize.STRING, tokenize.NL, tokenize.COMMENT))
        previous = (previous + [token.string])[-2:]
        if token.type not in (tokenize.NAME, tokenize.STRING) or token.start[0] in docs or in_description:
            continue
        if token.type == tokenize.NAME and token.string in fields:
            continue
        text = token.string
        for spec_path in dotted:
            text = text.replace(spec_path, "")
        found += [(token.start[0], name) for name in OPTION_NAMES if name in text]
    return found


def offenders() -> dict[str, list[tuple[int, str]]]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in ALLOWED_DIRS:
            continue
        uses = option_name_uses(path)
        if uses:
            out[rel.as_posix()] = uses
    return out


def test_option_names_appear_only_in_sdscripts():
    assert not offenders(), f"sd-scripts option names outside kohya_runner/sdscripts/: {offenders()}"


def test_the_grep_rule_ignores_comments_and_docstrings(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text('"""num_repeats in a docstring."""\n# network_dim in a comment\nx = "max_train_steps"\n'
                      "def f(s):\n    return s.num_repeats\n", encoding="utf-8")
    assert option_name_uses(sample) == [(3, "max_train_steps"), (5, "num_repeats")]


def test_the_grep_rule_lets_the_spec_name_its_own_fields(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text('a = spec.precision.cache_text_encoder_outputs\nb = "precision.cache_text_encoder_outputs"\n'
                      'c = Field(1, description="rank "\n          "(network_dim)")\nd = "--network_dim"\n', encoding="utf-8")
    assert option_name_uses(sample) == [(5, "network_dim")]


# ----------------------------------------------------------------------------------------------
# The shim and the one copies


def test_choices_come_from_the_pinned_manifest():
    from kohya_runner import spec

    assert options.choices("sample_sampler") == tuple(spec.SAMPLERS)
    assert options.choices("sample_sampler", "train_network") == tuple(spec.SAMPLERS)
    assert options.choices("optimizer_type") == () and options.choices("lr_scheduler") == ()  # free text in sd-scripts
    assert options.BUILTIN_OPTIMIZERS is spec.BUILTIN_OPTIMIZERS and options.SCHEDULERS is spec.SCHEDULERS
    with pytest.raises(KeyError):
        options.choices("no_such_option")


def test_checkpoint_names_are_one_rule():
    epoch, step, final = outputs.checkpoint_names("m")
    assert (epoch(3), step(500), final) == (outputs.epoch_lora_name("m", 3), outputs.step_lora_name("m", 500),
                                            outputs.final_lora_name("m"))
    epoch, step, final = outputs.checkpoint_names(None)  # sd-scripts' names when output_name is unset
    assert (epoch(1), step(2), final) == ("epoch-000001.safetensors", "at-step00000002.safetensors", "last.safetensors")
    assert outputs.checkpoint_order("m", epoch(1).replace("epoch", "m")) == (0, 1)


def test_one_offline_environment():
    from kohya_runner import vendoring

    assert vendoring.OFFLINE_ENV is environment.OFFLINE_ENV


def test_random_bases_and_lora_size_share_the_architectures():
    from kohya_runner import bases

    assert bases.SDXL_UNET_CONFIG is architectures.SDXL_UNET_CONFIG
    assert architectures.CROSS_ATTENTION_DIM == {"sdxl": 2048, "sd2": 1024, "sd15": 768}
    # SD1.5 by hand: 16 transformer models of one block each, plus CLIP-L's 12 layers of 6 linears
    assert len(architectures.unet_lora_layers("sd15")) == 16 * 12 and len(architectures.text_encoder_lora_layers("sd15")) == 72


def test_drift_probe_runs_by_path(tmp_path):
    checkout = tmp_path / "sd-scripts"
    checkout.mkdir()
    for script in ("train_network", "sdxl_train_network"):
        (checkout / f"{script}.py").write_text(
            "import argparse\n\ndef setup_parser():\n    p = argparse.ArgumentParser()\n"
            "    p.add_argument('--network_dim', type=int, default=None)\n"
            "    p.add_argument('--cache_latents', action='store_true')\n    return p\n", encoding="utf-8")
    probe, out = PACKAGE / "sdscripts" / "drift_probe.py", tmp_path / "options.json"
    subprocess.run([sys.executable, "-I", str(probe), str(out)], cwd=checkout, check=True, capture_output=True)
    options_ = json.loads(out.read_text(encoding="utf-8"))["scripts"]["train_network"]
    assert options_["network_dim"]["type"] == "int" and options_["cache_latents"]["action"] == "storetrue"
