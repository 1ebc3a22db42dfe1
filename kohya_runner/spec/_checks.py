"""Single-value checks shared by the spec's groups: the text sd-scripts would misread, refused early.

Each raises ValueError (pydantic turns it into a Problem naming the field).
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Any


def single_line(value: str | None) -> str | None:
    """Reject characters that would start a new line in a prompts file or a log (CR, LF, U+2028, …)."""
    if value is None:
        return value
    for ch in value:
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp") and ch != "\t":
            raise ValueError(f"contains the control character {ch!r}; use a single line of plain text")
    return value


def no_option_marker(value: str | None) -> str | None:
    # sd-scripts cuts prompt lines at every " --" (contract §3.8): the text after it becomes an option.
    if value is not None and " --" in value:
        raise ValueError("contains ' --', which sd-scripts reads as the start of a prompt option")
    return value


def path_text(value: str | None) -> str | None:
    if value is not None and ("\x00" in value or value.strip() == ""):
        raise ValueError("is not a usable path (empty or contains a NUL byte)")
    return value


def key_value_args(args: dict[str, Any]) -> dict[str, Any]:
    """sd-scripts splits `key=value` items on '=' and keeps them on one line (contract §3.2, §3.3)."""
    for key, value in args.items():
        if not re.fullmatch(r"[A-Za-z_]\w*", key):
            raise ValueError(f"argument name {key!r} is not a plain identifier")
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"argument {key} must be a finite number")
        if isinstance(value, str):
            if "=" in value:
                raise ValueError(f"argument {key}: sd-scripts splits on '=', so the value may not contain it")
            single_line(value)
    return args


def prompt_template(value: str) -> str:
    if "{subject}" not in value:
        raise ValueError("must contain {subject}")
    try:
        value.format(subject="s", trigger="t")
    except (KeyError, IndexError, ValueError):
        raise ValueError("may only use the placeholders {subject} and {trigger} (write {{ and }} for braces)") from None
    return value
