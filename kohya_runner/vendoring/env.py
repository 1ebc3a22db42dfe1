"""The trainer's own venv: torch first (CPU build without an NVIDIA GPU), then sd-scripts' requirements."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import BadInput, Failed
from ._files import now_utc, refuse_existing, write_json_atomic
from .pin import venv_python

ENV_RECORD = "kr-env.json"  # written inside the trainer venv

# torch for the trainer (contract §11 measured torch 2.14.1 + torchvision 0.29.1; sd-scripts imports
# torchvision). PyPI's Linux torch wheels are CUDA builds (several GB); the CPU build lives on PyTorch's
# own index, so a machine without an NVIDIA GPU asks for that.
TORCH_VERSION = "2.14.1"
TORCHVISION_VERSION = "0.29.1"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"

# pip options that take a value: kept together when splitting a torch spec
_PIP_VALUE_OPTIONS = {"-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--trusted-host", "-c", "--constraint"}


@dataclass
class TrainerEnv:
    path: Path
    python: Path
    torch_spec: str
    offline: bool

    def to_dict(self) -> dict:
        return {**asdict(self), "path": str(self.path), "python": str(self.python)}


def choose_torch_spec(gpu: bool | None = None) -> str:
    """The pip arguments for torch + torchvision on this machine (a CPU build without an NVIDIA GPU).

    Raises nothing.
    """
    if gpu is None:
        from ..gpus import driver_present

        gpu = driver_present()
    if gpu:
        return f"torch=={TORCH_VERSION} torchvision=={TORCHVISION_VERSION}"
    return f"torch=={TORCH_VERSION}+cpu torchvision=={TORCHVISION_VERSION}+cpu --extra-index-url {TORCH_CPU_INDEX}"


def split_torch_spec(spec: str) -> tuple[list[str], list[str]]:
    """('requirements', 'pip options') of a torch spec such as "torch==2.14.1+cpu --extra-index-url URL".

    Raises BadInput when the spec names no package.
    """
    import shlex

    requirements: list[str] = []
    options: list[str] = []
    tokens = iter(shlex.split(spec))
    for token in tokens:
        if token.startswith("-"):
            options.append(token)
            if token in _PIP_VALUE_OPTIONS:
                options.append(next(tokens, ""))
        else:
            requirements.append(token)
    if not requirements:
        raise BadInput(f"The torch spec {spec!r} names no package. Give something like 'torch==2.14.1 torchvision==0.29.1'.")
    return requirements, options


def create_trainer_env(
    sd_scripts: Path,
    env_dir: Path,
    *,
    wheelhouse: Path | None,
    torch_spec: str,
    requirements: Path | None = None,
    force: bool = False,
    base_python: str | None = None,
) -> TrainerEnv:
    """A venv for sd-scripts: torch first (as torch_spec says), then sd-scripts' requirements.txt.

    With a wheelhouse everything comes from it (`--no-index --find-links`), nothing from the network;
    without one pip uses its configured index (a networked step). pip's output goes to
    `<env_dir>.kr-pip.log`. On any failure the new venv is removed and a previous one (force) restored.
    Raises BadInput (no requirements.txt, bad wheelhouse, existing venv), Failed (venv or pip failed).
    """
    sd_scripts, env_dir = Path(sd_scripts).expanduser(), Path(env_dir).expanduser()
    requirements = Path(requirements) if requirements else sd_scripts / "requirements.txt"
    if not requirements.is_file():
        raise BadInput(
            f"{requirements} does not exist; sd-scripts' requirements.txt is needed to set up the trainer environment. Install "
            "sd-scripts first (`kr vendor install`)."
        )
    if wheelhouse is not None and not Path(wheelhouse).is_dir():
        raise BadInput(
            f"The wheelhouse {wheelhouse} is not a folder. Give the folder of wheels made by `kr vendor bundle` (or `pip "
            "download`)."
        )
    refuse_existing(env_dir, force, "A trainer environment", "Use it as it is, or pass --force to rebuild it.")
    torch_requirements, torch_options = split_torch_spec(torch_spec)
    index = ["--no-index", "--find-links", str(wheelhouse)] if wheelhouse else torch_options
    log = env_dir.parent / (env_dir.name + ".kr-pip.log")
    with _replacing(env_dir):
        run_logged([base_python or sys.executable, "-m", "venv", str(env_dir)], log=log, what="creating the trainer venv")
        pip = [str(venv_python(env_dir)), "-m", "pip", "install", "--disable-pip-version-check"]
        offline = wheelhouse is not None
        run_logged([*pip, *index, *torch_requirements], log=log, what="installing torch", offline=offline)
        pip_index = ["--no-index", "--find-links", str(wheelhouse)] if wheelhouse else []
        # cwd = the checkout, because its requirements.txt ends with `-e .` (the `library` package)
        run_logged(
            [*pip, *pip_index, "-r", str(requirements)],
            log=log,
            what="installing sd-scripts' requirements",
            cwd=sd_scripts,
            offline=offline,
        )
        env = TrainerEnv(env_dir, venv_python(env_dir), torch_spec, wheelhouse is not None)
        write_json_atomic(
            env_dir / ENV_RECORD,
            {"created_at": now_utc(), "sd_scripts": str(sd_scripts), "torch_spec": torch_spec, "offline": env.offline},
        )
    return env


@contextmanager
def _replacing(target: Path) -> Iterator[None]:
    """Build target in place (venvs are not relocatable); on failure remove it and bring back the old one."""
    import shutil
    import tempfile

    target.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.kr-old-", dir=target.parent))
        os.rename(target, old / "previous")
    try:
        yield
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        if old is not None:
            os.rename(old / "previous", target)
            shutil.rmtree(old, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def run_logged(cmd: list[str], *, log: Path, what: str, cwd: Path | None = None, offline: bool = False, timeout: float = 7200) -> str:
    """Run a pip/venv command, its output appended to log; raises Failed (with the last lines) when it fails."""
    import subprocess

    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PYTHONNOUSERSITE": "1"}
    if offline:
        # The wheelhouse is the whole truth: no pip.conf, PIP_FIND_LINKS or constraints of this machine.
        env = {key: value for key, value in env.items() if not key.startswith("PIP_")}
        env["PIP_CONFIG_FILE"] = os.devnull
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"\n$ {' '.join(cmd)}\n")
        handle.flush()
        try:
            result = subprocess.run(
                cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired:
            raise Failed(
                f"{what.capitalize()} took longer than {timeout:.0f} s and was stopped. The full output is in {log}."
            ) from None
        except OSError as exc:
            raise Failed(
                f"{what.capitalize()} could not start: {exc}. Check that {cmd[0]} exists and is a working python."
            ) from None
        handle.write(result.stdout)
    if result.returncode != 0:
        tail = "\n".join(result.stdout.strip().splitlines()[-15:])
        raise Failed(
            f"{what.capitalize()} failed (exit {result.returncode}); the last lines were:\n{tail}\nThe full output is in {log}. "
            "If a package is missing from the wheelhouse, make the bundle again on a machine with the same Python version."
        )
    return result.stdout
