"""Single-value checks shared by the spec's groups: the text sd-scripts would misread, refused early.

Each raises ValueError (pydantic turns it into a Problem naming the field).
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Any

from pydantic_core import PydanticCustomError


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


def fixable(message: str, fix: str) -> PydanticCustomError:
    """A validation error that carries its own fix (errors.problems_from_validation shows it after 'Fix:')."""
    return PydanticCustomError("kr_value", "{message}", {"message": message, "fix": fix})


# The name becomes file and folder names: sd-scripts appends up to ~45 bytes to output_name
# ("-step00000500.safetensors", "-step00000500-state", samples "_e000010_00_20250101120000_1234567890.png",
# log folders "_20250101120000"), and Linux file systems allow 255 bytes per name. 100 bytes leaves that
# room twice over, and stays readable in tables and run ids.
NAME_MAX_BYTES = 100
NAME_FIX = "use a plain name such as client-a (letters, digits, '-', '_', '.'; spaces only inside)"


def file_name(value: str | None) -> str | None:
    """One safe file-name component: kr and sd-scripts name files, folders and run ids after it."""
    if value is None:
        return value
    reason = file_name_problem(value)
    if reason:
        raise fixable(reason, NAME_FIX)
    return value


def file_name_problem(value: str) -> str | None:
    """Why `value` is not one safe file-name component, or None."""
    if not value.strip():
        return "is empty; it becomes the LoRA's file name"
    if any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in value):
        return "contains a control character (NUL, tab, newline, …); it becomes a file name"
    if "/" in value or "\\" in value:
        return "contains '/' or '\\'; it becomes one file name, not a path"
    if value.startswith("."):
        return "starts with '.'; it becomes a file name ('.' and '..' name folders, others hide the file)"
    if value.startswith("-"):
        return "starts with '-'; it becomes a file name, which tools would read as an option"
    if value != value.strip():
        return "starts or ends with a space; it becomes a file name"
    size = len(value.encode("utf-8"))
    if size > NAME_MAX_BYTES:
        return (f"is {size} bytes long; it becomes a file name, and sd-scripts appends up to ~45 bytes to it "
                f"(file systems allow 255), so kr allows {NAME_MAX_BYTES}")
    return None


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
