"""Planning a sweep through `kr sweep`: every member validated before anything starts, the dry run, and
input errors as bad input (kohya_runner.sweep.plan)."""

from __future__ import annotations

import shutil

from sweep_fixtures import QUICK, shared, tiny_home  # noqa: F401  (fixtures are used by name)


def test_dry_run_lists_members_changes_steps_and_refuses_invalid_ones(kr, tiny_home):
    images = tiny_home["images"]
    result = kr("sweep", "tiny-demo", "--dataset", images, "--base", "tiny", "--grid", "optimizer.type=AdamW,Prodigy",
                "--grid", "optimizer.lr=1e-2,3e-2", "training.epochs=2", "--dry-run")
    assert result.exit_code == 2
    out = result.stdout
    assert "4 member(s), 2 valid, 32 steps in total" in out and "every member: training.epochs=2" in out
    lines = {line.split()[0]: line for line in out.splitlines()[3:]}
    assert lines["m01"].split()[1:] == ["16", "(none:", "the", "preset", "as", "it", "is)"]
    assert lines["m02"].split()[1:] == ["16", "optimizer.lr=0.03"]
    assert lines["m03"].split()[1:4] == ["–", "optimizer.type=Prodigy", "optimizer.lr=0.01"]
    assert "INVALID: optimizer.lr = 0.01: is far too low for Prodigy" in out
    assert "2 of 4 sweep members are invalid; nothing was launched" in result.stderr
    assert "--skip-invalid" in result.stderr and "Traceback" not in result.stderr
    data = kr.json("sweep", "tiny-demo", "--dataset", images, "--base", "tiny", "--grid", "optimizer.type=AdamW,Prodigy",
                   "--grid", "optimizer.lr=1e-2,3e-2", "training.epochs=2", "--dry-run", "--skip-invalid")
    assert data["total_steps"] == 32 and data["varying"] == ["optimizer.type", "optimizer.lr"]
    assert [m["valid"] for m in data["members"]] == [True, True, False, False]
    assert data["members"][1]["changes"] == {"optimizer.lr": [0.01, 0.03]}
    assert data["members"][0]["steps"] == 16
    assert not (tiny_home["home"] / "sweeps").exists()  # a dry run starts nothing


def test_sweep_input_errors_are_bad_input(kr, tiny_home, tmp_path):
    images = tiny_home["images"]
    cases = [
        (["sweep", "tiny-demo", "--dataset", images, "--base", "tiny"], "varies nothing"),
        (["sweep", "tiny-demo", "--dataset", tmp_path / "nope", "--base", "tiny", "--seeds", "1,2"], "dataset folder not found"),
        (["sweep", "nosuchpreset", "--dataset", images, "--base", "tiny", "--seeds", "1,2"], "unknown preset"),
        (["sweep", "tiny-demo", "--dataset", images, "--base", "tiny", "--seeds", "1,x"], "whole numbers"),
        (["sweep", "tiny-demo", "--dataset", images, "--base", "tiny", "--grid", "optimizer.lr=1,2", "optimizer.lr=3"],
         "both a command-line override and swept"),
        (["sweep", "tiny-demo", "--dataset", images, "--base", "/nowhere/model.safetensors", "--seeds", "1,2"],
         "every member of the sweep fails the same way: base model not found"),
    ]
    for args, message in cases:
        result = kr(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.stderr, (message, result.stderr)
        assert "Traceback" not in result.stderr


def test_the_dataset_check_runs_once_before_anything_starts(kr, tiny_home, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_home["images"], broken)
    damaged = sorted(broken.glob("*.png"))[0]
    damaged.write_bytes(b"not a png")
    result = kr("sweep", "tiny-demo", "--dataset", broken, "--base", "tiny", "--seeds", "1,2", *QUICK)
    assert result.exit_code == 2
    assert "has 1 error(s); nothing was launched" in result.stderr and damaged.name in result.stderr
    assert "--skip-check" in result.stderr
    assert kr.json("sweep", "ls")["sweeps"] == [] and kr.json("runs", "ls")["runs"] == []


def _written(home) -> list[str]:
    return sorted(str(p.relative_to(home)) for name in ("sweeps", "runs", "caches") for p in (home / name).rglob("*"))


def test_each_distinct_base_is_checked_once_and_a_wrong_one_invalidates_its_members(
        kr, home, style_images, sdxl_header_base, sd15_header_base, fault_checkout, monkeypatch):
    from kohya_runner import bases

    calls = []
    detect = bases.detect_architecture
    monkeypatch.setattr(bases, "detect_architecture", lambda path: calls.append(str(path)) or detect(path))
    result = kr("sweep", "marker", "--dataset", style_images, "--base", sdxl_header_base, "--seeds", "1,2,3", "--dry-run")
    assert result.exit_code == 0 and calls == [str(sdxl_header_base)], (calls, result.output)  # once for 3 members
    both = f"model.base={sd15_header_base},{sdxl_header_base}"
    result = kr("sweep", "marker", "--dataset", style_images, "--grid", both, "--dry-run")
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[2:]}
    assert "INVALID: model.base is sd15, the preset trains sdxl" in lines["m01"] and "INVALID" not in lines["m02"]
    refused = kr("sweep", "marker", "--dataset", style_images, "--grid", both)
    assert refused.exit_code == 2 and "1 of 2 sweep members are invalid; nothing was launched" in refused.stderr
    assert _written(home) == []


def test_refused_sweep_options_write_nothing(kr, home, style_images, sdxl_header_base, fault_checkout):
    common = ["sweep", "marker", "--dataset", style_images, "--base", sdxl_header_base, "--seeds", "1,2"]
    for extra, message in ((["--max-parallel", "0"], "--max-parallel 0"), (["--gpus", "5"], "asks for GPU 5"),
                           (["--gpus", "cpu", "--max-parallel", "-1"], "at least one slot")):
        result = kr(*common, *extra)
        assert result.exit_code == 2 and message in result.stderr, (extra, result.output)
        assert _written(home) == [], extra
    assert kr.json("sweep", "ls")["sweeps"] == []  # not an `interrupted` sweep that never ran


def test_a_later_members_dataset_error_leaves_no_cache_folder_of_an_earlier_one(kr, tiny_home, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(tiny_home["images"], broken)
    damaged = sorted(broken.glob("*.png"))[0]
    damaged.write_bytes(b"not a png")
    result = kr("sweep", "tiny-demo", "--base", "tiny", "--grid", f"dataset.dir={tiny_home['images']},{broken}", *QUICK)
    assert result.exit_code == 2 and "m02 (dataset.dir=" in result.stderr and damaged.name in result.stderr
    assert _written(tiny_home["home"]) == []


def test_members_on_the_tiny_backend_are_fitted_like_a_run(tiny_home):  # noqa: F811
    # `kr sweep marker --base tiny` used to launch 1024 px members with 28-step samples on the tiny model
    from kohya_runner import sweep

    home = tiny_home["home"]
    plan = sweep.plan(home, "marker", sweep.Definition(axes=[sweep.grid_axis("network.dim=4,8")]),
                      dataset=str(tiny_home["images"]), base="tiny")
    said: list[str] = []
    sweep.fit_members(home, plan.valid, sweep.Options(), said.append)
    assert all(m.spec.dataset.resolution == (64, 64) and m.spec.sampling.steps <= 20 for m in plan.valid)
    assert [m.spec.network.dim for m in plan.valid] == [4, 8]
    assert len([line for line in said if "native scale" in line]) == 1  # each note once, not per member
