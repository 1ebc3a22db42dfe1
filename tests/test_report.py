"""`kr report`, `kr compare`, the sweep report, `kr runs best` and `kr release`.

Synthetic runs (tests/synthetic_run.py: sample files named as sd-scripts names them, no training) test
the grid, the sheet and the checkpoint choice quickly; one real tiny-trainer run and one real 2×2 sweep
(four tiny runs) are built once per session, shared by the xdist workers through a file lock, and
their reports are opened in headless Chromium: no request may leave file://, every image must decode.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from contextlib import contextmanager
from html.parser import HTMLParser
from pathlib import Path

import pytest

from browser import load_page, missing_reason
from conftest import no_process_left, run_kr
from synthetic_run import make_run

from kohya_runner.sdscripts import outputs


# ----------------------------------------------------------------------------------------------
# Helpers.


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.links: list[str] = []
        self.scripts = 0
        self.meta: list[dict] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs.get("src", ""))
        elif tag in ("a", "link"):
            self.links.append(attrs.get("href", ""))
        elif tag == "script":
            self.scripts += 1
        elif tag == "meta":
            self.meta.append(attrs)


def page_links(html_path: Path) -> _Links:
    parser = _Links()
    parser.feed(html_path.read_text(encoding="utf-8"))
    return parser


def assert_offline_page(html_path: Path) -> _Links:
    """Static checks: relative links only, every image beside the page, no scripts, a CSP forbidding requests."""
    links = page_links(html_path)
    assert links.scripts == 0
    assert any(m.get("http-equiv") == "Content-Security-Policy" and "default-src 'none'" in m.get("content", "")
               for m in links.meta)
    for ref in links.images + links.links:
        assert ref and ":" not in ref and not ref.startswith("/"), ref
        assert (html_path.parent / ref).is_file(), ref
    text = html_path.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text and "url(" not in text and "@import" not in text
    return links


def sheet_cell(sheet, layout: dict, row: int, column: int):
    (x0, y0), (px, py), (cw, ch) = layout["origin"], layout["pitch"], layout["cell"]
    x, y = x0 + column * px, y0 + row * py
    return sheet.crop((x, y, x + cw, y + ch))


def mean_difference(a, b) -> float:
    import numpy as np

    return float(np.abs(np.asarray(a.convert("RGB"), dtype=np.int16) - np.asarray(b.convert("RGB"), dtype=np.int16)).mean())


def check_sheet(result: dict, sources: list[list[Path | None]]) -> None:
    """The PNG has the layout's size, and each grid cell holds its sample (or the grey 'missing' box)."""
    from PIL import Image

    layout = result["sheet_layout"]
    sheet = Image.open(result["sheet"])
    assert sheet.size == (layout["width"], layout["height"])
    assert layout["rows"] == len(sources) and layout["columns"] == len(sources[0])
    assert layout["origin"][0] + layout["columns"] * layout["pitch"][0] == layout["width"]
    assert layout["origin"][1] + layout["rows"] * layout["pitch"][1] == layout["height"]
    for r, line in enumerate(sources):
        for c, source in enumerate(line):
            cell = sheet_cell(sheet, layout, r, c)
            if source is None:
                colours = cell.convert("RGB").getcolors(maxcolors=cell.size[0] * cell.size[1])
                fill = max(colours)[1]
                assert fill == (225, 225, 225) and max(colours)[0] > 0.8 * cell.size[0] * cell.size[1], \
                    f"cell {r},{c} should be the plain 'missing' box"
            else:
                expected = Image.open(source).convert("RGB").resize(cell.size, Image.Resampling.NEAREST)
                assert mean_difference(cell, expected) < 12, f"cell {r},{c} does not show {source.name}"


