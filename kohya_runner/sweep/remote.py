"""Sweeps across machines on Ray (`kr sweep … --ray ADDRESS`): each member is a Ray task that runs kr's own
run on a worker, against that worker's verified sd-scripts install (or kr's tiny trainer).

- Placement: a task needs one GPU (`--ray-resource GPU`, the default) or one unit of a custom resource the
  nodes were started with (`ray start --resources '{"kr_slot": 1}'`); Ray queues the rest.
- Dataset: by content hash. A worker uses the dataset folder at the same path when it holds the same
  content (a shared filesystem); otherwise the head sends it (a tar in Ray's object store, once per
  distinct dataset) and the worker unpacks it into its node's cache, keyed by the hash
  (`KR_RAY_SHARED_FS=0` on a node: always the copy). Latent and text-encoder caches live in the node's kr
  workspace (`$KR_RAY_HOME`, default <tmp>/kr-ray/home), keyed by content like any workspace's, so members
  on one node share them.
- Results: the task returns the run folder (LoRAs, archive, samples, logs) as a tar; the head unpacks it
  into its own workspace under the run id it allocated, rewrites the worker's paths and id in the run's
  JSON files, and records it in its ledger: `kr runs ls`, reports and `kr review` see a local run.
- Stopping: Ctrl-C / `kr sweep stop` cancel the tasks; a cancelled task stops its kr run (SIGINT, which
  stops the trainer's process group). Each kr run watches the Ray worker that started it and stops its
  trainer when that worker is gone (Ray ends a worker's children abruptly, which would orphan a trainer).
- A worker lost mid-run: the member's run is recorded as crashed ("node_lost") and the member is queued
  again as a new run, up to MAX_REQUEUES times; the ledger's hint says so.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import BadInput, Failed

MAX_REQUEUES = 3
RUN_LINE = "KR-RAY-RUN "


def require_ray():
    try:
        import ray
    except ImportError:
        raise BadInput("kr sweep --ray needs Ray on this machine and every worker. Fix: pip install "
                       "'kohya-runner[ray]' (the same kr and Ray versions on every node)") from None
    return ray


def connect(address: str):
    """Join the Ray cluster at ADDRESS as a driver, usage statistics off. Raises BadInput when it cannot."""
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray = require_ray()
    _reachable(address)
    if not ray.is_initialized():
        try:
            ray.init(address=address, log_to_driver=False, logging_level="ERROR", configure_logging=False)
        except Exception as error:  # ConnectionError, RuntimeError, auth errors: one paragraph, no traceback
            raise BadInput(f"cannot join the Ray cluster at {address}: {error}. Fix: start it (`ray start --head "
                           "--node-ip-address ADDR`), check the address and, with token authentication, that "
                           "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN are set here as on the head") from None
    return ray


def _reachable(address: str) -> None:
    """A quick look before ray.init, which would retry an address where nothing listens for minutes."""
    import socket

    if address == "auto":
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except (OSError, ValueError) as error:
        raise BadInput(f"nothing answers at the Ray address {address} ({error}). Fix: start the head there "
                       "(`ray start --head --node-ip-address ADDR --port PORT`), or give its address") from None


# ----------------------------------------------------------------------------------------------
# Datasets by content hash.


def dataset_hash(folder: Path) -> str:
    """sha256 over every file's relative path and content: the same images and captions, the same hash."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def pack(folder: Path, arcname: str = ".") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(str(folder), arcname=arcname)
    return buffer.getvalue()


def unpack(data: bytes, into: Path) -> None:
    """A tar made by pack(), into a folder; members that would land outside it, and links, are refused."""
    into.mkdir(parents=True, exist_ok=True)
    root = into.resolve()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        for member in tar.getmembers():
            target = (root / member.name).resolve()
            if (root not in target.parents and target != root) or member.issym() or member.islnk():
                raise Failed(f"a transferred archive holds {member.name!r}, which would land outside its folder")
        tar.extractall(root, filter="data")


def local_dataset(wanted: str, digest: str, data: bytes | None, node_home: Path) -> Path:
    """The dataset on this node: the same path when it holds the same content (shared filesystem), else
    the node's cached copy by hash, unpacked from `data` the first time."""
    same = Path(wanted)
    shared = os.environ.get("KR_RAY_SHARED_FS", "1") != "0"  # 0: this node never reads the head's paths
    if shared and same.is_dir() and dataset_hash(same) == digest:
        return same
    cached = node_home / "datasets" / digest
    if not cached.is_dir():
        if data is None:
            raise Failed(f"the dataset {wanted} is not on this node and was not sent")
        staging = cached.parent / f".{digest}.{os.getpid()}-{time.time_ns()}"
        unpack(data, staging)
        try:
            os.replace(staging, cached)
        except OSError:  # another member unpacked it meanwhile
            shutil.rmtree(staging, ignore_errors=True)
    return cached


