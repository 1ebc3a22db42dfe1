"""sd-scripts' logging setup (library/utils.py setup_logging), rewritten.

Before the arguments are known, records go through a Rich handler on stderr (timestamp, level,
`file.py:line`, wrapped to the console width). Once they are known, `--console_log_file F` sends
them to F (truncated), `--console_log_simple` prints bare messages on stdout, otherwise Rich on
stderr again. `--console_log_level` sets the level (default INFO).
"""

from __future__ import annotations

import logging
import sys


def setup_logging(args=None, log_level: str | None = None, reset: bool = False) -> None:
    if logging.root.handlers:
        if not reset:
            return
        for handler in logging.root.handlers[:]:
            logging.root.removeHandler(handler)

    if log_level is None and args is not None:
        log_level = args.console_log_level
    level = getattr(logging, log_level or "INFO")

    if args is not None and args.console_log_file:
        handler: logging.Handler = logging.FileHandler(args.console_log_file, mode="w")
    elif args is None or not args.console_log_simple:
        handler = _rich_handler()
    else:
        handler = logging.StreamHandler(sys.stdout)  # same stream as print()

    handler.setFormatter(logging.Formatter(fmt="%(message)s", datefmt="%Y-%m-%d %H:%M:%S"))
    logging.root.setLevel(level)
    logging.root.addHandler(handler)
    _quiet_libraries()


def _rich_handler() -> logging.Handler:
    try:
        from rich.console import Console
        from rich.logging import RichHandler
    except ImportError:  # pragma: no cover - rich is a kr dependency
        return logging.StreamHandler(sys.stdout)
    return RichHandler(console=Console(stderr=True))


def _quiet_libraries() -> None:
    # sd-scripts' console shows its own records; keep the libraries' chatter at warning level
    for name in ("diffusers", "transformers", "peft", "PIL", "urllib3", "huggingface_hub", "torch"):
        logging.getLogger(name).setLevel(logging.WARNING)
