"""Shim: the drift probe lives in kohya_runner/sdscripts/drift_probe.py. vendor.drift() runs this
file by path with the trainer's python (`python -I drift_probe.py OUT.json`), where kohya_runner is
not importable, so this forwards by path too. Delete once vendor.py points at the new file."""

import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).resolve().parent / "sdscripts" / "drift_probe.py"), run_name="__main__")
