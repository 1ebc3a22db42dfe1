"""Watching a trainer: its console stream → progress, NaN, and a classified outcome.

The one log follower (LogFollower: a file offset, '\\r'/'\\n' segment splitting, Progress updates) is
used by the supervisor, `kr runs tail`, the sweep scheduler and the report. The stream is split on both
'\\r' and '\\n' (tqdm redraws with '\\r' and no newline even into a file, contract §5.4). Patterns live
in kohya_runner.sdscripts.logs; this module only keeps state. Resource sampling: kohya_runner.usage.
"""

from __future__ import annotations

import codecs
import math
import re
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from .sdscripts import logs


class SegmentSplitter:
    """Bytes in, complete lines out; a '\\r' or '\\n' ends a segment (a tqdm redraw is one segment)."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def feed(self, data: bytes) -> list[str]:
        text = self._pending + self._decoder.decode(data)
        parts = re.split(r"\r\n|\r|\n", text)
        self._pending = parts.pop()
        return [p for p in parts if p.strip()]

    def flush(self) -> list[str]:
        rest, self._pending = self._pending + self._decoder.decode(b"", final=True), ""
        return [rest] if rest.strip() else []


@dataclass
class Progress:
    steps_done: int = 0
    steps_total: int | None = None
    epoch: int | None = None
    epochs_total: int | None = None
    avr_loss: float | None = None
    min_loss: float | None = None
    it_per_s: float | None = None
    eta: str | None = None
    phase: str = "starting"
    model_saved: bool = False
    no_data: bool = False
    nan: bool = False
    checkpoints: list[str] = field(default_factory=list)
    sample_rounds: int = 0  # sampling rounds begun
    sample_prompts: int = 0  # images per round (the run's prompt file; 0: unknown)
    sample_rounds_total: int | None = None  # known once the log gave the epochs and steps (plan_samples)
    sample_index: int = 0  # the image being made in the current round, 1-based; 0 outside sampling
    sample_images_done: int = 0
    sample_seconds: float = 0.0  # wall time of the sample images timed live (not replayed from a log)
    sample_images_timed: int = 0
    train_seconds: float = 0.0  # wall time between live bar readings with no sampling between them
    train_steps_timed: int = 0
    exception: str | None = None
    failure: str | None = None  # the first failure signature seen (logs.FAILURES)
    divergence: str | None = None  # why kr's loss guard stopped the run (spec.guard), if it did
    tail: deque = field(default_factory=lambda: deque(maxlen=40))
    updated: float = field(default_factory=time.monotonic)
    rounds_for: Callable[[int, int], int] | None = field(default=None, repr=False)  # (epochs, steps) → rounds
    _image_started: float | None = field(default=None, repr=False)
    _last_bar: tuple[float, int] | None = field(default=None, repr=False)

    def to_json(self) -> dict[str, Any]:
        keys = ("steps_done", "steps_total", "epoch", "epochs_total", "avr_loss", "min_loss", "it_per_s", "eta",
                "phase", "model_saved", "no_data", "nan", "checkpoints", "sample_rounds", "exception", "failure",
                "divergence")
        return {k: getattr(self, k) for k in keys}

    def plan_samples(self, prompts: int, rounds_for: Callable[[int, int], int]) -> None:
        """Tell the progress how many images a sampling round makes and how many rounds a run of E epochs
        and S steps has (sdscripts.steps), so the view can show "sample i/N" and an ETA with sampling."""
        self.sample_prompts, self.rounds_for = prompts, rounds_for
        self._count_rounds()

    def _count_rounds(self) -> None:
        if self.rounds_for is not None and self.steps_total and self.epochs_total:
            self.sample_rounds_total = self.rounds_for(self.epochs_total, self.steps_total)

    @property
    def sample_images_total(self) -> int | None:
        if self.sample_rounds_total is None or not self.sample_prompts:
            return None
        return self.sample_rounds_total * self.sample_prompts


def parse_segment(progress: Progress, line: str, now: float | None = None, *, timed: bool = True) -> str | None:
    """Update `progress` from one console segment; return the kind of notable event, if any.

    `now` is when the segment was read; `timed=False` for segments replayed from a log written
    before following began (they all arrive at once, so they time nothing)."""
    text = line.strip()
    now = time.monotonic() if now is None else now
    progress.updated = now
    clock = now if timed else None
    bar = read_bar(text)
    if bar:
        _end_sampling(progress, clock)
        _time_steps(progress, bar.steps_done, clock)
        _update_from_bar(progress, bar)
        progress._count_rounds()
        return "nan" if progress.nan else "step"
    progress.tail.append(text)
    if progress.phase == "sampling" and logs.SAMPLE_PROMPT.search(text):
        _end_image(progress, clock)
        progress.sample_index += 1
        progress._image_started = clock
        return "sample"
    for pattern, handler in _LINE_HANDLERS:
        match = pattern.search(text)
        if match:
            if pattern is logs.SAMPLING:
                _end_sampling(progress, clock)
                progress._last_bar = None  # the step interval around a round is not training time
            elif handler is not _on_caching:
                _end_sampling(progress, clock)
            event = handler(progress, match)
            progress._count_rounds()
            return event
    if progress.failure is None:
        for reason, pattern, _ in logs.FAILURES:
            if pattern.search(text):
                progress.failure = reason
                break
    exception = logs.EXCEPTION_LINE.match(text)
    if exception and not text.startswith("Traceback"):
        progress.exception = text[:500]
    return None


@dataclass
class BarReading:
    """One redraw of sd-scripts' `steps:` tqdm bar."""
    steps_done: int
    steps_total: int
    elapsed: str
    eta: str | None
    rate_known: bool  # tqdm printed a rate ('?' or nothing until it has one)
    it_per_s: float | None
    postfix: str

    @property
    def elapsed_seconds(self) -> float | None:
        return tqdm_seconds(self.elapsed)