# ----------------------------------------------------------------------------------------------
# On the worker: the Ray task, and the kr process it runs.


def node_home() -> Path:
    return Path(os.environ.get("KR_RAY_HOME") or Path(tempfile.gettempdir()) / "kr-ray" / "home")


# Start argv[2:] in a session of its own, output to argv[1], print its pid, and leave it: not a child of
# the Ray worker, so Ray's ending of the worker's children does not reach it; with SIGINT back to its
# default, so Ctrl-C's stop reaches kr's trainer as it does everywhere else.
DETACH = ("import signal, subprocess, sys\n"
          "signal.signal(signal.SIGINT, signal.SIG_DFL)\n"  # Ray workers ignore SIGINT: kr and its trainer must not
          "with open(sys.argv[1], 'w') as out:\n"
          "    p = subprocess.Popen(sys.argv[2:], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,"
          " start_new_session=True)\n"
          "print(p.pid)")


def _watch(pid: int, stop: Callable[[], None]) -> None:
    """Call stop() once process `pid` (the Ray worker that started this run) is gone."""
    import threading

    from ..process import same_process, start_time

    started = start_time(pid)

    def loop():
        while same_process(pid, started):
            time.sleep(1.0)
        stop()

    threading.Thread(target=loop, daemon=True, name="kr-watch-worker").start()


def member_task(job: dict[str, Any], data: bytes | None) -> dict[str, Any]:
    """The Ray task: run one member with kr on this node; returns its run folder as a tar and how it ended."""
    home = node_home()
    home.mkdir(parents=True, exist_ok=True)
    spec = dict(job["spec"])
    spec["dataset"] = {**spec["dataset"], "dir": str(local_dataset(job["dataset_dir"], job["dataset_hash"], data, home))}
    jobs = home / "ray-jobs"
    jobs.mkdir(exist_ok=True)
    spec_file = jobs / f"{job['run_id']}-{os.getpid()}.json"
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    log = spec_file.with_suffix(".log")
    # kr runs detached from this worker process (Ray kills a worker's children, abruptly, when the worker
    # ends, which would orphan the trainer): it watches this process and stops its run when it is gone.
    argv = [sys.executable, "-m", "kohya_runner.sweep.remote", "member", "--home", str(home), "--spec", str(spec_file),
            "--backend", job.get("backend") or "", "--watch", str(os.getpid())]
    launcher = subprocess.run([sys.executable, "-c", DETACH, str(log), *argv], capture_output=True, text=True, check=True)
    from ..process import same_process, start_time

    pid = int(launcher.stdout.strip())
    started = start_time(pid)
    try:
        while same_process(pid, started):  # polled: a blocking wait would not see Ray's cancellation
            time.sleep(0.2)
    except BaseException:  # cancelled (KeyboardInterrupt) or the worker is going down: stop the run
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + 60
        while same_process(pid, started) and time.monotonic() < deadline:
            time.sleep(0.2)
        raise
    finally:
        spec_file.unlink(missing_ok=True)
    output = log.read_text(encoding="utf-8", errors="replace")
    log.unlink(missing_ok=True)
    line = next((text for text in output.splitlines() if text.startswith(RUN_LINE)), None)
    if line is None:
        return {"output": output[-4000:], "tar": None}
    run_id, run_dir = line[len(RUN_LINE):].split(" ", 1)
    packed = pack(Path(run_dir), run_id)
    shutil.rmtree(run_dir, ignore_errors=True)  # the head keeps it now
    import ray

    return {"output": output[-4000:], "tar": packed, "run_id": run_id,
            "run_dir": run_dir, "node": ray.get_runtime_context().get_node_id()}