def browser_check(html_path: Path, screenshot: Path, expected_images: int) -> None:
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    page = load_page(html_path, screenshot)
    assert page.requests, "the page load was not recorded"
    outside = [url for url in page.requests if not url.startswith(("file://", "data:"))]
    assert not outside, f"the page made network requests: {outside}"
    assert page.requests[0] == html_path.resolve().as_uri()
    assert len(page.images) == expected_images
    broken = [i["src"] for i in page.images if not i["complete"] or i["naturalWidth"] <= 0]
    assert not broken, f"images not decoded: {broken}"
    assert all(i["src"].startswith("file://") for i in page.images)
    assert not [m for m in page.console if m.get("level") == "SEVERE"], page.console
    from PIL import Image

    shot = Image.open(screenshot)
    assert shot.size[0] >= 1000 and shot.size[1] > 1000
    artifacts = os.environ.get("KR_TEST_ARTIFACTS")
    if artifacts:  # keep the screenshots for a person to look at
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shot.save(Path(artifacts) / screenshot.name)


# ----------------------------------------------------------------------------------------------
# Sample names (contract §4.1).


def test_sample_names_follow_the_contract():
    parse = outputs.parse_sample_name
    name = parse("marker", "marker_e000004_03_20250101120000_1237.png")
    assert (name.kind, name.number, name.index, name.seed) == ("epoch", 4, 3, 1237)
    assert parse("marker", "marker_e000000_00_20250101120000_1234.png").number == 0  # sample_at_first
    step = parse("my_style_v2", "my_style_v2_000500_11_20250101120000.png")
    assert (step.kind, step.number, step.index, step.seed) == ("step", 500, 11, None)
    assert parse(None, "e000002_00_20250101120000_5.png").number == 2  # no --output_name
    for other in ("marker-000004.safetensors", "marker_e000004_03.png", "other_e000004_03_20250101120000_1.png",
                  "marker_e000004_03_20250101120000_1.png.tmp-12.png"):
        assert parse("marker", other) is None, other


# ----------------------------------------------------------------------------------------------
# Synthetic runs: fast.


def test_run_report_grid_rows_columns_and_sheet(kr, home):
    row = make_run(home, subjects=2, epochs=4, every=2, size=64, variants=1, missing=(("e000004", 1),))
    result = kr.json("report", row.run_id)
    out = Path(row.run_dir) / "report"
    assert result["html"] == str(out / "index.html") and result["sheet"] == str(out / "sheet.png")
    # rows: grouped per subject (with trigger, without, variant), mapped by prompt index
    assert [(r["subject_index"], r["kind"], r["index"]) for r in result["rows"]] == [
        (0, "trigger", 0), (0, "no-trigger", 2), (0, "variant-1", 4),
        (1, "trigger", 1), (1, "no-trigger", 3), (1, "variant-1", 5)]
    assert result["rows"][1]["text"] == "a man thinking" and "TOK" in result["rows"][0]["text"]
    assert [(c["kind"], c["number"]) for c in result["columns"]] == [("base", 0), ("epoch", 2), ("epoch", 4)]
    assert result["columns"][2]["checkpoint"] == "tiny-demo.safetensors"  # the last epoch saves the final name
    assert result["columns"][1]["checkpoint"] == "tiny-demo-000002.safetensors"
    assert result["images"] == 17 and result["missing"] == 1
    samples = {outputs.parse_sample_name("tiny-demo", p.name): p
               for p in (Path(row.run_dir) / "output" / "sample").iterdir()}
    by_key = {(f"e{n.number:06d}", n.index): p for n, p in samples.items()}
    sources = [[by_key.get((c["key"], r["index"])) for c in result["columns"]] for r in result["rows"]]
    check_sheet(result, sources)
    links = assert_offline_page(out / "index.html")
    assert len(links.images) == 17 + 2  # samples, loss plot, contact sheet
    # the trigger ablation: trigger rows moved further from the base than the no-trigger rows
    last = result["ablation"][-1]["by_kind"]
    assert last["with trigger"] > last["without trigger"]
    assert (out / "loss.png").stat().st_size > 1000
    assert result["timings"]["it_per_s"] == pytest.approx(1.25)
    assert result["timings"]["total_seconds"] == pytest.approx(100, abs=1)
    assert json.loads((out / "report.json").read_text())["run_id"] == row.run_id