def read_bar(segment: str) -> BarReading | None:
    """The tqdm bar in one console segment, or None if it is not one."""
    bar = logs.STEPS_BAR.match(segment.strip())
    if not bar:
        return None
    eta = bar["eta"].strip()
    rate = bar["rate"]
    it_per_s = None
    if rate and rate != "?":
        value = float(rate)
        it_per_s = value if bar["unit"] == "it/s" else (1.0 / value if value else None)
    return BarReading(int(bar["n"]), int(bar["total"]), bar["elapsed"], None if eta in ("?", "") else eta,
                      rate not in (None, "?"), it_per_s, bar["postfix"] or "")


def tqdm_seconds(text: str) -> float | None:
    """tqdm's elapsed field: 'MM:SS' or 'H:MM:SS'."""
    try:
        parts = [int(p) for p in text.strip().split(":")]
    except ValueError:
        return None
    total = 0
    for part in parts:
        total = total * 60 + part
    return float(total)


def _end_image(progress: Progress, clock: float | None) -> None:
    if progress.sample_index == 0:
        return
    progress.sample_images_done += 1
    if clock is not None and progress._image_started is not None:
        progress.sample_seconds += clock - progress._image_started
        progress.sample_images_timed += 1
    progress._image_started = None


def _end_sampling(progress: Progress, clock: float | None) -> None:
    """A round ends at the trainer's next own line (a bar, an epoch, a save): its last image is done."""
    if progress.phase == "sampling":
        _end_image(progress, clock)
        progress.sample_index = 0
        progress._last_bar = None


def _time_steps(progress: Progress, steps_done: int, clock: float | None) -> None:
    last = progress._last_bar
    if clock is not None and last is not None and steps_done > last[1]:
        progress.train_seconds += clock - last[0]
        progress.train_steps_timed += steps_done - last[1]
    if clock is None:
        progress._last_bar = None
    elif last is None or steps_done != last[1]:
        progress._last_bar = (clock, steps_done)


