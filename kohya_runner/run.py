"""A run: its own folder, a supervised trainer process in its own process group, and a ledger row.

prepare() validates and renders before anything is created; launch() starts the trainer with its
console going to `trainer.log` (so it outlives kr if kr dies); Supervisor follows the log, keeps the
ledger current, kills a NaN run at once, stops on request (SIGINT → SIGTERM → SIGKILL to the whole
group until it is empty), and finalize() classifies the outcome and writes the archive. reconcile()
settles runs whose supervisor died.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from . import archive, atomic, contract, render, workspace
from .errors import BadInput, Failed
from .ledger import ACTIVE, Ledger, RunRow, open_ledger
from .monitor import LossGuard, Outcome, Progress, SegmentSplitter, classify, parse_segment, tree_rss
from .spec import Spec

LOG_FILE = "trainer.log"
COMMAND_FILE = "command.json"
ENVIRONMENT_FILE = "environment.json"
STOP_TIMEOUTS = (20.0, 10.0)  # seconds after SIGINT before SIGTERM, after SIGTERM before SIGKILL
LEDGER_EVERY = 2.0


@dataclass
class RunOptions:
    preset: Optional[str] = None
    backend: Optional[str] = None  # "tiny" | "sd-scripts"; default: tiny when the base is 'tiny'
    gpus: Optional[list[int]] = None
    sweep_id: Optional[str] = None
    image_dir: Optional[Path] = None  # a cache folder of links to the images (kohya_runner.cache)
    resume_state: Optional[Path] = None
    step_offset: int = 0
    resumed_from: Optional[str] = None
    stop_timeouts: tuple[float, float] = STOP_TIMEOUTS


def backend_for(spec: Spec, options: RunOptions) -> str:
    return options.backend or ("tiny" if spec.model.base == "tiny" else "sd-scripts")


# ----------------------------------------------------------------------------------------------
# Preparing: everything that can fail on bad input happens before a run folder or row exists.


def prepare(home: Path, spec: Spec, options: RunOptions) -> RunRow:
    backend = backend_for(spec, options)
    with tempfile.TemporaryDirectory(prefix="kr-check-") as scratch:
        paths = render.render_paths(spec, Path(scratch), home, image_dir=options.image_dir, run_id="check")
        paths.resume = str(options.resume_state) if options.resume_state else None
        render.render_texts(spec, paths)
        from . import trainers

        trainers.launch_for(backend, spec.model.family, paths.config_file, Path(scratch), home, options.gpus)
    ledger = open_ledger(home)
    row = ledger.create_run(spec.name, workspace.runs_dir(home), preset=options.preset, spec_hash=spec.hash(),
                            backend=backend, sweep_id=options.sweep_id, step_offset=options.step_offset,
                            resumed_from=options.resumed_from,
                            gpu=",".join(map(str, options.gpus)) if options.gpus is not None else None)
    run_dir = Path(row.run_dir)
    try:
        paths = render.render_paths(spec, run_dir, home, image_dir=options.image_dir, run_id=row.run_id,
                                    log_prefix=f"{row.run_id}_")
        paths.resume = str(options.resume_state) if options.resume_state else None
        _, texts = render.render_texts(spec, paths)
        render.write_files(run_dir, texts)
        launch_spec = launch_for(home, spec, row, options)
        atomic.write_text(run_dir / COMMAND_FILE, json.dumps(launch_spec.to_json(), indent=2) + "\n")
        atomic.write_text(run_dir / ENVIRONMENT_FILE, json.dumps(environment_summary(launch_spec), indent=2) + "\n")
    except BaseException as error:
        ledger.finish(row.run_id, "failed", reason="setup", hint=str(error)[:500])
        raise
    return ledger.get(row.run_id)


def launch_for(home: Path, spec: Spec, row: RunRow, options: RunOptions):
    from . import trainers

    run_dir = Path(row.run_dir)
    return trainers.launch_for(row.backend or "sd-scripts", spec.model.family, run_dir / render.CONFIG_FILE, run_dir,
                               home, options.gpus, spec.precision.mixed_precision)


def environment_summary(launch) -> dict:
    import platform

    from . import __version__

    return {
        "kr_version": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "backend": launch.backend,
        "cuda_visible_devices": launch.env.get("CUDA_VISIBLE_DEVICES"),
        "offline_env": {k: v for k, v in launch.env.items() if k in contract.OFFLINE_ENV},
        "sd_scripts_pinned": contract.pinned_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def load_spec(run_dir: Path) -> Spec:
    return Spec.model_validate_json((run_dir / render.SPEC_FILE).read_text(encoding="utf-8"))


def load_launch(run_dir: Path):
    from .trainers import Launch

    data = json.loads((run_dir / COMMAND_FILE).read_text(encoding="utf-8"))
    return Launch(data["backend"], data["argv"], Path(data["cwd"]), data["env"])


# ----------------------------------------------------------------------------------------------
# Launching and process identity.


def launch(home: Path, run_id: str, cancelled: Optional[Callable[[], bool]] = None) -> subprocess.Popen:
    """Start the trainer in a new session (its own process group), console → trainer.log.

    A run reading a shared cache folder first takes its lock (kohya_runner.cache), waiting while
    another run writes that cache; the Supervisor drops it when the caching phase is over.
    """
    from .trainers import full_env

    ledger = open_ledger(home)
    row = ledger.get(run_id)
    run_dir = Path(row.run_dir)
    spec_launch = load_launch(run_dir)
    cache_lock = _cache_lock(home, ledger, row, cancelled)
    try:
        with open(run_dir / LOG_FILE, "ab") as log:
            process = subprocess.Popen(spec_launch.argv, cwd=spec_launch.cwd, env=full_env(spec_launch),
                                       stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
    except BaseException:
        if cache_lock is not None:
            cache_lock.release()
        raise
    process.kr_cache_lock = cache_lock  # type: ignore[attr-defined]  # handed to the Supervisor
    me = os.getpid()
    ledger.update(run_id, status="running", pid=process.pid, pid_start=start_time(process.pid), pgid=process.pid,
                  started_at=time.time(), supervisor_pid=me, supervisor_start=start_time(me))
    return process


def _cache_lock(home: Path, ledger: Ledger, row: RunRow, cancelled: Optional[Callable[[], bool]]):
    from . import cache

    def stop_wanted() -> bool:
        return bool((cancelled is not None and cancelled()) or ledger.get(row.run_id).stop_requested)

    def waiting() -> None:
        print(f"{row.run_id}: waiting for another run to finish writing the shared cache…", file=sys.stderr, flush=True)

    try:
        if stop_wanted():  # stopped (`kr runs stop`, a sweep's Ctrl-C) before it even started
            raise cache.Cancelled()
        lock = cache.acquire_for_run(home, Path(row.run_dir), load_spec(Path(row.run_dir)), stop_wanted, waiting)
    except (cache.Cancelled, KeyboardInterrupt):
        ledger.finish(row.run_id, "stopped", reason="stopped", hint="stopped before the trainer started "
                      "(while waiting for the shared cache folder)")
        raise Failed(f"{row.run_id} was stopped before its trainer started") from None
    return lock


def start_time(pid: int) -> Optional[float]:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def same_process(pid: Optional[int], started: Optional[float]) -> bool:
    """True if `pid` is alive and is the process we recorded (pids get reused)."""
    import psutil

    if not pid:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(process.create_time() - started) < 1.0
    except psutil.Error:
        return False


def group_alive(pgid: Optional[int]) -> bool:
    """Any live (non-zombie) process left in the group?"""
    if not pgid:
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    from .monitor import process_group_members

    import psutil

    for member in process_group_members(pgid):
        try:
            if member.status() != psutil.STATUS_ZOMBIE:
                return True
        except psutil.Error:
            continue
    return False


def signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


class GroupStopper:
    """SIGINT, then SIGTERM, then SIGKILL to the whole group, each after a timeout, until it is empty.
    Signalling only a launcher leaves the trainer running (contract §7.1, §11), so kr signals the group."""

    def __init__(self, pgid: int, timeouts: tuple[float, float] = STOP_TIMEOUTS, first: int = signal.SIGINT):
        self.pgid = pgid
        ladder = [signal.SIGINT, signal.SIGTERM, signal.SIGKILL]
        self.ladder = ladder[ladder.index(first):]
        self.waits = list(timeouts)[-(len(self.ladder) - 1):] if len(self.ladder) > 1 else []
        self.stage = -1
        self.deadline = 0.0

    def step(self) -> bool:
        """Advance if due; True once the group is empty."""
        if not group_alive(self.pgid):
            return True
        now = time.monotonic()
        if self.stage < 0 or (now >= self.deadline and self.stage < len(self.ladder) - 1):
            self.stage += 1
            signal_group(self.pgid, self.ladder[self.stage])
            wait = self.waits[self.stage] if self.stage < len(self.waits) else 5.0
            self.deadline = now + wait
        return False

    def run(self, poll: float = 0.1) -> None:
        while not self.step():
            time.sleep(poll)


# ----------------------------------------------------------------------------------------------
# Supervising.


@dataclass
class Resources:
    rss: int = 0
    peak_rss: int = 0
    gpu_used: Optional[int] = None
    peak_vram: Optional[int] = None  # memory in use on the run's (first) GPU, at most; None on the CPU


class Supervisor:
    def __init__(self, home: Path, run_id: str, process: Optional[subprocess.Popen] = None,
                 on_update: Optional[Callable[[Progress, Resources], None]] = None,
                 timeouts: tuple[float, float] = STOP_TIMEOUTS):
        self.home = home
        self.ledger = open_ledger(home)
        self.row = self.ledger.get(run_id)
        self.run_dir = Path(self.row.run_dir)
        self.spec = load_spec(self.run_dir)
        self.process = process
        self.on_update = on_update
        self.timeouts = timeouts
        self.progress = Progress()
        self.resources = Resources()
        self.stopper: Optional[GroupStopper] = None
        self.stop_requested = False
        self.diverged = False
        self._gpu = None
        # The shared cache folder's lock taken by launch(); dropped once the caching phase is over.
        self.cache_lock = getattr(process, "kr_cache_lock", None)
        self.loss_guard = LossGuard(self.spec.guard.divergence_factor, self.spec.guard.warmup_steps)
        self.archive_inputs = ArchiveInputs(self.run_dir, self.row, self.spec)

    def request_stop(self) -> None:
        """Ctrl-C or `kr runs stop`: a second request skips straight to the harder signals."""
        if self.stop_requested and self.stopper is not None:
            self.stopper.deadline = 0.0
            return
        self.stop_requested = True
        self.ledger.update(self.row.run_id, stop_requested=1)
        self.stopper = GroupStopper(self.row.pgid or self.process.pid, self.timeouts)

    def _kill_diverged(self) -> None:
        if not self.diverged:
            self.diverged = True
            # Nothing worth saving in a NaN or runaway run: end it at once (SIGTERM, SIGKILL 3 s later).
            self.stopper = GroupStopper(self.row.pgid or self.process.pid, (0.0, 3.0), first=signal.SIGTERM)

    def run(self) -> RunRow:
        log_path = self.run_dir / LOG_FILE
        splitter = SegmentSplitter()
        returncode: Optional[int] = None
        last_ledger = last_check = 0.0
        with open(log_path, "rb") as log:
            while True:
                self._consume(splitter, log.read())
                self._release_cache_when_cached()
                returncode = self._poll()
                now = time.monotonic()
                if now - last_check >= 1.0:
                    last_check = now
                    self._check_stop_request()
                    self._sample_resources()
                if self.stopper is not None:
                    self.stopper.step()
                if self.on_update:
                    self.on_update(self.progress, self.resources)
                if now - last_ledger >= LEDGER_EVERY:
                    last_ledger = now
                    self._record_progress()
                if returncode is not None or (self.process is None and not same_process(self.row.pid, self.row.pid_start)):
                    break
                time.sleep(0.1)
            self._consume(splitter, log.read())
        for segment in splitter.flush():
            self._on_segment(segment)
        self._empty_group()
        from . import cache

        cache.after_run(self.cache_lock, self.progress.phase)  # ended mid-caching: delete what it half wrote
        # `kr runs stop` may have signalled the group before this loop saw its request in the ledger.
        stopped = self.stop_requested or bool(self.ledger.get(self.row.run_id).stop_requested)
        return finalize(self.home, self.row.run_id, self.progress, returncode, stop_requested=stopped,
                        diverged=self.diverged, spec=self.spec, resources=self.resources,
                        inputs=self.archive_inputs.result())

    def _consume(self, splitter: SegmentSplitter, data: bytes) -> None:
        for segment in splitter.feed(data) if data else ():
            self._on_segment(segment)

    def _on_segment(self, segment: str) -> None:
        event = parse_segment(self.progress, segment)
        if event == "nan" or self.progress.nan:
            self._kill_diverged()
        elif event == "step" and not self.diverged:
            reason = self.loss_guard.check(self.progress)
            if reason:
                self.progress.divergence = reason
                self._kill_diverged()

    def _release_cache_when_cached(self) -> None:
        if self.cache_lock is not None and self.cache_lock.held and self.progress.phase not in ("starting", "caching"):
            self.cache_lock.release()

    def _poll(self) -> Optional[int]:
        return self.process.poll() if self.process is not None else None

    def _check_stop_request(self) -> None:
        if not self.stop_requested and self.ledger.get(self.row.run_id).stop_requested:
            self.request_stop()

    def _sample_resources(self) -> None:
        if self._gpu is None:
            from .monitor import GpuSampler

            self._gpu = GpuSampler()
        pid = self.process.pid if self.process is not None else self.row.pid
        self.resources.rss = tree_rss(pid) if pid else 0
        self.resources.peak_rss = max(self.resources.peak_rss, self.resources.rss)
        self.resources.gpu_used = self._gpu.used_bytes()
        if self.row.gpu:  # a GPU run: NVML's memory in use on its first GPU
            used = self._gpu.used_bytes(int(self.row.gpu.split(",")[0]))
            if used is not None:
                self.resources.peak_vram = max(self.resources.peak_vram or 0, used)

    def _record_progress(self) -> None:
        p = self.progress
        self.ledger.update(self.row.run_id, steps_done=p.steps_done, steps_total=p.steps_total, epoch=p.epoch,
                           epochs_total=p.epochs_total, loss=_finite(p.avr_loss), min_loss=p.min_loss,
                           it_per_s=p.it_per_s, peak_rss=self.resources.peak_rss or None,
                           peak_vram=self.resources.peak_vram)

    def _empty_group(self) -> None:
        """The trainer may be gone while data loader workers linger; nothing of the run may stay behind."""
        pgid = self.row.pgid or (self.process.pid if self.process else None)
        if pgid and group_alive(pgid):
            GroupStopper(pgid, (2.0, 3.0), first=signal.SIGTERM).run()


def _finite(value: Optional[float]) -> Optional[float]:
    import math

    return value if value is not None and math.isfinite(value) else None


# ----------------------------------------------------------------------------------------------
# Finishing: outcome, result, archive, ledger.


class ArchiveInputs:
    """What the archive needs that does not depend on the outcome (the dataset manifest, the trainer's
    package versions) plus the plotting imports, done in a thread while the trainer runs, so that kr's
    work after the trainer exits stays short."""

    def __init__(self, run_dir: Path, row: RunRow, spec: Spec):
        self._values: dict = {}
        self._thread = threading.Thread(target=self._work, args=(run_dir, row, spec), daemon=True)
        self._thread.start()

    def _work(self, run_dir: Path, row: RunRow, spec: Spec) -> None:
        self._values["dataset"] = _dataset_manifest(spec)
        self._values["versions"] = trainer_versions(run_dir, row)
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot  # noqa: F401  (warm: the loss plot needs it at the end)
            from tensorboard.compat.proto import event_pb2  # noqa: F401
        except Exception:
            pass

    def result(self) -> dict:
        self._thread.join()
        return self._values


def finalize(home: Path, run_id: str, progress: Progress, returncode: Optional[int], *, stop_requested: bool,
             diverged: bool, spec: Spec, resources: Optional[Resources] = None,
             inputs: Optional[dict] = None) -> RunRow:
    ledger = open_ledger(home)
    row = ledger.get(run_id)
    run_dir = Path(row.run_dir)
    inputs = inputs or {}
    output_dir = run_dir / "output"
    final = output_dir / contract.final_lora_name(spec.output_name)
    outcome = classify(progress, returncode, final.is_file(), stop_requested=stop_requested, diverged=diverged, spec=spec)
    result = choose_result(outcome, final, output_dir, spec.output_name)
    manifest = archive.build(
        run_dir,
        run={"run_id": run_id, "name": row.name, "preset": row.preset, "backend": row.backend, "sweep_id": row.sweep_id,
             "started_at": row.started_at, "finished_at": time.time(), "exit_code": returncode,
             "steps_done": progress.steps_done, "steps_total": progress.steps_total, "step_offset": row.step_offset,
             "epochs_total": progress.epochs_total, "resumed_from": row.resumed_from},
        spec=spec, outcome={"status": outcome.status, "reason": outcome.reason, "message": outcome.message,
                            "hint": outcome.hint},
        result=result,
        dataset_manifest=inputs["dataset"] if "dataset" in inputs else _dataset_manifest(spec),
        trainer_versions=inputs.get("versions") or trainer_versions(run_dir, row))
    final_loss = manifest["losses"].get("final_average_loss", _finite(progress.avr_loss))
    ledger.finish(run_id, outcome.status, reason=outcome.reason, hint=_message(outcome), exit_code=returncode,
                  result_path=str(result) if result else None, steps_done=progress.steps_done or row.steps_done,
                  steps_total=progress.steps_total or row.steps_total, epoch=progress.epoch or row.epoch,
                  epochs_total=progress.epochs_total or row.epochs_total,
                  loss=_finite(final_loss) if final_loss is not None else None,
                  min_loss=manifest["losses"].get("min_average_loss", progress.min_loss),
                  it_per_s=progress.it_per_s or row.it_per_s,
                  peak_rss=(resources.peak_rss if resources and resources.peak_rss else row.peak_rss),
                  peak_vram=(resources.peak_vram if resources and resources.peak_vram else row.peak_vram))
    return ledger.get(run_id)


def _message(outcome: Outcome) -> str:
    return outcome.message + (f" — {outcome.hint}" if outcome.hint else "")


def choose_result(outcome: Outcome, final: Path, output_dir: Path, output_name: str) -> Optional[Path]:
    if outcome.status == "succeeded":
        return final
    if outcome.status in ("stopped", "crashed", "failed"):
        return archive.newest_intermediate(output_dir, output_name)
    if outcome.status == "diverged":  # the last checkpoint saved before the loss went bad, if any
        return archive.newest_intermediate(output_dir, output_name, finite_only=True)
    return None


def _dataset_manifest(spec: Spec) -> Optional[dict]:
    if not spec.dataset.dir:
        return None
    try:
        from . import dataset

        return dataset.manifest(Path(spec.dataset.dir), dataset.settings_from_spec(spec))
    except Exception as error:  # the archive must still be written if the dataset moved meanwhile
        return {"error": f"dataset manifest unavailable: {error}"}


_VERSION_PROBE = """
import json, importlib.metadata as m
names = ["torch", "accelerate", "transformers", "diffusers", "safetensors", "peft", "bitsandbytes", "xformers",
         "prodigyopt", "lion-pytorch", "schedulefree", "dadaptation", "huggingface-hub", "numpy"]
