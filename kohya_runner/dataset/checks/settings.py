"""Settings sd-scripts refuses or changes at start-up (its rules live in sdscripts.subset)."""

from __future__ import annotations

from ...sdscripts.steps import TrainingPlan
from ...sdscripts.subset import DatasetSettings, setting_problems
from .._findings import Finding, finding


def settings_findings(settings: DatasetSettings, plan: TrainingPlan | None) -> list[Finding]:
    unet_only = plan.unet_only if plan else None
    return [finding(code, None, what, fix) for code, what, fix in setting_problems(settings, unet_only)]