def eta_seconds(progress: Progress, now: float | None = None) -> tuple[float, bool] | None:
    """Seconds left, training and sampling, and whether that is only a lower bound (sampling still to come
    but no sample image timed yet); None before the trainer shows a rate.

    Steps: the live-timed seconds per step between bar readings with no sampling between them, else
    tqdm's rate. Sampling: the remaining images of all rounds × the measured seconds per image, less the
    time the current image has already taken."""
    p = progress
    if not p.steps_total or p.model_saved:
        return None
    now = time.monotonic() if now is None else now
    if p.train_steps_timed >= 2 and p.train_seconds > 0:
        per_step = p.train_seconds / p.train_steps_timed
    elif p.it_per_s:
        per_step = 1.0 / p.it_per_s
    else:
        return None
    seconds = max(0, p.steps_total - p.steps_done) * per_step
    total = p.sample_images_total
    left = max(0, total - p.sample_images_done) if total is not None else 0
    if not left:
        return seconds, False
    if not p.sample_images_timed:
        return seconds, True
    per_image = p.sample_seconds / p.sample_images_timed
    started = p._image_started if p.phase == "sampling" and p.sample_index else None
    if started is not None:
        seconds += (left - 1) * per_image + max(0.0, per_image - (now - started))
    else:
        seconds += left * per_image
    return seconds, False


def _update_from_bar(progress: Progress, bar: BarReading) -> None:
    progress.phase = "training"
    progress.steps_done = bar.steps_done
    progress.steps_total = bar.steps_total
    progress.eta = bar.eta
    if bar.rate_known:
        progress.it_per_s = bar.it_per_s
    loss = logs.AVR_LOSS.search(bar.postfix)
    if loss:
        value = _float(loss.group(1))
        progress.avr_loss = value
        if value is not None and not math.isfinite(value):
            progress.nan = True  # sd-scripts never stops on NaN (§5.5); kr does
        elif value is not None:
            progress.min_loss = value if progress.min_loss is None else min(progress.min_loss, value)


@dataclass
class LossGuard:
    """kr's loss guard (spec.guard): after warm-up, the moving average above factor × its running minimum.

    The minimum counts only averages from the end of warm-up on: the first averages cover a few batches
    and can be far below the run's level, which would trip the guard on a healthy run. NaN/inf is not
    this rule's business (Progress.nan)."""
    factor: float | None
    warmup_steps: int
    minimum: float | None = None

    def check(self, progress: Progress) -> str | None:
        """The reason in words once the rule trips, else None."""
        loss = progress.avr_loss
        if self.factor is None or loss is None or not math.isfinite(loss) or progress.steps_done < self.warmup_steps:
            return None
        self.minimum = loss if self.minimum is None else min(self.minimum, loss)
        if self.minimum <= 0 or loss <= self.factor * self.minimum:
            return None
        return (f"the average loss rose to {loss:.4g} at step {progress.steps_done}, above {self.factor:g} × its "
                f"running minimum {self.minimum:.4g} since warm-up (guard.divergence_factor={self.factor:g}, "
                f"guard.warmup_steps={self.warmup_steps}); kr stopped the run")


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _on_total(p: Progress, m: re.Match) -> str:
    p.steps_total = int(m.group(1))
    return "plan"


def _on_epochs(p: Progress, m: re.Match) -> str:
    p.epochs_total = int(m.group(1))
    return "plan"


def _on_epoch(p: Progress, m: re.Match) -> str:
    p.epoch, p.epochs_total = int(m.group(1)), int(m.group(2))
    p.phase = "training"
    return "epoch"


def _on_checkpoint(p: Progress, m: re.Match) -> str:
    p.checkpoints.append(m.group(1).strip())
    p.phase = "saving"
    return "checkpoint"


def _on_sampling(p: Progress, m: re.Match) -> str:
    p.sample_rounds += 1
    p.phase = "sampling"
    return "sampling"


def _on_saved(p: Progress, m: re.Match) -> str:
    p.model_saved = True
    p.phase = "done"
    return "saved"


def _on_no_data(p: Progress, m: re.Match) -> str:
    p.no_data = True
    p.failure = p.failure or "no_data"
    return "no_data"


def _on_caching(p: Progress, m: re.Match) -> str:
    if p.phase == "starting":
        p.phase = "caching"
    return None  # type: ignore[return-value]


_LINE_HANDLERS = [
    (logs.TOTAL_STEPS, _on_total),
    (logs.NUM_EPOCHS, _on_epochs),
    (logs.EPOCH_LINE, _on_epoch),
    (logs.SAVING_CHECKPOINT, _on_checkpoint),
    (logs.SAMPLING, _on_sampling),
    (logs.MODEL_SAVED, _on_saved),
    (logs.NO_DATA, _on_no_data),
    (logs.CACHING, _on_caching),
]


