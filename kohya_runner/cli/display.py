"""How the CLI shows data as text: one aligned table, one duration, one value format.

Plain aligned text, not rich tables: fast for thousands of rows, greppable, the same on a terminal
and in a pipe, and no markup parsing of user values (a `[...]` value prints as written).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ..ledger import duration_text as duration  # noqa: F401 (the one duration format, shared with reports)

MISSING = "–"  # what every table shows for "no value"
GAP = "  "


def text_table(rows: Sequence[Sequence[str]], header: Sequence[str] | None = None) -> str:
    """Columns left-aligned to their widest cell, two spaces apart, no trailing blanks. Raises nothing."""
    lines = [tuple(header)] if header else []
    lines += [tuple(row) for row in rows]
    if not lines:
        return ""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return "\n".join(GAP.join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines)


def value(data: Any) -> str:
    """A spec or JSON value as one cell: strings as written, everything else as JSON. Raises nothing."""
    return data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)


def number(data: float | None, digits: int = 4) -> str:
    """A measured number (loss, it/s) to `digits` significant digits; "–" for no value. Raises nothing."""
    return MISSING if data is None else f"{data:.{digits}g}"
