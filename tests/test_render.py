"""Rendering: every key an sd-scripts option in the form its TOML reader needs, for every preset,
and hostile strings that can neither break the files nor inject anything."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import toml

from kohya_runner import preset, render
from kohya_runner.errors import BadInput
from kohya_runner.spec import SpecError, sample_prompts
from kohya_runner.spec._checks import file_name_problem

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = json.loads((ROOT / "vendor" / "sd-scripts-args.json").read_text())
SHIPPED = sorted(p.stem for p in (ROOT / "presets").glob("*.toml"))


def flat(text: str) -> dict:
    """What sd-scripts sees: sections flattened one level (contract §2.1)."""
    out = {}
    for value in toml.loads(text).values():
        assert isinstance(value, dict), "top-level scalars are not expected in kr's files"
        out.update(value)
    return out


def assert_sd_scripts_form(script: str, key: str, value) -> None:
    """The manifest's type, written the way sd-scripts' TOML path needs it (it skips argparse)."""
    if key.startswith("metadata_"):
        assert isinstance(value, str)
        return
    assert key in MANIFEST["scripts"][script], f"{key} is not an option of {script}"
    option = MANIFEST["scripts"][script][key]
    if option["action"] == "storetrue":
        assert isinstance(value, bool), key
        return
    values = value if option["nargs"] in ("*", "+") else [value]
    if option["nargs"] in ("*", "+"):
        assert isinstance(value, list), f"{key} must be an array"
    for item in values:
        kind = option["type"]
        if kind == "int":
            assert type(item) is int, key
        elif kind == "float":
            assert type(item) is float, key
        elif kind == "int_or_float":
            assert type(item) is int or (type(item) is float and item < 1), key
        elif kind in ("str", "Path"):
            assert type(item) is str, key
        if option["choices"]:
            assert item in option["choices"], key
    if key == "resolution":
        assert isinstance(value, str)


def render_preset(name, home, tmp_path, dataset_dir, base_file, *overrides):
    resolved = preset.resolve(name, home, list(overrides), {"dataset.dir": str(dataset_dir), "model.base": str(base_file)})
    out = tmp_path / f"out-{name}"
    return resolved.spec, render.render(resolved.spec, out, home)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_preset_renders_valid_sd_scripts_files(name, home, tmp_path, dataset_dir, base_file):
    spec, rendered = render_preset(name, home, tmp_path, dataset_dir, base_file)
    script = {"sdxl": "sdxl_train_network", "sd15": "train_network"}[spec.model.family]
    config_text = (rendered.out_dir / "config.toml").read_text()
    args = flat(config_text)
    for key, value in args.items():
        assert_sd_scripts_form(script, key, value)
    # The unsafe defaults of contract §0 are always explicit.
    for key in ("output_dir", "output_name", "learning_rate", "network_dim", "network_alpha", "mixed_precision",
                "seed", "save_model_as", "logging_dir", "log_prefix", "tokenizer_cache_dir", "console_log_simple",
                "dataset_config", "network_module"):
        assert key in args, key
    assert "sdpa" in args or "xformers" in args
    assert "max_train_epochs" in args or "max_train_steps" in args
    assert args["save_model_as"] == "safetensors" and args["learning_rate"] >= 1e-5
    for key in ("pretrained_model_name_or_path", "output_dir", "logging_dir", "dataset_config", "sample_prompts"):
        assert os.path.isabs(args[key]), key
    # tomllib (strict TOML 1.0) reads the same values as sd-scripts' toml 0.10.2.
    assert tomllib.loads(config_text) == toml.loads(config_text)
    dataset_text = (rendered.out_dir / "dataset.toml").read_text()
    dataset = toml.loads(dataset_text)
    assert tomllib.loads(dataset_text) == dataset
    assert dataset["general"]["caption_extension"] == ".txt"
    [ds] = dataset["datasets"]
    assert ds["enable_bucket"] is True and isinstance(ds["resolution"], (int, list))
    assert ds["bucket_reso_steps"] % (32 if spec.model.family == "sdxl" else 64) == 0
    [subset] = ds["subsets"]
    assert subset["image_dir"] == str(dataset_dir.resolve())
    prompts = [l for l in (rendered.out_dir / "sample_prompts.txt").read_text().splitlines() if l and l[0] != "#"]
    if spec.sampling.during_training == "all":  # with and without trigger, and the variants
        assert len(prompts) == len(sample_prompts(spec)) >= 2 * len(spec.sampling.prompts)
    else:  # a lean sanity sample: the first two subjects with the trigger; the grid is made post hoc
        assert prompts == [p for p in prompts if "TOK" in p] and len(prompts) == 2 < len(sample_prompts(spec))
    assert all(" --w " in p and " --d " in p for p in prompts)
    assert rendered.command[1].endswith(f"{script}.py") and rendered.command[2:] == ["--config_file", str(rendered.out_dir / "config.toml")]


def test_sd15_has_no_sdxl_only_options(home, tmp_path, dataset_dir, base_file):
    _, rendered = render_preset("sd15-lora", home, tmp_path, dataset_dir, base_file)
    args = flat((rendered.out_dir / "config.toml").read_text())
    assert "cache_text_encoder_outputs" not in args and args["network_train_unet_only"] is False
    assert args["text_encoder_lr"] == [5e-5]


def test_float_int_and_list_forms(home, tmp_path, dataset_dir, base_file):
    _, rendered = render_preset("marker", home, tmp_path, dataset_dir, base_file, "network.alpha=16",
                                "scheduler.warmup_steps=0.05", "dataset.resolution=1024,768", "network.args.conv_dim=4",
                                "optimizer.args.betas=0.9,0.99")
    text = (rendered.out_dir / "config.toml").read_text()
    args = flat(text)
    assert "network_alpha = 16.0" in text and args["network_alpha"] == 16.0
    assert args["lr_warmup_steps"] == 0.05
    assert args["resolution"] == "1024,768"
    assert args["network_args"] == ["conv_dim=4"]
    assert args["optimizer_args"] == ["weight_decay=0.01", "betas=0.9,0.99"]
    dataset = toml.loads((rendered.out_dir / "dataset.toml").read_text())
    assert dataset["datasets"][0]["resolution"] == [1024, 768]


def test_raw_sd_scripts_options_checked_against_manifest(home, tmp_path, dataset_dir, base_file):
    _, rendered = render_preset("marker", home, tmp_path, dataset_dir, base_file, "sd_scripts.noise_offset_random_strength=true",
                                "sd_scripts.ip_noise_gamma_random_strength=true", "sd_scripts.huber_c=1")
    args = flat((rendered.out_dir / "config.toml").read_text())
    assert args["noise_offset_random_strength"] is True and args["huber_c"] == 1.0
    cases = {
        "sd_scripts.learning_rat=1e-4": "did you mean sd_scripts.learning_rate?",
        "sd_scripts.learning_rate=1e-4": "set optimizer.lr instead",
        "sd_scripts.output_dir=/tmp/x": "kr sets this option itself",
        "sd_scripts.log_with=wandb": "off the machine",
        "sd_scripts.huggingface_repo_id=me/x": "internet",
        "sd_scripts.max_token_length=100": "set model.max_token_length instead",
        "sd_scripts.huber_schedule=linear": "must be one of constant, exponential, snr",
        "sd_scripts.network_args=conv_dim=4": "set network.args instead",
        "sd_scripts.lr_decay_steps=2.5": "ratio",
        "sd_scripts.metadata_author=7": "must be a string",
        "sd_scripts.metadata_client=7": "must be strings",
    }
    for override, message in cases.items():
        with pytest.raises(BadInput) as info:
            render_preset("marker", home, tmp_path / override.split("=")[0], dataset_dir, base_file, override)
        assert message in info.value.message, (override, info.value.message)


@pytest.mark.parametrize("what, setup, message", [
    ("dataset", lambda d, b: {"dataset.dir": str(d / "missing"), "model.base": str(b)}, "dataset folder not found"),
    ("dataset", lambda d, b: {"dataset.dir": str(b), "model.base": str(b)}, "not a folder"),
    ("base", lambda d, b: {"dataset.dir": str(d), "model.base": str(b) + ".nope"}, "base model not found"),
    ("base", lambda d, b: {"dataset.dir": str(d), "model.base": "stabilityai/sdxl-base"}, "Hub id"),
    ("base", lambda d, b: {"dataset.dir": str(d), "model.base": str(d)}, "no model_index.json"),
    ("base", lambda d, b: {"dataset.dir": str(d), "model.base": None}, "no base model given"),
    ("base", lambda d, b: {"dataset.dir": str(d), "model.base": "tiny"}, "kr base tiny"),
])
def test_missing_inputs_write_nothing(what, setup, message, home, tmp_path, dataset_dir, base_file):
    resolved = preset.resolve("marker", home, [], setup(dataset_dir, base_file))
    out = tmp_path / "out"
    with pytest.raises(BadInput) as info:
        render.render(resolved.spec, out, home)
    assert message in info.value.message
    assert not out.exists()


def test_never_overwrites_without_force(home, tmp_path, dataset_dir, base_file):
    _, first = render_preset("marker", home, tmp_path, dataset_dir, base_file)
    before = (first.out_dir / "config.toml").read_bytes()
    with pytest.raises(BadInput, match="does not overwrite"):
        render_preset("marker", home, tmp_path, dataset_dir, base_file, "network.dim=64")
    assert (first.out_dir / "config.toml").read_bytes() == before
    resolved = preset.resolve("marker", home, ["network.dim=64"], {"dataset.dir": str(dataset_dir), "model.base": str(base_file)})
    render.render(resolved.spec, first.out_dir, home, force=True)
    assert flat((first.out_dir / "config.toml").read_text())["network_dim"] == 64
    assert not [p for p in first.out_dir.iterdir() if p.name.endswith(".tmp")]


# -- hostile strings ------------------------------------------------------------------------------------

HOSTILE = [
    'quote " inside', "apostrophe ' inside", "back\\slash", "C:\\Users\\artist\\data", "hash # not a comment",
    "close ]] bracket", "[[datasets]]", 'key = "injected"', 'x"\ny = 1', "'''triple single", '"""triple double',
    "tab\tinside", "unicode é 日本 🎨 ß", "comma, separated, tags", "$(rm -rf ~) `id`", "{{braces}} {0}",
    "trailing backslash\\", "\\u0022 looks like an escape", "\\n looks like a newline", "new\nline", "carriage\rreturn",
    "line\u2028separator", "nul\x00byte", "space -- dash", " --n injected", "#leading hash", '""two leading quotes',
    "emoji 🧪 zero\u200bwidth", "x = 1 # ] [ } {", "\ufeffbom", '"', "'",
]
assert len(HOSTILE) >= 20

