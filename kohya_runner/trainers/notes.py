"""What kr tells the user before a launch: the spec fitted to the backend, and warnings about the plan.

    spec, notes = fit(home, spec, backend)      # kr run / kr demo / kr runs resume, before pre_launch

Each note is one line; the caller prints them before the trainer starts (`note: …`; a warning as it is).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import KrError


def fit(home: Path, spec, backend: str, num_processes: int = 1):
    """(the spec to launch, notes): the tiny backend's adaptation (kohya_runner.trainers.tiny.adapt),
    then the warnings of warmup_notes. Raises SpecError (BadInput) only if the fitted spec breaks a rule."""
    notes: list[str] = []
    if backend == "tiny":
        from .tiny import adapt

        spec, notes = adapt(home, spec)
    return spec, notes + warmup_notes(spec, num_processes) + validation_notes(spec)


def warmup_notes(spec, num_processes: int = 1) -> list[str]:
    """A warning when the learning-rate warmup lasts as long as the whole run (or longer): the rate then
    never reaches optimizer.lr, e.g. the presets' 100 warmup steps in a 4-step smoke run.

    Cheap: the folder is listed once and the step count bounded (all images in one bucket / each in its
    own); only a warmup between the bounds needs the bucket table of the dataset check. Raises nothing."""
    warmup = spec.scheduler.warmup_steps
    if isinstance(warmup, float) or not warmup:  # a float below 1 is a share of the run
        return []
    try:
        total = total_steps(spec, num_processes, warmup)
    except KrError:  # a missing folder, bad settings: the dataset check reports them in its own words
        return []
    if total is None or warmup < total:
        return []
    return [f"warning: scheduler.warmup_steps = {warmup} is not shorter than the whole run ({total} steps), so the "
            f"learning rate never reaches optimizer.lr = {spec.optimizer.lr:g}. Fix: scheduler.warmup_steps="
            f"{max(0, total // 10)} (or a share of the run such as 0.1), or train longer"]


def validation_notes(spec) -> list[str]:
    """The dataset check's warnings about dataset.validation_split for this folder's image count (none held
    out, or parts that share images). Cheap: one listing. Raises nothing."""
    if not spec.dataset.validation_split or not spec.dataset.dir:
        return []
    from .. import dataset
    from ..dataset.checks.settings import validation_findings

    try:
        settings = dataset.settings_from_spec(spec)
        count = len(dataset.scan(settings).images)
    except KrError:
        return []
    return [f"warning: {f.message} Fix: {f.fix}" for f in validation_findings(count, settings)]


def total_steps(spec, num_processes: int = 1, warmup: int | None = None) -> int | None:
    """The run's optimizer steps as sd-scripts counts them; None without a dataset folder. When `warmup`
    is given, an exact count is worked out only if the bounds do not decide warmup >= total. Raises
    BadInput for a missing dataset folder or values sd-scripts rejects."""
    from ..sdscripts.steps import plan_from_spec, step_math

    plan = plan_from_spec(spec, num_processes)
    if spec.training.epochs is None:
        return step_math(1, 1, plan).total_steps  # max_train_steps (or sd-scripts' 1600)
    if not spec.dataset.dir:
        return None
    from .. import dataset

    settings = dataset.settings_from_spec(spec)
    images = len(dataset.scan(settings).images)
    if not images:
        return None  # the dataset check refuses it with its own message
    repeats, batch = spec.dataset.repeats, spec.dataset.batch_size
    low = step_math(images * repeats, batch, plan).total_steps
    high = step_math([repeats] * images, batch, plan).total_steps
    if warmup is not None and (warmup < low or warmup >= high):
        return low if warmup < low else high
    report = dataset.check(settings, dataset.plan_from_spec(spec, num_processes), workers=1)
    return report.steps.total_steps if report.steps else low
