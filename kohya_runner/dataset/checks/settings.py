"""Settings sd-scripts refuses or changes at start-up (its rules live in sdscripts.subset)."""

from __future__ import annotations

from ...sdscripts import validation
from ...sdscripts.steps import TrainingPlan
from ...sdscripts.subset import DatasetSettings, setting_problems
from .._findings import Finding, finding


def settings_findings(settings: DatasetSettings, plan: TrainingPlan | None) -> list[Finding]:
    unet_only = plan.unet_only if plan else None
    return [finding(code, None, what, fix) for code, what, fix in setting_problems(settings, unet_only)]


def validation_findings(count: int, settings: DatasetSettings) -> list[Finding]:
    """What sd-scripts' validation split makes of `count` images: none held out, or parts that overlap."""
    s = settings.validation_split
    if s <= 0 or count <= 0:
        return []
    train, held = validation.sizes(count, s)
    clean = validation.clean_split(count, s)
    fix = f"set dataset.validation_split={clean}" if clean is not None else \
        "add images (one image cannot be split) or set dataset.validation_split=0"
    if held == 0:
        return [finding("validation-empty", None, f"validation_split {s} of {count} images holds out none "
                        f"(round({count} × {s}) = 0): sd-scripts logs no validation loss.", fix)]
    if train + held > count:
        return [finding("validation-overlap", None, f"validation_split {s} of {count} images: sd-scripts trains on "
                        f"{train} and holds out {held}, so {train + held - count} image(s) are in both; the "
                        "validation loss and kr's held-out check then see trained images.", fix)]
    return []