def test_report_rewrites_in_place_and_leaves_no_staging(kr, home, tmp_path):
    row = make_run(home, subjects=1, epochs=2, size=64)
    out = tmp_path / "delivery"
    kr("report", row.run_id, "-o", out, ok=True)
    (out / "images" / "stale.png").write_bytes(b"x")
    (out / "notes.txt").write_text("the user's own file")
    result = kr("report", row.run_id, "-o", out, ok=True)
    assert f"wrote {out / 'index.html'}" in result.output and "(2 rows × 3 columns)" in result.output
    assert not (out / "images" / "stale.png").exists()
    assert (out / "notes.txt").read_text() == "the user's own file"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left
    assert sorted(p.name for p in out.iterdir()) == ["images", "index.html", "loss.png", "notes.txt", "report.json",
                                                     "sheet.png"]


def test_step_columns_no_base_and_preset_difference(kr, home):
    row = make_run(home, subjects=1, epochs=3, size=64, step_based=True, at_first=False,
                   overrides=("network.dim=4",))
    result = kr.json("report", row.run_id)
    assert [(c["kind"], c["number"]) for c in result["columns"]] == [("step", 10), ("step", 20), ("step", 30)]
    assert [c["checkpoint"] for c in result["columns"]] == [
        "tiny-demo-step00000010.safetensors", "tiny-demo-step00000020.safetensors", "tiny-demo.safetensors"]
    assert any("sampling.at_first = false" in note for note in result["notes"])
    diff = {r["key"]: (r["preset"], r["run"]) for r in result["preset_diff"]["rows"]}
    assert diff["network.dim"] == ("8", "4")
    assert diff["dataset.dir"] == ("none", "/data/synthetic")
    assert diff["sampling.every_n_epochs"] == ("4", "none")
    html = (Path(row.run_dir) / "report" / "index.html").read_text()
    assert "network.dim" in html and "step 20" in html


def test_runs_best_picks_the_lowest_loss(kr, home):
    row = make_run(home, subjects=1, epochs=6, every=2, size=64)
    data = kr.json("runs", "best", row.run_id, "--by", "loss")
    assert data["criterion"] == "loss/epoch_average" and data["how"] == "best" and data["by"] == "loss"
    losses = {c["epoch"]: c["loss"] for c in data["checkpoints"]}
    assert sorted(losses) == [2, 4, 6]
    assert data["chosen"]["epoch"] == min(losses, key=losses.get)
    assert kr.json("runs", "best", row.run_id, "--epoch", "4")["chosen"]["file"].endswith("tiny-demo-000004.safetensors")
    text = kr("runs", "best", row.run_id, "--by", "loss", ok=True).output
    assert "← best" in text and "kr release" in text and "best by loss" in text
    missing = kr("runs", "best", row.run_id, "--epoch", "3")
    assert missing.exit_code == 2 and "saved: epoch 2, epoch 4, epoch 6 (final)" in missing.output


def test_report_and_release_bad_input(kr, home, tmp_path):
    assert "no kr workspace at" in kr("report", "nope").output  # nothing recorded yet (and nothing created)
    row = make_run(home, subjects=1, epochs=2, size=64)
    result = kr("report", "nope")
    assert result.exit_code == 2 and "no run or sweep matches 'nope'" in result.output and "Traceback" not in result.output
    (tmp_path / "a-file").write_text("")
    result = kr("report", row.run_id, "-o", tmp_path / "a-file")
    assert result.exit_code == 2
    assert kr("compare", row.run_id).exit_code == 2
    both = kr("release", row.run_id, "--best", "--epoch", "2", "-o", tmp_path)
    assert both.exit_code == 2 and "only one of" in both.output
    bad_name = kr("release", row.run_id, "--name", "../escape", "-o", tmp_path)
    assert bad_name.exit_code == 2 and "plain file name" in bad_name.output
    (Path(row.run_dir) / "spec.json").unlink()
    result = kr("report", row.run_id)
    assert result.exit_code == 2 and "no spec.json" in result.output


