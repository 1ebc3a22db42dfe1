"""Shim: the drift probe lives in kohya_runner/sdscripts/drift_probe.py, which vendoring.drift() runs.

Kept only because tests/sdscripts/test_sdscripts_home.py runs the old path; delete both together. It is
run by path with the trainer's python (`python -I drift_probe.py OUT.json`), where kohya_runner is not
importable, so it forwards by path too."""

import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).resolve().parent / "sdscripts" / "drift_probe.py"), run_name="__main__")