def member_main(argv: list[str]) -> int:
    """`python -m kohya_runner.sweep.remote member --home W --spec F`: prepare, launch and follow one run in
    the node's workspace, as `kr run` does; the first line names the run folder."""
    import argparse

    from .. import run as run_mod
    from ..spec import build_spec
    from ..supervisor import Supervisor
    from ..trainers.notes import fit

    parser = argparse.ArgumentParser(prog="python -m kohya_runner.sweep.remote")
    parser.add_argument("command", choices=["member"])
    parser.add_argument("--home", required=True)
    parser.add_argument("--spec", required=True)
    parser.add_argument("--backend", default="")
    parser.add_argument("--watch", type=int, help="stop the run when this process (the Ray worker) is gone")
    args = parser.parse_args(argv)
    home = Path(args.home)
    spec = build_spec(json.loads(Path(args.spec).read_text(encoding="utf-8")), source=args.spec)
    gpus = [0] if os.environ.get("CUDA_VISIBLE_DEVICES", "").strip() else []  # Ray gives the task its GPU
    options = run_mod.RunOptions(backend=args.backend or None, gpus=gpus)
    state: dict[str, Any] = {"stop": False, "supervisor": None}

    def on_signal(*_):
        if state["supervisor"] is not None:
            state["supervisor"].request_stop()
        state["stop"] = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    if args.watch:
        _watch(args.watch, on_signal)
    try:
        spec, _ = fit(home, spec, run_mod.backend_for(spec, options))  # as kr run does (builds the tiny base here)
        options = run_mod.pre_launch(home, spec, options, skip_check=True)
        row = run_mod.prepare(home, spec, options)
    except Exception as error:
        print(f"kr on this node refused the member: {getattr(error, 'message', error)}", flush=True)
        return 2
    print(f"{RUN_LINE}{row.run_id} {row.run_dir}", flush=True)
    try:
        process = run_mod.launch(home, row.run_id, cancelled=lambda: state["stop"])
    except Failed as error:
        print(error.message, flush=True)
        return 1
    supervisor = state["supervisor"] = Supervisor(home, row.run_id, process)
    if state["stop"]:
        supervisor.request_stop()
    final = supervisor.run()
    return 0 if final.status == "succeeded" else 1


# ----------------------------------------------------------------------------------------------
# On the head: placing the members, taking their runs back.


def relocate(folder: Path, old_dir: str, old_id: str, new_id: str) -> None:
    """The run folder's JSON files (run.json, the manifest, post-hoc jobs, scores, ratings) rewritten from
    the worker's folder and run id to the head's."""
    from .. import atomic

    new_dir = str(folder)

    def fix(value):
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, str):
            if value == old_id:
                return new_id
            if value.startswith(old_id + "/"):  # a post-hoc job's id: RUN/sample-NNNN
                return new_id + value[len(old_id):]
            if value == old_dir or value.startswith(old_dir + os.sep):
                return new_dir + value[len(old_dir):]
        return value

    for path in [folder / "run.json", folder / "archive" / "manifest.json", folder / "scores.json",
                 folder / "ratings.json", *folder.glob("posthoc/*/job.json")]:
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            atomic.write_text(path, json.dumps(fix(data), indent=2, ensure_ascii=False) + "\n")


def lost_errors(ray) -> tuple:
    """Ray's exceptions for a task whose worker process or node went away (not the task's own error)."""
    names = ("WorkerCrashedError", "NodeDiedError", "ObjectLostError", "OwnerDiedError", "LocalRayletDiedError",
             "RaySystemError", "ObjectReconstructionFailedError")
    return tuple(getattr(ray.exceptions, name) for name in names if hasattr(ray.exceptions, name))


