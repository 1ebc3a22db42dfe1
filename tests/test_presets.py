"""Presets: lookup by name or path, `extends`, layering and provenance, and the `kr presets` commands."""

from __future__ import annotations

import json

import pytest

from kohya_runner import preset
from kohya_runner.errors import BadInput

SHIPPED = ["sdxl-lora", "marker", "zine", "editorial-cartoon", "sd15-lora", "sdxl-12gb", "sdxl-8gb", "prodigy", "adafactor"]


def test_every_required_preset_ships_with_a_full_header(home):
    found = {p.name: p for p in preset.available(home)}
    assert set(SHIPPED) <= set(found)
    for name in SHIPPED:
        header = found[name].header
        assert {"description", "intended_use", "dataset_size", "vram", "sd_scripts_commit"} <= set(header), name
        assert header["sd_scripts_commit"] == "48d368fa557731ad0488c07304dfeba8c07910eb"


@pytest.mark.parametrize("name", SHIPPED)
def test_every_preset_resolves(home, name):
    spec = preset.resolve(name, home).spec
    assert spec.name == name
    assert spec.optimizer.lr != 2e-6 and spec.network.dim >= 4 and spec.training.seed is not None


def test_case_study_presets(home):
    for name, images in (("marker", 50), ("zine", 50), ("editorial-cartoon", 24)):
        resolved = preset.resolve(name, home)
        spec = resolved.spec
        assert [p.name for p in resolved.chain] == ["sdxl-lora", name]
        assert spec.dataset.trigger == "TOK" and spec.model.family == "sdxl"
        assert str(images) in resolved.preset.header["dataset_size"]
        assert "a man thinking" in spec.sampling.prompts
        assert "a happy woman drinking coffee" in spec.sampling.prompts
        assert "an hourglass with sand flowing" in spec.sampling.prompts
        assert any(p.startswith("a busy city street with people rushing") for p in spec.sampling.prompts)
        steps = images * spec.dataset.repeats / spec.dataset.batch_size * spec.training.epochs
        assert 1000 <= steps <= 2500, (name, steps)  # a sane budget for 24–50 images


def test_vram_tiers_and_optimizer_variants(home):
    s12 = preset.resolve("sdxl-12gb", home).spec
    s8 = preset.resolve("sdxl-8gb", home).spec
    assert s12.dataset.batch_size == 1 and s12.precision.full_bf16
    assert s8.precision.fp8_base and s8.network.dim < s12.network.dim
    assert [p.name for p in preset.resolve("sdxl-8gb", home).chain] == ["sdxl-lora", "sdxl-12gb", "sdxl-8gb"]
    prodigy = preset.resolve("prodigy", home).spec
    assert prodigy.optimizer.type == "Prodigy" and prodigy.optimizer.lr == 1.0
    assert "weight_decay" in prodigy.optimizer.args
    ada = preset.resolve("adafactor", home).spec
    assert ada.optimizer.args["relative_step"] is False


def test_name_forms(home):
    assert preset.resolve("marker-preset", home).spec.name == "marker"
    with pytest.raises(BadInput, match="Did you mean 'marker'"):
        preset.resolve("markr", home)


def test_layering_and_provenance(home, tmp_path):
    user = tmp_path / "client.toml"
    user.write_text('[preset]\nextends = "marker"\ndescription = "client"\n\n[network]\ndim = 24\n\n'
                    '[optimizer]\nargs = { weight_decay = 0.05 }\n')
    resolved = preset.resolve(str(user), home, ["optimizer.lr=3e-4", "network.alpha=12"])
    spec, sources = resolved.spec, resolved.sources
    assert [p.name for p in resolved.chain] == ["sdxl-lora", "marker", "client"]
    assert (spec.network.dim, spec.network.alpha, spec.optimizer.lr) == (24, 12.0, 3e-4)
    assert sources["network.dim"] == f"file:{user}"
    assert sources["network.alpha"] == "override"
    assert sources["dataset.repeats"] == "built-in:marker"
    assert sources["model.family"] == "built-in:sdxl-lora"
    assert "training.noise_offset" not in sources  # still the built-in default
    assert spec.optimizer.args == {"weight_decay": 0.05}  # a dict value replaces, it does not merge
    rows = {r.key: r for r in preset.explain(resolved)}
    assert rows["training.noise_offset"].source == "default"
    assert rows["optimizer.lr"].value == 3e-4 and rows["optimizer.lr"].source == "override"