# ----------------------------------------------------------------------------------------------
# The outcome.


@dataclass
class Outcome:
    status: str  # succeeded | failed | stopped | crashed | diverged
    reason: str | None
    message: str
    hint: str | None = None


def classify(progress: Progress, returncode: int | None, final_lora_exists: bool, *,
             stop_requested: bool = False, diverged: bool = False, spec=None) -> Outcome:
    """Success is all three of exit 0, the final LoRA file, and `model saved.` (contract §0.4)."""
    if progress.divergence and not progress.nan:
        return Outcome("diverged", "loss_diverged", progress.divergence,
                       "lower optimizer.lr (or raise guard.divergence_factor / guard.warmup_steps if this is "
                       "expected, e.g. with a restart schedule)")
    if diverged or progress.nan:
        return Outcome("diverged", "nan_loss", f"the loss became {progress.avr_loss} at step {progress.steps_done}; "
                       "kr stopped the run (sd-scripts would have saved a NaN LoRA)",
                       "lower optimizer.lr, check the dataset for broken images, or use precision.mixed_precision=bf16")
    if stop_requested:
        return Outcome("stopped", "stopped", "stopped on request", None)
    if returncode in (0, None) and final_lora_exists and progress.model_saved:
        # returncode None: the trainer ended while kr was not watching; the file and the log decide.
        return Outcome("succeeded", None, "training finished and the final LoRA was saved")
    if returncode == 0:
        if progress.no_data:
            return Outcome("failed", "no_data", _failure_text("no_data"), _hint("no_data", spec))
        missing = "the final LoRA file is missing" if not final_lora_exists else "'model saved.' never appeared"
        return Outcome("failed", "no_model", f"the trainer exited 0 but {missing}", "read trainer.log in the run folder")
    if returncode is not None and returncode < 0:
        return _signalled(-returncode, progress)
    reason = progress.failure
    if reason:
        detail = f" ({progress.exception})" if progress.exception else ""
        return Outcome("failed", reason, _failure_text(reason) + detail, _hint(reason, spec, progress))
    if returncode is None:
        return Outcome("crashed", "lost", "the trainer ended while kr was not watching and left no final LoRA",
                       "read trainer.log in the run folder")
    return Outcome("failed", "error", progress.exception or f"the trainer exited with status {returncode}",
                   "read trainer.log in the run folder")


def _signalled(signum: int, progress: Progress) -> Outcome:
    name = signal.Signals(signum).name if signum in signal.Signals._value2member_map_ else f"signal {signum}"
    if signum == signal.SIGKILL:
        return Outcome("crashed", "killed", f"the trainer was killed by {name}, most likely by the kernel's OOM killer "
                       "(host RAM, not VRAM)", "close other programs, lower training.data_loader_workers, or add swap")
    return Outcome("crashed", "signal", f"the trainer was killed by {name}", None)


def _failure_text(reason: str) -> str:
    return next(text for r, _, text in logs.FAILURES if r == reason)


def _hint(reason: str, spec=None, progress: Progress | None = None) -> str | None:
    if reason == "cuda_oom":
        return oom_hint(spec, during_sampling=bool(progress and progress.phase == "sampling"))
    if reason == "missing_package":
        from .trainers.packages import missing_package_hint

        hint = missing_package_hint(spec, progress.exception if progress else None)
        if hint:
            return hint
    return {
        "no_data": "the dataset folder has no images sd-scripts reads (.png .jpg .jpeg .webp .bmp directly in it); "
                   "run `kr dataset check DIR`",
        "dataset_config": "kr renders a valid dataset TOML; if you edited it by hand, re-render it",
        "missing_tokenizer": "build the offline tokenizers with `kr vendor tokenizers`",
        "missing_model": "check that --base points at an existing .safetensors file or Diffusers folder",
        "missing_package": "install the package into the trainer environment, or pick another optimizer/attention",
        "dataset_file": "run `kr dataset check DIR` to find the broken image or caption",
        "unknown_optimizer": "use a built-in optimizer name (`kr presets explain NAME` shows optimizer.type)",
        "config_missing": "re-run; the rendered config.toml must exist",
        "bad_option": "your sd-scripts differs from the pinned version; run `kr vendor drift`",
    }.get(reason)


