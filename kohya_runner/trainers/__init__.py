"""Trainer backends: how to start sd-scripts or the built-in tiny trainer (argv, environment, cwd).

Both take the same rendered files and speak the same console/file contract; kr's supervision does
not know which one it runs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..sdscripts.environment import OFFLINE_ENV


@dataclass
class Launch:
    backend: str
    argv: list[str]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)  # added to the inherited environment

    def to_json(self) -> dict:
        return {"backend": self.backend, "argv": self.argv, "cwd": str(self.cwd), "env": self.env}


def trainer_env(gpus: list[int | None]) -> dict[str, str]:
    """Offline switches (§1.4) and the GPU choice. An empty CUDA_VISIBLE_DEVICES means the CPU."""
    env = dict(OFFLINE_ENV)
    if gpus is not None:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
    return env


def full_env(launch: Launch) -> dict[str, str]:
    env = {**os.environ, **launch.env}
    # Nothing of the user's online configuration may switch the trainer back online.
    for key in ("WANDB_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        env.pop(key, None)
    return env


def launch_for(backend: str, family: str, config_file: Path, run_dir: Path, home: Path,
               gpus: list[int | None], mixed_precision: str = "no") -> Launch:
    if backend == "tiny":
        from . import tiny

        return tiny.launch(family, config_file, run_dir, gpus)
    from . import sdscripts

    return sdscripts.launch(family, config_file, run_dir, home, gpus, mixed_precision)


def generator_for(backend: str, home: Path, gpus: list[int] | None) -> Launch:
    """How to start the backend's image generator (sd-scripts' gen_img.py, or the tiny one with the same
    arguments); the caller appends kohya_runner.sdscripts.gen_img.arguments(...) and sets cwd."""
    if backend == "tiny":
        import sys

        return Launch("tiny", [sys.executable, "-m", "kohya_runner.tiny.gen_img"], Path("."), trainer_env(gpus))
    from ..sdscripts.gen_img import SCRIPT
    from . import sdscripts

    checkout, python = sdscripts.require(home, SCRIPT)
    return Launch("sd-scripts", [python, str(checkout / SCRIPT)], Path("."), trainer_env(gpus))


def scorer_for(backend: str, home: Path, gpus: list[int] | None) -> Launch:
    """How to start the backend's score probe (kohya_runner.score): `<argv> JOB.json OUT.json`, in the
    trainer's own environment, with sd-scripts' own model loading and network code (or the tiny ones)."""
    if backend == "tiny":
        import sys

        return Launch("tiny", [sys.executable, "-m", "kohya_runner.tiny.score"], Path("."), trainer_env(gpus))
    from . import sdscripts

    checkout, python = sdscripts.require(home, "train_network.py")
    probe = Path(__file__).resolve().parent.parent / "sdscripts" / "score_probe.py"
    return Launch("sd-scripts", [python, str(probe)], checkout, trainer_env(gpus))