out = {}
for n in names:
    try:
        out[n] = m.version(n)
    except m.PackageNotFoundError:
        pass
print(json.dumps(out))
"""


def trainer_versions(run_dir: Path, row: RunRow) -> dict:
    """Package versions of the trainer's environment and, for sd-scripts, the checkout's commit."""
    launch_spec = load_launch(run_dir)
    versions: dict = {"backend": launch_spec.backend}
    try:
        probe = subprocess.run([launch_spec.argv[0], "-c", _VERSION_PROBE], capture_output=True, text=True, timeout=60)
        versions["packages"] = json.loads(probe.stdout) if probe.returncode == 0 else {}
    except (OSError, subprocess.TimeoutExpired, json.JSONDecodeError):
        versions["packages"] = {}
    if launch_spec.backend == "sd-scripts":
        script = next((Path(a) for a in launch_spec.argv if a.endswith("_train_network.py") or a.endswith("train_network.py")), None)
        versions["sd_scripts_dir"] = str(script.parent) if script else None
        versions["sd_scripts_commit"] = checkout_commit(script.parent) if script else None
    else:
        from . import __version__

        versions["tiny_trainer"] = f"kohya_runner {__version__}"
    return versions


def checkout_commit(checkout: Path) -> Optional[str]:
    record = checkout.parent / "kr-vendor.json"
    for candidate in (checkout / "kr-vendor.json", record):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text()).get("commit")
            except (OSError, json.JSONDecodeError):
                pass
    head = checkout / ".git" / "HEAD"
    if head.is_file():
        ref = head.read_text().strip()
        if ref.startswith("ref: "):
            target = checkout / ".git" / ref[5:]
            return target.read_text().strip() if target.is_file() else None
        return ref
    return None


# ----------------------------------------------------------------------------------------------
# Reconciling runs whose supervisor is gone (kr was killed, the machine slept, …).


def reconcile(home: Path) -> list[RunRow]:
    """Settle active runs with a dead supervisor and a dead trainer: finished, failed or crashed."""
    ledger_path = home / "ledger.sqlite"
    if not ledger_path.exists():
        return []
    ledger = open_ledger(home)
    settled = []
    for row in ledger.runs(status=list(ACTIVE)):
        if same_process(row.supervisor_pid, row.supervisor_start):
            continue
        if row.pid and (same_process(row.pid, row.pid_start) or group_alive(row.pgid)):
            continue  # unsupervised but still training; `kr runs stop` or a later command settles it
        settled.append(settle_from_files(home, row))
    return settled


def settle_from_files(home: Path, row: RunRow) -> RunRow:
    run_dir = Path(row.run_dir)
    if not row.pid or not (run_dir / render.SPEC_FILE).is_file():
        open_ledger(home).finish(row.run_id, "crashed", reason="lost", hint="kr stopped before the trainer was launched")
        return open_ledger(home).get(row.run_id)
    progress = Progress()
    log_path = run_dir / LOG_FILE
    if log_path.is_file():
        from .monitor import segments_of

        for segment in segments_of(log_path.read_bytes()):
            parse_segment(progress, segment)
    return finalize(home, row.run_id, progress, None, stop_requested=bool(row.stop_requested),
                    diverged=progress.nan, spec=load_spec(run_dir))


# ----------------------------------------------------------------------------------------------
# Stopping from another process (`kr runs stop`).


def stop(home: Path, ref: str, timeouts: tuple[float, float] = STOP_TIMEOUTS, wait: float = 60.0) -> RunRow:
    ledger = open_ledger(home)
    row = ledger.find(ref)
    if not row.active:
        return row
    ledger.update(row.run_id, stop_requested=1)
    # The supervisor (if alive) sees the request and escalates too; signalling the group from here as
    # well applies this command's timeouts and works when the supervisor is gone.
    if row.pgid:
        GroupStopper(row.pgid, timeouts).run()
    deadline = time.monotonic() + wait
    while same_process(row.supervisor_pid, row.supervisor_start) and time.monotonic() < deadline:
        if not ledger.get(row.run_id).active:
            break
        time.sleep(0.2)
    current = ledger.get(row.run_id)
    return settle_from_files(home, current) if current.active else current


# ----------------------------------------------------------------------------------------------
# Resume: a new run that continues from the newest state folder of an earlier one.


def newest_state(row: RunRow, spec: Spec) -> Path:
    states = contract.state_dirs(Path(row.run_dir) / "output", spec.output_name)
    if not states:
        raise BadInput(f"run {row.run_id} saved no state folder, so it cannot be resumed. Fix: runs need "
                       "saving.state=true (state folders with every checkpoint) or saving.state_on_train_end=true; "
                       "to continue from its LoRA with a fresh optimizer, use network.weights=<lora file>")
    return max(states, key=lambda p: (json.loads((p / "train_state.json").read_text()).get("current_step", 0),
                                      p.stat().st_mtime))


def resume_options(home: Path, ref: str) -> tuple[Spec, RunOptions, RunRow]:
    ledger = open_ledger(home)
    row = ledger.find(ref)
    if row.active:
        raise BadInput(f"run {row.run_id} is still {row.status}. Fix: wait for it or `kr runs stop {row.run_id}`")
    spec = load_spec(Path(row.run_dir))
    state = newest_state(row, spec)
    train_state = json.loads((state / "train_state.json").read_text())
    # sd-scripts restarts at the start of the epoch holding the saved step, counting from 0 (§7.2).
    steps_per_epoch = (row.steps_total // row.epochs_total) if row.steps_total and row.epochs_total else 0
    saved_step = int(train_state.get("current_step", 0))
    epoch_start = saved_step // steps_per_epoch if steps_per_epoch else 0
    offset = row.step_offset + epoch_start * steps_per_epoch
    options = RunOptions(preset=row.preset, backend=row.backend, resume_state=state, step_offset=offset,
                         resumed_from=row.run_id, sweep_id=row.sweep_id,
                         gpus=[int(g) for g in row.gpu.split(",")] if row.gpu else None)
    return spec, options, row


# ----------------------------------------------------------------------------------------------
# Detached supervision: `python -m kohya_runner.run supervise RUN_ID --home H`.


def spawn_detached_supervisor(home: Path, run_id: str) -> int:
    run_dir = Path(open_ledger(home).get(run_id).run_dir)
    with open(run_dir / "supervisor.log", "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "kohya_runner.run", "supervise", run_id, "--home", str(home)],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                                   cwd=str(run_dir))
    # The supervisor records itself when it launches the trainer; until then the row says queued.
    open_ledger(home).update(run_id, supervisor_pid=process.pid, supervisor_start=start_time(process.pid))
    return process.pid


def supervise_main(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m kohya_runner.run")
    parser.add_argument("command", choices=["supervise"])
    parser.add_argument("run_id")
    parser.add_argument("--home", required=True)
    args = parser.parse_args(argv)
    home = Path(args.home)
    state: dict = {"stop": False, "supervisor": None}

    def on_signal(*_) -> None:
        if state["supervisor"] is not None:
            state["supervisor"].request_stop()
        else:
            state["stop"] = True  # still waiting for the cache lock: do not start at all

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        process = launch(home, args.run_id, cancelled=lambda: state["stop"])
    except Failed as error:
        print(error.message, file=sys.stderr)
        return 1
    supervisor = state["supervisor"] = Supervisor(home, args.run_id, process)
    if state["stop"]:
        supervisor.request_stop()
    row = supervisor.run()
    return 0 if row.status == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(supervise_main(sys.argv[1:]))


# ----------------------------------------------------------------------------------------------
# Before launching: the dataset check and the shared cache folder.


def pre_launch(home: Path, spec: Spec, options: RunOptions, *, skip_check: bool = False) -> RunOptions:
    """Refuse a dataset with errors (sd-scripts finds them hours in, or never), unless told to skip; then
    point the run at its keyed cache folder (kohya_runner.cache)."""
    if not skip_check and spec.dataset.dir:
        refuse_dataset_errors(home, spec, num_processes=max(1, len(options.gpus or [])))
    if options.image_dir is None and spec.dataset.dir:
        # The trainer reads the images through kr's keyed cache folder, so its cache files never land
        # in (or go stale in) the user's dataset folder (contract §7.6).
        from dataclasses import replace

        from . import cache

        options = replace(options, image_dir=cache.prepare(home, spec).path)
    return options


def refuse_dataset_errors(home: Path, spec: Spec, num_processes: int = 1) -> None:
    report = check_dataset(home, spec, num_processes=num_processes)
    if not report.ok:
        lines = "\n".join(f"  - {f.file or spec.dataset.dir}: {f.message} Fix: {f.fix}" for f in report.errors[:20])
        more = f"\n  … and {len(report.errors) - 20} more" if len(report.errors) > 20 else ""
        raise BadInput(f"the dataset {spec.dataset.dir} has {len(report.errors)} error(s); nothing was launched:\n"
                       f"{lines}{more}\n`kr dataset check {spec.dataset.dir}` shows everything; "
                       "--skip-check launches anyway")


def check_dataset(home: Path, spec: Spec, num_processes: int = 1):
    from . import dataset

    render.resolve_dataset_dir(spec)  # a missing folder is bad input, reported as such
    tokenizers = Path(spec.model.tokenizer_cache_dir) if spec.model.tokenizer_cache_dir else workspace.tokenizers_dir(home)
    return dataset.check(dataset.settings_from_spec(spec), dataset.plan_from_spec(spec, num_processes),
                         tokenizer_dir=tokenizers if tokenizers.is_dir() else None, workers=1)


# ----------------------------------------------------------------------------------------------
# Following a run from another terminal (`kr runs tail`).


def follow(home: Path, run_id: str, on_update: Optional[Callable[[Progress, Resources], None]] = None,
           on_text: Optional[Callable[[str], None]] = None, poll: float = 0.25) -> RunRow:
    """Replay the run's log, then follow it until the ledger says it ended."""
    ledger = open_ledger(home)
    row = ledger.get(run_id)
    log_path = Path(row.run_dir) / LOG_FILE
    progress, resources, splitter = Progress(), Resources(), SegmentSplitter()
    offset, last_check = 0, 0.0
    while True:
        if log_path.exists():
            with open(log_path, "rb") as log:
                log.seek(offset)
                data = log.read()
            offset += len(data)
            for segment in splitter.feed(data):
                parse_segment(progress, segment)
                if on_text:
                    on_text(segment)
        now = time.monotonic()
        if now - last_check >= 1.0:
            last_check = now
            row = ledger.get(run_id)
            if not row.active:
                break
            trainer_alive = bool(row.pid) and (same_process(row.pid, row.pid_start) or group_alive(row.pgid))
            if not trainer_alive and not same_process(row.supervisor_pid, row.supervisor_start):
                row = settle_from_files(home, row)
                break
            resources.rss = tree_rss(row.pid) if trainer_alive else 0
            resources.peak_rss = max(resources.peak_rss, resources.rss)
        if on_update:
            on_update(progress, resources)
        time.sleep(poll)
    return ledger.get(run_id)
