"""What the end-to-end refusal tests check: a clean bad-input exit, and what a folder holds."""

from __future__ import annotations

from pathlib import Path


def tree(root: Path) -> list[str]:
    """Every path below `root`, relative and sorted; [] when it does not exist."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")) if root.exists() else []


def refused(result, *words: str) -> None:
    """Exit 2 with one `Error:` paragraph (no traceback) that names each of `words`."""
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("Error: ") and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in result.stderr, (word, result.stderr)