def test_report_module_keeps_cli_startup_light():
    import subprocess

    code = ("import sys, kohya_runner.cli.report, kohya_runner.cli.release; "
            "print(sorted(m for m in ('PIL', 'matplotlib', 'jinja2', 'numpy', 'kohya_runner.report') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ----------------------------------------------------------------------------------------------
# Real tiny-trainer runs, built once per session (shared by xdist workers).

SMALL = ["sampling.steps=2", "sampling.cfg_scale=3", 'sampling.prompts=["a man thinking","a cup of tea"]']


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _shared_root(request, tmp_path_factory) -> Path:
    base = tmp_path_factory.getbasetemp()
    if getattr(request.config, "workerinput", None) is not None:
        base = base.parent  # one folder for all xdist workers of this session
    return base / "kr-report-shared"


def _env(root: Path) -> dict:
    return {"KR_HOME": str(root / "home"), "KR_VENDOR_DIR": str(root / "kr-vendor")}


def _workspace(root: Path) -> Path:
    """`root/home` with the tiny base (built once for the session, linked in) and the demo images."""
    from kohya_runner import workspace
    from kohya_runner.tiny import build_tiny_base, write_style_dataset

    shared = root.parent
    with _locked(shared / "base.lock"):
        base = build_tiny_base(shared / "tiny-sdxl", "sdxl")
        images = write_style_dataset(shared / "images", count=8, size=64)
    link = workspace.tiny_base_dir(root / "home", "sdxl")
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(base)
    return images


@pytest.fixture(scope="session")
def tiny_run(request, tmp_path_factory):
    """A real tiny-trainer run: samples before training and every 2 epochs, LoRAs every 2 epochs."""
    root = _shared_root(request, tmp_path_factory) / "run"
    with _locked(root.parent / "run.lock"):
        done = root.parent / "run.json"
        if not done.is_file():
            images = _workspace(root)
            result = run_kr("run", "tiny-demo", "--dataset", images, "--base", "tiny", "training.epochs=4",
                            "sampling.every_n_epochs=2", "saving.every_n_epochs=2", *SMALL, "--json",
                            env=_env(root), timeout=300)
            assert result.returncode == 0, result.stdout + result.stderr
            done.write_text(result.stdout)
    return {"root": root, "env": _env(root), "home": root / "home", "row": json.loads(done.read_text())}


@pytest.fixture(scope="session")
def tiny_sweep(request, tmp_path_factory):
    """A real 2×2 sweep (optimizer.lr × network.dim) by `kr sweep`: four tiny runs, two at a time."""
    root = _shared_root(request, tmp_path_factory) / "sweep"
    with _locked(root.parent / "sweep.lock"):
        done = root.parent / "sweep.json"
        if not done.is_file():
            done.write_text(json.dumps(_build_sweep(root)))
    return {"root": root, "env": _env(root), "home": root / "home", **json.loads(done.read_text())}


GRID = ("optimizer.lr", ("1e-2", "3e-3")), ("network.dim", ("4", "8"))
SWEEP_SET = ["training.epochs=2", "sampling.every_n_epochs=1", "saving.every_n_epochs=1", *SMALL]


def _build_sweep(root: Path) -> dict:
    from kohya_runner.cli import COMMANDS

    images = _workspace(root)
    if "sweep" not in COMMANDS:
        return _build_sweep_by_hand(root, images)
    grid = [arg for key, values in GRID for arg in ("--grid", f"{key}={','.join(values)}")]
    result = run_kr("sweep", "tiny-demo", "--dataset", images, "--base", "tiny", *grid, "--max-parallel", "2",
                    *SWEEP_SET, env=_env(root), timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    sweep_id = json.loads(run_kr("sweep", "ls", "--json", env=_env(root)).stdout)["sweeps"][0]["sweep_id"]
    rows = json.loads(run_kr("runs", "ls", "--sweep", sweep_id, "--json", env=_env(root)).stdout)["runs"]
    assert [r["status"] for r in rows] == ["succeeded"] * 4, rows
    return {"sweep_id": sweep_id, "members": [r["run_id"] for r in sorted(rows, key=lambda r: r["id"])]}


def _build_sweep_by_hand(root: Path, images: Path) -> dict:
    """Without `kr sweep`: the members as runs with runs.sweep_id, two detached supervisors at a time."""
    from kohya_runner import preset, run
    from kohya_runner.ledger import open_ledger
    from kohya_runner.supervisor import spawn_detached_supervisor

    home = root / "home"
    saved = {k: os.environ.get(k) for k in ("KR_HOME", "KR_VENDOR_DIR")}
    os.environ.update(_env(root))  # the detached supervisors inherit this
    try:
        ledger = open_ledger(home)
        sweep = ledger.create_sweep("lr-dim", home / "sweeps", preset="tiny-demo", members=4)
        (lr_key, lrs), (dim_key, dims) = GRID
        specs = [preset.resolve("tiny-demo", home, [*SWEEP_SET, f"{lr_key}={lr}", f"{dim_key}={dim}"],
                                {"dataset.dir": str(images)}).spec for lr in lrs for dim in dims]
        pending, running, members = list(specs), [], []
        deadline = time.monotonic() + 300
        while pending or running:
            running = [r for r in running if ledger.get(r).active]
            while pending and len(running) < 2:
                row = run.prepare(home, pending.pop(0), run.RunOptions(preset="tiny-demo", backend="tiny", gpus=[],
                                                                       sweep_id=sweep.sweep_id))
                spawn_detached_supervisor(home, row.run_id)
                running.append(row.run_id)
                members.append(row.run_id)
            assert time.monotonic() < deadline, "the sweep's runs did not finish in time"
            time.sleep(0.5)
        statuses = [ledger.get(r).status for r in members]
        assert statuses == ["succeeded"] * 4, statuses
        while no_process_left(str(home)) and time.monotonic() < deadline:
            time.sleep(0.2)  # the supervisors exit a moment after recording the outcome
        ledger.update_sweep(sweep.sweep_id, status="succeeded", finished_at=time.time())
        return {"sweep_id": sweep.sweep_id, "members": members}
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_tiny_run_report_opens_offline_in_chromium(tiny_run, tmp_path):
    row = tiny_run["row"]
    out = tmp_path / "run-report"
    result = run_kr("report", row["run_id"], "-o", out, "--json", env=tiny_run["env"])
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    # 2 subjects × (with trigger, without, tiny-demo's variant) = 6 rows; base model, epoch 2, epoch 4
    assert len(data["rows"]) == 6 and data["missing"] == 0 and data["images"] == 18
    assert [c["label"] for c in data["columns"]] == ["base model", "epoch 2", "epoch 4 (final)"]
    assert [c["checkpoint"] for c in data["columns"]] == [None, "tiny-demo-000002.safetensors", "tiny-demo.safetensors"]
    assert all(c["loss"] is not None for c in data["columns"][1:])
    assert sum(c["best"] for c in data["columns"]) == 1
    assert data["timings"]["it_per_s"] > 0 and data["timings"]["seconds_per_sample_round"] > 0
    assert data["preset_diff"]["rows"] and data["preset_diff"]["error"] is None
    sample_dir = Path(row["run_dir"]) / "output" / "sample"
    by_key = {}
    for path in sample_dir.iterdir():
        name = outputs.parse_sample_name("tiny-demo", path.name)
        by_key[(f"e{name.number:06d}", name.index)] = path
    check_sheet(data, [[by_key[(c["key"], r["index"])] for c in data["columns"]] for r in data["rows"]])
    # same seed across columns: each sample's file name carries the seed of its row
    for r in data["rows"]:
        for c in data["columns"]:
            assert by_key[(c["key"], r["index"])].name.endswith(f"_{r['seed']}.png")
    assert_offline_page(out / "index.html")
    browser_check(out / "index.html", tmp_path / "run-report.png", expected_images=18 + 2)
    assert not no_process_left(str(tiny_run["home"]))


def test_release_best_and_chosen_epochs_of_a_real_run(tiny_run, tmp_path):
    from kohya_runner import archive, lorafile

    row, env = tiny_run["row"], tiny_run["env"]
    best = json.loads(run_kr("runs", "best", row["run_id"], "--json", env=env).stdout)
    assert [c["label"] for c in best["checkpoints"]] == ["epoch 2", "epoch 4 (final)"]
    out = tmp_path / "deliveries"
    result = run_kr("release", row["run_id"], "--best", "-o", out, "--policy", "scrub", "--name", "client-style",
                    "--json", env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    released = out / "client-style.safetensors"
    assert data["file"] == str(released) and data["source"] == best["chosen"]["file"]
    check = archive.verify_lora(released)
    assert check.ok and check.sha256 == data["sha256"]
    metadata = lorafile.read_metadata(released)
    assert metadata["modelspec.title"] == "client-style" and "modelspec.kr_run_id" not in metadata
    assert (metadata["sshs_model_hash"], metadata["sshs_legacy_hash"]) == lorafile.sshs_hashes(released)
    again = run_kr("release", row["run_id"], "--best", "-o", out, "--name", "client-style", env=env)
    assert again.returncode == 2 and "does not overwrite" in again.stderr
    default = run_kr("release", row["run_id"], "--epoch", "2", "-o", out, env=env)
    assert default.returncode == 0, default.stderr
    assert "epoch 2" in default.stdout and (out / "tiny-demo.safetensors").is_file()
    cards = [f"{stem}{suffix}" for stem in ("client-style", "tiny-demo") for suffix in (".card.json", ".card.md", ".preview.png")]
    assert sorted(p.name for p in out.iterdir()) == sorted(["client-style.safetensors", "tiny-demo.safetensors", *cards])
    spec_policy = json.loads((Path(row["run_dir"]) / "spec.json").read_text())["privacy"]["metadata"]
    assert f"metadata policy {spec_policy}" in default.stdout
    by_file = run_kr("release", row["run_id"], "--checkpoint", "tiny-demo-000002.safetensors", "-o", out,
                     "--name", "by-file", "--json", env=env)
    assert by_file.returncode == 0, by_file.stderr
    assert json.loads(by_file.stdout)["checkpoint"]["label"] == "epoch 2"
    for args in (["--checkpoint", "../output/tiny-demo.safetensors"], ["--checkpoint", "x.safetensors", "--epoch", "2"]):
        refused = run_kr("release", row["run_id"], *args, "-o", out, "--name", "refused", env=env)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr and not (out / "refused.safetensors").exists()


def test_sweep_report_and_compare_open_offline_in_chromium(tiny_sweep, tmp_path):
    env, sweep_id, members = tiny_sweep["env"], tiny_sweep["sweep_id"], tiny_sweep["members"]
    out = tmp_path / "sweep-report"
    result = run_kr("report", sweep_id, "-o", out, "--json", env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["kind"] == "sweep" and data["sweep_id"] == sweep_id and data["runs"] == members
    assert data["varying"] == ["network.dim", "optimizer.lr"]
    # a base row, then one row per member headed by its settings; 2 subjects × (trigger, no trigger, variant)
    assert [r["kind"] for r in data["rows"]] == ["base", "run", "run", "run", "run"]
    assert data["rows"][1]["sub"][:2] == ["network.dim = 4", "optimizer.lr = 0.01"]
    assert data["rows"][4]["sub"][:2] == ["network.dim = 8", "optimizer.lr = 0.003"]
    assert all("final: epoch 2" in r["sub"] for r in data["rows"][1:])
    assert len(data["prompts"]) == 6 and data["images"] == 5 * 6
    assert data["sheet_layout"]["rows"] == 5 and data["sheet_layout"]["columns"] == 6
    from PIL import Image

    assert Image.open(out / "sheet.png").size == (data["sheet_layout"]["width"], data["sheet_layout"]["height"])
    assert_offline_page(out / "index.html")
    browser_check(out / "index.html", tmp_path / "sweep-report.png", expected_images=30 + 2)

    default = run_kr("report", sweep_id, "--json", env=env)  # the sweep's own folder
    assert json.loads(default.stdout)["out"].endswith(f"{sweep_id}/report")

    compared = run_kr("compare", members[0], members[3], "-o", tmp_path / "cmp", "--json", env=env)
    assert compared.returncode == 0, compared.stderr
    cmp_data = json.loads(compared.stdout)
    assert cmp_data["kind"] == "compare" and cmp_data["runs"] == [members[0], members[3]]
    assert cmp_data["varying"] == ["network.dim", "optimizer.lr"] and len(cmp_data["rows"]) == 3
    assert_offline_page(tmp_path / "cmp" / "index.html")
    assert not no_process_left(str(tiny_sweep["home"]))
