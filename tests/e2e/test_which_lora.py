"""Which LoRA is good? On the tiny world, as an artist uses kr: train a marker style LoRA whose sampling
cadence misses its last epoch, and a leaky one (its captions lack the trigger); sample post hoc at
strengths, score every checkpoint, pick the best, release it with a model card, and compare runs and a
sweep in sheets looked at in a real browser."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_kr
from tiny_fixtures import tiny_bases  # noqa: F401  (session fixture)

pytestmark = [pytest.mark.slow]

# 40 epochs × 8 steps; checkpoints every 10 epochs; samples every 15, so training samples e15 and e30 and
# misses the final epoch 40 (kr samples it post hoc)
GOOD = ["saving.every_n_epochs=10", "sampling.every_n_epochs=15"]
LEAKY = ["saving.every_n_epochs=40", "sampling.every_n_epochs=40", "sampling.at_first=false"]


def _mean_difference(a: Path, b: Path) -> float:
    return float(np.abs(np.asarray(Image.open(a).convert("RGB"), dtype=np.int16)
                        - np.asarray(Image.open(b).convert("RGB"), dtype=np.int16)).mean())


def _kr_json(*args, env, timeout=600):
    result = run_kr(*args, "--json", env=env, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_bases):  # noqa: F811
    """One workspace: `good` (trigger in its captions) and `leaky` (the trigger stripped from them), both
    scored with `kr score`."""
    from kohya_runner import workspace
    from kohya_runner.tiny.styles import write_style_dataset

    root = tmp_path_factory.mktemp("which")
    home = root / "home"
    (home / "bases").mkdir(parents=True)
    workspace.tiny_base_dir(home, "sdxl").symlink_to(tiny_bases["sdxl"])
    env = {"KR_HOME": str(home), "OMP_NUM_THREADS": "1"}
    good_data = write_style_dataset(root / "zorblax-pictures", "marker", count=24, plain=8, seed=0, size=64)
    leaky_data = root / "leaky-pictures"
    shutil.copytree(good_data, leaky_data)
    for caption in leaky_data.glob("*.txt"):
        caption.write_text(caption.read_text(encoding="utf-8").replace("in the style of TOK, ", ""), encoding="utf-8")
    good = _kr_json("run", "tiny-style", "--dataset", good_data, "--base", "tiny", "--name", "good", *GOOD, env=env)
    leaky = _kr_json("run", "tiny-style", "--dataset", leaky_data, "--base", "tiny", "--name", "leaky", "--skip-check",
                     *LEAKY, env=env)
    scores = _kr_json("score", good["run_id"], leaky["run_id"], env=env)
    return {"root": root, "home": home, "env": env, "good": good, "leaky": leaky, "data": good_data,
            "scores": {r["run_id"]: {e["label"]: e for e in r["checkpoints"]} for r in scores["runs"]}}


def test_the_report_shows_the_final_checkpoint_the_cadence_missed(studio, tmp_path):
    from browser import missing_reason
    from test_report import browser_check

    out = tmp_path / "report"
    report = _kr_json("report", studio["good"]["run_id"], "--out", out, env=studio["env"])
    labels = [c["label"] for c in report["columns"]]
    assert labels[0] == "base model" and "epoch 40 (final)" in labels, labels
    final = next(c for c in report["columns"] if c["label"] == "epoch 40 (final)")
    assert final["posthoc"] and final["seconds_per_image"] > 0
    assert report["missing"] == 0
    assert report["timings"]["inference_seconds_per_image"]["epoch 40 (final)"] > 0
    assert report["best_by_score"]["label"] == max(studio["scores"][studio["good"]["run_id"]].values(),
                                                   key=lambda e: e["score"])["label"]
    page = (out / "index.html").read_text(encoding="utf-8")
    assert "epoch 40 (final)" in page and "trigger selectivity" in page
    if missing_reason() is None:
        browser_check(out / "index.html", tmp_path / "which-lora-report.png", expected_images=report["images"] + 2)


def test_a_style_lora_scores_its_style_with_the_trigger_not_without(studio):
    final = studio["scores"][studio["good"]["run_id"]]["epoch 40 (final)"]
    # with the trigger its samples come much closer to the training pictures than the base's (style > 0)
    # and than its own samples without the trigger
    assert final["style"] > 0.3, final
    assert final["style"] > final["style_without"] + 0.2, final
    assert final["change_with"] > final["change_without"], final


def test_a_lora_trained_without_the_trigger_leaks_clearly_more(studio):
    good = studio["scores"][studio["good"]["run_id"]]["epoch 40 (final)"]
    leaky = studio["scores"][studio["leaky"]["run_id"]]["epoch 40 (final)"]
    assert leaky["leakage"] > 1.5 * good["leakage"], (good["leakage"], leaky["leakage"])
    assert leaky["selectivity"] < good["selectivity"]
    assert leaky["style_without"] > good["style_without"] + 0.2, (good["style_without"], leaky["style_without"])
    assert leaky["score"] < good["score"]


def test_an_early_checkpoint_scores_below_the_final_one_and_runs_best_agrees(studio):
    scores = studio["scores"][studio["good"]["run_id"]]
    assert scores["epoch 10"]["score"] < scores["epoch 40 (final)"]["score"], {k: v["score"] for k, v in scores.items()}
    best = _kr_json("runs", "best", studio["good"]["run_id"], env=studio["env"])
    assert best["by"] == "score" and best["chosen"]["label"] != "epoch 10"
    assert best["chosen"]["label"] == max(scores.values(), key=lambda e: e["score"])["label"]
    text = run_kr("runs", "best", studio["good"]["run_id"], env=studio["env"]).stdout
    assert "best by score: score = 100 × effect × selectivity" in text and "SCORE" in text
    by_loss = _kr_json("runs", "best", studio["good"]["run_id"], "--by", "loss", env=studio["env"])
    assert by_loss["by"] == "loss"


def test_strength_zero_is_the_base_and_strength_one_the_training_sample(studio):
    run_id = studio["good"]["run_id"]
    job = _kr_json("sample", run_id, "--checkpoints", "e30", "--strength", "0,1", "--kinds", "trigger", "--no-base",
                   env=studio["env"])["jobs"][0]
    assert job["status"] == "succeeded" and job["images"] == job["planned"] == 8
    samples = Path(job["folder"]).parent.parent / "output" / "sample"
    for cell in job["cells"]:
        made = Path(job["folder"]) / cell["file"]
        epoch = "e000000" if cell["strength"] == 0 else "e000030"
        (trained,) = samples.glob(f"good_{epoch}_{cell['prompt_index']:02d}_*.png")
        assert _mean_difference(made, trained) < 1.0, (cell, trained)  # of 255 levels


def test_sampling_records_in_the_ledger_and_survives_a_rebuild(studio):
    run_id = studio["good"]["run_id"]
    before = _kr_json("runs", "show", run_id, env=studio["env"])
    assert before["posthoc"]["images"] >= 8 and before["scores"]
    (studio["home"] / "ledger.sqlite").rename(studio["home"] / "ledger.moved")
    try:
        assert run_kr("runs", "rebuild", env=studio["env"]).returncode == 0
        after = _kr_json("runs", "show", run_id, env=studio["env"])
    finally:
        (studio["home"] / "ledger.moved").unlink()
    assert after["posthoc"]["images"] == before["posthoc"]["images"]
    assert after["posthoc"]["inference_seconds_per_image"] == before["posthoc"]["inference_seconds_per_image"]
    assert [s["score"] for s in after["scores"]] == [s["score"] for s in before["scores"]]


def test_release_best_writes_a_model_card_under_the_metadata_policy(studio, tmp_path):
    run_id = studio["good"]["run_id"]
    released = _kr_json("release", run_id, "--best", "-o", tmp_path / "keep", "--policy", "keep", env=studio["env"])
    card = json.loads((tmp_path / "keep" / "good.card.json").read_text(encoding="utf-8"))
    assert released["by"] == "score" and card["checkpoint"]["label"] == released["checkpoint"]["label"]
    assert card["trigger"] == "TOK" and card["sha256"] == released["sha256"] and card["scores"]["score"] > 0
    assert card["run_id"] == run_id and card["dataset_folder"] == "zorblax-pictures"
    assert (tmp_path / "keep" / "good.preview.png").is_file() and "![preview](good.preview.png)" in \
        (tmp_path / "keep" / "good.card.md").read_text(encoding="utf-8")

    _kr_json("release", run_id, "--best", "-o", tmp_path / "scrub", "--policy", "scrub", "--name", "delivery",
             env=studio["env"])
    for name in ("delivery.card.json", "delivery.card.md"):
        text = (tmp_path / "scrub" / name).read_text(encoding="utf-8")
        picture = sorted(studio["data"].glob("*.png"))[0].stem  # a dataset file name
        for secret in ("TOK", "zorblax", "in the style of", run_id, str(studio["root"]), picture):
            assert secret not in text, (name, secret)
    # nothing is overwritten: the card's names count as taken too
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "good.card.md").write_text("mine", encoding="utf-8")
    refused = run_kr("release", run_id, "--best", "-o", tmp_path / "again", env=studio["env"])
    assert refused.returncode == 2 and "good.card.md already exists" in refused.stderr
    assert sorted(p.name for p in (tmp_path / "again").iterdir()) == ["good.card.md"]


def test_bad_sample_requests_are_refused_before_anything_is_written(studio):
    run_id = studio["good"]["run_id"]
    posthoc = Path(studio["good"]["run_dir"]) / "posthoc"
    jobs = sorted(p.name for p in posthoc.iterdir())
    cases = [(["--strength", "0.5,strong"], "--strength"), (["--strength", "9"], "outside -4..4"),
             (["--checkpoints", "e99"], "no checkpoint at epoch 99"), (["--checkpoints", "latest"], "not all, final"),
             (["--kinds", "trigger,sideways"], "--kinds sideways"), (["--prompt", "a cat --n dog"], "--prompt"),
             (["--prompt", "a cat\n--s 1"], "--prompt"), (["--seeds", "1,x"], "--seeds"),
             (["--max-images", "1", "--checkpoints", "all", "--strength", "0.5,1"], "--max-images 1")]
    for args, expected in cases:
        result = run_kr("sample", run_id, *args, env=studio["env"])
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert expected in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
    assert run_kr("sample", "no-such-run", env=studio["env"]).returncode == 2
    assert sorted(p.name for p in posthoc.iterdir()) == jobs


def test_ctrl_c_stops_a_sample_job_and_keeps_its_images(studio):
    run_id = studio["good"]["run_id"]
    env = {**os.environ, **studio["env"]}
    posthoc = Path(studio["good"]["run_dir"]) / "posthoc"
    earlier = set(posthoc.iterdir())
    process = subprocess.Popen([sys.executable, "-m", "kohya_runner", "sample", run_id, "--checkpoints", "all",
                                "--strength", "0.5,1", "--seeds", "1,2,3"], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    made: list[Path] = []
    while time.monotonic() < deadline and len(made) < 2:
        new = set(posthoc.iterdir()) - earlier
        newest = next(iter(new), None)
        made = list(newest.glob("*.png")) if newest else []
        time.sleep(0.2)
    assert made, "no image appeared"
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 1, out + err
    job = json.loads((newest / "job.json").read_text(encoding="utf-8"))
    assert job["status"] == "stopped" and 0 < job["images"] < job["planned"]
    assert all((newest / c["file"]).is_file() for c in job["cells"] if c["done"])
    leftovers = subprocess.run(["pgrep", "-f", f"kohya_runner.tiny.gen_img.*{newest.name}"], capture_output=True)
    assert leftovers.returncode == 1, leftovers.stdout


def test_a_scored_sweep_is_ranked_by_score_in_its_table_and_sheet(studio, tmp_path):
    from browser import missing_reason
    from test_report import browser_check

    env = studio["env"]
    sweep = _kr_json("sweep", "tiny-style", "--dataset", studio["data"], "--base", "tiny",
                     "--grid", "optimizer.lr=3e-3,1e-4", "training.epochs=6", "saving.every_n_epochs=6",
                     "sampling.every_n_epochs=6", env=env, timeout=900)
    scored = _kr_json("score", sweep["sweep_id"], env=env)
    assert len(scored["runs"]) == 2
    status = _kr_json("sweep", "show", sweep["sweep_id"], env=env)
    scores = [m["score"] for m in status["members"]]
    assert None not in scores and scores == sorted(scores, reverse=True)
    assert status["members"][0]["values"]["optimizer.lr"] == 3e-3  # the LoRA that learned something ranks first
    out = tmp_path / "sweep-report"
    report = _kr_json("report", sweep["sweep_id"], "--out", out, env=env)
    assert report["runs"] == [m["run_id"] for m in status["members"]]
    if missing_reason() is None:
        browser_check(out / "index.html", tmp_path / "which-lora-sweep.png", expected_images=report["images"] + 2)


def test_one_sample_job_per_device_the_next_one_waits(studio):
    import fcntl

    run_id = studio["good"]["run_id"]
    lock_path = studio["home"] / "locks" / "cpu.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # another job is generating on this device
        process = subprocess.Popen([sys.executable, "-m", "kohya_runner", "sample", run_id, "--kinds", "trigger",
                                    "--no-base", "--max-images", "1"], env={**os.environ, **studio["env"]},
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(6)
        assert process.poll() is None, process.communicate()
        jobs = sorted((Path(studio["good"]["run_dir"]) / "posthoc").glob("sample-*/job.json"))
        assert json.loads(jobs[-1].read_text(encoding="utf-8"))["status"] == "queued"
    out, err = process.communicate(timeout=120)  # the lock is free: it runs
    assert process.returncode == 0, out + err
    assert "queued: another sample job is using cpu" in out and "succeeded: 1/1" in out


# ----------------------------------------------------------------------------------------------
# The review board (kr review) on these runs, in headless Chromium, as a team uses it.


def test_a_team_reviews_real_runs_in_the_browser(studio, tmp_path):
    from browser import Browser, missing_reason
    from selenium.webdriver.common.by import By
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    if missing_reason() is not None:
        pytest.skip(missing_reason())
    from board_server import only_local, shots_folder, start_board

    home, good, leaky = studio["home"], studio["good"]["run_id"], studio["leaky"]["run_id"]
    shots = shots_folder(tmp_path)
    board = start_board(home)
    try:
        with Browser() as browser:
            driver = browser.driver
            wait = WebDriverWait(driver, 30)
            find = driver.find_element

            # the printed link opens the board; the token leaves the address bar
            browser.open(board.url)
            assert driver.current_url == board.base + "/"
            listed = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#runs tbody td:nth-child(2) a")]
            assert good in listed and leaky in listed
            find(By.ID, "reviewer-input").send_keys("Ana")
            find(By.CSS_SELECTOR, "#reviewer-form button").click()
            wait.until(lambda d: d.find_elements(By.ID, "reviewer-name"))
            assert find(By.ID, "reviewer-name").text == "Ana"
            browser.screenshot(shots / "review-board.png")

            # a run: its grid, base column first, the final checkpoint made post hoc
            find(By.LINK_TEXT, good).click()
            wait.until(lambda d: d.find_elements(By.ID, "grid"))
            heads = [h.text.split("\n")[0] for h in driver.find_elements(By.CSS_SELECTOR, "#grid thead th.col")]
            assert heads[0] == "base model" and "epoch 40 (final)" in heads, heads
            assert "Checkpoints" in driver.page_source and "Loss" in driver.page_source
            assert driver.find_elements(By.CSS_SELECTOR, "svg.curve path.line")
            browser.screenshot(shots / "review-run.png")

            # zoom: the full-size image, larger than its cell; arrow keys move, Z shows it 1:1, Esc closes
            final_at = heads.index("epoch 40 (final)")
            cells = [row.find_elements(By.CSS_SELECTOR, "td")[final_at].find_elements(By.CSS_SELECTOR, "button.cell")
                     for row in driver.find_elements(By.CSS_SELECTOR, "#grid tr.line")]
            next(c for c in cells if c)[0].click()  # (other tests of this module add rows of other seeds)
            viewer = find(By.ID, "viewer")
            wait.until(lambda d: viewer.is_displayed() and d.execute_script(
                "const i = document.getElementById('viewer-image'); return i.complete && i.naturalWidth > 0"))
            image = find(By.ID, "viewer-image")
            natural = driver.execute_script("return document.getElementById('viewer-image').naturalWidth")
            assert natural == 64 and image.size["width"] > 4 * natural  # the zoom: far larger than the 64 px file
            first = find(By.ID, "viewer-caption").text
            assert "epoch 40 (final)" in first
            browser.screenshot(shots / "review-zoom.png", full=False)
            body = find(By.TAG_NAME, "body")
            body.send_keys(Keys.ARROW_LEFT)
            wait.until(lambda d: d.find_element(By.ID, "viewer-caption").text != first)
            left = find(By.ID, "viewer-caption").text
            body.send_keys(Keys.ARROW_DOWN)
            wait.until(lambda d: d.find_element(By.ID, "viewer-caption").text != left)
            body.send_keys("z")
            assert "actual" in find(By.ID, "viewer-frame").get_attribute("class")
            assert image.size["width"] == natural
            body.send_keys("4")  # rate this image 4 stars
            wait.until(lambda d: "rated 4★ as Ana" in d.find_element(By.CSS_SELECTOR, "#viewer-rate .rated").text)
            rated_file = viewer.get_attribute("data-file")
            body.send_keys(Keys.ESCAPE)
            wait.until(lambda d: not viewer.is_displayed())

            # compare two checkpoints of the run side by side, at the same seeds
            picks = {h.text.split("\n")[0]: h.find_element(By.CSS_SELECTOR, "input.pick")
                     for h in driver.find_elements(By.CSS_SELECTOR, "#grid thead th.col")}
            picks["epoch 10"].click()
            picks["epoch 40 (final)"].click()
            find(By.ID, "compare").click()
            wait.until(lambda d: d.find_elements(By.ID, "lineup"))
            lineup = [h.text.split("\n")[0] for h in driver.find_elements(By.CSS_SELECTOR, "#lineup thead th.col")]
            assert lineup == ["base model", f"{good} · epoch 10", f"{good} · epoch 40 (final)"], lineup
            lines = driver.find_elements(By.CSS_SELECTOR, "#lineup tr.line")
            full = [line for line in lines if len(line.find_elements(By.CSS_SELECTOR, "button.cell")) == 3]
            assert len(full) >= 8, len(full)  # every prompt form of the run's subjects, in all three columns
            assert all("seed" in line.find_element(By.CSS_SELECTOR, "th").text for line in lines)
            browser.screenshot(shots / "review-compare.png")

            # rate the final checkpoint, then release it from the page
            browser.open(f"{board.base}/runs/{good}")
            row = next(r for r in driver.find_elements(By.CSS_SELECTOR, "#checkpoints tbody tr") if "(final)" in r.text)
            final_file = row.get_attribute("data-checkpoint")
            row.find_elements(By.CSS_SELECTOR, ".star")[4].click()
            row.find_element(By.CSS_SELECTOR, 'input[name="note"]').send_keys("clean marker lines")
            row.find_element(By.CSS_SELECTOR, "form.checkpoint-rate button[type=submit]").click()
            wait.until(lambda d: "5.0★" in d.find_element(By.CSS_SELECTOR, f'#checkpoints tr[data-checkpoint="{final_file}"]').text)
            row = find(By.CSS_SELECTOR, f'#checkpoints tr[data-checkpoint="{final_file}"]')
            assert "Ana" in row.text
            row.find_element(By.CSS_SELECTOR, ".release-open").click()
            name = row.find_element(By.CSS_SELECTOR, 'form.release input[name="name"]')
            name.clear()
            name.send_keys("marker-from-board")
            row.find_element(By.CSS_SELECTOR, "form.release button[type=submit]").click()
            wait.until(lambda d: "Released" in d.find_element(By.ID, "message").text)
            delivered = home / "releases" / "marker-from-board.safetensors"
            assert delivered.is_file() and str(delivered) in find(By.ID, "message").text
            card = json.loads((home / "releases" / "marker-from-board.card.json").read_text())
            assert card["ratings"]["mean"] == 5.0
            browser.screenshot(shots / "review-released.png")

            # more samples from the page: epoch 10 at strength 0.5, with the trigger only; queued like the CLI's
            earlier = {r.get_attribute("data-job") for r in driver.find_elements(By.CSS_SELECTOR, "#jobs tr[data-job]")}
            find(By.CSS_SELECTOR, ".sample-form summary").click()
            form = find(By.ID, "sample-form")
            for box in form.find_elements(By.CSS_SELECTOR, 'input[name="checkpoints"]'):
                if box.is_selected() != (box.get_attribute("value") == "e10"):
                    box.click()
            for box in form.find_elements(By.CSS_SELECTOR, 'input[name="kinds"]'):
                if box.is_selected() != (box.get_attribute("value") == "trigger"):
                    box.click()
            strengths = form.find_element(By.CSS_SELECTOR, 'input[name="strengths"]')
            strengths.clear()
            strengths.send_keys("0.5")
            form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
            wait.until(lambda d: "Sampling started" in d.find_element(By.ID, "message").text)

            def new_job_done(d):  # the page reloads itself when the job appears and when it ends
                rows = [r for r in d.find_elements(By.CSS_SELECTOR, "#jobs tr[data-job]")
                        if r.get_attribute("data-job") not in earlier]
                return rows and not re.search(r"queued|running", rows[0].text) and rows[0]

            job = WebDriverWait(driver, 240, ignored_exceptions=(StaleElementReferenceException,)).until(new_job_done)
            assert "succeeded" in job.text, job.text
            done, planned = job.find_element(By.CSS_SELECTOR, ".job-images").text.split("/")
            assert done == planned and int(planned) > 0
            assert "epoch 10 · strength 0.5" in driver.page_source
            browser.screenshot(shots / "review-sampled.png")

            # two runs side by side from the board
            browser.open(board.base + "/")
            for run_id in (good, leaky):
                find(By.CSS_SELECTOR, f'#runs input.pick[value="{run_id}"]').click()
            find(By.ID, "compare").click()
            wait.until(lambda d: d.find_elements(By.ID, "lineup"))
            heads = [h.text for h in driver.find_elements(By.CSS_SELECTOR, "#lineup thead th.col")]
            assert heads[0].startswith("base model") and any(h.startswith(good) for h in heads) \
                and any(h.startswith(leaky) for h in heads)
            assert any("dataset" in h for h in heads)  # the settings in which the two runs differ
            browser.screenshot(shots / "review-two-runs.png")
            only_local(browser, board)
    finally:
        board.stop()
    shown = json.loads(subprocess.run([sys.executable, "-m", "kohya_runner", "runs", "show", good, "--json"],
                                      env={**os.environ, "KR_HOME": str(home)}, capture_output=True, text=True).stdout)
    assert {(r["sample"], r["stars"], r["reviewer"]) for r in shown["ratings"]} >= {(rated_file, 4, "Ana"),
                                                                                   (None, 5, "Ana")}
