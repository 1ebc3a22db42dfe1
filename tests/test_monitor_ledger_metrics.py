"""Pure pieces of the run pipeline: stream parsing, outcome rules, the ledger under concurrent writers,
and reading every TensorBoard point."""

from __future__ import annotations

import math
import multiprocessing
from pathlib import Path

import pytest

from kohya_runner import metrics
from kohya_runner.sdscripts import outputs
from kohya_runner.ledger import Ledger
from kohya_runner.monitor import LossGuard, Progress, SegmentSplitter, classify, oom_hint, parse_segment
from kohya_runner.spec import build_spec


def feed(lines: bytes, chunk: int = 7) -> Progress:
    progress, splitter = Progress(), SegmentSplitter()
    for i in range(0, len(lines), chunk):  # arbitrary chunk boundaries, even inside UTF-8 sequences
        for segment in splitter.feed(lines[i:i + chunk]):
            parse_segment(progress, segment)
    for segment in splitter.flush():
        parse_segment(progress, segment)
    return progress


STREAM = (
    "running training / 学習開始\n  num epochs / epoch数: 10\n"
    "  total optimization steps / 学習ステップ数: 2000\n\nepoch 1/10\n"
    "\rsteps:   0%|          | 0/2000 [00:00<?, ?it/s]"
    "\rsteps:  10%|█         | 200/2000 [03:10<28:30,  1.05it/s, avr_loss=0.0912]"
    "\rsteps:  10%|█         | 201/2000 [03:11<28:30,  2.50s/it, avr_loss=0.0901]"
    "\nsaving checkpoint: /r/out/x-000001.safetensors\n"
).encode()


def test_stream_parsing_splits_on_cr_and_lf():
    p = feed(STREAM)
    assert (p.steps_done, p.steps_total, p.epoch, p.epochs_total) == (201, 2000, 1, 10)
    assert p.avr_loss == pytest.approx(0.0901) and p.min_loss == pytest.approx(0.0901)
    assert p.it_per_s == pytest.approx(0.4)  # 2.50 s/it
    assert p.checkpoints == ["/r/out/x-000001.safetensors"] and not p.nan and not p.model_saved


def test_nan_and_inf_are_divergence():
    for value in ("nan", "inf"):
        p = feed(f"\rsteps:  1%|          | 3/100 [00:01<00:30,  3.00it/s, avr_loss={value}]".encode())
        assert p.nan
        assert classify(p, -15, False).status == "diverged"


@pytest.mark.parametrize("text, rc, final, status, reason", [
    ("model saved.\n", 0, True, "succeeded", None),
    ("model saved.\n", None, True, "succeeded", None),  # settled from files after kr died
    ("", 0, True, "failed", "no_model"),  # the final file without 'model saved.'
    ("model saved.\n", 0, False, "failed", "no_model"),
    ("No data found. Please verify arguments (train_data_dir must be the parent of folders with images)\n", 0, False, "failed", "no_data"),
    ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB\n", 1, False, "failed", "cuda_oom"),
    ("voluptuous.error.MultipleInvalid: extra keys not allowed @ data['datasets'][0]['x']\n", 1, False, "failed", "dataset_config"),
    ("ValueError: The provided pretrained_model_name_or_path \"/m\" is neither a valid local path nor a valid repo id.\n", 1, False, "failed", "missing_model"),
    ("TypeError: expected str, bytes or os.PathLike object, not NoneType\n", 1, False, "failed", "missing_tokenizer"),
    ("ImportError: No bitsandbytes / bitsandbytesがインストールされていないようです\n", 1, False, "failed", "missing_package"),
    ("AttributeError: module 'torch.optim' has no attribute 'Adamm'\n", 1, False, "failed", "unknown_optimizer"),
    ("AssertionError: caption file is empty: /d/a.txt\n", 1, False, "failed", "dataset_file"),
    ("", -9, False, "crashed", "killed"),
    ("", -11, False, "crashed", "signal"),
    ("RuntimeError: something else\n", 1, False, "failed", "error"),
])
def test_outcome_rules(text, rc, final, status, reason):
    outcome = classify(feed(text.encode()), rc, final)
    assert (outcome.status, outcome.reason) == (status, reason)
    if status == "failed" and reason not in ("no_model", "error"):
        assert outcome.hint