TEXT_FIELDS = ["dataset.caption_prefix", "privacy.training_comment", "saving.output_name", "name"]
PROMPT_FIELDS = ["dataset.trigger", "sampling.negative_prompt", "sampling.prompts"]


def expected_rejection(field: str, text: str) -> bool:
    """What kr must refuse; everything else must render and read back unchanged."""
    if any(ch in text for ch in ("\n", "\r", "\u2028", "\x00")):
        return True  # would add a line to the prompts file or a log
    if field in PROMPT_FIELDS and " --" in text:
        return True  # sd-scripts would read the rest as a prompt option
    if field in ("saving.output_name", "name") and file_name_problem(text):
        return True  # becomes a file name (no folders, no leading '.', '-' or space, no control characters)
    if field == "sampling.prompts" and text.strip().startswith("#"):
        return True  # its no-trigger line would start with '#', which sd-scripts skips
    return False


def _render_or_error(home, tmp_path, dataset_dir, base_file, values: dict):
    out = tmp_path / "out"
    try:
        # every prompt form rendered (the preset samples only a sanity pair during training)
        resolved = preset.resolve("marker", home, [], {"dataset.dir": str(dataset_dir), "model.base": str(base_file),
                                                       "sampling.during_training": "all", **values})
        rendered = render.render(resolved.spec, out, home)
    except BadInput as e:
        assert not out.exists(), "nothing may be written for bad input"
        assert "Traceback" not in e.message and e.message.strip()
        return None, e.message
    return (resolved.spec, rendered), None


