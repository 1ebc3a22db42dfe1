"""A run's lifecycle: its own folder, a trainer in its own process group, and a ledger row.

prepare() validates and renders before anything is created; launch() starts the trainer with its
console going to `trainer.log` (so it outlives kr if kr dies); the Supervisor (kohya_runner.supervisor)
follows it; finalize() classifies the outcome and writes the archive. reconcile() settles runs whose
supervisor died; stop(), resume_options(), remove() and diff() serve `kr runs`. Process-group control
lives in kohya_runner.process, the folder layout in kohya_runner.runfolder.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import archive, atomic, ledger as ledger_mod, render, runfolder, tokenizers, workspace
from .sdscripts import environment, options, outputs
from .errors import BadInput, Failed, KrError
from .ledger import ACTIVE, Ledger, RunRow, duration_text, open_ledger
from .monitor import Outcome, Progress, classify, read_progress
from .process import STOP_TIMEOUTS, GroupStopper, group_alive, same_process, start_time
from .runfolder import COMMAND_FILE, ENVIRONMENT_FILE, LOG_FILE  # noqa: F401  (importable from here as before)
from .spec import Spec
from .usage import Resources

# Moved to kohya_runner.supervisor; still importable from here (e.g. `from .run import Supervisor`).
_SUPERVISOR_NAMES = ("Supervisor", "spawn_detached_supervisor", "supervise_main", "follow")


def __getattr__(name: str) -> Any:
    if name in _SUPERVISOR_NAMES:  # lazily: supervisor imports this module
        from . import supervisor

        return getattr(supervisor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class RunOptions:
    preset: str | None = None
    backend: str | None = None  # "tiny" | "sd-scripts"; default: tiny when the base is 'tiny'
    gpus: list[int] | None = None
    sweep_id: str | None = None
    image_dir: Path | None = None  # a cache folder of links to the images (kohya_runner.cache)
    resume_state: Path | None = None
    step_offset: int = 0
    resumed_from: str | None = None
    stop_timeouts: tuple[float, float] = STOP_TIMEOUTS
    retry_of: str | None = None  # an out-of-memory retry of this run (kohya_runner.memory)
    retry_change: str | None = None


def backend_for(spec: Spec, options: RunOptions) -> str:
    return options.backend or ("tiny" if spec.model.base == "tiny" else "sd-scripts")


# ----------------------------------------------------------------------------------------------
# Preparing: everything that can fail on bad input happens before a run folder or row exists.


def validate(home: Path, spec: Spec, options: RunOptions) -> None:
    """Render the run's files into a scratch folder and build the trainer's command there: every check of
    the spec, its files (VAE, network weights, resume state) and the trainer's install, with nothing written
    to the workspace. Raises BadInput (SpecError) naming the field or file."""
    backend = backend_for(spec, options)
    with tempfile.TemporaryDirectory(prefix="kr-check-") as scratch:
        paths = render.render_paths(spec, Path(scratch), home, image_dir=options.image_dir, run_id="check")
        paths.resume = str(options.resume_state) if options.resume_state else None
        render.render_texts(spec, paths)
        from . import trainers

        trainers.launch_for(backend, spec.model.family, paths.config_file, Path(scratch), home, options.gpus)


def prepare(home: Path, spec: Spec, options: RunOptions) -> RunRow:
    """The run's ledger row and folder with its rendered files and command. Raises BadInput (validate())
    before either exists; a failure while writing the folder finishes the row as failed."""
    backend = backend_for(spec, options)
    validate(home, spec, options)
    spec = with_absolute_dataset(spec)
    from . import doctor

    doctor.workspace_space_check(home, spec)  # a full or read-only workspace: refused before the row exists
    ledger = open_ledger(home)
    row = ledger.create_run(spec.name, workspace.runs_dir(home), preset=options.preset, spec_hash=spec.hash(),
                            backend=backend, sweep_id=options.sweep_id, step_offset=options.step_offset,
                            resumed_from=options.resumed_from, retry_of=options.retry_of,
                            retry_change=options.retry_change,
                            gpu=",".join(map(str, options.gpus)) if options.gpus is not None else None)
    run_dir = Path(row.run_dir)
    try:
        paths = render.render_paths(spec, run_dir, home, image_dir=options.image_dir, run_id=row.run_id,
                                    log_prefix=f"{row.run_id}_")
        paths.resume = str(options.resume_state) if options.resume_state else None
        _, texts = render.render_texts(spec, paths)
        render.write_files(run_dir, texts)
        launch_spec = launch_for(home, spec, row, options)
        folder = runfolder.of(run_dir)
        atomic.write_text(folder.command, json.dumps(launch_spec.to_json(), indent=2) + "\n")
        atomic.write_text(folder.environment, json.dumps(environment_summary(launch_spec), indent=2) + "\n")
    except BaseException as error:
        ledger.finish(row.run_id, "failed", reason="setup", hint=str(error)[:500])
        raise
    return ledger.get(row.run_id)


def prepare_retry(home: Path, row: RunRow, say: Callable[[str], None] | None = None) -> RunRow | None:
    """After CUDA out of memory: the next attempt's run, prepared (not launched), or None when there is none
    (kohya_runner.memory.next_attempt says why not: off, used up, no rung left)."""
    from .memory import next_attempt

    attempt = next_attempt(home, row)
    if attempt is None:
        return None
    options = pre_launch(home, attempt.spec, attempt.options, skip_check=True)
    retry = prepare(home, attempt.spec, options)
    if say:
        say(f"{row.run_id} ran out of GPU memory; attempt {attempt.number} of {attempt.first} is {retry.run_id} "
            f"with {attempt.rung.name}: {attempt.rung.text}")
    return retry


def with_absolute_dataset(spec: Spec) -> Spec:
    """The spec with its dataset folder as an absolute path: what spec.json records must not depend on the
    folder kr was started from (post-hoc sampling and scoring read the dataset later, from anywhere)."""
    if not spec.dataset.dir:
        return spec
    absolute = str(render.resolve_dataset_dir(spec))
    if absolute == spec.dataset.dir:
        return spec
    return spec.model_copy(update={"dataset": spec.dataset.model_copy(update={"dir": absolute})})


def launch_for(home: Path, spec: Spec, row: RunRow, options: RunOptions):
    from . import trainers

    run_dir = Path(row.run_dir)
    return trainers.launch_for(row.backend or "sd-scripts", spec.model.family, runfolder.of(run_dir).config, run_dir,
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
        "offline_env": {k: v for k, v in launch.env.items() if k in environment.OFFLINE_ENV},
        "sd_scripts_pinned": options.pinned_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def load_spec(run_dir: Path) -> Spec:
    return Spec.model_validate_json(runfolder.of(run_dir).spec.read_text(encoding="utf-8"))


def load_options(run_dir: Path) -> dict[str, Any]:
    """The run's config.toml as sd-scripts reads it: one flat namespace (section names are cosmetic)."""
    from ._toml import loads_strict

    sections = loads_strict(runfolder.of(run_dir).config.read_text(encoding="utf-8"))
    return {k: v for section in sections.values() if isinstance(section, dict) for k, v in section.items()}


