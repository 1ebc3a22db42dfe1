"""A FAULT-INJECTING STAND-IN for sd-scripts' sdxl_train_network.py, for kr's fault tests only.

It reads the rendered --config_file like sd-scripts, prints the contract's console lines (running
training block, `epoch N/M`, tqdm `steps:` bars with `\\r`, `saving checkpoint:`, `model saved.`),
writes small kohya-style LoRA files and a real TensorBoard event file, and misbehaves on demand:

    KR_FAULT=ok | slow | crash | oom | oom_until | nan | nodata | hang | hang_child | exit0_nomodel

`oom_until` runs out of CUDA memory at step 2 until a memory setting changes: every option named in
KR_FAULT_FITS_WHEN (comma-separated training-config keys, e.g. gradient_checkpointing) must be on.

A test that must act at a known point (e.g. Ctrl-C after a checkpoint) sets KR_FAULT_PAUSE_AFTER_EPOCH=N
and KR_FAULT_GATE=<file>: after saving epoch N's checkpoint the stand-in creates the gate file and waits
until it is deleted (or a signal ends it), however fast or loaded the machine is.

It is not a trainer; the real pipeline is tested with kr's built-in tiny trainer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import toml
from safetensors.numpy import save_file


def flat_config(path: str) -> dict:
    path = path if path.endswith(".toml") else path + ".toml"
    if not os.path.exists(path):
        print(f"{path} not found.")
        sys.exit(1)
    args = {}
    for value in toml.load(path).values():
        args.update(value)
    return args


def save_lora(path: Path, dim: int, value: float = 0.01) -> None:
    tensors = {}
    for i in range(3):
        name = f"lora_unet_input_blocks_4_1_transformer_blocks_0_attn{i}_to_q"
        tensors[f"{name}.lora_down.weight"] = np.full((dim, 8), value, dtype=np.float16)
        tensors[f"{name}.lora_up.weight"] = np.full((8, dim), value, dtype=np.float16)
        tensors[f"{name}.alpha"] = np.array(dim / 2, dtype=np.float16)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata={"ss_network_dim": str(dim), "ss_base_model_version": "sdxl_base_v1-0"})
    print(f"\nsaving checkpoint: {path}", flush=True)


def tensorboard_writer(args: dict):
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    folder = Path(args["logging_dir"]) / (args.get("log_prefix", "") + time.strftime("%Y%m%d%H%M%S")) / "network_train"
    writer = EventFileWriter(str(folder))

    def log(step: int, **values: float) -> None:
        summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=t.replace("__", "/"), simple_value=v)
                                             for t, v in values.items()])
        writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))
        writer.flush()

    return log, writer


def pause_at_gate(gate: Path, epoch: int, limit: float = 600.0) -> None:
    """Tell the test where training is (the gate file appears), then wait until it is deleted; SIGINT
    raises KeyboardInterrupt here like anywhere in a trainer. The limit only ends a forgotten gate."""
    gate.write_text(f"paused after epoch {epoch}\n")
    deadline = time.monotonic() + limit
    while gate.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def main() -> None:
    fault = os.environ.get("KR_FAULT", "ok")
    argv = sys.argv[1:]
    args = flat_config(argv[argv.index("--config_file") + 1])
    out, name = Path(args["output_dir"]), args["output_name"]
    epochs, steps_per_epoch, dim = int(args.get("max_train_epochs", 2)), 4, int(args.get("network_dim", 4))
    total = epochs * steps_per_epoch
    print("Loading settings from config…", flush=True)
    if fault == "nodata":
        print("No data found. Please verify arguments (train_data_dir must be the parent of folders with images)", flush=True)
        sys.exit(0)
    if fault == "hang_child":
        # a "data loader worker" in the same process group
        subprocess.Popen([sys.executable, "-c", "import time, signal; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(600)"])
    print("running training / 学習開始", flush=True)
    print(f"  num epochs / epoch数: {epochs}", flush=True)
    print(f"  total optimization steps / 学習ステップ数: {total}", flush=True)
    if fault in ("hang", "hang_child"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # stuck like a wedged CUDA call: only harder signals end it
        while True:
            time.sleep(1)
    if fault == "oom_until":
        needed = [k for k in os.environ.get("KR_FAULT_FITS_WHEN", "").split(",") if k]
        fault = "ok" if all(args.get(k) for k in needed) else "oom"
    log, writer = tensorboard_writer(args)
    step, delay = 0, float(os.environ.get("KR_FAULT_DELAY", "0.3" if fault == "slow" else "0.01"))
    for epoch in range(1, epochs + 1):
        print(f"\nepoch {epoch}/{epochs}\n", flush=True)
        for _ in range(steps_per_epoch):
            step += 1
            loss = 0.5 / step
            if fault == "nan" and step >= 3:
                loss = float("nan")
            if fault == "crash" and step == 3:
                raise RuntimeError("stand-in crash in the training loop")
            if fault == "oom" and step == 2:
                print("Traceback (most recent call last):", file=sys.stderr)
                print('  File "train_network.py", line 1, in <module>', file=sys.stderr)
                print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total "
                      "capacity of 7.79 GiB of which 1.01 GiB is free.", file=sys.stderr, flush=True)
                sys.exit(1)
            log(step, loss__current=loss, loss__average=loss, lr__unet=1e-4)
            sys.stderr.write(f"\rsteps: {100 * step // total:3d}%|█         | {step}/{total} "
                             f"[00:0{step % 10}<00:01, 3.50it/s, avr_loss={loss:.3g}]")
            sys.stderr.flush()
            time.sleep(delay)
        log(epoch, loss__epoch_average=0.5 / step)
        if epoch < epochs:
            save_lora(out / f"{name}-{epoch:06d}.safetensors", dim)
        if epoch == int(os.environ.get("KR_FAULT_PAUSE_AFTER_EPOCH", "0")):
            pause_at_gate(Path(os.environ["KR_FAULT_GATE"]), epoch)
    writer.close()
    if fault == "exit0_nomodel":
        sys.exit(0)
    save_lora(out / f"{name}.safetensors", dim)
    print("model saved.", flush=True)


if __name__ == "__main__":
    main()