def _read_back(rendered, spec):
    config_text = (rendered.out_dir / "config.toml").read_text()
    args = flat(config_text)
    assert tomllib.loads(config_text) == toml.loads(config_text)
    assert set(args) == {e.key for e in rendered.args.entries}, "no key may appear or vanish"
    dataset_text = (rendered.out_dir / "dataset.toml").read_text()
    dataset = toml.loads(dataset_text)
    assert tomllib.loads(dataset_text) == dataset
    assert set(dataset) == {"general", "datasets"} and len(dataset["datasets"]) == 1
    # sd-scripts reads prompt lines with readlines(): \n, \r and \r\n all end a line.
    raw_lines = (rendered.out_dir / "sample_prompts.txt").read_text().splitlines()
    prompt_lines = [l for l in raw_lines if l.strip() and l[0] != "#"]
    assert len(prompt_lines) == len(sample_prompts(spec))
    return args, dataset, prompt_lines


@pytest.mark.parametrize("field", TEXT_FIELDS + PROMPT_FIELDS)
@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_strings(field, text, home, tmp_path, dataset_dir, base_file):
    value = [text, "a cat"] if field == "sampling.prompts" else text
    result, error = _render_or_error(home, tmp_path, dataset_dir, base_file, {field: value})
    if expected_rejection(field, text):
        assert error is not None and field.split(".")[-1] in error, (text, error)
        return
    assert error is None, (field, text, error)
    spec, rendered = result
    args, dataset, prompt_lines = _read_back(rendered, spec)
    from kohya_runner.sdscripts.prompts import parse_prompt_line

    parsed = [parse_prompt_line(line.strip()) for line in prompt_lines]
    keys = {"prompt", "negative_prompt", "width", "height", "seed", "sample_steps", "scale"}
    assert all(set(p) == keys for p in parsed), "no option may be injected"
    if field == "dataset.caption_prefix":
        assert dataset["datasets"][0]["subsets"][0]["caption_prefix"] == text
    elif field == "privacy.training_comment":
        assert args["training_comment"] == text
    elif field in ("saving.output_name", "name"):
        assert args["output_name"] == text
    elif field == "dataset.trigger":
        expected = [p.text.strip() for p in sample_prompts(spec)]
        assert [p["prompt"].strip() for p in parsed] == expected
        assert expected[:len(spec.sampling.prompts)] == [f"in the style of {text}, {s}".strip() for s in spec.sampling.prompts]
    elif field == "sampling.negative_prompt":
        assert all(p["negative_prompt"] == text for p in parsed)
    elif field == "sampling.prompts":
        assert parsed[0]["prompt"] == f"in the style of TOK, {text}"
        assert parsed[len(spec.sampling.prompts)]["prompt"] == text.lstrip()  # the no-trigger form


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_strings_in_paths(text, home, tmp_path, base_file):
    if "\x00" in text:
        pytest.skip("a path cannot contain NUL on POSIX")
    folder = tmp_path / ("data " + text.replace("/", "_"))
    folder.mkdir()
    base = folder / "model.safetensors"
    base.write_bytes(base_file.read_bytes())
    result, error = _render_or_error(home, tmp_path, folder, base, {})
    assert error is None, error
    spec, rendered = result
    args, dataset, _ = _read_back(rendered, spec)
    assert args["pretrained_model_name_or_path"] == str(base.resolve())
    assert dataset["datasets"][0]["subsets"][0]["image_dir"] == str(folder.resolve())