def load_launch(run_dir: Path):
    from .trainers import Launch

    data = json.loads(runfolder.of(run_dir).command.read_text(encoding="utf-8"))
    return Launch(data["backend"], data["argv"], Path(data["cwd"]), data["env"])


# ----------------------------------------------------------------------------------------------
# Launching and process identity.


def launch(home: Path, run_id: str, cancelled: Callable[[], bool] | None = None) -> subprocess.Popen:
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
        with open(runfolder.of(run_dir).log, "ab") as log:
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


def _cache_lock(home: Path, ledger: Ledger, row: RunRow, cancelled: Callable[[], bool] | None):
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


def finite(value: float | None) -> float | None:
    """The value, or None for NaN/inf (the ledger keeps numbers a reader can sort by)."""
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
        from . import metrics

        metrics.warm_up_in_background()  # not joined by result(): a short run need not wait for matplotlib

    def _work(self, run_dir: Path, row: RunRow, spec: Spec) -> None:
        self._values["dataset"] = _dataset_manifest(spec)
        self._values["versions"] = trainer_versions(run_dir, row)
        try:
            from tensorboard.compat.proto import event_pb2  # noqa: F401  (warm: the losses are read at the end)
        except Exception:
            pass

    def result(self) -> dict:
        self._thread.join()
        return self._values