def test_oom_hint_walks_the_memory_ladder():
    spec = build_spec({"dataset": {"batch_size": 4}, "precision": {"gradient_checkpointing": False}})
    assert "batch_size=1" in oom_hint(spec) and "gradient_accumulation_steps=4" in oom_hint(spec)
    spec = build_spec({"dataset": {"batch_size": 1}, "precision": {"gradient_checkpointing": False}})
    assert "gradient_checkpointing=true" in oom_hint(spec)
    spec = build_spec({"precision": {"cache_text_encoder_outputs": True, "full_bf16": True},
                       "optimizer": {"type": "AdamW8bit"}})
    assert "fp8_base" in oom_hint(spec)
    assert "sampl" in oom_hint(spec, during_sampling=True)


def _writer(path: str, worker: int, count: int) -> None:
    ledger = Ledger(Path(path))
    for i in range(count):
        row = ledger.create_run(f"w{worker}", Path(path).parent / "runs", preset="p")
        ledger.update(row.run_id, status="running", steps_done=i)
        ledger.finish(row.run_id, "succeeded", loss=float(i))


def test_ledger_is_safe_under_concurrent_writers(tmp_path):
    path = tmp_path / "ledger.sqlite"
    Ledger(path)
    workers = [multiprocessing.get_context("spawn").Process(target=_writer, args=(str(path), w, 40)) for w in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
        assert w.exitcode == 0
    rows = Ledger(path).runs()
    assert len(rows) == 160 and len({r.run_id for r in rows}) == 160
    assert all(r.status == "succeeded" for r in rows)
    assert len({r.run_dir for r in rows}) == 160 and all(Path(r.run_dir).is_dir() for r in rows)


def test_finish_is_once_and_find_by_prefix(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    row = ledger.create_run("marker", tmp_path / "runs")
    assert ledger.finish(row.run_id, "stopped") and not ledger.finish(row.run_id, "failed")
    assert ledger.get(row.run_id).status == "stopped"
    ledger.create_run("marker", tmp_path / "runs")
    assert ledger.find("1").run_id == "marker-0001"
    from kohya_runner.errors import BadInput

    with pytest.raises(BadInput, match="matches 2 runs"):
        ledger.find("marker")


def write_events(folder: Path, steps: int) -> Path:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(folder))
    for step in range(1, steps + 1):
        values = [summary_pb2.Summary.Value(tag="loss/current", simple_value=1.0 / step),
                  summary_pb2.Summary.Value(tag="loss/average", simple_value=2.0 / step)]
        writer.add_event(event_pb2.Event(wall_time=1000.0 + step, step=step, summary=summary_pb2.Summary(value=values)))
    writer.close()
    return next(folder.glob("events.out.tfevents.*"))


def test_every_point_is_read_where_event_accumulator_samples(tmp_path):
    path = write_events(tmp_path, 12_000)
    points = metrics.read_scalars(path)
    series = metrics.by_tag(points)
    assert len(series["loss/current"]) == 12_000 == len(series["loss/average"])
    assert series["loss/current"][-1].step == 12_000 and series["loss/current"][-1].value == pytest.approx(1 / 12_000)
    only = metrics.read_scalars(path, tags=["loss/average"])
    assert {p.tag for p in only} == {"loss/average"} and len(only) == 12_000
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    default = EventAccumulator(str(tmp_path))
    default.Reload()
    assert len(default.Scalars("loss/current")) == 10_000  # why kr reads the file itself


def test_truncated_live_event_file_is_read_up_to_the_last_whole_record(tmp_path):
    path = write_events(tmp_path, 50)
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    assert len(metrics.read_scalars(path, ["loss/current"])) == 49


def test_output_names_and_checkpoint_order():
    assert outputs.epoch_lora_name("m", 3) == "m-000003.safetensors"
    assert outputs.step_lora_name("m", 500) == "m-step00000500.safetensors"
    assert outputs.checkpoint_order("m", "m-000003.safetensors") == (0, 3)
    assert outputs.checkpoint_order("m", "m-step00000500.safetensors") == (1, 500)
    assert outputs.checkpoint_order("m", "m.safetensors") is None
    assert outputs.checkpoint_order("m", "mx-000003.safetensors") is None


def test_loss_guard_rule():
    def fed(guard, *points):
        reason = None
        for step, loss in points:
            reason = reason or guard.check(Progress(steps_done=step, avr_loss=loss))
        return reason

    reason = fed(LossGuard(3.0, 5), (5, 0.1), (8, 0.2), (10, 0.31))
    assert "rose to 0.31 at step 10, above 3 × its running minimum 0.1 since warm-up" in reason
    assert fed(LossGuard(3.0, 5), (5, 0.1), (10, 0.29)) is None
    # the running minimum starts at the end of warm-up: an early low average does not trip it
    assert fed(LossGuard(3.0, 5), (1, 0.01), (4, 0.05), (5, 0.1), (10, 0.2)) is None
    assert fed(LossGuard(None, 0), (1, 0.1), (2, 5.0)) is None  # switched off
    assert fed(LossGuard(3.0, 0), (1, 0.1), (2, math.nan)) is None  # NaN has its own rule
    p = Progress(steps_done=10, avr_loss=0.31, min_loss=0.1)
    p.divergence = reason
    outcome = classify(p, -15, False, diverged=True)
    assert (outcome.status, outcome.reason) == ("diverged", "loss_diverged") and "lower optimizer.lr" in outcome.hint
    p.nan = True
    assert classify(p, -15, False, diverged=True).reason == "nan_loss"


# ----------------------------------------------------------------------------------------------
# The one log follower.


def test_log_follower_reads_only_what_is_new_and_splits_tqdm_redraws(tmp_path):
    from kohya_runner.monitor import LogFollower, read_progress

    log = tmp_path / "trainer.log"
    follower = LogFollower(log)
    assert follower.poll() == [] and follower.progress.phase == "starting"  # not there yet
    bar = "steps:  {pct}%|##  | {n}/8 [00:0{n}<00:10,  1.50it/s, avr_loss=0.{n}]"
    log.write_bytes(b"running training\n" + bar.format(pct=12, n=1).encode() + b"\r" + bar.format(pct=25, n=2).encode())
    events = follower.poll()
    assert [e for _, e in events] == [None, "step"]  # the second redraw has no line end yet
    assert follower.progress.steps_done == 1 and follower.progress.it_per_s == 1.5
    with open(log, "ab") as handle:
        handle.write(b"\r" + "épocă".encode()[:2])  # a character split across two writes
    assert [e for _, e in follower.poll()] == ["step"] and follower.progress.steps_done == 2
    with open(log, "ab") as handle:
        handle.write("épocă".encode()[2:] + b"\nmodel saved.")
    assert follower.poll()[0][0] == "épocă"
    assert follower.finish()[-1] == ("model saved.", "saved") and follower.progress.model_saved
    again = read_progress(log)
    assert again.steps_done == 2 and again.avr_loss == 0.2 and again.model_saved
    assert read_progress(tmp_path / "missing.log").steps_done == 0


def test_last_bar_is_the_last_reading_with_a_rate(tmp_path):
    from kohya_runner.monitor import last_bar, read_bar, tqdm_seconds

    log = tmp_path / "trainer.log"
    log.write_text("steps:  50%|##  | 5/10 [01:02:03<00:30,  2.00s/it, avr_loss=0.3]\r"
                   "steps:  60%|##  | 6/10 [01:02:05<?, ?it/s]\nother line\n")
    bar = last_bar(log)
    assert (bar.steps_done, bar.steps_total, bar.it_per_s, bar.elapsed_seconds) == (5, 10, 0.5, 3723.0)
    assert read_bar("steps:  60%|##  | 6/10 [00:05<?, ?it/s]").rate_known is False
    assert read_bar("not a bar") is None and tqdm_seconds("1:00") == 60.0 and tqdm_seconds("x") is None
    assert last_bar(tmp_path / "none.log") is None