def test_explain_rows_carry_every_field_description(home):
    rows = preset.explain(preset.resolve("prodigy", home, ["sd_scripts.huber_c=0.2"]))
    assert all(r.description for r in rows), [r.key for r in rows if not r.description]
    by_key = {r.key: r for r in rows}
    assert "(network_dim)" in by_key["network.dim"].description
    assert by_key["sd_scripts.huber_c"].description == "raw sd-scripts option"


def test_user_presets_folder_shadows_and_extends(home):
    folder = home / "presets"
    folder.mkdir(parents=True)
    (folder / "house.toml").write_text('[preset]\nextends = "zine"\n[network]\ndim = 8\nalpha = 4.0\n')
    assert preset.resolve("house", home).spec.network.dim == 8
    names = {p.name: p.origin for p in preset.available(home)}
    assert names["house"] == "user" and names["zine"] == "built-in"


def test_extends_loop_and_bad_header(home, tmp_path):
    (tmp_path / "a.toml").write_text('[preset]\nextends = "./b.toml"\n')
    (tmp_path / "b.toml").write_text('[preset]\nextends = "./a.toml"\n')
    with pytest.raises(BadInput, match="loop"):
        preset.resolve(str(tmp_path / "a.toml"), home)
    (tmp_path / "c.toml").write_text('[preset]\nextend = "marker"\n')
    with pytest.raises(BadInput, match="unknown header key"):
        preset.resolve(str(tmp_path / "c.toml"), home)
    (tmp_path / "d.toml").write_text('[network\ndim = 3\n')
    with pytest.raises(BadInput, match="not valid TOML"):
        preset.resolve(str(tmp_path / "d.toml"), home)


def test_typo_in_user_file_is_an_error_with_the_file_named(home, tmp_path):
    path = tmp_path / "typo.toml"
    path.write_text('[preset]\nextends = "marker"\n[optimizer]\nlearning_rate = 1e-4\n')
    with pytest.raises(BadInput) as info:
        preset.resolve(str(path), home)
    assert str(path) in info.value.message and "optimizer.learning_rate: unknown key" in info.value.message


# -- the commands ---------------------------------------------------------------------------------


def test_ls_json(kr):
    data = kr.json("presets", "ls")
    rows = data["presets"]
    assert data["schema"] == "kr.presets/1"
    assert {r["name"] for r in rows} >= set(SHIPPED)
    assert all("description" in r for r in rows)


def test_show_prints_the_file(kr):
    result = kr("presets", "show", "marker", ok=True)
    assert 'extends = "sdxl-lora"' in result.stdout and "sdxl-lora → marker" in result.stdout
    data = kr.json("presets", "show", "marker-preset")
    assert data["extends"] == ["sdxl-lora"] and data["body"]["dataset"]["repeats"] == 4


def test_cp_then_edit_then_use(kr, home, tmp_path):
    result = kr("presets", "cp", "marker", "mine", ok=True)
    target = home / "presets" / "mine.toml"
    assert target.is_file() and "copied marker" in result.stdout
    again = kr("presets", "cp", "marker", "mine")
    assert again.exit_code == 2 and "does not overwrite" in again.stderr
    kr("presets", "cp", "zine", str(tmp_path / "z.toml"), ok=True)
    assert (tmp_path / "z.toml").read_text() == (preset.builtin_dir() / "zine.toml").read_text()
    target.write_text(target.read_text().replace("repeats = 4", "repeats = 7"))
    data = kr.json("presets", "explain", "mine")
    values = {v["key"]: v for v in data["values"]}
    assert values["dataset.repeats"]["value"] == 7 and values["dataset.repeats"]["source"] == "user:mine"


