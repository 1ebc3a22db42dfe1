"""GPU memory: the out-of-memory ladder and the retries that climb it.

    next_rung(spec)                 # (Rung, changed spec) of the next memory setting, or None
    next_attempt(home, failed_row)  # the spec and options of a retry after CUDA out of memory, or None
"""

from ._ladder import Rung, apply, next_rung, rungs
from ._retry import Attempt, attempts, chain_summary, next_attempt

__all__ = ["Attempt", "Rung", "apply", "attempts", "chain_summary", "next_attempt", "next_rung", "rungs"]
