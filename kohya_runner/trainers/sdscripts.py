"""The real trainer: an unmodified sd-scripts checkout and the Python of its environment."""

from __future__ import annotations

import socket
from pathlib import Path

from ..errors import BadInput
from ..sdscripts.options import script_for
from . import Launch, trainer_env


def locate(home: Path) -> tuple[Path | None, str | None]:
    """(sd-scripts checkout, trainer python), each None when not found: kohya_runner.vendoring decides where
    (KR_SD_SCRIPTS / KR_SD_PYTHON, else kr's own install).

    Raises BadInput when an override names nothing usable."""
    from ..vendoring import find_sd_scripts, find_trainer_python

    checkout = find_sd_scripts(home)
    python = find_trainer_python(home)
    return checkout, (str(python) if python else None)


def single_gpu_command(family: str, config_file: Path, checkout: Path | None, python: str | None) -> list[str]:
    """Plain `python script.py --config_file …`: signals and exit codes reach the trainer directly (§1.2 B)."""
    script = f"{script_for(family)}.py"
    script_path = str(checkout / script) if checkout else f"<sd-scripts>/{script}"
    return [python or "python", script_path, "--config_file", str(config_file)]


def multi_gpu_command(family: str, config_file: Path, checkout: Path, python: str, gpus: list[int],
                      mixed_precision: str) -> list[str]:
    """`accelerate launch` with every flag explicit, so no default_config.yaml can change the GPUs (§1.2)."""
    return [python, "-m", "accelerate.commands.launch",
            "--num_processes", str(len(gpus)), "--num_machines", "1", "--multi_gpu",
            "--gpu_ids", ",".join(map(str, gpus)), "--main_process_port", str(_free_port()),
            "--mixed_precision", mixed_precision, "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1",
            str(checkout / f"{script_for(family)}.py"), "--config_file", str(config_file)]


def _free_port() -> int:
    # Two multi-GPU jobs at once need different rendezvous ports (§1.2).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def require(home: Path, script_name: str) -> tuple[Path, str]:
    """(checkout, python) with `script_name` in the checkout; BadInput naming the fix when not."""
    checkout, python = locate(home)
    if checkout is None:
        raise BadInput("sd-scripts is not installed. Fix: `kr vendor install --from /path/to/sd-scripts` "
                       "(a checkout or tarball of commit 48d368f), or set KR_SD_SCRIPTS to a checkout; "
                       "`--base tiny` runs kr's built-in tiny trainer instead")
    script = checkout / script_name
    if not script.is_file():
        raise BadInput(f"{script} does not exist, so {checkout} is not a complete sd-scripts checkout. Fix: "
                       "`kr vendor verify` names what is missing; reinstall with `kr vendor install --from ... --force`")
    if python is None:
        raise BadInput(f"no Python environment for sd-scripts at {checkout}. Fix: `kr vendor env` creates one, "
                       "or set KR_SD_PYTHON to the python of the venv where sd-scripts' requirements are installed")
    return checkout, python


def launch(family: str, config_file: Path, run_dir: Path, home: Path, gpus: list[int | None],
           mixed_precision: str) -> Launch:
    checkout, python = require(home, f"{script_for(family)}.py")
    if gpus and len(gpus) > 1:
        argv = multi_gpu_command(family, config_file, checkout, python, gpus, mixed_precision)
    else:
        argv = single_gpu_command(family, config_file, checkout, python)
    # accelerate sets CUDA_VISIBLE_DEVICES from --gpu_ids itself for several GPUs.
    env = trainer_env(gpus if not gpus or len(gpus) == 1 else None)
    # cwd = the run folder: anything sd-scripts writes relative to its CWD lands there, never in the checkout.
    return Launch("sd-scripts", argv, run_dir, env)