def finalize(home: Path, run_id: str, progress: Progress, returncode: int | None, *, stop_requested: bool,
             diverged: bool, spec: Spec, resources: Resources | None = None,
             inputs: dict | None = None, row: RunRow | None = None) -> RunRow:
    """Classify the outcome, write the archive and run.json from the run folder, then the ledger row.

    The run folder is the truth: a ledger that was deleted (it is rebuilt), damaged or unwritable (a
    warning) never loses the outcome of a finished training. `row` is the run's row as the caller knows
    it (the supervisor's), used when the ledger cannot give it. Raises nothing of its own.
    """
    row = _current_row(home, run_id, row)
    run_dir = Path(row.run_dir)
    inputs = inputs or {}
    output_dir = runfolder.of(run_dir).output
    final = output_dir / outputs.final_lora_name(spec.output_name)
    outcome = classify(progress, returncode, final.is_file(), stop_requested=stop_requested, diverged=diverged, spec=spec)
    result = choose_result(outcome, final, output_dir, spec.output_name)
    hint = _message(outcome)
    try:
        manifest = archive.build(
            run_dir,
            run={"run_id": run_id, "name": row.name, "preset": row.preset, "backend": row.backend, "sweep_id": row.sweep_id,
                 "started_at": row.started_at, "finished_at": time.time(), "exit_code": returncode,
                 "steps_done": progress.steps_done, "steps_total": progress.steps_total, "step_offset": row.step_offset,
                 "epochs_total": progress.epochs_total, "resumed_from": row.resumed_from,
                 "created_at": row.created_at, "gpu": row.gpu},  # with run.json gone, a rebuild still has them
            spec=spec, outcome={"status": outcome.status, "reason": outcome.reason, "message": outcome.message,
                                "hint": outcome.hint},
            result=result,
            dataset_manifest=inputs["dataset"] if "dataset" in inputs else _dataset_manifest(spec),
            trainer_versions=inputs.get("versions") or trainer_versions(run_dir, row))
    except OSError as error:  # a full disk: the outcome still goes to the ledger, saying what is missing
        manifest = {"losses": {}}
        hint += f" (its archive could not be written: {error})"
        _warn(f"kr: {run_id}: cannot write its archive in {run_dir / runfolder.ARCHIVE_DIR}: {error}. "
              "Fix: free space on the workspace's disk")
    final_loss = manifest["losses"].get("final_average_loss", finite(progress.avr_loss))
    values = dict(reason=outcome.reason, hint=hint, exit_code=returncode,
                  result_path=str(result) if result else None, steps_done=progress.steps_done or row.steps_done,
                  steps_total=progress.steps_total or row.steps_total, epoch=progress.epoch or row.epoch,
                  epochs_total=progress.epochs_total or row.epochs_total,
                  loss=finite(final_loss) if final_loss is not None else None,
                  min_loss=manifest["losses"].get("min_average_loss", progress.min_loss),
                  it_per_s=progress.it_per_s or row.it_per_s,
                  peak_rss=(resources.peak_rss if resources and resources.peak_rss else row.peak_rss),
                  peak_vram=(resources.peak_vram if resources and resources.peak_vram else row.peak_vram),
                  finished_at=time.time())
    return _record_outcome(home, row, outcome.status, values)


def _current_row(home: Path, run_id: str, known: RunRow | None) -> RunRow:
    """The run's ledger row; if the ledger cannot give it, the caller's copy or the run folder's run.json.
    Raises BadInput only when none of them knows the run."""
    try:
        return open_ledger(home).get(run_id)
    except (KrError, sqlite3.Error, OSError):
        if known is not None:
            return known
        record = ledger_mod.read_record(workspace.runs_dir(home) / run_id)
        if record is None:
            raise
        return RunRow(**{k: record.get(k) for k in ledger_mod.RUN_COLUMNS})


def _record_outcome(home: Path, row: RunRow, status: str, values: dict) -> RunRow:
    """Finish the ledger row (or put it back if the ledger lost it), then run.json, the truth a rebuild
    reads (if kr dies in between, the archive manifest still names the outcome). A ledger that cannot be
    written is a warning: the run's outcome is in its folder. Raises nothing of its own."""
    final = RunRow(**{**row.to_record(), **values, "status": status})
    try:
        ledger = open_ledger(home)
        if not ledger.finish(row.run_id, status, **values):
            if ledger.has(row.run_id):
                return ledger.get(row.run_id)  # settled meanwhile by another kr (`kr runs stop`): theirs stands
            ledger.restore(final.to_record())
        final = ledger.get(row.run_id)
    except (KrError, sqlite3.Error, OSError) as error:
        _warn(f"kr: {row.run_id} ended {status}, but the ledger could not record it: {error}. Its files are in "
              f"{row.run_dir}; once the ledger can be written, the next `kr runs ls` records it (a damaged "
              "ledger: `kr runs rebuild`)")
    try:
        ledger_mod.write_record(row.run_dir, final.to_record())
    except OSError as error:
        _warn(f"kr: {row.run_id}: cannot write {runfolder.of(row.run_dir).record}: {error}")
    return final


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _message(outcome: Outcome) -> str:
    return outcome.message + (f" — {outcome.hint}" if outcome.hint else "")