def test_hostile_output_folder(home, tmp_path, dataset_dir, base_file):
    out = tmp_path / 'out "quoted" # [x]\\ é'
    resolved = preset.resolve("marker", home, [], {"dataset.dir": str(dataset_dir), "model.base": str(base_file)})
    rendered = render.render(resolved.spec, out, home)
    args = flat((rendered.out_dir / "config.toml").read_text())
    assert args["output_dir"] == str(out.resolve() / "output")
    assert args["sample_prompts"] == str(out.resolve() / "sample_prompts.txt")


def test_optimizer_string_args_are_quoted_for_literal_eval(home, tmp_path, dataset_dir, base_file):
    import ast

    _, rendered = render_preset("marker", home, tmp_path, dataset_dir, base_file,
                                'optimizer.args.name="it\'s \\"odd\\" # x"', "optimizer.args.decouple=true")
    args = flat((rendered.out_dir / "config.toml").read_text())
    parsed = dict(item.split("=", 1) for item in args["optimizer_args"])
    assert ast.literal_eval(parsed["name"]) == "it's \"odd\" # x"
    assert ast.literal_eval(parsed["decouple"]) is True


def test_prompt_read_back_starts_at_the_first_piece():
    """render reads sample_prompts.txt as sd-scripts does, the prompt piece included: a line whose prompt
    sd-scripts would read as an option is refused naming the field, even past the spec rules."""
    from kohya_runner.spec import build_spec
    from kohya_runner.sdscripts.prompts import sample_prompt_lines

    spec = build_spec({"sampling": {"prompts": ["a cat"], "template": "{subject}", "without_trigger": False}})
    samples = sample_prompts(spec)
    good = "\n".join(sample_prompt_lines(spec, samples)) + "\n"
    render.verify_prompts(spec, samples, good)
    hostile = good.replace("a cat", "n cat", 1)
    with pytest.raises(SpecError) as info:
        render.verify_prompts(spec, samples, hostile)
    assert info.value.problems[0].path == "sampling.prompts[0]" and "negative_prompt" in info.value.message