class RayScheduler:
    """Every member as a Ray task; the loop waits for results, stops on request, re-queues lost members."""

    def __init__(self, home: Path, record, members: list, options, say: Callable[[str], None], ray):
        from ..ledger import open_ledger
        from ..process import start_time

        self.home, self.record, self.options, self.say, self.ray = home, record, options, say, ray
        self.ledger = open_ledger(home)
        self.pending = list(members)
        self.running: dict[Any, tuple[Any, str]] = {}  # ObjectRef → (member, head run id)
        self.requeued: dict[int, int] = {}
        self.datasets: dict[str, tuple[str, Any]] = {}  # dataset dir → (hash, ObjectRef of its tar)
        self.stop_requests = 0
        self._stops_sent = 0
        self.owner = (os.getpid(), start_time(os.getpid()))
        resource = options.ray_resource or "GPU"
        self.task = ray.remote(member_task).options(
            max_retries=0, retry_exceptions=False, num_cpus=0,
            **({"num_gpus": 1} if resource == "GPU" else {"resources": {resource: 1}}))

    def request_stop(self) -> None:
        self.stop_requests += 1

    def run(self) -> bool:
        while self.pending and not self.stop_requests:
            self._submit(self.pending.pop(0))
        while self.running:
            if self.stop_requests > self._stops_sent:
                self._stops_sent = self.stop_requests
                self.say(f"stopping the sweep: cancelling {len(self.running)} Ray task(s)…")
                for ref in self.running:  # the worker ends; its kr run sees that and stops its trainer (_watch)
                    self.ray.cancel(ref, force=True)
            ready, _ = self.ray.wait(list(self.running), num_returns=1, timeout=0.5)
            for ref in ready:
                self._collect(ref)
        return not self.stop_requests

    def _dataset(self, folder: str) -> tuple[str, Any]:
        if folder not in self.datasets:
            path = Path(folder)
            self.datasets[folder] = (dataset_hash(path), self.ray.put(pack(path)))
        return self.datasets[folder]

    def _submit(self, member) -> None:
        from .. import atomic, runfolder, workspace
        from ..run import RunOptions, backend_for, with_absolute_dataset

        spec = with_absolute_dataset(member.spec)
        backend = backend_for(spec, RunOptions(backend=self.options.backend))
        row = self.ledger.create_run(spec.name, workspace.runs_dir(self.home), preset=self.record.data.get("preset"),
                                     spec_hash=spec.hash(), backend=backend, sweep_id=self.record.sweep_id,
                                     gpu=f"ray:{self.options.ray}", supervisor_pid=self.owner[0],
                                     supervisor_start=self.owner[1])
        atomic.write_text(runfolder.of(row.run_dir).spec, spec.model_dump_json(indent=2) + "\n")
        member.runs.append(row.run_id)
        self.record.save()
        digest, data = self._dataset(spec.dataset.dir)
        job = {"run_id": row.run_id, "spec": spec.model_dump(mode="json"), "dataset_dir": spec.dataset.dir,
               "dataset_hash": digest, "backend": backend}
        self.running[self.task.remote(job, data)] = (member, row.run_id)
        self.say(f"[{member.label}] {row.run_id} queued on Ray ({self.options.ray}): {member.describe()}")

    def _collect(self, ref) -> None:
        member, run_id = self.running.pop(ref)
        ray = self.ray
        try:
            result = ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            self.ledger.finish(run_id, "stopped", reason="stopped", hint="stopped on Ray (kr sweep stop or Ctrl-C)")
            self.say(f"[{member.label}] {run_id} stopped")
            return
        except lost_errors(ray) as error:
            self._lost(member, run_id, error)
            return
        except ray.exceptions.RayTaskError as error:
            if isinstance(getattr(error, "cause", None), ray.exceptions.TaskCancelledError):
                self.ledger.finish(run_id, "stopped", reason="stopped", hint="stopped on Ray (kr sweep stop or Ctrl-C)")
                self.say(f"[{member.label}] {run_id} stopped")
                return
            self.ledger.finish(run_id, "failed", reason="error", hint=f"the Ray task failed: {str(error)[-400:]}")
            self.say(f"[{member.label}] {run_id} failed on Ray: {str(error).splitlines()[-1][:200]}")
            return
        if result.get("tar") is None:
            self.ledger.finish(run_id, "failed", reason="setup", hint=result.get("output", "")[-500:])
            self.say(f"[{member.label}] {run_id} failed before it started on its node: {result.get('output', '')[-300:]}")
            return
        self._take_home(run_id, result)
        from .scheduler import finished_text

        self.say(f"[{member.label}] {finished_text(self.ledger.get(run_id))}")

    def _take_home(self, run_id: str, result: dict[str, Any]) -> None:
        """The worker's run folder into the head's (its id, its place), and its row and evaluation into the ledger."""
        from ..ledger import RUN_COLUMNS, row_from_folder

        folder = Path(self.ledger.get(run_id).run_dir)
        staging = folder.parent / f".{folder.name}.ray-{os.getpid()}"
        unpack(result["tar"], staging)
        for entry in (staging / result["run_id"]).iterdir():
            if entry.name != "spec.json":  # the head's spec.json names the dataset where the head has it
                os.replace(entry, folder / entry.name)
        shutil.rmtree(staging, ignore_errors=True)
        relocate(folder, result["run_dir"], result["run_id"], run_id)
        values = row_from_folder(folder) or {}
        skip = ("id", "run_id", "run_dir", "sweep_id", "created_at", "gpu", "supervisor_pid", "supervisor_start",
                "pid", "pid_start", "pgid")
        keep = {k: v for k, v in values.items() if k in RUN_COLUMNS and k not in skip}
        keep["hint"] = (keep.get("hint") or "") + f" (on Ray node {str(result.get('node', '?'))[:12]})"
        self.ledger.update(run_id, **keep)
        self.ledger.restore_evaluation(folder)

    def _lost(self, member, run_id: str, error: Exception) -> None:
        count = self.requeued.get(member.index, 0)
        again = count < MAX_REQUEUES and not self.stop_requests
        why = f"its Ray node or worker was lost ({type(error).__name__})"
        self.ledger.finish(run_id, "crashed", reason="node_lost",
                           hint=why + ("; the member was queued again as a new run" if again else ""))
        self.say(f"[{member.label}] {run_id} crashed: {why}" + ("; queued again" if again else ""))
        if again:
            self.requeued[member.index] = count + 1
            self._submit(member)


if __name__ == "__main__":
    sys.exit(member_main(sys.argv[1:]))