def choose_result(outcome: Outcome, final: Path, output_dir: Path, output_name: str) -> Path | None:
    if outcome.status == "succeeded":
        return final
    if outcome.status in ("stopped", "crashed", "failed"):
        return archive.newest_intermediate(output_dir, output_name)
    if outcome.status == "diverged":  # the last checkpoint saved before the loss went bad, if any
        return archive.newest_intermediate(output_dir, output_name, finite_only=True)
    return None


def _dataset_manifest(spec: Spec) -> dict | None:
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


def checkout_commit(checkout: Path) -> str | None:
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
    """Finish an active run from what its folder shows (the log, the output files). A row rebuilt from
    an older kr's folder has no pid but may have a log: that is classified like any other."""
    folder = runfolder.of(row.run_dir)
    if not folder.spec.is_file() or not (row.pid or folder.log.is_file()):
        return _record_outcome(home, row, "crashed", {"reason": "lost", "finished_at": time.time(),
                                                      "hint": "kr stopped before the trainer was launched"})
    progress = read_progress(folder.log)
    return finalize(home, row.run_id, progress, None, stop_requested=bool(row.stop_requested),
                    diverged=progress.nan, spec=load_spec(folder.root), row=row)


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
    states = outputs.state_dirs(runfolder.of(row.run_dir).output, spec.output_name)
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
# Removing and comparing finished runs (`kr runs rm`, `kr runs diff`).


def remove(home: Path, refs: list[str], confirm: Callable[[list[RunRow]], bool] | None = None) -> list[RunRow]:
    """Delete finished runs: their folders and ledger rows; returns the rows deleted (none if `confirm`,
    asked with every row first, says no). Raises BadInput for an unknown run or one still running."""
    ledger = open_ledger(home)
    rows = [ledger.find(ref) for ref in refs]
    active = [r.run_id for r in rows if r.active]
    if active:
        raise BadInput(f"{', '.join(active)} still running. Fix: `kr runs stop` first")
    if confirm is not None and not confirm(rows):
        return []
    for row in rows:
        shutil.rmtree(row.run_dir, ignore_errors=True)
        ledger.delete(row.run_id)
    return rows


@dataclass
class RunDiff:
    """How two runs differ: spec keys (a, b values) and results."""
    a: RunRow
    b: RunRow
    settings: list[tuple[str, Any, Any]]
    results: list[tuple[str, Any, Any]]

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a.run_id, "b": self.b.run_id,
                "settings": [{"key": k, "a": x, "b": y} for k, x, y in self.settings],
                "results": [{"key": k, "a": x, "b": y} for k, x, y in self.results]}


def diff(home: Path, ref_a: str, ref_b: str) -> RunDiff:
    """The settings in which two runs differ (their resolved specs, key by flattened key) and their
    results. Raises BadInput for an unknown run."""
    from .spec import diff as spec_diff

    ledger = open_ledger(home)
    left, right = ledger.find(ref_a), ledger.find(ref_b)
    changes = spec_diff(load_spec(Path(left.run_dir)), load_spec(Path(right.run_dir)))
    changed = [(d["key"], d["before"], d["after"]) for d in (c.to_dict() for c in changes)]
    results = [("status", left.status, right.status), ("final avr_loss", left.loss, right.loss),
               ("time", duration_text(left.duration), duration_text(right.duration))]
    return RunDiff(left, right, changed, results)


# ----------------------------------------------------------------------------------------------
# Before launching: every check (no side effect), then the shared cache folder.


def pre_launch(home: Path, spec: Spec, options: RunOptions, *, skip_check: bool = False) -> RunOptions:
    """check_before_launch(), then point the run at its keyed cache folder (kohya_runner.cache): the first
    thing written to the workspace. Raises BadInput before anything is written."""
    check_before_launch(home, spec, options, skip_check=skip_check)
    return with_cache_folder(home, spec, options)


def check_before_launch(home: Path, spec: Spec, options: RunOptions, *, skip_check: bool = False) -> None:
    """Everything that can refuse a run, in order, writing nothing: the rendered files and the trainer's
    command (validate), the dataset (unless skip_check: sd-scripts finds its errors hours in, or never),
    the base model. Raises BadInput naming the field or file and the fix."""
    validate(home, spec, options)
    if not skip_check and spec.dataset.dir:
        refuse_dataset_errors(home, spec, num_processes=max(1, len(options.gpus or [])))
    check_base(home, spec)


def with_cache_folder(home: Path, spec: Spec, options: RunOptions) -> RunOptions:
    """The options with the run's keyed cache folder (created if new) as its image folder."""
    if options.image_dir is None and spec.dataset.dir:
        # The trainer reads the images through kr's keyed cache folder, so its cache files never land
        # in (or go stale in) the user's dataset folder (contract §7.6).
        from dataclasses import replace

        from . import cache

        options = replace(options, image_dir=cache.prepare(home, spec).path)
    return options


