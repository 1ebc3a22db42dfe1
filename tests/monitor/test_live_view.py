"""The live view: `kr runs tail` shows every epoch once and ends its block before the summary; during
sampling the view shows "sample i/N" and an ETA that includes the sampling still to come."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import run_kr

from kohya_runner.cli.live import SweepPlainView, status_line
from kohya_runner.monitor import Progress, eta_seconds, parse_segment
from kohya_runner.usage import Resources


def _start_slow_run(style_images, base, epochs: int) -> str:
    result = run_kr("run", "marker", "--dataset", style_images, "--base", base, f"training.epochs={epochs}", "--detach",
                    "--json", env={"KR_FAULT": "slow", "KR_FAULT_DELAY": "0.15"})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)["run_id"]


@pytest.mark.slow
def test_tail_prints_every_epoch_once_and_the_summary_on_its_own_line(style_images, sdxl_header_base, fault_checkout,
                                                                    home):
    epochs = 8
    run_id = _start_slow_run(style_images, sdxl_header_base, epochs)
    result = run_kr("runs", "tail", run_id, timeout=120)  # stdout is a pipe: the plain view
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    epoch_lines = [line.strip() for line in lines if re.fullmatch(r"\s*epoch \d+/\d+", line)]
    assert epoch_lines == [f"epoch {n}/{epochs}" for n in range(1, epochs + 1)], result.stdout
    assert any(line.strip().startswith("run folder:") for line in lines), result.stdout
    assert any(line == f"{run_id}: succeeded" for line in lines), result.stdout
    assert f"kr report {run_id}" in result.stdout  # what to do next, after the summary


@pytest.mark.slow
def test_tail_on_a_terminal_ends_its_block_before_the_summary(style_images, sdxl_header_base, fault_checkout, home):
    import pty

    run_id = _start_slow_run(style_images, sdxl_header_base, 3)
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "kohya_runner", "runs", "tail", run_id], stdin=follower,
                               stdout=follower, stderr=follower, env={**os.environ, "COLUMNS": "120"}, close_fds=True)
    os.close(follower)
    output = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's other side closed
            break
        if not chunk:
            break
        output += chunk
    process.wait(timeout=60)
    os.close(leader)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output.decode("utf-8", "replace"))
    index = text.index(f"{run_id}: succeeded")
    assert text[index - 1] == "\n", repr(text[max(0, index - 120):index + 40])
    assert process.returncode == 0


def _round(progress: Progress, start: float, per_image: float, prompts: int, step: int) -> float:
    """One sampling round as sd-scripts logs it, each image `per_image` seconds; returns its end time."""
    now = start
    parse_segment(progress, f"generating sample images at step / サンプル画像生成 ステップ: {step}", now)
    for i in range(prompts):
        parse_segment(progress, f"prompt: a shape {i}", now)
        parse_segment(progress, "negative_prompt: None", now)
        parse_segment(progress, "sample_steps: 28", now)
        now += per_image
    return now


def test_sampling_shows_the_image_and_the_eta_includes_the_sampling_left():
    p = Progress()
    p.plan_samples(3, lambda epochs, total: 1 + epochs)  # sample at first, then every epoch
    parse_segment(p, "  num epochs / epoch数: 2", 0.0)
    parse_segment(p, "  total optimization steps / 学習ステップ数: 10", 0.0)
    assert p.sample_rounds_total == 3 and p.sample_images_total == 9
    now = _round(p, 0.0, 4.0, 3, 0)  # sample at first: 3 images of 4 s
    parse_segment(p, "epoch 1/2", now)
    for step in range(1, 6):  # 5 steps of 1 s
        parse_segment(p, f"steps:  {step * 10}%|█         | {step}/10 [00:{int(now):02d}<00:06,  1.00it/s, avr_loss=0.1]",
                      now)
        now += 1.0
    now -= 1.0
    parse_segment(p, "generating sample images at step / サンプル画像生成 ステップ: 5", now)
    parse_segment(p, "prompt: a shape 0", now)
    now += 4.0
    parse_segment(p, "prompt: a shape 1", now)
    line = status_line("marker-0001", p, Resources(rss=2**30))
    assert "sample 2/3 (round 2/3)" in line and "mem (PSS) 1.00 GB" in line, line
    seconds, lower = eta_seconds(p, now + 1.0)
    # 5 steps × 1 s + this image's 3 s left + 1 more image in this round + 3 in the last one, 4 s each
    assert not lower and seconds == pytest.approx(5 + 3 + 4 * 4, abs=0.01)


def test_a_replayed_log_times_nothing_and_says_the_eta_is_a_lower_bound():
    p = Progress()
    p.plan_samples(2, lambda epochs, total: epochs)
    for segment in ("  num epochs / epoch数: 2", "  total optimization steps / 学習ステップ数: 4", "epoch 1/2",
                    "steps:  50%|█         | 2/4 [00:02<00:02,  1.00it/s, avr_loss=0.1]",
                    "generating sample images at step / サンプル画像生成 ステップ: 2", "prompt: a", "prompt: b",
                    "epoch 2/2"):
        parse_segment(p, segment, 100.0, timed=False)
    assert p.sample_images_done == 2 and p.sample_images_timed == 0
    seconds, lower = eta_seconds(p, 100.0)
    assert lower and seconds == pytest.approx(2.0)


def test_sweep_plain_view_prints_a_line_per_member_and_the_overall_eta(capsys):
    view = SweepPlainView(every=0.0)
    view.message("[lr=1e-4] started marker-0001 on cpu")
    view.update(["[lr=1e-4] marker-0001 training step 3/8", "[lr=2e-4] marker-0002 caching"],
                "sweep: 0/3 done, 2 running, 1 queued, eta 1:10")
    out = capsys.readouterr().out.splitlines()
    assert out == ["[lr=1e-4] started marker-0001 on cpu", "  [lr=1e-4] marker-0001 training step 3/8",
                   "  [lr=2e-4] marker-0002 caching", "  sweep: 0/3 done, 2 running, 1 queued, eta 1:10"]


@pytest.mark.slow
def test_sweep_prints_a_block_per_status_with_a_line_per_member_and_an_overall_eta(style_images, sdxl_header_base,
                                                                                     fault_checkout, home):
    result = run_kr("sweep", "marker", "--dataset", style_images, "--base", sdxl_header_base,
                    "--grid", "optimizer.lr=1e-4,2e-4,3e-4", "training.epochs=4", "--max-parallel", "2",
                    env={"KR_FAULT": "slow", "KR_FAULT_DELAY": "0.25", "KR_SWEEP_STATUS_EVERY": "1"}, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    overall = [i for i, line in enumerate(lines) if line.startswith("  sweep: ")]
    assert overall, result.stdout
    assert any(re.search(r", eta \d+:\d\d$", lines[i]) for i in overall), result.stdout
    for i in overall:  # each block: its member lines right above its overall line, one per running member
        running = int(re.search(r"(\d+) running", lines[i]).group(1))
        block = lines[i - running:i]
        assert all(re.match(r"  \[m0\d\] marker-\d{4} ", line) for line in block), (block, result.stdout)
    assert any("step " in line and "eta " in line for line in lines if line.startswith("  [m0")), result.stdout
