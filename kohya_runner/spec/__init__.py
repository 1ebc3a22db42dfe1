"""The run spec: every knob of a LoRA style run, validated. The single source of truth.

Presets, user files and `key.path=value` overrides all end up here; render turns a Spec into sd-scripts
files. The package's parts, each importable on its own:

- model.py      the pydantic groups and Spec, every field described (kr's names; contract maps them)
- choices.py    the values choice fields accept (from the pinned sd-scripts manifest where it has them)
- rules.py      cross-field rules, one function per concern
- errors.py     Problem, SpecError, pydantic errors in kr's words
- _checks.py    single-value checks: one line of text, prompt text, one safe file-name component
- build.py      build_spec: a layered dict → a Spec, or every problem at once
- overrides.py  `key.path=value` overrides typed by the spec, leaf paths, field descriptions
- prompts.py    sample prompts: subjects × trigger / no trigger / variants
- diff.py       the flat form of a spec and the one spec diff
"""

from __future__ import annotations

from ._checks import NAME_MAX_BYTES, file_name_problem
from .build import build_spec
from .choices import (ADAPTIVE_OPTIMIZERS, BUILTIN_OPTIMIZERS, NETWORK_LORA_ARGS, SAMPLERS, SCHEDULE_FREE_OPTIMIZERS,
                      SCHEDULERS)
from .diff import ABSENT, Change, diff, flatten, show_value
from .errors import Problem, SpecError, problems_from_validation
from .model import (ArgValue, DatasetSpec, Family, GuardSpec, Group, LoggingSpec, MetadataPolicy, ModelSpec,
                    NetworkSpec, OptimizerSpec, PrecisionSpec, PrivacySpec, SamplingSpec, SavingSpec,
                    SchedulerSpec, Spec, TrainingSpec, is_group)
from .overrides import Override, annotation_at, coerce_value, describe, leaf_paths, parse_override
from .prompts import SamplePrompt, render_prompt, sample_prompts, training_prompts
from .rules import cross_field_problems

__all__ = [
    "ABSENT", "ADAPTIVE_OPTIMIZERS", "BUILTIN_OPTIMIZERS", "NAME_MAX_BYTES", "NETWORK_LORA_ARGS", "SAMPLERS",
    "SCHEDULERS", "SCHEDULE_FREE_OPTIMIZERS", "ArgValue", "Change", "DatasetSpec", "Family", "Group", "GuardSpec",
    "LoggingSpec", "MetadataPolicy", "ModelSpec", "NetworkSpec", "OptimizerSpec", "Override", "PrecisionSpec",
    "PrivacySpec", "Problem", "SamplePrompt", "SamplingSpec", "SavingSpec", "SchedulerSpec", "Spec", "SpecError",
    "TrainingSpec", "annotation_at", "build_spec", "coerce_value", "cross_field_problems", "describe", "diff",
    "file_name_problem", "flatten", "is_group", "leaf_paths", "parse_override", "problems_from_validation",
    "render_prompt", "sample_prompts", "show_value", "training_prompts",
]
