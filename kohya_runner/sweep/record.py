"""The sweep's record: its ledger row and `sweep.json` in the sweep folder (the plan with every member's
resolved spec, the options, the owning kr process and each member's runs)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import atomic
from ..errors import Failed
from .plan import Member, Plan

SWEEP_FILE = "sweep.json"


def sweeps_dir(home: Path) -> Path:
    return home / "sweeps"


@dataclass
class Options:
    gpus: list[int] | None = None  # None: every GPU NVML sees (or CUDA_VISIBLE_DEVICES); []: the CPU
    max_parallel: int | None = None
    backend: str | None = None
    skip_check: bool = False
    skip_invalid: bool = False
    retry_failed: bool = False
    ray: str | None = None  # the Ray cluster's address: members run as Ray tasks (kohya_runner.sweep.remote)
    ray_resource: str | None = None  # what a member needs on a node: GPU (default) or a custom resource

    def to_json(self) -> dict[str, Any]:
        return {"gpus": self.gpus, "max_parallel": self.max_parallel, "backend": self.backend,
                "skip_check": self.skip_check, "skip_invalid": self.skip_invalid, "ray": self.ray,
                "ray_resource": self.ray_resource}


class Record:
    """sweep.json: the plan (every member's resolved spec), the options, the owner and each member's runs."""

    def __init__(self, home: Path, sweep_id: str, sweep_dir: Path, data: dict[str, Any], members: list[Member]):
        self.home, self.sweep_id, self.sweep_dir, self.data, self.members = home, sweep_id, sweep_dir, data, members

    @property
    def path(self) -> Path:
        return self.sweep_dir / SWEEP_FILE

    def save(self) -> None:
        self.data["members"] = [m.to_json() for m in self.members]
        atomic.write_text(self.path, json.dumps(self.data, indent=1, ensure_ascii=False, default=str) + "\n")

    @classmethod
    def create(cls, home: Path, result: Plan, options: Options) -> "Record":
        from ..ledger import open_ledger

        row = open_ledger(home).create_sweep(result.name, sweeps_dir(home), preset=result.preset,
                                             members=len(result.members))
        data = {"schema": "kr.sweep/1", "sweep_id": row.sweep_id, "name": result.name, "preset": result.preset,
                "created": time.time(), "source": result.source, "fixed": result.fixed, "given": result.given,
                "varying": result.varying_keys(), "options": options.to_json(), "owner": None}
        record = cls(home, row.sweep_id, Path(row.sweep_dir), data, result.members)
        record.save()
        return record

    @classmethod
    def load(cls, home: Path, ref: str) -> "Record":
        from ..ledger import open_ledger

        row = open_ledger(home).find_sweep(ref)
        path = Path(row.sweep_dir) / SWEEP_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise Failed(f"cannot read {path}: {e}. The sweep folder is damaged; its runs are still in `kr runs ls "
                         f"--sweep {row.sweep_id}`") from None
        return cls(home, row.sweep_id, Path(row.sweep_dir), data, [Member.from_json(m) for m in data["members"]])

    def owner_alive(self) -> bool:
        from ..process import same_process

        owner = self.data.get("owner") or {}
        return same_process(owner.get("pid"), owner.get("start"))
