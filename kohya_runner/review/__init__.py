"""The review board: a local web page where a team looks at runs and sweeps, rates checkpoints and
samples, compares them side by side, and releases the chosen LoRA; nothing leaves the machine.

    serve(home, port=8765)              # kr review: 127.0.0.1, a token per launch, Ctrl-C stops it
    Board(home, releases).run("marker-0003")   # what a page shows, as data (every page is one call)
    rate(home, "marker-0003", reviewer="Ana", stars=4, note="clean lines", checkpoint="marker-000008.safetensors")
    ratings(home, "marker-0003")        # every rating, oldest first
    summary(home, "marker-0003")        # per checkpoint: mean stars, count, reviewers
"""

from ._board import Board, Pick
from ._server import DEFAULT_PORT, serve
from .ratings import MAX_NOTE, MAX_REVIEWER, check_reviewer, rate, ratings, summary

__all__ = ["Board", "DEFAULT_PORT", "MAX_NOTE", "MAX_REVIEWER", "Pick", "check_reviewer", "rate", "ratings", "serve",
           "summary"]
