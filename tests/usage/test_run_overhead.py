"""kr's own cost per run: a dataset check whose inputs have not changed is not redone; checkpoints are
verified and hashed while the trainer runs, so archiving does not read them again; loss.png is drawn
once, at `model saved.`, not after the trainer has exited."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from kohya_runner import archive, run as run_mod
from kohya_runner.monitor import Progress, parse_segment


def test_a_passed_dataset_check_is_reused_until_an_input_changes(home, style_images, sdxl_header_base, monkeypatch):
    from kohya_runner.preset import resolve

    home.mkdir(parents=True)
    spec = resolve("marker", home, given={"dataset.dir": str(style_images), "model.base": str(sdxl_header_base)}).spec
    calls = []
    real = run_mod.check_dataset
    monkeypatch.setattr(run_mod, "check_dataset", lambda *a, **k: calls.append(1) or real(*a, **k))
    run_mod.refuse_dataset_errors(home, spec)
    run_mod.refuse_dataset_errors(home, spec)
    assert len(calls) == 1  # the second check was the memo's
    caption = style_images / "img0.txt"
    caption.write_text("")  # an input changed: checked again, and refused (an empty caption)
    os.utime(caption, ns=(time.time_ns(), time.time_ns() + 10_000_000))
    with pytest.raises(Exception, match="img0"):
        run_mod.refuse_dataset_errors(home, spec)
    assert len(calls) == 2


@pytest.fixture
def lora_file(tmp_path) -> Path:
    import numpy as np
    from safetensors.numpy import save_file

    def make(name: str) -> Path:
        path = tmp_path / "output" / name
        path.parent.mkdir(exist_ok=True)
        tensors = {"lora_unet_x.lora_down.weight": np.ones((4, 8), np.float16),
                   "lora_unet_x.lora_up.weight": np.ones((8, 4), np.float16), "lora_unet_x.alpha": np.array(2.0, np.float16)}
        save_file(tensors, str(path))
        return path
    return make


def test_the_verifier_hashes_each_checkpoint_once_announced_files_are_complete(lora_file, monkeypatch):
    reads = []
    real = archive._verify
    monkeypatch.setattr(archive, "_verify", lambda path, size: reads.append(path.name) or real(path, size))
    verifier = archive.CheckpointVerifier()
    progress = Progress()
    first = lora_file("m-000001.safetensors")
    verifier.on_event(parse_segment(progress, f"saving checkpoint: {first}"), progress)
    assert reads == []  # announced, maybe still being written: not read yet
    final = lora_file("m.safetensors")
    verifier.on_event(parse_segment(progress, f"saving checkpoint: {final}"), progress)
    verifier.on_event(parse_segment(progress, "model saved."), progress)
    deadline = time.monotonic() + 10
    while len(reads) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(reads) == ["m-000001.safetensors", "m.safetensors"]
    assert archive.verify_lora(first).ok and archive.verify_lora(final).ok
    assert sorted(reads) == ["m-000001.safetensors", "m.safetensors"]  # archiving read neither again
    lora_file("m.safetensors")  # rewritten: verified anew
    os.utime(final, ns=(time.time_ns(), time.time_ns() + 10_000_000))
    archive.verify_lora(final)
    assert reads.count("m.safetensors") == 2
