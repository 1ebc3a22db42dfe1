"""kohya_runner.review ratings through `kr runs rate`, `kr runs best --by rating`, `kr runs show --json`, a
ledger rebuild and the model card (real subprocesses, real SQLite, a synthetic finished run)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_kr
from synthetic_run import make_run


def _rate(home, run_id, *args):
    return run_kr("runs", "rate", run_id, *args, env={"KR_HOME": str(home)})


def test_ratings_pick_the_best_survive_a_rebuild_and_reach_the_card(home, tmp_path):
    row = make_run(home, subjects=1, epochs=4, every=2, size=64)
    env = {"KR_HOME": str(home)}
    for args in (["--checkpoint", "tiny-demo-000002.safetensors", "--stars", "5", "--reviewer", "Ana", "--note", "crisp ink"],
                 ["--checkpoint", "tiny-demo-000002.safetensors", "--stars", "4", "--reviewer", "Ben"],
                 ["--checkpoint", "tiny-demo.safetensors", "--stars", "3", "--reviewer", "Ana"]):
        result = _rate(home, row.run_id, *args)
        assert result.returncode == 0, result.stderr
    sample = sorted((Path(row.run_dir) / "output" / "sample").glob("*.png"))[0].name
    assert _rate(home, row.run_id, "--sample", sample, "--stars", "2", "--reviewer", "Ben").returncode == 0

    best = json.loads(run_kr("runs", "best", row.run_id, "--by", "rating", "--json", env=env).stdout)
    assert best["by"] == "rating" and best["chosen"]["label"] == "epoch 2"
    text = run_kr("runs", "best", row.run_id, "--by", "rating", env=env).stdout
    assert "4.5 (2)" in text and "best by rating" in text

    (home / "ledger.sqlite").unlink()  # the run folder's ratings.json is the truth
    assert run_kr("runs", "rebuild", env=env).returncode == 0
    shown = json.loads(run_kr("runs", "show", row.run_id, "--json", env=env).stdout)
    assert [(r["reviewer"], r["stars"]) for r in shown["ratings"]] == [("Ana", 5), ("Ben", 4), ("Ana", 3), ("Ben", 2)]
    assert shown["ratings"][0]["note"] == "crisp ink" and shown["ratings"][3]["sample"] == sample

    # the model card of a release goes by the same summary (the synthetic run's LoRA files hold no tensors,
    # so the card is built directly here; test_which_lora releases real ones)
    from kohya_runner import card
    from kohya_runner.checkpoints import choose
    from kohya_runner.run import load_spec

    choice = choose(home, row.run_id, best_loss=True, by="rating")
    release = {"file": str(tmp_path / "tiny-demo.safetensors"), "sha256": "0" * 64, "size": 1}
    keep = card.build(home, row, load_spec(Path(row.run_dir)), choice, release, "keep")
    assert keep["ratings"] == {"mean": 4.5, "count": 2, "reviewers": ["Ana", "Ben"]}
    scrub = card.build(home, row, load_spec(Path(row.run_dir)), choice, release, "scrub")
    assert scrub["ratings"] == {"mean": 4.5, "count": 2}  # no reviewer names outside keep
    assert "mean **4.5** of 5 (by Ana, Ben)" in card.markdown(keep)


def test_bad_ratings_are_refused_and_nothing_is_written(home):
    row = make_run(home, subjects=1, epochs=2, every=2, size=64)
    cases = [(["--checkpoint", "nope.safetensors", "--stars", "3", "--reviewer", "Ana"], "saved no checkpoint named"),
             (["--sample", "../../etc/passwd", "--stars", "3", "--reviewer", "Ana"], "made no sample image named"),
             (["--checkpoint", "tiny-demo.safetensors", "--stars", "6", "--reviewer", "Ana"], "--stars"),
             (["--checkpoint", "tiny-demo.safetensors", "--stars", "3", "--reviewer", "  "], "reviewer name is empty"),
             (["--checkpoint", "tiny-demo.safetensors", "--stars", "3", "--reviewer", "Ana\x07"], "control character"),
             (["--checkpoint", "tiny-demo.safetensors", "--stars", "3", "--reviewer", "A" * 61], "at most 60"),
             (["--stars", "3", "--reviewer", "Ana"], "exactly one"),
             (["--checkpoint", "tiny-demo.safetensors", "--sample", "x.png", "--stars", "3", "--reviewer", "Ana"],
              "exactly one")]
    for args, expected in cases:
        result = _rate(home, row.run_id, *args)
        assert result.returncode == 2 and expected in result.stderr and "Traceback" not in result.stderr, (args, result.stderr)
    assert not (Path(row.run_dir) / "ratings.json").exists()
    none = run_kr("runs", "best", row.run_id, "--by", "rating", env={"KR_HOME": str(home)})
    assert none.returncode == 2 and "no checkpoint of" in none.stderr and "kr runs rate" in none.stderr