def test_explain_shows_layers(kr):
    result = kr("presets", "explain", "marker", "optimizer.lr=2e-4", "--changed", ok=True)
    lines = result.stdout.splitlines()
    assert any(l.startswith("optimizer.lr") and "override" in l for l in lines)
    assert any(l.startswith("dataset.repeats") and "built-in:marker" in l for l in lines)
    assert not any(l.startswith("training.noise_offset") for l in lines)  # --changed hides defaults


def test_validate(kr, tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[preset]\nextends = "sdxl-lora"\n[network]\ndim = 32\nalpha = 16.0\n')
    assert "ok" in kr("presets", "validate", str(good), ok=True).stdout
    bad = tmp_path / "bad.toml"
    bad.write_text('[preset]\nextends = "prodigy"\n[optimizer]\nlr = 1e-4\n[scheduler]\nname = "constant"\nwarmup_steps = 10\n')
    result = kr("presets", "validate", str(bad))
    assert result.exit_code == 2
    assert "optimizer.lr = 0.0001" in result.stderr and "scheduler.warmup_steps = 10" in result.stderr
    assert "Traceback" not in result.output


def test_validate_runs_the_render_checks_and_names_the_file(kr, tmp_path):
    """Before: `presets validate` said ok to a misspelled [sd_scripts] key and to log_with = "wandb"."""
    for body, words in (('[sd_scripts]\nnot_an_option = 1\n', ["sd_scripts.not_an_option", "not an sd-scripts option"]),
                        ('[sd_scripts]\nlog_with = "wandb"\n', ["wandb", "off the machine"]),
                        ('[sd_scripts]\nlearning_rate = 1e-4\n', ["set optimizer.lr instead"]),
                        ('[optimizer]\nlearning_rate = 1e-4\n', ["did you mean optimizer.lr?"]),
                        ('[sampling]\nprompts = ["n ugly hands"]\n', ["sampling.prompts[0]", "--n"]),
                        ('[saving]\noutput_name = "../up"\n', ["saving.output_name", "Fix:"])):
        path = tmp_path / "p.toml"
        path.write_text('[preset]\nextends = "marker"\n' + body)
        result = kr("presets", "validate", str(path))
        assert result.exit_code == 2 and all(w in result.stderr for w in words), (body, result.stderr)
        error = json.loads(kr("presets", "validate", str(path), "--json").stdout)
        assert error["schema"] == "kr.error/1" and error["file"] == str(path.resolve()), (body, error)


def test_validate_takes_preset_names_and_files_in_this_folder(kr, tmp_path, monkeypatch):
    for name in ("marker", "tiny-demo", "sd15-lora"):
        assert f"{name}: ok" in kr("presets", "validate", name, ok=True).stdout
    (tmp_path / "mine").write_text('[preset]\nextends = "marker"\n[network]\ndim = 8\n')
    monkeypatch.chdir(tmp_path)
    assert "mine: ok (sdxl-lora → marker → mine" in kr("presets", "validate", "mine", ok=True).stdout
    result = kr("presets", "validate", "markr")
    assert result.exit_code == 2 and "Did you mean 'marker'" in result.stderr


def test_sd_scripts_names_on_the_command_line_note_their_spec_field(kr):
    result = kr("presets", "explain", "marker", "learning_rate=3e-4", "--changed", "--brief", ok=True)
    assert "note: learning_rate is sd-scripts' name; kr calls it optimizer.lr" in result.stderr
    assert any(l.startswith("optimizer.lr") and "override" in l and "0.0003" in l for l in result.stdout.splitlines())


def test_json_errors_name_the_preset_file(kr, tmp_path):
    broken = tmp_path / "broken.toml"
    broken.write_text("[network\ndim = 4\n")
    error = json.loads(kr("presets", "validate", str(broken), "--json").stdout)
    assert error["file"] == str(broken) and "not valid TOML" in error["error"]
    extends = tmp_path / "child.toml"
    extends.write_text('[preset]\nextends = "./parent.toml"\n')
    (tmp_path / "parent.toml").write_text('[network]\ndim = 0\n')
    error = json.loads(kr("presets", "validate", str(extends), "--json").stdout)
    assert error["field"] == "network.dim" and error["file"] == str((tmp_path / "parent.toml").resolve())