def oom_hint(spec, during_sampling: bool = False) -> str:
    """The next memory setting to try: the next rung of the ladder (kohya_runner.memory), the one an
    automatic retry takes."""
    if spec is None:
        return "lower dataset.batch_size or turn on precision.gradient_checkpointing"
    if during_sampling:
        return "the run ran out of memory while sampling: lower sampling.width/height or sample less often"
    from .memory import rungs

    rung = next(iter(rungs(spec)), None)
    if rung is None:
        return "this run does not fit this GPU; use a larger one"
    return f"set {rung.text} ({rung.name})"


# ----------------------------------------------------------------------------------------------
# Following a console log file: the one follower.


def segments_of(data: bytes) -> Iterator[str]:
    splitter = SegmentSplitter()
    yield from splitter.feed(data)
    yield from splitter.flush()


class LogFollower:
    """Reads a trainer.log as it grows (from a file offset) into `progress`, segment by segment.

    poll() returns the new complete segments with the event each one was (parse_segment); finish()
    also returns the last segment that has no line end yet. A missing file is simply not there yet."""

    def __init__(self, path: Path, progress: Progress | None = None,
                 on_segment: Callable[[str, str | None, Progress], None] | None = None):
        self.path = Path(path)
        self.offset = 0
        self.progress = progress if progress is not None else Progress()
        # Called for every segment as it is parsed, with the progress as of that segment, so a view
        # sees every event in order (an epoch line, a save) even when one read brings several.
        self.on_segment = on_segment
        self._splitter = SegmentSplitter()
        self._history = True  # the first read: what was written before following began (not timed)

    def poll(self) -> list[tuple[str, str | None]]:
        try:
            with open(self.path, "rb") as log:
                log.seek(self.offset)
                data = log.read()
        except FileNotFoundError:
            data = b""
        timed, self._history = not self._history, False
        self.offset += len(data)
        return self._parse(self._splitter.feed(data), timed) if data else []

    def finish(self) -> list[tuple[str, str | None]]:
        """The rest of the file, including a last segment without a line end."""
        events = self.poll()
        return events + self._parse(self._splitter.flush(), not self._history)

    def _parse(self, segments: list[str], timed: bool = True) -> list[tuple[str, str | None]]:
        now, events = time.monotonic(), []
        for segment in segments:
            event = parse_segment(self.progress, segment, now, timed=timed)
            events.append((segment, event))
            if self.on_segment is not None:
                self.on_segment(segment, event, self.progress)
        return events


def sample_plan(run_dir: Path, spec) -> tuple[int, Callable[[int, int], int]] | None:
    """(images per sampling round, rounds for E epochs and S steps) of a run, or None when it samples
    nothing. The images are the prompt lines of the run's rendered prompt file (as sd-scripts reads a
    .txt: not blank, not '#')."""
    from . import runfolder
    from .sdscripts import steps

    try:
        text = (Path(run_dir) / runfolder.PROMPTS_FILE).read_text(encoding="utf-8")
        plan = steps.plan_from_spec(spec)
    except Exception:  # no prompt file (no sampling), or a spec this version cannot plan: no sampling ETA
        return None
    prompts = sum(1 for line in text.splitlines() if line.strip() and not line.strip().startswith("#"))
    if not prompts:
        return None
    return prompts, lambda epochs, total: steps._sample_rounds(plan, epochs, total)


def read_progress(path: Path) -> Progress:
    """The progress a whole (finished) log shows; an empty Progress if there is no log."""
    follower = LogFollower(path)
    follower.finish()
    return follower.progress


def last_bar(log: Path, tail: int = 256 * 1024) -> BarReading | None:
    """The trainer's last tqdm reading with a rate (steps, elapsed, rate), from the end of its log."""
    if not log.is_file():
        return None
    with open(log, "rb") as handle:
        handle.seek(max(0, log.stat().st_size - tail))
        data = handle.read()
    for segment in reversed(list(segments_of(data))):
        bar = read_bar(segment)
        if bar and bar.rate_known:
            return bar
    return None
