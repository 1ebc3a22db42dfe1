"""The `kr` command line as users meet it: help, version, exit codes, clean errors (real subprocesses)."""

from __future__ import annotations

import json

from conftest import run_kr

from kohya_runner.cli import COMMANDS


def test_help_lists_every_command_with_an_example(home):
    result = run_kr("--help")
    assert result.returncode == 0
    for name, (_, example) in COMMANDS.items():
        assert f"\n  {name} " in result.stdout, name
        assert example.split()[1] == name
        assert f"e.g. {example[:30]}" in result.stdout.replace("\n            ", " ")


def test_every_command_has_help_with_an_example(home):
    for name in COMMANDS:
        result = run_kr(name, "--help")
        assert result.returncode == 0 and "Example" in result.stdout, name


def test_version(home):
    result = run_kr("--version")
    assert result.returncode == 0 and result.stdout.startswith("kr, version ")


def test_unknown_command_suggests(home):
    result = run_kr("rendr")
    assert result.returncode == 2 and "Did you mean 'render'" in result.stderr


def test_bad_input_is_one_paragraph_exit_2_no_traceback(home, tmp_path, base_file, dataset_dir):
    cases = [
        ("render", "markr", "--dataset", dataset_dir, "--base", base_file),
        ("render", "marker", "--dataset", tmp_path / "none", "--base", base_file),
        ("render", "marker", "--dataset", dataset_dir, "--base", tmp_path / "none.safetensors"),
        ("render", "marker", "--dataset", dataset_dir, "--base", base_file, "network.dim=huge"),
        ("render", "marker", "--dataset", dataset_dir, "--base", base_file, "optimizer.type=Prodigy"),
        ("presets", "show", "nothing"),
        ("presets", "explain", "marker", "nokey=1"),
    ]
    for args in cases:
        result = run_kr(*args, "-o", tmp_path / "out") if args[0] == "render" else run_kr(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("Error: "), result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""
        assert "Fix" in result.stderr or "Did you mean" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_render_end_to_end(home, tmp_path, base_file, dataset_dir):
    out = tmp_path / "marker-run"
    result = run_kr("render", "marker-preset", "--dataset", dataset_dir, "--base", base_file, "-o", out, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["preset"] == "marker"
    assert data["command"][-2:] == ["--config_file", str(out / "config.toml")]
    assert data["command"][1].endswith("sdxl_train_network.py")
    assert sorted(p.name for p in out.iterdir()) == ["config.toml", "dataset.toml", "sample_prompts.txt", "spec.json"]
    again = run_kr("render", "marker", "--dataset", dataset_dir, "--base", base_file, "-o", out)
    assert again.returncode == 2 and "does not overwrite" in again.stderr


def test_debug_shows_traceback(home, tmp_path):
    result = run_kr("--debug", "presets", "show", "nothing")
    assert result.returncode != 0 and "Traceback" in result.stderr


# --- the CLI's shared helpers ----------------------------------------------------------------------------


def test_display_helpers_align_and_format_one_way():
    from kohya_runner.cli.display import duration, number, text_table, value

    assert text_table([("a", "long cell", ""), ("bbb", "x", "end")], ("K", "V", "Z")).splitlines() == [
        "K    V          Z", "a    long cell", "bbb  x          end"]
    assert text_table([]) == ""
    assert [duration(s) for s in (None, 0, 59.6, 3725, 100 * 3600)] == ["–", "0:00:00", "0:01:00", "1:02:05", "100:00:00"]
    assert [value(v) for v in ("plain", None, 2e-4, [1, "ü"], {"a": True})] == [
        "plain", "null", "0.0002", '[1, "ü"]', '{"a": true}']
    assert [number(None), number(0.123456), number(12.5, 3)] == ["–", "0.1235", "12.5"]


def test_the_ledger_settles_dead_runs_only_when_some_look_active(tmp_path, monkeypatch):
    from kohya_runner import ledger as ledger_mod, run as run_mod
    from kohya_runner.workspace import settled_ledger

    class FakeLedger:
        active: list = []
        read_only = False  # a full or read-only workspace settles nothing

        def runs(self, status=None):
            return self.active

    settled = []
    monkeypatch.setattr(ledger_mod, "open_ledger", lambda root: FakeLedger())
    monkeypatch.setattr(run_mod, "reconcile", lambda root: settled.append(root))
    settled_ledger(tmp_path)
    assert settled == []
    FakeLedger.active = ["a running row"]
    settled_ledger(tmp_path)
    assert settled == [tmp_path]


def test_json_errors_are_an_object_on_stdout_with_the_same_exit_code(home, tmp_path, base_file, dataset_dir):
    """Before: --json on an error printed nothing on stdout."""
    cases = [  # (args, field)
        (("render", "marker", "--dataset", dataset_dir, "--base", base_file, "-o", tmp_path / "o", "network.dim=0"),
         "network.dim"),
        (("render", "marker", "--dataset", tmp_path / "none", "--base", base_file, "-o", tmp_path / "o"), "dataset.dir"),
        (("presets", "explain", "marker", "optimizer.lrr=1"), "optimizer.lrr"),
        (("presets", "validate", "nope"), None),
    ]
    for args, field in cases:
        result = run_kr(*args, "--json")
        error = json.loads(result.stdout)
        assert result.returncode == 2 and error["exit_code"] == 2, args
        assert error["schema"] == "kr.error/1" and error["error"] and error["field"] == field, (args, error)
        assert error["fix"] and "file" in error, (args, error)
        assert result.stderr.startswith("Error: ") and error["error"] in result.stderr
    usage = run_kr("render", "marker", "--bogus", "--json")
    assert usage.returncode == 2 and json.loads(usage.stdout)["schema"] == "kr.error/1"


def test_home_is_accepted_after_the_command(home, tmp_path):
    """Before: `kr runs ls --home DIR` was "No such option: --home"."""
    for args in (("runs", "ls"), ("runs", "show", "nothing"), ("presets", "ls"), ("report", "nothing"),
                 ("sweep", "ls"), ("vendor", "status")):
        result = run_kr(*args, "--home", tmp_path / "there", env={"KR_HOME": str(tmp_path / "env")})
        assert "No such option" not in result.stderr, (args, result.stderr)
    assert not (tmp_path / "env").exists()
    ls = run_kr("runs", "ls", "--home", tmp_path / "there", "--json")
    assert ls.returncode == 0


def test_name_flag_sets_the_run_name(home, tmp_path, base_file, dataset_dir):
    result = run_kr("render", "marker", "--dataset", dataset_dir, "--base", base_file, "-o", tmp_path / "o",
                    "--name", "client-a", "--json")
    assert result.returncode == 0, result.stderr
    assert "output_name = \"client-a\"" in (tmp_path / "o" / "config.toml").read_text()
    refused = run_kr("render", "marker", "--dataset", dataset_dir, "--base", base_file, "-o", tmp_path / "p",
                     "--name", "../client-a")
    assert refused.returncode == 2 and "name = '../client-a'" in refused.stderr and not (tmp_path / "p").exists()
