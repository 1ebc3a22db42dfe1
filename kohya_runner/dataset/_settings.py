"""The settings the dataset checks take, in sd-scripts' terms (they live in kohya_runner.sdscripts)."""

from __future__ import annotations

from ..sdscripts.steps import TrainingPlan, plan_from_spec
from ..sdscripts.subset import DatasetSettings, settings_from_spec

__all__ = ["DatasetSettings", "TrainingPlan", "plan_from_spec", "settings_from_spec"]
