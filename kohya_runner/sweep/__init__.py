"""Sweeps: many runs from one preset, a queue over GPU (or CPU) slots sharing one cache, one table.

A sweep is a grid (the product of value lists), paired sets whose keys change together (e.g. one
learning-rate ladder per optimizer, each with its own args) and a seed list, on top of a preset and
fixed `key.path=value` overrides. Every member is resolved and validated before anything starts.
`sweep.json` in the sweep folder records the plan and the runs, so `kr sweep resume` can skip finished
members. At the end: results.csv, results.md and loss_overlay.png in the sweep folder.

    grid       definitions (--grid, --seeds, sweep TOML) and their expansion into members
    plan       members resolved and validated, their steps, the dry run
    record     sweep.json and the ledger row; the options
    scheduler  the slot scheduler (one member per GPU or CPU slot, cache gates)
    lifecycle  start, resume, stop
    results    the table, CSV, markdown, loss overlay, summary and listing
"""

from __future__ import annotations

from .grid import (MAX_MEMBERS, Assignment, Axis, Definition, expand, grid_axis, load_file, override_text,
                   parse_seeds, seed_axis, show_value, split_values)
from .lifecycle import DONE, StopResult, fit_members, prepare_members, resume, start, stop
from .plan import Member, Plan, changes, dry_run_json, plan, refuse_invalid
from .record import SWEEP_FILE, Options, Record, sweeps_dir
from .results import (OVERLAY_PNG, RESULTS_CSV, RESULTS_MD, ResultRow, csv_text, listing, markdown, member_losses,
                      overlay, result_rows, summary_json, table, write_results)
from .scheduler import POLL, Active, Gate, Scheduler, detect_gpus, execute, finished_text, queue_order, slot_label, slots_for
from ..ledger import duration_text  # the one duration format (was sweep.duration_text)

__all__ = [
    "MAX_MEMBERS", "Assignment", "Axis", "Definition", "expand", "grid_axis", "load_file", "override_text",
    "parse_seeds", "seed_axis", "show_value", "split_values",
    "DONE", "StopResult", "fit_members", "prepare_members", "resume", "start", "stop",
    "Member", "Plan", "changes", "dry_run_json", "plan", "refuse_invalid",
    "SWEEP_FILE", "Options", "Record", "sweeps_dir",
    "OVERLAY_PNG", "RESULTS_CSV", "RESULTS_MD", "ResultRow", "csv_text", "listing", "markdown", "member_losses",
    "overlay", "result_rows", "summary_json", "table", "write_results",
    "POLL", "Active", "Gate", "Scheduler", "detect_gpus", "execute", "finished_text", "queue_order", "slot_label",
    "slots_for", "duration_text",
]
