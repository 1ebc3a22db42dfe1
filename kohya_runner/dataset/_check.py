"""check(): everything that would go wrong, or quietly badly, when sd-scripts trains on a folder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import Failed
from ..sdscripts.buckets import BucketTable
from ..sdscripts.steps import StepMath, TrainingPlan, step_math
from ..sdscripts.subset import DatasetSettings
from ._findings import ERROR, FINDING_CODES, WARNING, Finding, finding
from ._probe import probe_images
from ._scan import scan
from ._tokens import TokenCounter
from .checks.buckets import bucket_findings, table_for
from .checks.caches import cache_findings
from .checks.captions import caption_findings
from .checks.duplicates import duplicate_findings
from .checks.images import image_findings
from .checks.layout import layout_findings
from .checks.settings import settings_findings, validation_findings


@dataclass
class CheckReport:
    dir: Path
    settings: DatasetSettings
    images: int
    captions: int
    findings: list[Finding]
    buckets: BucketTable | None
    steps: StepMath | None
    token_method: str  # "clip" | "estimate"
    max_tokens: int

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def codes(self) -> set[str]:
        return {f.code for f in self.findings}

    def find(self, code: str) -> list[Finding]:
        return [f for f in self.findings if f.code == code]

    def raise_for_errors(self) -> None:
        """For `kr run`'s pre-run check: Failed (exit 1) naming the first few errors."""
        if self.ok:
            return
        shown = "; ".join(f"{f.file or self.dir.name}: {f.message}" for f in self.errors[:3])
        more = f" (and {len(self.errors) - 3} more)" if len(self.errors) > 3 else ""
        raise Failed(
            f"dataset check found {len(self.errors)} error(s) in {self.dir}: {shown}{more}. "
            f"Run `kr dataset check {self.dir}` for the full list and fixes."
        )

    def to_dict(self) -> dict:
        return {
            "schema": "kr.dataset-check/1",
            "dir": str(self.dir),
            "ok": self.ok,
            "counts": {
                "images": self.images,
                "captions": self.captions,
                "errors": len(self.errors),
                "warnings": len(self.warnings),
            },
            "errors": [f.to_dict() for f in self.errors],
            "warnings": [f.to_dict() for f in self.warnings],
            "tokens": {"method": self.token_method, "limit": self.settings.token_limit, "max": self.max_tokens},
            "buckets": self.buckets.to_dict() if self.buckets else None,
            "steps": self.steps.to_dict() if self.steps else None,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)


def check(
    settings: DatasetSettings,
    plan: TrainingPlan | None = None,
    *,
    tokenizer_dir: Path | None = None,
    workers: int | None = None,
) -> CheckReport:
    """Everything that would go wrong (errors) or quietly badly (warnings) when sd-scripts trains on
    `settings.dir`, plus the bucket table and, with a `plan`, the step arithmetic and disk estimate.

    Reads each file once; writes nothing. Raises BadInput only for a missing folder or bad settings.
    """
    found = scan(settings)
    findings = settings_findings(settings, plan) + layout_findings(found, settings) + cache_findings(found, settings)
    probes = probe_images([img.path for img in found.images], workers)
    findings += image_findings(found, probes) + validation_findings(len(found.images), settings)
    findings += duplicate_findings(found, probes)
    counter = TokenCounter(tokenizer_dir, settings.token_limit)
    captions_found, max_tokens = caption_findings(found, settings, counter)
    findings += captions_found
    if counter.problem:
        findings.append(
            finding(
                "tokenizer-unavailable", None, f"token counts are estimates: {counter.problem}.",
                "build kr's tokenizer cache, or pass the folder that holds openai_clip-vit-large-patch14/.",
            )
        )
    table = table_for(found, probes, settings)
    if table is not None:
        findings += bucket_findings(found, probes, table)
    steps = step_math(table.bucket_items, settings.batch_size, plan) if plan and table and table.items else None
    return CheckReport(
        dir=settings.dir,
        settings=settings,
        images=len(found.images),
        captions=sum(1 for img in found.images if img.caption_path),
        findings=_sorted_findings(findings),
        buckets=table,
        steps=steps,
        token_method=counter.method,
        max_tokens=max_tokens,
    )


def _sorted_findings(findings: list[Finding]) -> list[Finding]:
    order = {code: i for i, code in enumerate(FINDING_CODES)}
    return sorted(findings, key=lambda f: (f.severity != ERROR, order[f.code], f.file or ""))
