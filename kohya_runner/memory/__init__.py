"""GPU memory: how much a run needs, the setting that fits, and what to do when it does not.

    for_run(home, spec)             # Estimate: the table's figure, refined by measured runs
    fit(spec, free_bytes)           # Fit: the fastest memory setting that fits (kr run --fit)
    next_rung(spec)                 # (Rung, changed spec) of the next memory setting, or None
    next_attempt(home, failed_row)  # the spec and options of a retry after CUDA out of memory, or None
"""

from ._estimate import Estimate, estimate, for_run, measured, memory_key, table_estimate
from ._fit import Fit, fit
from ._ladder import Rung, apply, next_rung, rungs
from ._retry import Attempt, attempts, chain_summary, next_attempt

__all__ = ["Attempt", "Estimate", "Fit", "Rung", "apply", "attempts", "chain_summary", "estimate", "fit", "for_run",
           "measured", "memory_key", "next_attempt", "next_rung", "rungs", "table_estimate"]
