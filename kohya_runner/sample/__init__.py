"""Post-hoc sampling: after training, any checkpoints × LoRA strengths × prompt forms (× seeds), with the
base model as a column, made by the trainer's own generator (sd-scripts' gen_img.py, or the tiny one).

    job = prepare(home, "marker-0003", Request(checkpoints="all", strengths=[0.5, 1.0]))   # checks only
    summary = run(job)                       # waits for the device, generates, records in the ledger
    images(home, "marker-0003")              # every post-hoc image of the run, for the reports
"""

from ._after import after_training
from ._job import Job, prepare, record_in_ledger, run
from ._plan import BASE, KINDS, Cell, Request, check_prompts, column_key, parse_strengths
from ._store import images, ledger_rows, rebuild_rows, summary

__all__ = ["BASE", "after_training", "KINDS", "Cell", "check_prompts", "Job", "Request", "column_key", "images", "ledger_rows", "parse_strengths", "prepare",
           "rebuild_rows", "record_in_ledger", "run", "summary"]
