"""The review board's library: reviewers' ratings of checkpoints and samples (the web app comes on top).

    rate(home, "marker-0003", reviewer="Ana", stars=4, note="clean lines", checkpoint="marker-000008.safetensors")
    ratings(home, "marker-0003")        # every rating, oldest first
    summary(home, "marker-0003")        # per checkpoint: mean stars, count, reviewers
"""

from .ratings import MAX_NOTE, MAX_REVIEWER, rate, ratings, summary

__all__ = ["MAX_NOTE", "MAX_REVIEWER", "rate", "ratings", "summary"]
