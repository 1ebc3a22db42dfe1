"""`kr base random` wherever torch is: in kr's own interpreter, else in the trainer environment's python.

kr itself does not need torch (only the built-in tiny trainer does), but the trainer environment that
`kr vendor env` builds always has torch, diffusers and transformers. When kr's interpreter lacks one of
them, the writer (kohya_runner.bases.write_random_base) runs there instead, as
`<trainer python> -m kohya_runner.base_writer ...`. That python imports kr's code from a throw-away
folder holding only a link to this package, so none of kr's own dependencies (or anything else on kr's
sys.path) can shadow the trainer's; kohya_runner.bases needs only the standard library to import.

The child speaks one line per event on stdout: `kr-progress <text>`, `kr-missing <module>` (it cannot build
models either), `kr-error <exit code> <JSON message>`; anything else it prints (library warnings) is kept
only to explain a crash.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import BadInput, Failed, KrError

MODEL_LIBRARIES = ("torch", "diffusers", "transformers")
_PROGRESS, _MISSING, _ERROR = "kr-progress ", "kr-missing ", "kr-error "


def missing_model_library() -> str | None:
    """The first of torch, diffusers, transformers that kr's own interpreter cannot import, or None.

    Raises nothing.
    """
    for name in MODEL_LIBRARIES:
        try:
            __import__(name)
        except (ImportError, OSError):  # OSError: a torch whose shared libraries do not load
            return name
    return None


def write_random_base(family: str, dest: Path | str, *, home: Path, seed: int = 0, dtype: str = "fp16",
                      progress: Callable[[str], None] | None = None) -> Path:
    """Write a seeded random base (see kohya_runner.bases.write_random_base) with whichever python has torch.

    `home` is the workspace, for finding the trainer environment (KR_SD_PYTHON, else kr's vendor/env).
    Raises BadInput (bad arguments or destination, a bad KR_SD_PYTHON), Failed (neither python can
    build models, or the trainer's python failed).
    """
    from . import bases

    say = progress or (lambda line: None)
    path = bases.random_base_path(family, Path(dest).expanduser(), seed=seed, dtype=dtype)  # BadInput before anything
    missing = missing_model_library()
    if missing is None:
        return bases.write_random_base(family, path, seed=seed, dtype=dtype, progress=progress)
    from .vendoring import find_trainer_python

    python = find_trainer_python(home)
    if python is None:
        raise Failed(_neither(missing, None))
    say(f"kr's python has no {missing}: writing with the trainer environment's python ({python})")
    _run_in(python, [family, str(path.resolve()), "--seed", str(seed), "--dtype", dtype], say, missing)
    return path


def _neither(missing: str, trainer_problem: str | None) -> str:
    own = f"kr's python ({sys.executable}) cannot import {missing}"
    if trainer_problem is None:
        where = "and there is no trainer environment to run it in"
        fix = "`kr vendor env` builds the trainer environment (it has all three), or KR_SD_PYTHON names one"
    else:
        where = f"and neither can the trainer environment's: {trainer_problem}"
        fix = "`kr vendor env --force` rebuilds the trainer environment"
    return (f"Building a random base needs torch, diffusers and transformers; {own}, {where}. Fix: {fix}; or "
            "install them into kr's environment (pip install 'kohya-runner[demo]', the CPU torch first).")


def _run_in(python: Path, args: list[str], say: Callable[[str], None], missing: str) -> None:
    import subprocess
    from collections import deque

    tail: deque[str] = deque(maxlen=15)
    with _kr_only_path() as folder:
        env = {**os.environ, "PYTHONPATH": str(folder), "PYTHONUNBUFFERED": "1", "PYTHONNOUSERSITE": "1"}
        env.pop("PYTHONSAFEPATH", None)
        try:
            child = subprocess.Popen([str(python), "-m", "kohya_runner.base_writer", *args], cwd=folder, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
        except OSError as exc:
            raise Failed(_neither(missing, f"{python} could not start ({exc})")) from None
        error: KrError | None = None
        with child:
            for line in child.stdout:  # type: ignore[union-attr]
                line = line.rstrip("\n")
                if line.startswith(_PROGRESS):
                    say(line[len(_PROGRESS):])
                elif line.startswith(_MISSING):
                    error = Failed(_neither(missing, f"{python} cannot import {line[len(_MISSING):]}"))
                elif line.startswith(_ERROR):
                    code, message = line[len(_ERROR):].split(" ", 1)
                    error = BadInput(json.loads(message)) if code == "2" else Failed(json.loads(message))
                else:
                    tail.append(line)
        if error is not None:
            raise error
        if child.returncode != 0:
            raise Failed(f"Writing the random base with the trainer environment's python ({python}) failed "
                         f"(exit {child.returncode}); its last lines were:\n" + "\n".join(tail))


@contextmanager
def _kr_only_path() -> Iterator[Path]:
    """A temporary folder whose only entry is `kohya_runner` (a link to this package; a copy where links fail)."""
    import shutil
    import tempfile

    package = Path(__file__).resolve().parent
    with tempfile.TemporaryDirectory(prefix="kr-base-writer-") as folder:
        link = Path(folder) / "kohya_runner"
        try:
            link.symlink_to(package, target_is_directory=True)
        except OSError:
            shutil.copytree(package, link, ignore=shutil.ignore_patterns("__pycache__"))
        yield Path(folder)


def main(argv: list[str] | None = None) -> int:
    """The child: `python -m kohya_runner.base_writer FAMILY FILE --seed N --dtype D`. Raises nothing."""
    import argparse

    from . import bases

    parser = argparse.ArgumentParser(prog="python -m kohya_runner.base_writer")
    parser.add_argument("family")
    parser.add_argument("dest")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="fp16")
    args = parser.parse_args(argv)
    missing = missing_model_library()
    if missing is not None:
        print(_MISSING + missing, flush=True)
        return 1
    try:
        bases.write_random_base(args.family, args.dest, seed=args.seed, dtype=args.dtype,
                                progress=lambda line: print(_PROGRESS + line, flush=True))
    except KrError as exc:
        print(f"{_ERROR}{exc.exit_code} {json.dumps(exc.message)}", flush=True)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
