"""Running a post-hoc sample job: validate and plan, wait for the device, one generator per pass, record.

    runs/<id>/posthoc/sample-0001/
      job.json            the request, the plan, every image with its cell and time (the truth a ledger
                          rebuild reads); written at the start and after every pass
      pass-00.txt         the prompts file of a pass (gen_img lines), pass-00.log its console
      base_p00_trigger_1234.png, e000008_m1_p00_trigger_1234.png, …

One job per device at a time: a job waits (printing why) while another sample job holds the device's
lock or a run is training on it. Ctrl-C stops the generator's process group and keeps what was made.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .. import atomic, runfolder, workspace
from ..errors import BadInput, Failed
from ._plan import KINDS, Cell, Pass, Request, build, pick_checkpoints
from ._store import ledger_rows

JOB_SCHEMA = "kr.sample-job/1"
POLL = 0.1
BATCH_GAP = 0.25  # images written within this many seconds of each other came from one batch


@dataclass
class Job:
    home: Path
    run: Any  # ledger.RunRow
    spec: Any
    config: dict
    backend: str
    passes: list[Pass]
    request: Request
    gpus: list[int] | None
    folder: Path | None = None
    job_id: str | None = None
    created_at: float = 0.0


def prepare(home: Path, ref: str, request: Request, gpus: list[int] | None = None) -> Job:
    """Everything checked, nothing written: the run, its checkpoints, the plan and the generator."""
    from .. import trainers
    from ..checkpoints import best, saved_checkpoints
    from ..run import load_options

    run = saved_checkpoints(home, ref, allow_none=request.base and request.checkpoints == "none")
    row, spec, found, epochs_total = run.row, run.spec, run.checkpoints, run.epochs_total
    folder = runfolder.of(row.run_dir)
    if not folder.config.is_file():
        raise BadInput(f"run {row.run_id} has no config.toml in {row.run_dir}, so kr cannot tell which base it trained "
                       "on. Fix: sample another run")
    if request.checkpoints == "best" and request.best_by == "score":
        from ..score import best_checkpoint

        chosen = [best_checkpoint(home, row.run_id, found)]
    else:
        chosen = [] if request.checkpoints == "none" else pick_checkpoints(found, request.checkpoints, best(found))
    if row.active and any(c.kind == "final" for c in chosen):
        raise BadInput(f"{row.run_id} is still {row.status}; its final LoRA is not written yet. Fix: wait, or "
                       "name saved epochs (--checkpoints e2,e4)")
    bad = sorted(set(request.kinds) - set(KINDS))
    if bad:
        raise BadInput(f"--kinds {','.join(bad)} is not a prompt form. Fix: use trigger, no-trigger and/or variants")
    config = load_options(Path(row.run_dir))
    passes = build(spec, chosen, request, epochs_total)
    backend = row.backend or ("tiny" if spec.model.base == "tiny" else "sd-scripts")
    trainers.generator_for(backend, home, gpus)  # sd-scripts installed and complete, else BadInput now
    return Job(home, row, spec, config, backend, passes, request, gpus)


def run(job: Job, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Make the job's images; returns its summary (the job.json content)."""
    job.folder, job.job_id = _new_folder(runfolder.of(job.run.run_dir).posthoc)
    job.created_at = time.time()
    state = {"status": "queued", "message": None}
    _save(job, state)
    try:
        with DeviceLock(job.home, job.gpus, say) as lock:
            lock.wait_for_runs(job.run.run_id)
            state["status"] = "running"
            _save(job, state)
            for index, one in enumerate(job.passes):
                say(f"  {_pass_label(one)}: {len(one.cells)} image(s)")
                _run_pass(job, index, one)
                _save(job, state)
            state["status"] = "succeeded"
    except KeyboardInterrupt:  # while queued too: then nothing was made
        state.update(status="stopped", message="stopped by the user (Ctrl-C); the images made so far are kept")
    except Failed as error:
        state.update(status="failed", message=error.message)
    except BaseException as error:
        state.update(status="failed", message=f"{type(error).__name__}: {error}")
        raise
    finally:
        summary = _save(job, state)
    if state["status"] == "failed":
        raise Failed(f"sample job {job.job_id} of {job.run.run_id} failed: {state['message']}")
    return summary