def check_base(home: Path, spec: Spec) -> None:
    """Refuse a base model the trainer would fail on minutes in (naming itself, not the file) or that
    trains another architecture: missing, empty, not a readable safetensors header or Diffusers folder,
    no tensors, or not the preset's family. Reads only the header. kr's built-in `tiny` base is
    render's to check. Raises BadInput naming the file and the fix."""
    from . import bases

    if spec.model.base in (None, "tiny"):
        return
    render.resolve_base(spec, home)  # missing, a Hub id, a folder without model_index.json: its messages
    path = Path(spec.model.base).expanduser()  # as the user gave it, in every message
    if path.is_file() and path.stat().st_size == 0:
        raise BadInput(f"model.base {path} is empty (0 bytes), so it is not a model: an interrupted download or "
                       "copy? Fix: download or copy the checkpoint again, or pass --base with another file")
    try:
        info = bases.detect_architecture(path)
    except BadInput as error:
        raise BadInput(f"model.base: {error.message}") from None
    try:
        bases.check_base_matches(info, spec.model.family)
    except BadInput as error:
        # kr's own family names first: the ones presets and model.family use
        families = "" if info.family == "unknown" else f" is {info.family}, the preset trains {spec.model.family}"
        raise BadInput(f"model.base{families}: {error.message}") from None


DATASET_CHECK_MEMO = "dataset-check.json"  # in the workspace: the key of the last dataset check that passed


def refuse_dataset_errors(home: Path, spec: Spec, num_processes: int = 1) -> None:
    """Raises BadInput listing the dataset's errors. A check that passed is not redone while its inputs
    (the folder's listing with sizes and times, the settings, the tokenizers) are unchanged."""
    key = dataset_check_key(home, spec, num_processes)
    memo = Path(home) / DATASET_CHECK_MEMO
    try:
        if key is not None and json.loads(memo.read_text(encoding="utf-8")).get("passed") == key:
            return
    except (OSError, ValueError, AttributeError):
        pass
    report = check_dataset(home, spec, num_processes=num_processes)
    if report.ok and key is not None and Path(home).is_dir():  # creates no workspace of its own
        try:
            atomic.write_text(memo, json.dumps({"passed": key}) + "\n")
        except OSError:
            pass  # a read-only or full workspace: the next run checks again
    if not report.ok:
        lines = "\n".join(f"  - {f.file or spec.dataset.dir}: {f.message} Fix: {f.fix}" for f in report.errors[:20])
        more = f"\n  … and {len(report.errors) - 20} more" if len(report.errors) > 20 else ""
        raise BadInput(f"the dataset {spec.dataset.dir} has {len(report.errors)} error(s); nothing was launched:\n"
                       f"{lines}{more}\n`kr dataset check {spec.dataset.dir}` shows everything; "
                       "--skip-check launches anyway")


def dataset_check_key(home: Path, spec: Spec, num_processes: int = 1) -> str | None:
    """A digest of everything the dataset check reads: the folder's entries (name, size, mtime; it reads
    one level), the dataset settings and step plan, the tokenizer folder, kr's version. None when the
    folder cannot be listed (the check then runs and reports it)."""
    import hashlib

    from . import __version__, dataset

    folder = Path(spec.dataset.dir).expanduser()
    try:
        entries = sorted((e.name, e.is_dir(), e.stat().st_size, e.stat().st_mtime_ns) for e in os.scandir(folder))
        settings = dataset.settings_from_spec(spec)
        plan = dataset.plan_from_spec(spec, num_processes)
    except Exception:
        return None
    tokenizer = tokenizers.existing_folder_for(home, spec)
    tokenizer_stamp = tokenizer.stat().st_mtime_ns if tokenizer is not None and tokenizer.exists() else None
    document = repr((__version__, str(folder.resolve()), folder.stat().st_mtime_ns, entries, settings, plan,
                     str(tokenizer), tokenizer_stamp))
    return hashlib.sha256(document.encode("utf-8", "replace")).hexdigest()


def check_dataset(home: Path, spec: Spec, num_processes: int = 1):
    from . import dataset

    render.resolve_dataset_dir(spec)  # a missing folder is bad input, reported as such
    return dataset.check(dataset.settings_from_spec(spec), dataset.plan_from_spec(spec, num_processes),
                         tokenizer_dir=tokenizers.existing_folder_for(home, spec), workers=1)
