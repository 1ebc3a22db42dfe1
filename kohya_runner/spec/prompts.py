"""Sample prompts: how the spec's subjects, template and variants become the lines sd-scripts samples."""

from __future__ import annotations

import string
from dataclasses import dataclass

from .model import Spec


def render_prompt(spec: Spec, subject: str, template: str | None = None) -> str:
    """A sampling subject as the full prompt, e.g. 'in the style of TOK, a man thinking'."""
    return (template or spec.sampling.template).format(subject=subject, trigger=spec.dataset.trigger or "")


@dataclass(frozen=True)
class SamplePrompt:
    """One line of the sample prompts file: which subject, in which form (sd-scripts numbers them 00, 01, …)."""
    index: int
    subject_index: int
    subject: str
    kind: str  # "trigger" | "no-trigger" | "variant-1", "variant-2", …
    text: str
    seed: int


def sample_prompts(spec: Spec) -> list[SamplePrompt]:
    """Every subject with the trigger, then without it, then in each reworded variant. A subject keeps one
    seed in all its forms and in every run, so sheets compare like with like."""
    s = spec.sampling
    forms = [("trigger", s.template)]
    if s.without_trigger and spec.dataset.trigger:
        forms.append(("no-trigger", s.untriggered_template))
    forms += [(f"variant-{i + 1}", template) for i, template in enumerate(s.variants)]
    prompts = []
    for kind, template in forms:
        for i, subject in enumerate(s.prompts):
            prompts.append(SamplePrompt(len(prompts), i, subject, kind, render_prompt(spec, subject, template), s.seed + i))
    return prompts


SANITY_SUBJECTS = 2  # sampling.during_training = "sanity": the first two subjects, with the trigger


def training_prompts(spec: Spec) -> list[SamplePrompt]:
    """The lines sampled during training: every prompt, or for a sanity sample the first SANITY_SUBJECTS
    subjects with the trigger (lines 0..1, the same indices as in the full list, so grids line up)."""
    prompts = sample_prompts(spec)
    if spec.sampling.during_training == "all":
        return prompts
    return [p for p in prompts if p.kind == "trigger" and p.subject_index < SANITY_SUBJECTS]


def template_field(spec: Spec, kind: str) -> tuple[str, str]:
    """The spec field holding the template of a prompt form, and that template."""
    s = spec.sampling
    if kind == "trigger":
        return "sampling.template", s.template
    if kind == "no-trigger":
        return "sampling.untriggered_template", s.untriggered_template
    index = int(kind.removeprefix("variant-")) - 1
    return f"sampling.variants[{index}]", s.variants[index]


def start_field(spec: Spec, prompt: SamplePrompt) -> str:
    """The spec field whose text begins this prompt (leading blanks skip a part): the template's own words,
    the subject (sampling.prompts[i]) or the trigger (dataset.trigger)."""
    field, template = template_field(spec, prompt.kind)
    filled = {"subject": (f"sampling.prompts[{prompt.subject_index}]", prompt.subject),
              "trigger": ("dataset.trigger", spec.dataset.trigger or "")}
    for literal, placeholder, _, _ in string.Formatter().parse(template):
        if literal.strip():
            return field
        if placeholder in filled and filled[placeholder][1].strip():
            return filled[placeholder][0]
    return field