def _pass_label(one: Pass) -> str:
    return "base model" if one.network is None else f"{one.network.name}"


def _new_folder(root: Path) -> tuple[Path, str]:
    root.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name.rsplit("-", 1)[-1]) for p in root.glob("sample-*") if p.name.rsplit("-", 1)[-1].isdigit()]
    number = max(taken, default=0) + 1
    while True:
        folder = root / f"sample-{number:04d}"
        try:
            folder.mkdir()
            return folder, folder.name
        except FileExistsError:  # another job took it meanwhile
            number += 1


# ----------------------------------------------------------------------------------------------
# One pass: one generator process.


def _run_pass(job: Job, index: int, one: Pass) -> None:
    from .. import trainers
    from ..process import GroupStopper
    from ..sdscripts import gen_img

    spec, config = job.spec, job.config
    width, height = spec.sample_size
    if job.backend == "tiny":
        width, height = min(width, 128), min(height, 128)
    lines = [gen_img.prompt_line(c.text, seed=c.seed, width=width, height=height, steps=spec.sampling.steps,
                                 cfg=spec.sampling.cfg_scale, file_name=c.file, negative=spec.sampling.negative_prompt,
                                 multiplier=c.strength) for c in one.cells]
    prompts = job.folder / f"pass-{index:02d}.txt"
    atomic.write_text(prompts, "\n".join(lines) + "\n")
    launch = trainers.generator_for(job.backend, job.home, job.gpus)
    precision = spec.precision.mixed_precision if job.gpus else "no"
    argv = launch.argv + gen_img.arguments(
        family=spec.model.family, base=str(config["pretrained_model_name_or_path"]), outdir=job.folder,
        prompts_file=prompts, sampler=spec.sampling.sampler, network=one.network,
        v_parameterization=bool(config.get("v_parameterization")), clip_skip=config.get("clip_skip"),
        vae=config.get("vae"), tokenizer_cache_dir=config.get("tokenizer_cache_dir"),
        batch_size=job.request.batch_size, precision=precision)
    log = job.folder / f"pass-{index:02d}.log"
    env = {**trainers.full_env(launch), "PYTHONUNBUFFERED": "1"}  # its log lines tell when generation starts
    with open(log, "ab") as console:
        process = subprocess.Popen(argv, cwd=job.folder, env=env, stdout=console,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    seen: dict[str, float] = {}
    generating: list[float] = []  # when the generator logged its first prompt: the models are loaded
    try:
        while process.poll() is None:
            _look(job.folder, one.cells, seen)
            if not generating and _first_prompt_logged(log):
                generating.append(time.monotonic())
            time.sleep(POLL)
    except KeyboardInterrupt:
        GroupStopper(process.pid, (10.0, 5.0)).run()
        _finish_cells(job.folder, one.cells, seen, generating[0] if generating else None)
        raise
    _look(job.folder, one.cells, seen)
    _finish_cells(job.folder, one.cells, seen, generating[0] if generating else None)
    missing = [c.file for c in one.cells if not c.done]
    if process.returncode != 0 or missing:
        tail = _tail(log)
        raise Failed(f"the generator for {_pass_label(one)} exited with {process.returncode} after "
                     f"{len(one.cells) - len(missing)} of {len(one.cells)} images; {log} ends: {tail}")


def _look(folder: Path, cells: list[Cell], seen: dict[str, float]) -> None:
    now = time.monotonic()
    wanted = {c.file for c in cells}
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name in wanted and entry.name not in seen:
                seen[entry.name] = now


def _first_prompt_logged(log: Path) -> bool:
    """gen_img.py (and the tiny one) log "prompt 1/N: …" once the models are loaded, as generation starts."""
    try:
        with open(log, "rb") as handle:
            return b"prompt 1/" in handle.read(4 * 1024 * 1024)
    except OSError:
        return False


def _finish_cells(folder: Path, cells: list[Cell], seen: dict[str, float], generating: float | None) -> None:
    """Mark the images that exist and give each its generation time: a group of the same strength took
    (its last image's time - the previous group's last, or for the first group the moment generation
    started) / its size; without that moment the first group is timed from its second batch on."""
    for cell in cells:
        cell.done = (folder / cell.file).is_file()
    groups: list[list[Cell]] = []
    for cell in cells:
        if cell.done and cell.file in seen:
            if groups and groups[-1][0].strength == cell.strength:
                groups[-1].append(cell)
            else:
                groups.append([cell])
    previous_end = None
    for group in groups:
        times = sorted(seen[c.file] for c in group)
        if previous_end is not None:
            seconds = (times[-1] - previous_end) / len(group)
        elif generating is not None and generating < times[0]:
            seconds = (times[-1] - generating) / len(group)
        else:
            first_batch = [t for t in times if t - times[0] <= BATCH_GAP]
            rest = len(times) - len(first_batch)
            seconds = (times[-1] - first_batch[-1]) / rest if rest else None
        for cell in group:
            cell.seconds = round(seconds, 4) if seconds is not None else None
        previous_end = times[-1]


def _tail(log: Path, lines: int = 3) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(line.strip() for line in text[-lines:]) or "(empty)"


# ----------------------------------------------------------------------------------------------
# Recording: job.json in the run folder (the truth), rows in the ledger (for the reports).


def _save(job: Job, state: dict) -> dict[str, Any]:
    """job.json and the ledger, from one summary; returns it."""
    data = _summary(job, state)
    atomic.write_text(job.folder / "job.json", json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    record_in_ledger(job.home, data)
    return data


def _summary(job: Job, state: dict) -> dict[str, Any]:
    cells = [c for p in job.passes for c in p.cells]
    return {"schema": JOB_SCHEMA, "job_id": job.job_id, "run_id": job.run.run_id, "status": state["status"],
            "message": state["message"], "device": _device_label(job.gpus), "backend": job.backend,
            "created_at": job.created_at, "finished_at": time.time() if state["status"] in FINAL else None,
            "request": {"checkpoints": job.request.checkpoints, "strengths": job.request.strengths,
                        "kinds": job.request.kinds, "extra_prompts": job.request.extra_prompts,
                        "seeds": job.request.seeds, "base": job.request.base, "max_images": job.request.max_images,
                        "batch_size": job.request.batch_size},
            "planned": len(cells), "images": sum(1 for c in cells if c.done), "folder": str(job.folder),
            "cells": [c.to_json() for c in cells]}


FINAL = ("succeeded", "failed", "stopped")


def record_in_ledger(home: Path, data: dict[str, Any]) -> None:
    """The job and its finished images into the ledger."""
    from ..ledger import open_ledger

    open_ledger(home).record_sample_job(*ledger_rows(data))


def _device_label(gpus: list[int] | None) -> str:
    return "cpu" if not gpus else "gpu" + ",".join(map(str, gpus))


# ----------------------------------------------------------------------------------------------
# One job per device.


class DeviceLock:
    """An exclusive lock on `<workspace>/locks/<device>.lock`, waited for with a message."""

    def __init__(self, home: Path, gpus: list[int] | None, say: Callable[[str], None]):
        self.home, self.gpus, self.say = home, gpus, say
        self.path = workspace.home(home) / "locks" / f"{_device_label(gpus)}.lock"
        self.handle = None

    def __enter__(self) -> "DeviceLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(self.path, "a+")
        told = False
        while True:
            try:
                fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not told:
                    self.say(f"queued: another sample job is using {_device_label(self.gpus)}; waiting for it")
                    told = True
                time.sleep(0.5)
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"{os.getpid()}\n")
        self.handle.flush()
        return self

    def wait_for_runs(self, own_run: str) -> None:
        """Wait while a run trains on this device (a run's gpu column; CPU runs have none)."""
        from ..ledger import open_ledger

        label = ",".join(map(str, self.gpus)) if self.gpus else None
        told = False
        while True:
            busy = [r.run_id for r in open_ledger(self.home).runs(status=["running"])
                    if r.run_id != own_run and (r.gpu or None) == label]
            if not busy:
                return
            if not told:
                self.say(f"queued: {', '.join(busy)} is training on {_device_label(self.gpus)}; waiting for it")
                told = True
            time.sleep(2.0)

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()

